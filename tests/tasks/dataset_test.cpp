// User datasets from HDF5 (good files and every bad-file case), stream recipes over them, and
// lazy splits: batches made from one shared source equal the tensors the streams used to hold.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <string>

#include "core/h5.h"
#include "tasks/dataset.h"
#include "tasks/idx.h"
#include "tasks/streams.h"
#include "tasks/task.h"

using namespace strata;
using namespace strata::tasks;
namespace fs = std::filesystem;

namespace {

const char* kFmnistDir = "/usr/share/datasets/fashion-mnist";
#define SKIP_WITHOUT_FMNIST() \
  if (!fs::exists(kFmnistDir)) GTEST_SKIP() << kFmnistDir << " missing"

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() / ("strata_dataset_test_" + std::to_string(::getpid()));
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

void set_doubles(H5::H5Object& obj, const std::string& name, const std::vector<double>& v) {
  hsize_t n = v.size();
  H5::Attribute a = obj.createAttribute(name, H5::PredType::IEEE_F64LE, H5::DataSpace(1, &n));
  a.write(H5::PredType::NATIVE_DOUBLE, v.data());
}

void set_strings(H5::H5Object& obj, const std::string& name, const std::vector<std::string>& v) {
  hsize_t n = v.size();
  H5::StrType t(H5::PredType::C_S1, H5T_VARIABLE);
  std::vector<const char*> c;
  for (const auto& s : v) c.push_back(s.c_str());
  H5::Attribute a = obj.createAttribute(name, t, H5::DataSpace(1, &n));
  a.write(t, c.data());
}

// Labels as int16: checks that any integer width is accepted.
void write_int16(H5::H5File& f, const std::string& path, const torch::Tensor& y) {
  auto v = y.to(torch::kInt16).contiguous();
  hsize_t n = v.numel();
  core::open_group(f, path.substr(0, path.rfind('/')), true);
  H5::DataSet ds = f.createDataSet(path, H5::PredType::STD_I16LE, H5::DataSpace(1, &n));
  ds.write(v.data_ptr<int16_t>(), H5::PredType::NATIVE_INT16);
}

struct Pair {
  torch::Tensor x, y;
};

void write_pair(H5::H5File& f, const std::string& prefix, const Pair& train, const Pair& test) {
  core::write_tensor(f, prefix + "train/x", train.x);
  core::write_tensor(f, prefix + "train/y", train.y);
  core::write_tensor(f, prefix + "test/x", test.x);
  core::write_tensor(f, prefix + "test/y", test.y);
}

std::string write_file(const std::string& path, const std::function<void(H5::H5File&)>& fill) {
  H5::H5File f = core::open_file(path, core::FileMode::kTruncate);
  fill(f);
  f.close();
  return path;
}

// Balanced labels 0..k-1.
torch::Tensor labels(int64_t n, int64_t k) { return torch::arange(n, torch::kInt64).remainder(k); }

Pair u8_images(int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t seed) {
  auto g = at::detail::createCPUGenerator(seed);
  return {torch::randint(0, 256, {n, c, h, w}, g, torch::kInt64).to(torch::kUInt8), labels(n, k)};
}

void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no error (expected: " << parts.back() << ")";
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "not one line: " << msg;
  }
}

// The inputs a stream held before splits became lazy: uint8 -> (v / 255 - mean[c]) / std[c]
// evaluated in double and rounded once.
torch::Tensor reference_normalised(const torch::Tensor& u8, const std::vector<double>& mean,
                                   const std::vector<double>& std) {
  const int64_t c = u8.size(1);
  auto m = torch::tensor(mean, torch::kFloat64).view({1, c, 1, 1});
  auto s = torch::tensor(std, torch::kFloat64).view({1, c, 1, 1});
  return u8.to(torch::kFloat64).div(255.0).sub(m).div(s).to(torch::kFloat32);
}

TEST(H5Dataset, Uint8WithMeanStdAndPermutedRecipe) {
  TempDir dir;
  const Pair tr = u8_images(40, 3, 4, 5, 4, 1), te = u8_images(12, 3, 4, 5, 4, 2);
  const std::vector<double> mean = {0.1, 0.5, 0.7}, std = {0.2, 0.25, 0.3};
  const std::string path = write_file(dir.file("u8.h5"), [&](H5::H5File& f) {
    core::write_tensor(f, "train/x", tr.x);
    write_int16(f, "train/y", tr.y);
    core::write_tensor(f, "test/x", te.x);
    core::write_tensor(f, "test/y", te.y.to(torch::kUInt8));
    set_doubles(f, "mean", mean);
    set_doubles(f, "std", std);
    set_strings(f, "classes", {"a", "b", "c", "d"});
  });
  const Dataset d = load_h5_dataset(path);
  EXPECT_EQ(d.num_classes, 4);
  EXPECT_EQ(d.class_names, (std::vector<std::string>{"a", "b", "c", "d"}));
  EXPECT_EQ(d.train->shape, (std::vector<int64_t>{3, 4, 5}));
  EXPECT_TRUE(torch::equal(d.train_y, tr.y));

  auto o = StreamOptions().name("permuted").dataset(path).num_tasks(3).seed(4).val_fraction(0.25);
  const TaskStream s = make_stream(o);
  ASSERT_EQ(s.size(), 3);
  EXPECT_EQ(s.input_shape, (std::vector<int64_t>{3, 4, 5}));
  EXPECT_EQ(s.num_classes, 4);
  EXPECT_EQ(s.scenario, Scenario::kDomainIncremental);
  EXPECT_EQ(s.tasks[0].train.size(), 30);
  EXPECT_EQ(s.tasks[0].val.size(), 10);
  const auto ref_train = reference_normalised(tr.x, mean, std);
  const auto ref_test = reference_normalised(te.x, mean, std);
  for (int64_t t = 0; t < 3; ++t) {
    const Task& task = s.tasks[t];
    EXPECT_TRUE(task.train.x.is_lazy());
    const auto perm = pixel_permutation(4, t, 60);
    auto expect = ref_train.index_select(0, task.train.ids).view({-1, 60}).index_select(1, perm).view({-1, 3, 4, 5});
    EXPECT_TRUE(torch::equal(task.train.slice(0, task.train.size()), expect)) << "task " << t;
    auto rows = torch::tensor({5, 0, 29, 5}, torch::kInt64);
    EXPECT_TRUE(torch::equal(task.train.gather(rows), expect.index_select(0, rows)));
    auto expect_test = ref_test.view({-1, 60}).index_select(1, perm).view({-1, 3, 4, 5});
    EXPECT_TRUE(torch::equal(task.test.slice(0, 12), expect_test));
    EXPECT_TRUE(torch::equal(task.train.y, tr.y.index_select(0, task.train.ids)));
  }
}

TEST(H5Dataset, FloatVectorsSplitWithFirstTaskClassesAndOrder) {
  TempDir dir;
  auto g = at::detail::createCPUGenerator(3);
  const Pair tr = {torch::randn({60, 6}, g), labels(60, 5)}, te = {torch::randn({20, 6}, g), labels(20, 5)};
  const std::string path = write_file(dir.file("f32.h5"), [&](H5::H5File& f) {
    write_pair(f, "", tr, te);
    set_doubles(f, "mean", {0.5});  // ignored: float data is used as it is
    set_doubles(f, "std", {2.0});
  });
  // "B2 Inc1" over the order 3, 0, 4, 1, 2.
  auto o = StreamOptions()
               .name("split")
               .dataset(path)
               .num_tasks(3)
               .first_task_classes(2)
               .classes_per_task(1)
               .class_order({3, 0, 4, 1, 2})
               .val_fraction(0);
  const TaskStream s = make_stream(o);
  EXPECT_EQ(s.scenario, Scenario::kTaskIncremental);
  EXPECT_EQ(s.input_shape, (std::vector<int64_t>{1, 1, 6}));
  EXPECT_EQ(s.num_classes, 5);  // global ids kept: class 4 is used
  ASSERT_EQ(s.size(), 3);
  EXPECT_EQ(s.tasks[0].classes, (std::vector<int64_t>{3, 0}));
  EXPECT_EQ(s.tasks[1].classes, (std::vector<int64_t>{4}));
  EXPECT_EQ(s.tasks[2].classes, (std::vector<int64_t>{1}));
  EXPECT_EQ(s.tasks[0].name, "split0-classes-3-0");
  for (const Task& t : s.tasks) {
    auto ys = t.train.y.contiguous();
    std::set<int64_t> got(ys.data_ptr<int64_t>(), ys.data_ptr<int64_t>() + ys.numel());
    EXPECT_EQ(got, std::set<int64_t>(t.classes.begin(), t.classes.end()));
    EXPECT_EQ(t.test.size(), 4 * int64_t(t.classes.size()));
    // Float data as it is, [B, 1, 1, D].
    EXPECT_TRUE(torch::equal(t.train.slice(0, t.train.size()), tr.x.index_select(0, t.train.ids).view({-1, 1, 1, 6})));
  }
  // More tasks than the classes allow.
  expect_error([&] { make_stream(StreamOptions(o).num_tasks(5)); }, {path, "at most 4 tasks", "got num_tasks 5"});
  expect_error([&] { make_stream(StreamOptions(o).class_order({0, 7})); }, {"class_order entry 7"});
  expect_error([&] { make_stream(StreamOptions(o).class_order({0, 0, 1})); }, {"lists class 0 twice"});
  // Vectors cannot be rotated.
  expect_error([&] { make_stream(StreamOptions().name("rotated").dataset(path).num_tasks(2)); },
               {path, "cannot be rotated"});
}

TEST(H5Dataset, SeededClassOrder) {
  auto o = StreamOptions().name("split").class_order_seed(7);
  auto a = split_class_order(o, 20), b = split_class_order(o, 20);
  EXPECT_EQ(a, b);
  auto sorted = a;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, split_class_order(StreamOptions(), 20));  // a permutation of 0..19
  EXPECT_NE(a, sorted);
  EXPECT_NE(a, split_class_order(StreamOptions(o).class_order_seed(8), 20));
}

TEST(H5Dataset, TasksRecipeReadsTheFilesTasks) {
  TempDir dir;
  const Pair t0 = u8_images(20, 1, 3, 3, 2, 5), t0e = u8_images(6, 1, 3, 3, 2, 6);
  Pair t1 = u8_images(30, 1, 3, 3, 3, 7), t1e = u8_images(9, 1, 3, 3, 3, 8);
  t1.y = t1.y + 1;  // classes 1..3
  t1e.y = t1e.y + 1;
  const std::string path = write_file(dir.file("tasks.h5"), [&](H5::H5File& f) {
    write_pair(f, "tasks/0/", t0, t0e);
    write_pair(f, "tasks/1/", t1, t1e);
  });
  auto o = StreamOptions().name("tasks").dataset(path).num_tasks(2).val_fraction(0.1).scenario("task");
  const TaskStream s = make_stream(o);
  ASSERT_EQ(s.size(), 2);
  EXPECT_EQ(s.num_classes, 4);
  EXPECT_EQ(s.tasks[0].classes, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(s.tasks[1].classes, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(s.tasks[1].train.size() + s.tasks[1].val.size(), 30);
  EXPECT_EQ(s.tasks[1].test.size(), 9);
  // No normalisation attributes: v / 255.
  auto expect = t1e.x.to(torch::kFloat64).div(255.0).to(torch::kFloat32);
  EXPECT_TRUE(torch::equal(s.tasks[1].test.slice(0, 9), expect));
  EXPECT_TRUE(torch::equal(s.tasks[1].test.y, t1e.y));
  expect_error([&] { make_stream(StreamOptions(o).num_tasks(3)); }, {path, "missing group 'tasks/2'"});
  expect_error([&] { make_stream(StreamOptions().name("tasks").num_tasks(2)); }, {"set dataset to a PATH.h5"});
  const std::string plain = write_file(dir.file("plain.h5"), [&](H5::H5File& f) { write_pair(f, "", t0, t0e); });
  expect_error([&] { make_stream(StreamOptions(o).dataset(plain)); }, {plain, "missing group 'tasks'"});
}

TEST(H5Dataset, RotatedRecipeOverUserImages) {
  TempDir dir;
  const Pair tr = u8_images(10, 2, 6, 6, 2, 9), te = u8_images(4, 2, 6, 6, 2, 10);
  const std::vector<double> mean = {0.3, 0.6}, std = {0.5, 0.4};
  const std::string path = write_file(dir.file("rot.h5"), [&](H5::H5File& f) {
    write_pair(f, "", tr, te);
    set_doubles(f, "mean", mean);
    set_doubles(f, "std", std);
  });
  const TaskStream s = make_stream(StreamOptions().name("rotated").dataset(path).num_tasks(2).rotation_step(90).val_fraction(0));
  // 90 degrees on an even grid is exactly rot90; normalisation after the rotation.
  auto scaled = te.x.to(torch::kFloat32).mul(1.0 / 255.0);
  auto expect = (torch::rot90(scaled, 1, {2, 3}) - torch::tensor({0.3f, 0.6f}).view({1, 2, 1, 1})) /
                torch::tensor({0.5f, 0.4f}).view({1, 2, 1, 1});
  EXPECT_TRUE(torch::allclose(s.tasks[1].test.slice(0, 4), expect, 1e-5, 1e-5));
  EXPECT_TRUE(torch::equal(s.tasks[0].test.slice(0, 4), reference_normalised(te.x, mean, std)));
}

TEST(H5Dataset, BadFilesGiveOneClearError) {
  TempDir dir;
  const Pair tr = u8_images(8, 1, 2, 2, 2, 1), te = u8_images(4, 1, 2, 2, 2, 2);
  auto bad = [&](const std::string& name, const std::function<void(H5::H5File&)>& fill,
                 const std::vector<std::string>& expect) {
    const std::string path = write_file(dir.file(name + ".h5"), fill);
    std::vector<std::string> parts = {"'" + path + "'"};
    parts.insert(parts.end(), expect.begin(), expect.end());
    expect_error([&] { load_h5_dataset(path); }, parts);
    // The same through a stream recipe.
    expect_error([&] { make_stream(StreamOptions().name("permuted").dataset(path).num_tasks(1)); }, parts);
  };
  bad("rank", [&](H5::H5File& f) { write_pair(f, "", {tr.x.view({8, 2, 2}), tr.y}, te); },
      {"dataset 'train/x'", "wrong rank 3"});
  bad("label_rank", [&](H5::H5File& f) { write_pair(f, "", tr, {te.x, te.y.view({2, 2})}); },
      {"dataset 'test/y'", "wrong rank 2"});
  bad("negative", [&](H5::H5File& f) { write_pair(f, "", {tr.x, tr.y.clone().index_fill_(0, torch::tensor({3}), -1)}, te); },
      {"dataset 'train/y'", "negative label -1", "example 3"});
  bad("range",
      [&](H5::H5File& f) {
        write_pair(f, "", tr, {te.x, te.y.clone().index_fill_(0, torch::tensor({2}), 5)});
        set_strings(f, "classes", {"a", "b", "c"});
      },
      {"dataset 'test/y'", "label 5 out of range", "example 2", "names 3 classes"});
  bad("mismatch", [&](H5::H5File& f) { write_pair(f, "", {tr.x, tr.y.slice(0, 0, 7)}, te); },
      {"N mismatch", "'train/x' has 8 examples but 'train/y' has 7"});
  bad("empty", [&](H5::H5File& f) { write_pair(f, "", tr, {te.x.slice(0, 0, 0), te.y.slice(0, 0, 0)}); },
      {"dataset 'test/x'", "empty split"});
  auto fx = torch::rand({8, 1, 2, 2});
  bad("nan", [&](H5::H5File& f) { write_pair(f, "", {fx.clone().index_fill_(0, torch::tensor({6}), NAN), tr.y}, {fx.slice(0, 0, 4), te.y}); },
      {"dataset 'train/x'", "NaN or Inf", "example 6"});
  bad("inf", [&](H5::H5File& f) { write_pair(f, "", {fx, tr.y}, {fx.slice(0, 0, 4).clone().fill_(INFINITY), te.y}); },
      {"dataset 'test/x'", "NaN or Inf", "example 0"});
  bad("no_test", [&](H5::H5File& f) {
        core::write_tensor(f, "train/x", tr.x);
        core::write_tensor(f, "train/y", tr.y);
      },
      {"missing group 'test'"});
  bad("no_y", [&](H5::H5File& f) {
        write_pair(f, "", tr, te);
        f.unlink("train/y");
      },
      {"missing dataset 'train/y'"});
  bad("float64", [&](H5::H5File& f) { write_pair(f, "", {tr.x.to(torch::kFloat64), tr.y}, te); },
      {"dataset 'train/x'", "unsupported dtype float64", "uint8 or float32"});
  bad("int_x", [&](H5::H5File& f) { write_pair(f, "", {tr.x.to(torch::kInt32), tr.y}, te); },
      {"dataset 'train/x'", "unsupported dtype int32"});
  bad("float_y", [&](H5::H5File& f) { write_pair(f, "", {tr.x, tr.y.to(torch::kFloat32)}, te); },
      {"dataset 'train/y'", "unsupported dtype float32", "labels must be integers"});
  bad("mean_len",
      [&](H5::H5File& f) {
        write_pair(f, "", tr, te);
        set_doubles(f, "mean", {0.1, 0.2});
        set_doubles(f, "std", {0.3, 0.3});
      },
      {"mean/std have 2 values", "has 1 channels"});
  bad("std_only",
      [&](H5::H5File& f) {
        write_pair(f, "", tr, te);
        set_doubles(f, "std", {0.3});
      },
      {"'std' is given without 'mean'"});
  bad("shapes", [&](H5::H5File& f) { write_pair(f, "", tr, {te.x.view({4, 1, 1, 4}), te.y}); },
      {"'train/x' has examples of shape [1, 2, 2] but 'test/x' has [1, 1, 4]"});

  // Not HDF5 at all / missing.
  const std::string text = dir.file("text.h5");
  std::ofstream(text) << "not hdf5\n";
  expect_error([&] { load_h5_dataset(text); }, {text, "is not an HDF5 file"});
  expect_error([&] { load_h5_dataset(dir.file("missing.h5")); }, {"missing.h5", "no such file"});
}

// A uint8 dataset of this shape whose data is never written (HDF5 allocates nothing): the shape is
// all the bounds look at, so a file claiming huge images costs nothing to make.
void declare_u8(H5::H5File& f, const std::string& path, const std::vector<hsize_t>& shape) {
  core::open_group(f, path.substr(0, path.rfind('/')), true);
  f.createDataSet(path, H5::PredType::STD_U8LE, H5::DataSpace(static_cast<int>(shape.size()), shape.data()));
}

TEST(H5Dataset, ImageSizesAreBoundedWhereTheyAreRead) {
  TempDir dir;
  const Pair te = u8_images(4, 1, 2, 2, 2, 2);
  auto error_for = [&](const std::string& name, const std::vector<hsize_t>& train_shape) {
    const std::string path = write_file(dir.file(name + ".h5"), [&](H5::H5File& f) {
      declare_u8(f, "train/x", train_shape);
      core::write_tensor(f, "train/y", labels(static_cast<int64_t>(train_shape[0]), 2));
      core::write_tensor(f, "test/x", te.x);
      core::write_tensor(f, "test/y", te.y);
    });
    std::string msg;
    try {
      load_h5_dataset(path);
    } catch (const c10::Error& e) {
      msg = e.what_without_backtrace();
    }
    return std::make_pair(path, msg);
  };
  const auto [wide, wide_msg] = error_for("wide", {2, 1, 3, 70000});
  EXPECT_EQ(wide_msg, "strata::tasks::load_h5_dataset(): '" + wide +
                          "': dataset 'train/x': shape [2, 1, 3, 70000]: width 70000 is out of range 1..65536");
  const auto [tall, tall_msg] = error_for("tall", {2, 3, 1000000, 1});
  EXPECT_EQ(tall_msg, "strata::tasks::load_h5_dataset(): '" + tall +
                          "': dataset 'train/x': shape [2, 3, 1000000, 1]: height 1000000 is out of range 1..65536");
  const auto [deep, deep_msg] = error_for("deep", {2, 100000, 2, 2});
  EXPECT_NE(deep_msg.find("'" + deep + "': dataset 'train/x': shape [2, 100000, 2, 2]: channels 100000 is out of range 1..65536"),
            std::string::npos) << deep_msg;
  const auto [flat, flat_msg] = error_for("flat", {2, 100000});
  EXPECT_NE(flat_msg.find("'" + flat + "': dataset 'train/x': shape [2, 100000]: D (values per example) 100000 is out of range"),
            std::string::npos) << flat_msg;
  // Every side in range, too many values in all (4 x 4096 x 4096 = 2^26).
  const auto [big, big_msg] = error_for("big", {2, 4, 4096, 4096});
  EXPECT_EQ(big_msg, "strata::tasks::load_h5_dataset(): '" + big +
                         "': dataset 'train/x': shape [2, 4, 4096, 4096]: examples of 67108864 values are too large "
                         "(at most 16777216 = C x H x W)");
  // The same function answers the callers that look before loading (the run's memory estimate).
  EXPECT_EQ(example_shape({5, 3, 32, 32}, "x"), (std::vector<int64_t>{3, 32, 32}));
  EXPECT_EQ(example_shape({5, 10}, "x"), (std::vector<int64_t>{1, 1, 10}));
  expect_error([] { example_shape({5, 3, 0, 32}, "file 'f.h5': 'train/x'"); },
               {"file 'f.h5': 'train/x': shape [5, 3, 0, 32]: height 0 is out of range 1..65536"});
  expect_error([] { example_shape({5}, "x"); }, {"x: wrong rank 1 (shape [5]; expected [N, C, H, W] or [N, D])"});
}

TEST(StreamOptions, RecipeAndBoundsMessages) {
  auto err = [](const StreamOptions& o, const std::string& what) { expect_error([&] { make_stream(o); }, {what}); };
  err(StreamOptions().num_tasks(10001), "num_tasks must be <= 10000, got 10001");
  err(StreamOptions().name("permuted-fmnist").dataset("/tmp/x.h5"), "stream 'permuted-fmnist' is built in");
  err(StreamOptions().name("split").classes_per_task(0), "classes_per_task must be in 1..");
  err(StreamOptions().name("split").first_task_classes(-1), "first_task_classes must be in 0..");
  err(StreamOptions().name("split").class_order_seed(-2), "class_order_seed must be >= -1");
  err(StreamOptions().name("split").num_tasks(4).first_task_classes(5).classes_per_task(2),
      "split has at most 3 tasks (10 classes, 5 in the first task, 2 per task)");
  err(StreamOptions().name("permuted").scenario("class"), "not supported by permuted");
  err(StreamOptions().name("split").scenario("domain"), "not supported by split");
  err(StreamOptions().name("bogus"), "recipe over the dataset option: split, permuted, rotated, tasks");
  EXPECT_EQ(recipe_names(), (std::vector<std::string>{"split", "permuted", "rotated", "tasks"}));
}

// The lazy stream hands out exactly the batches the materialised stream held.
TEST(LazySplits, PermutedAndRotatedBatchesEqualTheMaterialisedTensors) {
  SKIP_WITHOUT_FMNIST();
  const auto& d = load_fashion_mnist(kFmnistDir);
  const auto train_flat = d.train_images.view({-1, 784});
  auto old_x = [&](const torch::Tensor& ids, const torch::Tensor& perm) {
    auto x = train_flat.index_select(0, ids).to(torch::kFloat64).div(255.0).sub(0.2860).div(0.3530).to(torch::kFloat32);
    return (perm.defined() ? x.index_select(1, perm) : x).view({-1, 1, 28, 28});
  };
  auto g = at::detail::createCPUGenerator(11);
  const auto o = StreamOptions().num_tasks(3).seed(5).train_limit(2000);
  const TaskStream p = make_stream(o);
  std::vector<torch::Tensor> materialised;
  for (int64_t t = 0; t < 3; ++t) {
    const Split& tr = p.tasks[t].train;
    ASSERT_TRUE(tr.x.is_lazy());
    auto full = old_x(tr.ids, t == 0 ? torch::Tensor() : pixel_permutation(5, t));
    auto rows = torch::randint(0, tr.size(), {256}, g, torch::kInt64);
    EXPECT_TRUE(torch::equal(tr.gather(rows), full.index_select(0, rows))) << "task " << t;
    EXPECT_TRUE(torch::equal(tr.slice(100, 228), full.slice(0, 100, 228)));
    torch::Tensor buffer;
    EXPECT_TRUE(torch::equal(tr.x.slice(0, 64, buffer).clone(), full.slice(0, 0, 64)));
    EXPECT_TRUE(torch::equal(tr.x.slice(64, 128, buffer), full.slice(0, 64, 128)));  // reuses the buffer
    materialised.push_back(full);
  }
  // Joint training's concat stays lazy and hands out the rows of the concatenated tensors.
  const Split joint = concat({&p.tasks[0].train, &p.tasks[1].train, &p.tasks[2].train});
  EXPECT_TRUE(joint.x.is_lazy());
  const auto all = torch::cat(materialised);
  auto rows = torch::randint(0, joint.size(), {500}, g, torch::kInt64);
  EXPECT_TRUE(torch::equal(joint.gather(rows), all.index_select(0, rows)));
  EXPECT_TRUE(torch::equal(joint.x.materialise(), all));

  // Rotations: scale, rotate the batch, normalise (the order the stream always used).
  const TaskStream r = make_stream(StreamOptions().name("rotated-fmnist").num_tasks(3).train_limit(600));
  for (int64_t t = 1; t < 3; ++t) {
    const Split& tr = r.tasks[t].train;
    auto raw = train_flat.index_select(0, tr.ids).to(torch::kFloat32).mul_(1.0 / 255.0).view({-1, 1, 28, 28});
    auto full = rotate_images(raw, rotation_angles(StreamOptions().name("rotated-fmnist").num_tasks(3))[t])
                    .sub_(0.2860)
                    .div_(0.3530)
                    .contiguous();
    auto rrows = torch::randint(0, tr.size(), {200}, g, torch::kInt64);
    EXPECT_TRUE(torch::equal(tr.gather(rrows), full.index_select(0, rrows))) << "task " << t;
  }
}

TEST(LazySplits, RowsAreChecked) {
  auto src = std::make_shared<InputSource>();
  src->data = torch::zeros({4, 4}, torch::kUInt8);
  src->shape = {1, 2, 2};
  Inputs in(src, torch::tensor({0, 3}, torch::kInt64), {});
  EXPECT_EQ(in.sizes(), (std::vector<int64_t>{2, 1, 2, 2}));
  expect_error([&] { in.gather(torch::tensor({2}, torch::kInt64)); }, {"row 2 is out of range for 2 examples"});
  expect_error([&] { Inputs(src, torch::tensor({4}, torch::kInt64), {}); }, {"row 4 is out of range for 4 examples"});
}

}  // namespace
