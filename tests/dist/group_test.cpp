// strata::dist::Group with two workers as two threads of this process, on 127.0.0.1: the bucketed
// gradient sum, the sharded gather, broadcast, the agreement check, a lost worker, and the trainer's
// batch sharding (with and without dropout, and --pretrain's) against one process.
#include "continual/lora_method.h"
#include "continual/naive.h"
#include "continual/trainer.h"
#include "dist/group.h"
#include "dist/launch.h"
#include "run/pretrain.h"
#include "tasks/streams.h"
#include "tests/support.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <mutex>
#include <thread>

using namespace strata;
using strata::testing::error_of;

namespace {

// Runs body(group) on ranks 0..world-1, one thread each; returns each rank's error message ("" = none).
std::vector<std::string> on_workers(int64_t world, const std::function<void(dist::Group&)>& body,
                                    double timeout = 20, int64_t bucket_bytes = 25 << 20) {
  const int64_t port = dist::free_port();
  std::vector<std::string> errors(world);
  std::vector<std::thread> threads;
  for (int64_t r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      errors[r] = error_of([&] {
        dist::Group g(dist::GroupOptions().rank(r).world_size(world).master_port(port).timeout(timeout).bucket_bytes(
            bucket_bytes));
        body(g);
      });
    });
  for (auto& t : threads) t.join();
  return errors;
}

}  // namespace

TEST(DistGroup, BucketedGradientSumKeepsUndefinedGradients) {
  std::vector<torch::Tensor> results(4);
  // 16-byte buckets: every parameter in a bucket of its own, plus one with two small ones.
  const auto errors = on_workers(2, [&](dist::Group& g) {
    const double r = static_cast<double>(g.rank());
    std::vector<torch::Tensor> params{torch::zeros({3, 2}), torch::zeros({2}), torch::zeros({1}), torch::zeros({4})};
    for (auto& p : params) p.set_requires_grad(true);
    params[0].mutable_grad() = torch::full({3, 2}, 1.0 + r);
    params[1].mutable_grad() = torch::arange(2, torch::kFloat32) * (r + 1);
    if (g.rank() == 0) params[2].mutable_grad() = torch::full({1}, 5.0);  // only rank 0 reached it
    // params[3]: no gradient on any worker
    auto stats = torch::tensor({1.5 * (r + 1), r}, torch::kFloat64);
    g.all_reduce_gradients(params, stats);
    EXPECT_TRUE(torch::equal(stats, torch::tensor({4.5, 1.0}, torch::kFloat64)));
    EXPECT_TRUE(torch::equal(params[0].grad(), torch::full({3, 2}, 3.0)));
    EXPECT_TRUE(torch::equal(params[1].grad(), torch::tensor({0.0f, 3.0f})));
    ASSERT_TRUE(params[2].grad().defined());
    EXPECT_EQ(params[2].grad().item<float>(), 5.0f);
    EXPECT_FALSE(params[3].grad().defined());
    EXPECT_EQ(g.reduce_calls(), 1);
  }, 20, 16);
  EXPECT_EQ(errors, std::vector<std::string>(2));
}

TEST(DistGroup, GatherRowsOfUnequalSharesAndBroadcast) {
  const auto errors = on_workers(3, [&](dist::Group& g) {
    // 7 rows over 3 workers: shares of 2, 2 and 3 rows.
    const auto [first, last] = continual::shard_range(7, g.rank(), 3);
    auto local = torch::arange(first, last, torch::kFloat64).unsqueeze(1).repeat({1, 2});
    const auto all = g.all_gather_rows(local, 7);
    EXPECT_TRUE(torch::equal(all, torch::arange(7, torch::kFloat64).unsqueeze(1).repeat({1, 2})));
    std::vector<torch::Tensor> b{torch::full({4}, static_cast<int64_t>(10 + g.rank()), torch::kInt64)};
    g.broadcast(b, 2);
    EXPECT_TRUE(torch::equal(b[0], torch::full({4}, 12, torch::kInt64)));
    g.barrier();
  });
  EXPECT_EQ(errors, std::vector<std::string>(3));
}

TEST(DistGroup, DisagreeingWorkersAreAnErrorNamingTheRank) {
  const auto errors = on_workers(3, [&](dist::Group& g) {
    auto t = torch::ones({5});
    if (g.rank() == 2) t[3] = 1.0001f;
    g.check_agreement(dist::checksum({torch::zeros({2})}, "same"), "the text");
    g.check_agreement(dist::checksum({t}), "the test tensor");
  });
  for (const auto& e : errors) {
    EXPECT_NE(e.find("disagree on the test tensor: rank(s) 2 differ from rank 0"), std::string::npos) << e;
  }
}

TEST(DistGroup, ChecksumSeesValuesShapesAndText) {
  const auto a = torch::arange(6, torch::kFloat32);
  EXPECT_EQ(dist::checksum({a}), dist::checksum({a.clone()}));
  EXPECT_NE(dist::checksum({a}), dist::checksum({a.reshape({2, 3})}));
  EXPECT_NE(dist::checksum({a}), dist::checksum({a.to(torch::kFloat64)}));
  EXPECT_NE(dist::checksum({a}, "x"), dist::checksum({a}, "y"));
  auto b = a.clone();
  b[5] = std::nextafter(5.0f, 6.0f);
  EXPECT_NE(dist::checksum({a}), dist::checksum({b}));
}

TEST(DistGroup, ALostWorkerIsAnErrorOnTheOthers) {
  const auto errors = on_workers(2, [&](dist::Group& g) {
    g.barrier();
    if (g.rank() == 1) return;  // leaves: its process group closes its connections
    auto t = torch::ones({3});
    g.all_reduce_sum(t);
  }, 10);
  EXPECT_EQ(errors[1], "");
  EXPECT_NE(errors[0].find("rank 0 of 2: all-reduce failed: another worker died"), std::string::npos) << errors[0];
}

TEST(DistGroup, OptionsFromTheTorchrunEnvironment) {
  ::unsetenv("WORLD_SIZE");
  EXPECT_FALSE(dist::options_from_env().has_value());
  ::setenv("WORLD_SIZE", "4", 1);
  ::setenv("RANK", "3", 1);
  ::setenv("MASTER_ADDR", "10.0.0.2", 1);
  ::setenv("MASTER_PORT", "29611", 1);
  ::unsetenv("LOCAL_RANK");
  auto o = dist::options_from_env();
  ASSERT_TRUE(o.has_value());
  EXPECT_EQ(o->rank(), 3);
  EXPECT_EQ(o->local_rank(), 3);
  EXPECT_EQ(o->world_size(), 4);
  EXPECT_EQ(o->master_addr(), "10.0.0.2");
  EXPECT_EQ(o->master_port(), 29611);
  ::setenv("RANK", "four", 1);
  EXPECT_NE(error_of([] { dist::options_from_env(); }).find("RANK='four' is not an integer"), std::string::npos);
  ::setenv("RANK", "4", 1);
  EXPECT_NE(error_of([] { dist::options_from_env()->validate(); }).find("RANK must be in [0, WORLD_SIZE = 4)"),
            std::string::npos);
  for (const char* v : {"WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT"}) ::unsetenv(v);
}

namespace {

// Every parameter of a trained model, flattened, and its last epoch's numbers.
struct Trained {
  torch::Tensor weights;
  continual::EpochStats last;
};

torch::Tensor flat_parameters(const models::Model& model) {
  std::vector<torch::Tensor> flat;
  for (const auto& p : model->parameters()) flat.push_back(p.detach().reshape({-1}));
  return torch::cat(flat);
}

// Worker threads share the global generator, so models (and their adapters) are made under one lock,
// each from seed 0; training draws only from its own generators (shuffles, per-step dropout seeds).
std::mutex init_mutex;

continual::TrainOptions train_options() {
  continual::TrainOptions o;
  o.lr(0.1).momentum(0.9).batch_size(10).epochs(2);
  return o;
}

models::Model make_mlp(const tasks::TaskStream& stream) {
  torch::manual_seed(0);
  return models::make_model(
      models::ModelOptions().input_shape(stream.input_shape).num_classes(stream.num_classes).hidden({16}));
}

Trained train_one_task(const tasks::TaskStream& stream, const std::function<std::unique_ptr<continual::Method>()>& make,
                       continual::DataParallel* parallel) {
  const auto o = train_options();
  continual::TaskContext ctx;
  ctx.stream = &stream;
  ctx.train = &o;
  ctx.parallel = parallel;
  std::unique_ptr<continual::Method> method;
  {
    std::lock_guard<std::mutex> lock(init_mutex);
    ctx.model = make_mlp(stream);
    method = make();
    method->attach(ctx.model);
    method->on_task_start(ctx);
  }
  std::vector<continual::EpochStats> epochs;
  continual::train_task(ctx, *method, o, [&](const continual::EpochStats& s) { epochs.push_back(s); });
  return {flat_parameters(ctx.model), epochs.back()};
}

tasks::TaskStream small_stream() {
  return tasks::make_stream(tasks::StreamOptions().name("synthetic").num_tasks(1).seed(3).train_limit(97).val_fraction(0));
}

std::unique_ptr<continual::Method> lora(double dropout) {
  return std::make_unique<continual::LoRAMethod>(continual::LoRAMethodOptions().dropout(dropout));
}

}  // namespace

// The trainer's sharding: two workers with a global batch of 10 (the last batch of 7 rows splits 3/4)
// end with the one-process model's weights, up to float round-off: plain fine-tuning, and LoRA with
// dropout 0.1 (every worker draws the global batch's mask and keeps its rows).
TEST(DistGroup, TwoWorkersTrainLikeOneProcess) {
  const auto stream = small_stream();
  const std::vector<std::pair<std::string, std::function<std::unique_ptr<continual::Method>()>>> methods{
      {"naive", [] { return std::make_unique<continual::Naive>(); }},
      {"lora dropout 0.1", [] { return lora(0.1); }}};
  for (const auto& entry : methods) {
    const std::string& name = entry.first;
    const auto& make = entry.second;
    const Trained single = train_one_task(stream, make, nullptr);
    std::vector<Trained> got(2);
    const auto errors = on_workers(2, [&](dist::Group& g) {
      torch::set_num_threads(1);
      got[g.rank()] = train_one_task(stream, make, &g);
    });
    ASSERT_EQ(errors, std::vector<std::string>(2)) << name;
    EXPECT_TRUE(torch::equal(got[0].weights, got[1].weights)) << name;  // the workers agree bit for bit
    EXPECT_TRUE(torch::allclose(got[0].weights, single.weights, 1e-4, 1e-5))
        << name << ": " << (got[0].weights - single.weights).abs().max();
    EXPECT_NEAR(got[0].last.loss, single.last.loss, 1e-4) << name;
    EXPECT_DOUBLE_EQ(got[0].last.train_acc, single.last.train_acc) << name;
  }
  // Not vacuous: training moved the weights, and dropout changes LoRA's result by far more than the
  // tolerance above.
  const Trained no_dropout = train_one_task(stream, [] { return lora(0.0); }, nullptr);
  const Trained with_dropout = train_one_task(stream, [] { return lora(0.1); }, nullptr);
  EXPECT_FALSE(torch::allclose(no_dropout.weights, with_dropout.weights, 1e-2, 1e-3));
  const Trained naive = train_one_task(stream, [] { return std::make_unique<continual::Naive>(); }, nullptr);
  torch::Tensor untrained;
  {
    std::lock_guard<std::mutex> lock(init_mutex);
    untrained = flat_parameters(make_mlp(stream));
  }
  EXPECT_FALSE(torch::allclose(naive.weights, untrained, 1e-2, 1e-3));
}

// --pretrain is sharded like a task: one gradient all-reduce per step on each worker, and the
// one-process pre-trained weights up to float round-off.
TEST(DistGroup, PretrainIsShardedLikeATask) {
  const auto stream = small_stream();
  const tasks::StreamOptions stream_options = tasks::StreamOptions().name("synthetic");
  auto pretrained = [&](continual::DataParallel* parallel) {
    models::Model model;
    {
      std::lock_guard<std::mutex> lock(init_mutex);
      model = make_mlp(stream);
    }
    EXPECT_EQ(run::pretrain(model, "task:0", 2, train_options(), stream, stream_options, parallel), 97);
    return flat_parameters(model);
  };
  const torch::Tensor single = pretrained(nullptr);
  std::vector<torch::Tensor> got(2);
  std::vector<int64_t> reduces(2);
  const auto errors = on_workers(2, [&](dist::Group& g) {
    torch::set_num_threads(1);
    got[g.rank()] = pretrained(&g);
    reduces[g.rank()] = g.reduce_calls();
  });
  ASSERT_EQ(errors, std::vector<std::string>(2));
  EXPECT_EQ(reduces, (std::vector<int64_t>{20, 20}));  // 2 epochs of 10 global batches
  EXPECT_TRUE(torch::equal(got[0], got[1]));
  EXPECT_TRUE(torch::allclose(got[0], single, 1e-4, 1e-5)) << (got[0] - single).abs().max();
  std::lock_guard<std::mutex> lock(init_mutex);
  EXPECT_FALSE(torch::allclose(single, flat_parameters(make_mlp(stream)), 1e-2, 1e-3));
}
