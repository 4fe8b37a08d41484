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
  // W absorbed ΔW and the adapters are gone: the forward is the plain base Linear.
  auto fc1 = ad::find_layers(*model, "fc1")[0].layer;
  EXPECT_LT(max_abs_diff(fc1->weight, before.at("fc1.weight") + delta), 1e-6);
  EXPECT_TRUE(ad::adapted_layers(*model).empty());
  for (const auto& p : model->named_parameters()) EXPECT_EQ(p.key().find(".adapter."), std::string::npos) << p.key();
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
  // The next task attaches fresh adapters (B = 0: output unchanged) on the same layers.
  const auto merged = eval_logits(*model, s);
  TaskContext next{model, &s, 1, &opts};
  m->on_task_start(next);
  ASSERT_EQ(ad::adapters_of<ad::LoRAImpl>(*model).size(), 2u);
  for (auto& [name, a] : ad::adapters_of<ad::LoRAImpl>(*model)) {
    EXPECT_EQ(a->B.abs().sum().item<double>(), 0) << name;
    EXPECT_TRUE(a->A.requires_grad()) << name;
  }
  EXPECT_EQ(max_abs_diff(eval_logits(*model, s), merged), 0);
  EXPECT_FALSE(m->parameters(next).empty());
  std::filesystem::remove_all(run_dir);
}

TEST(LoRAMethod, FinalModelIsThePlainBaseAndResumeIsBitIdentical) {
  namespace fs = std::filesystem;
  auto root = fs::temp_directory_path() / ("strata_test_lora_resume_" + std::to_string(::getpid()));
  fs::remove_all(root);
  RunConfig c;
  c.out = root.string();
  c.name = "full";
  c.quiet = true;
  c.stream.name("synthetic").num_tasks(3).seed(5);
  c.model.hidden({32});
  c.train.optimizer("adam").lr(0.01).batch_size(32).epochs(1).seed(5);
  c.method = MethodConfig("lora", {{"rank", "4"}});  // dropout 0.1: the RNG matters
  Runner full(c);
  full.run();
  // After the last merge no adapter module is left: the forward is the base model's.
  auto& model = full.model();
  EXPECT_TRUE(ad::adapted_layers(*model).empty());
  {
    auto plain = strata::models::make_model(
        strata::models::ModelOptions().input_shape(full.stream().input_shape).num_classes(full.stream().num_classes).hidden({32}));
    torch::NoGradGuard g;
    auto src = model->named_parameters();
    for (auto& p : plain->named_parameters()) p.value().copy_(src[p.key()]);
    EXPECT_EQ(plain->named_parameters().size(), src.size());
    EXPECT_TRUE(torch::equal(eval_logits(*model, full.stream()), eval_logits(*plain, full.stream())));
  }
  // Killed during task 3: resume from v001 (no adapter state; fresh adapters drawn at task start
  // from the stored RNG state) gives the uninterrupted run's weights and matrix bit for bit.
  fs::copy(root / "full", root / "cut", fs::copy_options::recursive);
  fs::remove(root / "cut" / "versions" / "v002.h5");
  RunConfig c2 = read_run_config((root / "cut" / "config.ini").string());
  c2.out = root.string();
  c2.name = "cut";
  c2.quiet = true;
  Runner cut(c2);
  cut.resume();
  EXPECT_TRUE(torch::equal(full.accuracy_matrix(), cut.accuracy_matrix()));
  auto a = full.model()->named_parameters(), b = cut.model()->named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& p : a) EXPECT_TRUE(torch::equal(p.value(), b[p.key()])) << p.key();
  fs::remove_all(root);
}

TEST(LoRAMethod, RunnerLearnsSyntheticStream) {
  const double diag = runner_diagonal("lora", {{"rank", "4"}, {"dropout", "0"}});
  EXPECT_GT(diag, 0.6);  // 4 classes: chance is 0.25
}
