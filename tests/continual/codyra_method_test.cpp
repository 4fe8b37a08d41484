// `codyra` method: κ schedule wiring, pruning exactly the zeroed ranks, merge invariant, frozen base,
// save/load, a Runner run.
#include "adapters/codyra.h"
#include "continual/codyra_method.h"
#include "tests/continual/adapter_method_helpers.h"

using namespace strata::continual;
using namespace strata::run;
using namespace strata::continual::testing;
namespace ad = strata::adapters;

TEST(CoDyRAMethod, OptionsAndTargets) {
  auto s = small_stream();
  auto vit = small_vit(s);
  auto m = make_method("codyra", {});
  m->attach(vit);
  auto* cm = dynamic_cast<CoDyRAMethod*>(m.get());
  ASSERT_NE(cm, nullptr);
  EXPECT_EQ(cm->layers(), (std::vector<std::string>{"blocks.0.attn.q", "blocks.0.attn.k", "blocks.0.attn.v",
                                                    "blocks.0.attn.o", "blocks.0.mlp.fc1", "blocks.0.mlp.fc2"}));
  EXPECT_DOUBLE_EQ(cm->schedule().kappa_max(), 0.005);
  EXPECT_EQ(cm->shrink_mode(), ad::ShrinkMode::Paper);
  EXPECT_EQ(ad::adapters_of<ad::CoDyRAImpl>(*vit)[0].second->rank(), 16);
  EXPECT_THROW(make_method("codyra", {{"shrink", "hard"}}), c10::Error);
  EXPECT_THROW(make_method("codyra", {{"dense_fraction", "1.5"}}), c10::Error);
  auto cc = make_method("codyra", {{"shrink", "code-compat"}});
  EXPECT_EQ(dynamic_cast<CoDyRAMethod*>(cc.get())->shrink_mode(), ad::ShrinkMode::CodeCompat);
}

TEST(CoDyRAMethod, PrunesExactlyZeroedRanksAndMergeKeepsOutputs) {
  auto s = small_stream();
  auto model = small_mlp(s);
  // 360 examples / 16 = 23 steps x 6 epochs = 138 steps: dense 69, hop 1, κ ramps to κ_max; the
  // cumulative shrinkage (~1) zeroes the smaller of the N(0,1) gates but not all of them.
  const std::map<std::string, std::string> opts = {{"rank", "8"}, {"kappa_max", "0.03"}, {"num_kappas", "20"}};
  auto m = make_method("codyra", opts);
  m->attach(model);
  const auto before = base_snapshot(*model);
  auto train = fast_train().epochs(6);
  TaskContext ctx{model, &s, 0, &train};
  const std::string run_dir = fresh_dir("codyra_store");
  strata::subspaces::StoreRecorder recorder(run_dir + "/subspaces.h5");
  ctx.recorder = &recorder;
  train_without_end(*m, ctx, train);
  auto* cm = dynamic_cast<CoDyRAMethod*>(m.get());
  EXPECT_EQ(cm->schedule().total_steps(), 6 * ((s.tasks[0].train.size() + 15) / 16));
  for (const auto& [k, v] : base_snapshot(*model))
    if (k.rfind("head.", 0) != 0) {
      EXPECT_EQ(max_abs_diff(v, before.at(k)), 0) << k;
    }
  std::map<std::string, int64_t> nonzero;
  std::map<std::string, torch::Tensor> delta;
  int64_t total_nonzero = 0;
  for (auto& [name, a] : ad::adapters_of<ad::CoDyRAImpl>(*model)) {
    nonzero[name] = a->w.ne(0).sum().item<int64_t>();
    total_nonzero += nonzero[name];
    delta[name] = a->delta_weight().detach().clone();
  }
  EXPECT_LT(total_nonzero, 16);  // the ramp to κ = 0.03 zeroed some of the 16 N(0,1) gates
  EXPECT_GT(total_nonzero, 0);
  const auto unmerged = eval_logits(*model, s);
  m->on_task_end(ctx);
  EXPECT_LT(max_abs_diff(eval_logits(*model, s), unmerged), 1e-5);
  const auto rep = m->report()["tasks"][0];
  for (const auto& [name, n] : nonzero) {
    EXPECT_EQ(rep["ranks_kept"][name].get<int64_t>(), n) << name;
    auto layer = ad::find_layers(*model, name)[0].layer;
    EXPECT_LT(max_abs_diff(layer->weight, before.at(name + ".weight") + delta[name]), 1e-6) << name;
  }
  EXPECT_EQ(rep["kept_total"].get<int64_t>(), total_nonzero);
  // Only the kept ranks are stored; a layer with every rank pruned has no record.
  auto store = strata::subspaces::SubspaceStore::open(recorder.path());
  for (const auto& [name, n] : nonzero) {
    ASSERT_EQ(store.has("task00", name), n > 0) << name;
    if (n > 0) expect_factor_record(store.get("task00", name), delta[name], n);
  }
  EXPECT_TRUE(rep["shrinkage"].get<bool>());
  EXPECT_DOUBLE_EQ(rep["final_kappa"].get<double>(), 0.03);
  // Merged and removed: nothing of the adapters is left in the forward path.
  EXPECT_TRUE(ad::adapted_layers(*model).empty());
  expect_round_trip("codyra", opts, *m, model, s, false);
  // Fresh full-rank adapters for the next task.
  TaskContext next{model, &s, 1, &train};
  m->on_task_start(next);
  ASSERT_FALSE(ad::adapters_of<ad::CoDyRAImpl>(*model).empty());
  for (auto& [name, a] : ad::adapters_of<ad::CoDyRAImpl>(*model)) EXPECT_EQ(a->rank(), 8);
  std::filesystem::remove_all(run_dir);
}

TEST(CoDyRAMethod, ShortTaskHasNoShrinkage) {
  // N - dense < num_kappas: the code's schedule never leaves κ = 0; all ranks survive, flagged.
  auto s = small_stream();
  auto model = small_mlp(s);
  auto m = make_method("codyra", {{"rank", "4"}, {"kappa_max", "10"}});
  m->attach(model);
  auto train = fast_train();
  TaskContext ctx{model, &s, 0, &train};
  train_without_end(*m, ctx, train);
  m->on_task_end(ctx);
  const auto rep = m->report()["tasks"][0];
  EXPECT_FALSE(rep["shrinkage"].get<bool>());
  EXPECT_EQ(rep["kept_total"].get<int64_t>(), 8);
}

TEST(CoDyRAMethod, RunnerLearnsSyntheticStream) {
  EXPECT_GT(runner_diagonal("codyra", {{"rank", "4"}}), 0.6);
}
