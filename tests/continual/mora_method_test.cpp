// `mora` method: atoms appended per task, earlier atoms frozen, top-k routing, activation report,
// save/load of the grown bank, a Runner run.
#include "adapters/mora.h"
#include "continual/mora_method.h"
#include "tests/continual/adapter_method_helpers.h"

using namespace strata::continual;
using namespace strata::run;
using namespace strata::continual::testing;
namespace ad = strata::adapters;

TEST(MoRAMethod, AtomsPerTaskFrozenBankAndTopK) {
  auto s = small_stream(2);
  auto model = small_vit(s);
  const std::map<std::string, std::string> opts = {{"rank", "4"}, {"top_k", "3"}, {"report_samples", "32"}};
  auto m = make_method("mora", opts);
  m->attach(model);
  EXPECT_EQ(dynamic_cast<MoRAMethod*>(m.get())->layers().size(), 6u);
  const auto before = base_snapshot(*model);
  auto train = fast_train();
  TaskContext ctx{model, &s, 0, &train};
  const std::string run_dir = fresh_dir("mora_store");
  strata::subspaces::StoreRecorder recorder(run_dir + "/subspaces.h5");
  ctx.recorder = &recorder;
  train_without_end(*m, ctx, train);
  for (auto& [name, a] : ad::adapters_of<ad::MoRAImpl>(*model)) {
    EXPECT_EQ(a->new_atoms(), 4) << name;
    EXPECT_EQ(a->bank_atoms(), 0) << name;
  }
  m->on_task_end(ctx);
  std::map<std::string, torch::Tensor> bank;
  for (auto& [name, a] : ad::adapters_of<ad::MoRAImpl>(*model)) {
    EXPECT_EQ(a->bank_atoms(), 4) << name;
    EXPECT_EQ(a->new_atoms(), 0) << name;
    bank[name] = a->B_old.clone();
  }
  {
    // Task 1's atoms are in the store: keys A [4, n], values B [m, 4]; basis = span of the keys.
    auto store = strata::subspaces::SubspaceStore::open(recorder.path());
    auto q = ad::adapters_of<ad::MoRAImpl>(*model)[0].second;
    const auto rec = store.get("task00", "blocks.0.attn.q");
    EXPECT_EQ(rec.method, "mora");
    EXPECT_EQ(max_abs_diff(rec.extra.at("A"), q->A_old), 0);
    EXPECT_EQ(max_abs_diff(rec.extra.at("B"), q->B_old), 0);
    expect_factor_record(rec, q->B_old.matmul(q->A_old), 4, /*delta_basis=*/false);
    const auto keys = q->A_old - q->A_old.matmul(rec.basis).matmul(rec.basis.t());
    EXPECT_LT(keys.abs().max().item<double>(), 1e-5);
  }
  ctx.task_index = 1;
  m->on_task_start(ctx);
  // The optimizer sees the 4 new atoms per layer and the head, not the bank.
  int64_t n = 0;
  for (auto& p : m->parameters(ctx)) n += p.numel();
  int64_t expected = 0;
  for (auto& [name, a] : ad::adapters_of<ad::MoRAImpl>(*model)) expected += a->A_new.numel() + a->B_new.numel();
  expected += 16 * s.num_classes + s.num_classes;
  EXPECT_EQ(n, expected);
  // Routing: R = 8 atoms, k = 3; with τ = 1 no softmax weight underflows, so exactly the top-3 of the
  // signed normalised scores get weight, and they sum to 1.
  auto q = ad::adapters_of<ad::MoRAImpl>(*model)[0].second;
  q->set_temperature(1.0);
  q->set_routing_mode(ad::RoutingMode::Train);
  auto x = torch::randn({10, 16});
  auto w = q->routing_weights(x);
  ASSERT_EQ(w.size(-1), 8);
  EXPECT_TRUE(w.gt(0).sum(-1).eq(3).all().item<bool>());
  EXPECT_LT(max_abs_diff(w.sum(-1), torch::ones({10})), 1e-5);
  auto z = x.matmul(torch::cat({q->A_old, q->A_new}, 0).t());
  auto top = std::get<1>(z.topk(3, -1));
  EXPECT_TRUE(w.gather(-1, top).gt(0).all().item<bool>());
  q->set_temperature(0.01);
  q->set_routing_mode(ad::RoutingMode::Auto);
  train_task(ctx, *m, train);
  m->on_task_end(ctx);
  for (auto& [name, a] : ad::adapters_of<ad::MoRAImpl>(*model)) {
    EXPECT_EQ(a->bank_atoms(), 8) << name;
    EXPECT_EQ(max_abs_diff(a->B_old.slice(1, 0, 4), bank[name]), 0) << name;  // task 1 atoms untouched
  }
  for (const auto& [k, v] : base_snapshot(*model))
    if (k.rfind("head.", 0) != 0) {
      EXPECT_EQ(max_abs_diff(v, before.at(k)), 0) << k;
    }
  const auto rep = m->report()["tasks"][1];
  EXPECT_EQ(rep["layers"]["blocks.0.attn.q"]["atoms"].get<int64_t>(), 8);
  EXPECT_EQ(rep["layers"]["blocks.0.attn.q"]["k"].get<int64_t>(), 3);
  ASSERT_EQ(rep["activation"].size(), 2u);
  const auto act = rep["activation"][0]["layers"]["blocks.0.mlp.fc1"];
  EXPECT_LE(act["mean_active_per_token"].get<double>(), 3.0);
  EXPECT_GT(act["mean_active_per_token"].get<double>(), 0.0);
  ASSERT_EQ(act["task_share"].size(), 2u);
  EXPECT_NEAR(act["task_share"][0].get<double>() + act["task_share"][1].get<double>(), 1.0, 1e-9);
  expect_round_trip("mora", opts, *m, model, s, true);
  std::filesystem::remove_all(run_dir);
}

TEST(MoRAMethod, RunnerLearnsSyntheticStream) {
  EXPECT_GT(runner_diagonal("mora", {{"rank", "4"}, {"threshold", "0"}, {"report_samples", "0"}}), 0.6);
}
