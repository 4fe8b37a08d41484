#pragma once
// Shared helpers of the adapter-method tests (lora, olora, codyra, mora).
#include "adapters/inject.h"
#include "continual/method.h"
#include "run/runner.h"
#include "continual/trainer.h"
#include "subspaces/store.h"
#include "tasks/streams.h"
#include "tests/support.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>

namespace strata::continual::testing {
using namespace strata::run;

inline tasks::TaskStream small_stream(int64_t tasks = 2) {
  return tasks::make_stream(tasks::StreamOptions().name("synthetic").num_tasks(tasks).seed(5));
}

inline strata::models::Model small_mlp(const tasks::TaskStream& s, int64_t seed = 0) {
  torch::manual_seed(seed);
  return strata::models::make_model(strata::models::ModelOptions().input_shape(s.input_shape).num_classes(s.num_classes).hidden({24, 24}).bias(true));
}

inline strata::models::Model small_vit(const tasks::TaskStream& s, int64_t seed = 0) {
  torch::manual_seed(seed);
  // synthetic images are 1x8x8: patch 4 -> 4 tokens + CLS.
  return strata::models::make_model(
      strata::models::ModelOptions().arch("vit").input_shape(s.input_shape).num_classes(s.num_classes).patch(4).dim(16).depth(1).heads(2));
}

inline std::unique_ptr<Method> make_method(const std::string& name, std::map<std::string, std::string> opts) {
  return builtin_methods().make(MethodConfig(name, std::move(opts)));
}

inline TrainOptions fast_train() { return TrainOptions().optimizer("adam").lr(0.01).batch_size(16).epochs(1).seed(1); }

/// Every named parameter and buffer of the model that is NOT part of an adapter, cloned.
inline std::map<std::string, torch::Tensor> base_snapshot(const strata::models::ModelImpl& model) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : model.named_parameters())
    if (p.key().find(".adapter.") == std::string::npos) out[p.key()] = p.value().detach().clone();
  return out;
}

inline double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

/// Eval-mode logits on a task's test inputs.
inline torch::Tensor eval_logits(strata::models::ModelImpl& model, const tasks::TaskStream& s, int64_t task = 0) {
  torch::NoGradGuard no_grad;
  model.eval();
  auto out = model.forward(s.tasks.at(task).test.x.slice(0, 0, 64));
  model.train();
  return out;
}

/// A fresh empty folder (for a test subspaces.h5).
inline std::string fresh_dir(const std::string& name) { return strata::testing::fresh_dir("test_" + name).string(); }

/// A subspaces.h5 record of adapter factors: extra B·A equals `update` [m, n], the basis is orthonormal
/// with `rank` columns, and (delta_basis) it spans the input side of the update.
inline void expect_factor_record(const subspaces::SubspaceRecord& r, const torch::Tensor& update, int64_t rank,
                                 bool delta_basis = true) {
  ASSERT_EQ(r.side, "input");
  ASSERT_EQ(r.rank(), rank);
  const auto& A = r.extra.at("A");
  const auto& B = r.extra.at("B");
  EXPECT_LT(max_abs_diff(B.matmul(A), update), 1e-5);
  EXPECT_LT(max_abs_diff(r.basis.t().matmul(r.basis), torch::eye(rank)), 1e-4);
  if (delta_basis) {
    const auto off = update - update.matmul(r.basis).matmul(r.basis.t());
    EXPECT_LT(off.abs().max().item<double>(), 1e-4 * std::max(1.0, update.abs().max().item<double>()));
  }
}

/// Runs on_task_start + train_task for task t (no on_task_end).
inline void train_without_end(Method& m, TaskContext& ctx, const TrainOptions& opts) {
  m.on_task_start(ctx);
  train_task(ctx, m, opts);
}

/// save() of `trained` loaded into a fresh model of another seed (attach, load, then every model tensor
/// copied by name as the Runner does) must give identical outputs; also checks shapes match by name.
inline void expect_round_trip(const std::string& name, const std::map<std::string, std::string>& opts, Method& trained,
                              strata::models::Model& model, const tasks::TaskStream& s, bool vit) {
  const auto state = trained.save();
  strata::models::Model other = vit ? small_vit(s, 99) : small_mlp(s, 99);
  auto m2 = make_method(name, opts);
  m2->attach(other);
  m2->load(state, other);
  auto src_p = model->named_parameters();
  auto src_b = model->named_buffers();
  {
    torch::NoGradGuard no_grad;
    for (auto& p : other->named_parameters()) {
      ASSERT_TRUE(src_p.contains(p.key())) << p.key();
      ASSERT_EQ(src_p[p.key()].sizes(), p.value().sizes()) << p.key();
      p.value().copy_(src_p[p.key()]);
    }
    for (auto& b : other->named_buffers()) {
      ASSERT_TRUE(src_b.contains(b.key())) << b.key();
      ASSERT_EQ(src_b[b.key()].sizes(), b.value().sizes()) << b.key();
      b.value().copy_(src_b[b.key()]);
    }
  }
  EXPECT_EQ(other->named_parameters().size(), src_p.size());
  EXPECT_EQ(other->named_buffers().size(), src_b.size());
  EXPECT_LT(max_abs_diff(eval_logits(*model, s), eval_logits(*other, s)), 1e-6);
  EXPECT_EQ(m2->report().dump(), trained.report().dump());
}

/// A short Runner run on the synthetic stream; returns the mean diagonal accuracy a[t][t].
inline double runner_diagonal(const std::string& name, const std::map<std::string, std::string>& opts,
                              const std::string& arch = "mlp") {
  namespace fs = std::filesystem;
  auto out = fs::temp_directory_path() / ("strata_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(out);
  RunConfig c;
  c.out = out.string();
  c.name = "run";
  c.quiet = true;
  c.stream.name("synthetic").num_tasks(3).seed(3);
  c.model.arch(arch).hidden({32});
  if (arch == "vit") c.model.patch(4).dim(16).depth(1).heads(2);
  c.train.optimizer("adam").lr(0.01).batch_size(16).epochs(3).seed(7);
  c.method = MethodConfig(name, opts);
  Runner runner(c);
  runner.run();
  const auto R = runner.accuracy_matrix();
  fs::remove_all(out);
  return R.diagonal().mean().item<double>();
}

}  // namespace strata::continual::testing
