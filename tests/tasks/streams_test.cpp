// Scenarios, logit masks, concat, and the built-in streams (Fashion-MNIST ones skip without data).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <set>
#include <string>

#include "tasks/idx.h"
#include "tasks/streams.h"
#include "tasks/task.h"

using namespace strata::tasks;

namespace {

const char* kFmnistDir = "/usr/share/datasets/fashion-mnist";
#define SKIP_WITHOUT_FMNIST()                                                                        \
  if (!std::filesystem::exists(kFmnistDir)) GTEST_SKIP() << kFmnistDir << " missing (apt-get install " \
                                                                             "dataset-fashion-mnist)"

std::set<int64_t> as_set(const torch::Tensor& t) {
  auto c = t.contiguous();
  return std::set<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

void expect_error(const StreamOptions& o, const std::string& what) {
  try {
    make_stream(o);
    ADD_FAILURE() << "make_stream did not throw (expected: " << what << ")";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find(what), std::string::npos) << e.what_without_backtrace();
  }
}

// Checks the invariants every stream satisfies.
void check_stream(const TaskStream& s, const StreamOptions& o) {
  ASSERT_EQ(s.size(), o.num_tasks());
  for (const Task& t : s.tasks) {
    for (const Split* sp : {&t.train, &t.val, &t.test}) {
      ASSERT_TRUE(sp->x.defined());
      EXPECT_EQ(sp->x.scalar_type(), torch::kFloat32);
      EXPECT_EQ(sp->y.scalar_type(), torch::kInt64);
      EXPECT_EQ(sp->ids.scalar_type(), torch::kInt64);
      EXPECT_TRUE(sp->x.is_contiguous() && sp->y.is_contiguous() && sp->ids.is_contiguous());
      std::vector<int64_t> shape = {sp->size()};
      shape.insert(shape.end(), s.input_shape.begin(), s.input_shape.end());
      EXPECT_EQ(sp->x.sizes(), shape);
      EXPECT_EQ(sp->ids.size(0), sp->size());
      EXPECT_TRUE(torch::all(sp->task.eq(t.index)).item<bool>());
      // Every label is one of the task's classes.
      for (int64_t y : as_set(sp->y))
        EXPECT_NE(std::find(t.classes.begin(), t.classes.end(), y), t.classes.end()) << t.name << " label " << y;
    }
    // Validation held out from training, by source ids; sizes follow val_fraction and train_limit.
    const auto tr = as_set(t.train.ids), va = as_set(t.val.ids);
    EXPECT_EQ(tr.size(), size_t(t.train.size()));  // no duplicates
    for (int64_t id : va) EXPECT_EQ(tr.count(id), 0u) << t.name << " id " << id << " in train and val";
    const int64_t n = t.train.size() + t.val.size();
    if (o.train_limit() > 0) {
      EXPECT_LE(n, o.train_limit());
    }
    EXPECT_EQ(t.val.size(), int64_t(std::floor(o.val_fraction() * double(n))));
    if (o.test_limit() > 0) {
      EXPECT_LE(t.test.size(), o.test_limit());
    }
  }
}

TEST(Scenario, RoundTripAndErrors) {
  for (Scenario s : {Scenario::kTaskIncremental, Scenario::kClassIncremental, Scenario::kDomainIncremental})
    EXPECT_EQ(scenario_from_string(to_string(s)), s);
  try {
    scenario_from_string("task-il");
    ADD_FAILURE();
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("'task-il'"), std::string::npos);
  }
}

TaskStream three_by_two(Scenario s) {
  TaskStream st;
  st.scenario = s;
  st.num_classes = 6;
  for (int64_t t = 0; t < 3; ++t) {
    Task task;
    task.index = t;
    task.classes = {2 * t, 2 * t + 1};
    st.tasks.push_back(task);
  }
  return st;
}

TEST(LogitMask, PerScenario) {
  auto b = [](std::vector<std::vector<int>> rows) {
    auto m = torch::zeros({int64_t(rows.size()), int64_t(rows[0].size())}, torch::kBool);
    for (size_t i = 0; i < rows.size(); ++i)
      for (size_t j = 0; j < rows[i].size(); ++j) m[i][j] = bool(rows[i][j]);
    return m;
  };
  auto til = three_by_two(Scenario::kTaskIncremental);
  const auto til_expect = b({{1, 1, 0, 0, 0, 0}, {0, 0, 1, 1, 0, 0}, {0, 0, 0, 0, 1, 1}});
  for (int64_t stage = 0; stage < 3; ++stage) EXPECT_TRUE(torch::equal(til.logit_mask(stage), til_expect));

  auto cil = three_by_two(Scenario::kClassIncremental);
  EXPECT_TRUE(torch::equal(cil.logit_mask(0), b({{1, 1, 0, 0, 0, 0}, {1, 1, 1, 1, 0, 0}, {1, 1, 1, 1, 1, 1}})));
  EXPECT_TRUE(torch::equal(cil.logit_mask(1), b({{1, 1, 1, 1, 0, 0}, {1, 1, 1, 1, 0, 0}, {1, 1, 1, 1, 1, 1}})));
  EXPECT_TRUE(torch::equal(cil.logit_mask(2), torch::ones({3, 6}, torch::kBool)));

  auto dil = three_by_two(Scenario::kDomainIncremental);
  EXPECT_TRUE(torch::equal(dil.logit_mask(1), torch::ones({3, 6}, torch::kBool)));
  EXPECT_THROW(dil.logit_mask(3), c10::Error);
  EXPECT_THROW(dil.logit_mask(-1), c10::Error);

  // Batch mask: index rows by Split::task.
  auto batch_mask = til.logit_mask(2).index_select(0, torch::tensor({2, 0}, torch::kInt64));
  EXPECT_TRUE(torch::equal(batch_mask, b({{0, 0, 0, 0, 1, 1}, {1, 1, 0, 0, 0, 0}})));
}

TEST(Concat, JoinsSplits) {
  Split a, b, empty;
  a.x = torch::zeros({2, 1, 2, 2});
  a.y = torch::tensor({0, 1}, torch::kInt64);
  a.ids = torch::tensor({5, 6}, torch::kInt64);
  a.task = torch::zeros({2}, torch::kInt64);
  b.x = torch::ones({3, 1, 2, 2});
  b.y = torch::tensor({2, 3, 2}, torch::kInt64);
  b.ids = torch::tensor({5, 7, 8}, torch::kInt64);
  b.task = torch::ones({3}, torch::kInt64);
  Split c = concat({&a, &empty, &b});
  EXPECT_EQ(c.size(), 5);
  EXPECT_EQ(c.x.sizes(), (std::vector<int64_t>{5, 1, 2, 2}));
  EXPECT_TRUE(torch::equal(c.task, torch::tensor({0, 0, 1, 1, 1}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(c.ids, torch::tensor({5, 6, 5, 7, 8}, torch::kInt64)));
  EXPECT_EQ(c.x.sum().item<float>(), 12.0f);
  EXPECT_EQ(concat({&empty}).size(), 0);
  Split bad = b;
  bad.x = torch::ones({3, 1, 3, 3});
  EXPECT_THROW(concat({&a, &bad}), c10::Error);
}

TEST(Permutation, IsSeededPermutation) {
  EXPECT_TRUE(torch::equal(pixel_permutation(7, 0), torch::arange(784, torch::kInt64)));  // task 0 identity
  auto p1 = pixel_permutation(7, 1), p2 = pixel_permutation(7, 2);
  EXPECT_TRUE(torch::equal(std::get<0>(p1.sort()), torch::arange(784, torch::kInt64)));
  EXPECT_TRUE(torch::equal(std::get<0>(p2.sort()), torch::arange(784, torch::kInt64)));
  EXPECT_FALSE(torch::equal(p1, p2));
  EXPECT_FALSE(torch::equal(p1, torch::arange(784, torch::kInt64)));
  EXPECT_TRUE(torch::equal(p1, pixel_permutation(7, 1)));   // reproducible
  EXPECT_FALSE(torch::equal(p1, pixel_permutation(8, 1)));  // seed matters
  // Independent of the global RNG.
  torch::manual_seed(1);
  auto q = pixel_permutation(7, 1);
  torch::manual_seed(2);
  EXPECT_TRUE(torch::equal(q, pixel_permutation(7, 1)));
}

TEST(Options, ValidationMessages) {
  expect_error(StreamOptions().name("mnist"), "unknown stream name 'mnist' (valid: permuted-fmnist, split-fmnist");
  expect_error(StreamOptions().num_tasks(0), "num_tasks must be >= 1, got 0");
  expect_error(StreamOptions().name("split-fmnist").num_tasks(6), "at most 5 tasks");
  expect_error(StreamOptions().val_fraction(0.6), "val_fraction must be in [0, 0.5], got 0.6");
  expect_error(StreamOptions().val_fraction(-0.1), "val_fraction");
  expect_error(StreamOptions().train_limit(-1), "train_limit must be >= 0");
  expect_error(StreamOptions().test_limit(-5), "test_limit must be >= 0 (0 = no limit), got -5");
  expect_error(StreamOptions().scenario("tasks"), "unknown scenario 'tasks'");
  expect_error(StreamOptions().scenario("class"), "not supported by permuted-fmnist");
  expect_error(StreamOptions().name("split-fmnist").scenario("domain"), "not supported by split-fmnist");
  expect_error(StreamOptions().name("rotated-fmnist").rotation_step(-10), "rotation_step must be >= 0");
  expect_error(StreamOptions().data_dir("/nonexistent/strata-fmnist"), "apt-get install dataset-fashion-mnist");
  EXPECT_EQ(stream_names().size(), 4u);
}

TEST(Synthetic, DeterministicAndShaped) {
  auto o = StreamOptions().name("synthetic").num_tasks(3).seed(5);
  auto a = make_stream(o), b = make_stream(o), c = make_stream(StreamOptions(o).seed(6));
  check_stream(a, o);
  EXPECT_EQ(a.scenario, Scenario::kDomainIncremental);
  EXPECT_EQ(a.num_classes, 4);
  EXPECT_EQ(a.input_shape, (std::vector<int64_t>{1, 8, 8}));
  EXPECT_EQ(a.tasks[0].train.size() + a.tasks[0].val.size(), 400);
  EXPECT_EQ(a.tasks[0].test.size(), 200);
  for (int64_t t = 0; t < 3; ++t) {
    EXPECT_TRUE(torch::equal(a.tasks[t].train.x, b.tasks[t].train.x));
    EXPECT_TRUE(torch::equal(a.tasks[t].test.y, b.tasks[t].test.y));
    EXPECT_TRUE(torch::equal(a.tasks[t].val.ids, b.tasks[t].val.ids));
    EXPECT_FALSE(torch::equal(a.tasks[t].train.x, c.tasks[t].train.x));
    EXPECT_EQ(a.tasks[t].classes, (std::vector<int64_t>{0, 1, 2, 3}));
  }
  EXPECT_FALSE(torch::equal(a.tasks[0].test.x, a.tasks[1].test.x));  // tasks differ

  auto oc = StreamOptions(o).scenario("class").train_limit(100).test_limit(50);
  auto cl = make_stream(oc);
  check_stream(cl, oc);
  EXPECT_EQ(cl.scenario, Scenario::kClassIncremental);
  EXPECT_EQ(cl.num_classes, 6);
  EXPECT_EQ(cl.tasks[2].classes, (std::vector<int64_t>{4, 5}));
  EXPECT_EQ(cl.tasks[2].train.size() + cl.tasks[2].val.size(), 100);
  EXPECT_EQ(cl.tasks[2].test.size(), 50);
  EXPECT_EQ(as_set(cl.tasks[1].train.y), (std::set<int64_t>{2, 3}));
}

// A linear softmax classifier should reach roughly 90 % on each synthetic task: separable, not trivial.
TEST(Synthetic, LinearModelGetsAbout90Percent) {
  auto s = make_stream(StreamOptions().name("synthetic").num_tasks(4).seed(0));
  double total = 0;
  for (const Task& t : s.tasks) {
    torch::manual_seed(0);
    torch::nn::Linear lin(64, 4);
    torch::optim::Adam opt(lin->parameters(), torch::optim::AdamOptions(0.05));
    auto x = t.train.x.view({-1, 64});
    for (int i = 0; i < 200; ++i) {
      opt.zero_grad();
      auto loss = torch::cross_entropy_loss(lin(x), t.train.y) + 1e-3 * lin->weight.pow(2).sum();
      loss.backward();
      opt.step();
    }
    torch::NoGradGuard ng;
    total += lin(t.test.x.view({-1, 64})).argmax(1).eq(t.test.y).to(torch::kFloat64).mean().item<double>();
  }
  const double acc = total / double(s.size());
  EXPECT_GT(acc, 0.80);
  EXPECT_LT(acc, 0.97);
  std::cout << "[ synthetic ] mean linear test accuracy " << acc << "\n";
}

TEST(PermutedFmnist, PermutesPixelsReproducibly) {
  SKIP_WITHOUT_FMNIST();
  auto o = StreamOptions().num_tasks(3).seed(3).train_limit(1000).val_fraction(0.2);
  auto s = make_stream(o);
  check_stream(s, o);
  EXPECT_EQ(s.scenario, Scenario::kDomainIncremental);
  EXPECT_EQ(s.num_classes, 10);
  EXPECT_EQ(s.tasks[1].name, "perm1");
  EXPECT_EQ(s.tasks[0].train.size(), 800);
  EXPECT_EQ(s.tasks[0].val.size(), 200);
  EXPECT_EQ(s.tasks[0].test.size(), 10000);  // no test limit: the whole test file, same ids every task
  // Task 0 is plain Fashion-MNIST, normalised.
  const auto& d = load_fashion_mnist(kFmnistDir);
  auto raw0 = d.test_images.view({-1, 784}).to(torch::kFloat32).div(255.0);
  auto x0 = s.tasks[0].test.x.view({-1, 784});
  EXPECT_TRUE(torch::allclose(x0 * 0.3530 + 0.2860, raw0, 1e-5, 1e-5));
  for (int64_t t = 1; t < 3; ++t) {
    auto xt = s.tasks[t].test.x.view({-1, 784});
    EXPECT_TRUE(torch::equal(xt, x0.index_select(1, pixel_permutation(3, t))));
    EXPECT_TRUE(torch::equal(s.tasks[t].test.y, d.test_labels));
  }
  auto again = make_stream(o);
  auto other = make_stream(StreamOptions(o).seed(4));
  EXPECT_TRUE(torch::equal(again.tasks[2].train.x, s.tasks[2].train.x));
  EXPECT_TRUE(torch::equal(again.tasks[2].val.ids, s.tasks[2].val.ids));
  EXPECT_FALSE(torch::equal(other.tasks[2].test.x, s.tasks[2].test.x));
  EXPECT_FALSE(torch::equal(other.tasks[2].train.ids, s.tasks[2].train.ids));
  // Training examples are what the source file holds at their ids, permuted.
  auto ids = s.tasks[2].train.ids;
  auto src = d.train_images.view({-1, 784}).index_select(0, ids).to(torch::kFloat32).div(255.0);
  EXPECT_TRUE(torch::allclose(s.tasks[2].train.x.view({-1, 784}) * 0.3530 + 0.2860,
                              src.index_select(1, pixel_permutation(3, 2)), 1e-5, 1e-5));
  EXPECT_TRUE(torch::equal(s.tasks[2].train.y, d.train_labels.index_select(0, ids)));
}

// Wall and process-CPU seconds of one full-data build (the CPU figure is robust to a loaded machine).
template <class F>
void timed(const std::string& what, F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::clock_t c0 = std::clock();
  f();
  const double cpu = double(std::clock() - c0) / CLOCKS_PER_SEC;
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "[ timing ] " << what << ", full data, " << torch::get_num_threads() << " thread(s): wall " << wall
            << " s, cpu " << cpu << " s\n";
}

TEST(Streams, FullDataBuildTimes) {
  SKIP_WITHOUT_FMNIST();
  load_fashion_mnist(kFmnistDir);  // cached: time the stream build only
  // rotated-fmnist is left out to keep this binary fast (about 4 s CPU on one thread).
  for (const std::string name : {"permuted-fmnist", "split-fmnist"}) {
    auto o = StreamOptions().name(name);
    TaskStream s;
    timed(name + ", 5 tasks", [&] { s = make_stream(o); });
    check_stream(s, o);
    if (name != "split-fmnist") {
      EXPECT_EQ(s.tasks[4].train.size(), 54000);
      EXPECT_EQ(s.tasks[4].val.size(), 6000);
      EXPECT_EQ(s.tasks[4].test.size(), 10000);
    }
  }
}

TEST(SplitFmnist, DisjointClassSets) {
  SKIP_WITHOUT_FMNIST();
  auto o = StreamOptions().name("split-fmnist").train_limit(600).test_limit(300);
  auto s = make_stream(o);
  check_stream(s, o);
  EXPECT_EQ(s.scenario, Scenario::kTaskIncremental);
  EXPECT_EQ(s.num_classes, 10);
  std::set<int64_t> seen;
  for (const Task& t : s.tasks) {
    EXPECT_EQ(t.classes, (std::vector<int64_t>{2 * t.index, 2 * t.index + 1}));
    EXPECT_EQ(as_set(t.train.y), std::set<int64_t>(t.classes.begin(), t.classes.end()));
    EXPECT_EQ(as_set(t.test.y), std::set<int64_t>(t.classes.begin(), t.classes.end()));
    for (int64_t c : t.classes) EXPECT_TRUE(seen.insert(c).second) << "class " << c << " in two tasks";
  }
  EXPECT_EQ(seen.size(), 10u);
  EXPECT_EQ(s.tasks[1].name, "split1-classes-2-3");
  // Full test set per task: the 2000 test examples of its two classes.
  auto full = make_stream(StreamOptions().name("split-fmnist").num_tasks(2).scenario("class").train_limit(100));
  EXPECT_EQ(full.scenario, Scenario::kClassIncremental);
  EXPECT_EQ(full.num_classes, 4);
  EXPECT_EQ(full.tasks[1].test.size(), 2000);
  EXPECT_TRUE(torch::equal(full.logit_mask(0)[0], torch::tensor({true, true, false, false})));
  EXPECT_TRUE(torch::equal(full.logit_mask(1)[0], torch::tensor({true, true, true, true})));
}

TEST(RotatedFmnist, RotatesByTheAngles) {
  SKIP_WITHOUT_FMNIST();
  EXPECT_EQ(rotation_angles(StreamOptions().name("rotated-fmnist").num_tasks(4)),
            (std::vector<double>{0, 45, 90, 135}));
  EXPECT_EQ(rotation_angles(StreamOptions().name("rotated-fmnist").num_tasks(3).rotation_step(10)),
            (std::vector<double>{0, 10, 20}));
  // 90 degrees maps pixel centres onto pixel centres (align_corners=false, even size): exactly rot90.
  auto img = torch::rand({3, 1, 28, 28});
  EXPECT_TRUE(torch::allclose(rotate_images(img, 90), torch::rot90(img, 1, {2, 3}), 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(rotate_images(img, 180), torch::flip(img, {2, 3}), 1e-5, 1e-5));
  // Zero padding: the corners of a 45-degree rotation of an all-ones image come from outside.
  auto r45 = rotate_images(torch::ones({1, 1, 28, 28}), 45);
  EXPECT_EQ(r45[0][0][0][0].item<float>(), 0.0f);
  EXPECT_NEAR(r45[0][0][14][14].item<float>(), 1.0f, 1e-6);

  auto o = StreamOptions().name("rotated-fmnist").num_tasks(2).rotation_step(90).train_limit(500).test_limit(200);
  auto s = make_stream(o);
  check_stream(s, o);
  EXPECT_EQ(s.tasks[1].name, "rot90");
  EXPECT_EQ(s.scenario, Scenario::kDomainIncremental);
  const auto& d = load_fashion_mnist(kFmnistDir);
  auto ids = s.tasks[1].test.ids;
  auto raw = d.test_images.index_select(0, ids).to(torch::kFloat32).div(255.0).unsqueeze(1);
  auto expect = (torch::rot90(raw, 1, {2, 3}) - 0.2860) / 0.3530;
  EXPECT_TRUE(torch::allclose(s.tasks[1].test.x, expect, 1e-4, 1e-4));
}

}  // namespace
