// `lora` method: layer selection, frozen base, merge at task end, save/load, a Runner run.
#include "adapters/lora.h"
#include "continual/lora_method.h"
#include "tests/continual/adapter_method_helpers.h"

using namespace strata::continual;
using namespace strata::run;
using namespace strata::continual::testing;
namespace ad = strata::adapters;

TEST(LoRAMethod, AutoTargetIsAttentionQVOnVitAndHiddenLayersOnMlp) {
  auto s = small_stream();
  auto vit = small_vit(s);
  auto m = make_method("lora", {});
  m->attach(vit);
  auto* lm = dynamic_cast<LoRAMethod*>(m.get());
  ASSERT_NE(lm, nullptr);
  EXPECT_EQ(lm->layers(), (std::vector<std::string>{"blocks.0.attn.q", "blocks.0.attn.v"}));
  EXPECT_EQ(lm->adapter_options().rank(), 8);
  EXPECT_DOUBLE_EQ(lm->adapter_options().alpha(), 32.0);
  // The optimizer sees exactly the adapter factors and the head, and nothing frozen.
  TaskContext ctx;
  ctx.model = vit;
  auto params = m->parameters(ctx);
  int64_t n = 0;
  for (auto& p : params) {
    EXPECT_TRUE(p.requires_grad());
    n += p.numel();
  }
  const int64_t adapter = 2 * 8 * (16 + 16);
  const int64_t head = 16 * s.num_classes + s.num_classes;
  EXPECT_EQ(n, adapter + head);
  EXPECT_EQ(ad::count_parameters(*vit, true), adapter + head);

  auto mlp = small_mlp(s);
  auto m2 = make_method("lora", {{"train_head", "false"}});
  m2->attach(mlp);
  EXPECT_EQ(dynamic_cast<LoRAMethod*>(m2.get())->layers(), (std::vector<std::string>{"fc1", "fc2"}));
  EXPECT_EQ(ad::count_parameters(*mlp, true), 8 * (64 + 24) + 8 * (24 + 24));  // synthetic inputs: 64 features
  for (auto& p : mlp->named_parameters())
    EXPECT_EQ(p.value().requires_grad(), p.key().find(".adapter.") != std::string::npos) << p.key();

  EXPECT_THROW(make_method("lora", {{"rank", "0"}}), c10::Error);
  EXPECT_THROW(make_method("lora", {{"ranks", "4"}}), c10::Error);
  auto bad = make_method("lora", {{"target", "nothing.here"}});
  EXPECT_THROW(bad->attach(mlp), c10::Error);
}

TEST(LoRAMethod, BaseFrozenDuringTaskAndMergeKeepsOutputs) {
  auto s = small_stream();
  auto model = small_mlp(s);
  auto m = make_method("lora", {{"rank", "4"}, {"dropout", "0"}});
  m->attach(model);
  const auto before = base_snapshot(*model);
  TaskContext ctx{model, &s, 0, nullptr};
  auto opts = fast_train();
  ctx.train = &opts;
  const std::string run_dir = fresh_dir("lora_store");
  strata::subspaces::StoreRecorder recorder(run_dir + "/subspaces.h5");
  ctx.recorder = &recorder;
  train_without_end(*m, ctx, opts);
  // Only the head moved; fc1/fc2 base weights are bit-identical.
  for (const auto& [k, v] : base_snapshot(*model)) {
    if (k.rfind("head.", 0) == 0) {
      EXPECT_GT(max_abs_diff(v, before.at(k)), 0) << k;
    } else {
      EXPECT_EQ(max_abs_diff(v, before.at(k)), 0) << k;
    }
  }
  const auto unmerged = eval_logits(*model, s);
  auto delta = ad::adapters_of<ad::LoRAImpl>(*model)[0].second->delta_weight().clone();
  EXPECT_GT(delta.norm().item<double>(), 0);
  m->on_task_end(ctx);
  EXPECT_LT(max_abs_diff(eval_logits(*model, s), unmerged), 1e-5);
  // W absorbed ΔW; the adapter is fresh (B = 0) and still attached for the next task.
  auto fc1 = ad::find_layers(*model, "fc1")[0].layer;
  EXPECT_LT(max_abs_diff(fc1->weight, before.at("fc1.weight") + delta), 1e-6);
  auto a = ad::adapters_of<ad::LoRAImpl>(*model)[0].second;
  EXPECT_EQ(a->B.abs().sum().item<double>(), 0);
  // The task's factors went to the subspace store, ΔW = B·A with the scale folded into B.
  auto store = strata::subspaces::SubspaceStore::open(recorder.path());
  ASSERT_EQ(store.tasks(), (std::vector<std::string>{"task00"}));
  EXPECT_EQ(store.layers("task00"), (std::vector<std::string>{"fc1", "fc2"}));
  const auto rec = store.get("task00", "fc1");
  EXPECT_EQ(rec.method, "lora");
  expect_factor_record(rec, delta, 4);
  const auto rep = m->report();
  ASSERT_EQ(rep["tasks"].size(), 1u);
  EXPECT_NEAR(rep["tasks"][0]["delta_norm"]["fc1"].get<double>(), delta.norm().item<double>(), 1e-4);
  expect_round_trip("lora", {{"rank", "4"}, {"dropout", "0"}}, *m, model, s, false);
  std::filesystem::remove_all(run_dir);
}

TEST(LoRAMethod, RunnerLearnsSyntheticStream) {
  const double diag = runner_diagonal("lora", {{"rank", "4"}, {"dropout", "0"}});
  EXPECT_GT(diag, 0.6);  // 4 classes: chance is 0.25
}
