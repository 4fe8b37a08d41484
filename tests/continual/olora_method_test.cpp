// `olora` method: the orthogonality loss, per-task banking without touching the base, save/load of a
// grown bank, a Runner run.
#include "adapters/lora.h"
#include "continual/olora_method.h"
#include "tests/continual/adapter_method_helpers.h"

using namespace strata::continual;
using namespace strata::run;
using namespace strata::continual::testing;
namespace ad = strata::adapters;

TEST(OLoRAMethod, PenaltyBankingAndFrozenBase) {
  auto s = small_stream(2);
  auto model = small_vit(s);
  const std::map<std::string, std::string> opts = {{"rank", "3"}, {"dropout", "0"}, {"lambda1", "0.7"}};
  auto m = make_method("olora", opts);
  m->attach(model);
  const auto before = base_snapshot(*model);
  auto train = fast_train();
  TaskContext ctx{model, &s, 0, &train};
  StepContext sc;
  sc.task = &ctx;
  // Task 1: empty bank, λ₂ = 0 -> the penalty is exactly 0.
  train_without_end(*m, ctx, train);
  auto p0 = m->extra_loss(sc);
  ASSERT_TRUE(p0.defined());
  EXPECT_EQ(p0.item<double>(), 0.0);
  auto out = eval_logits(*model, s);
  m->on_task_end(ctx);
  EXPECT_LT(max_abs_diff(eval_logits(*model, s), out), 1e-6);  // banking keeps the function
  for (auto& [name, a] : ad::adapters_of<ad::LoRAImpl>(*model)) {
    EXPECT_EQ(a->bank_rank(), 3) << name;
    EXPECT_EQ(a->B.abs().sum().item<double>(), 0) << name;
    EXPECT_FALSE(a->A_old.requires_grad());
  }
  // Task 2: the penalty is λ₁ Σ_layers Σ|A_old Aᵀ| and it reaches A through autograd.
  ctx.task_index = 1;
  m->on_task_start(ctx);
  auto pen = m->extra_loss(sc);
  double expected = 0;
  for (auto& [name, a] : ad::adapters_of<ad::LoRAImpl>(*model))
    expected += a->A_old.matmul(a->A.t()).abs().sum().item<double>();
  EXPECT_NEAR(pen.item<double>(), 0.7 * expected, 1e-5 * std::max(1.0, expected));
  EXPECT_GT(expected, 0);
  pen.backward();
  auto first = ad::adapters_of<ad::LoRAImpl>(*model)[0].second;
  ASSERT_TRUE(first->A.grad().defined());
  EXPECT_GT(first->A.grad().abs().sum().item<double>(), 0);
  first->A.mutable_grad().reset();
  train_task(ctx, *m, train);
  m->on_task_end(ctx);
  // Base (except the head) never changes: O-LoRA keeps its update in the banks.
  for (const auto& [k, v] : base_snapshot(*model))
    if (k.rfind("head.", 0) != 0) {
      EXPECT_EQ(max_abs_diff(v, before.at(k)), 0) << k;
    }
  const auto rep = m->report();
  ASSERT_EQ(rep["tasks"].size(), 2u);
  EXPECT_EQ(rep["tasks"][1]["bank_rank"]["blocks.0.attn.q"].get<int64_t>(), 6);
  EXPECT_EQ(rep["tasks"][1]["bank_rank_total"].get<int64_t>(), 12);
  // The grown bank (R = 6) is re-created by load() on a fresh model.
  expect_round_trip("olora", opts, *m, model, s, true);
}

TEST(OLoRAMethod, PenaltyReducesCrossGram) {
  // Same data, same init: training task 2 with λ₁ large leaves a smaller Σ|A_old Aᵀ| than λ₁ = 0.
  auto s = small_stream(2);
  auto cross = [&](const std::string& lambda) {
    auto model = small_mlp(s, 3);
    auto m = make_method("olora", {{"rank", "4"}, {"dropout", "0"}, {"lambda1", lambda}});
    m->attach(model);
    auto train = fast_train();
    TaskContext ctx{model, &s, 0, &train};
    train_without_end(*m, ctx, train);
    m->on_task_end(ctx);
    ctx.task_index = 1;
    train_without_end(*m, ctx, train);
    torch::NoGradGuard no_grad;
    double c = 0;
    for (auto& [n, a] : ad::adapters_of<ad::LoRAImpl>(*model)) c += a->orthogonality_penalty().item<double>();
    return c;
  };
  const double free = cross("0"), constrained = cross("5");
  EXPECT_LT(constrained, 0.5 * free);
}

TEST(OLoRAMethod, RunnerLearnsSyntheticStream) {
  EXPECT_GT(runner_diagonal("olora", {{"rank", "4"}, {"dropout", "0"}}), 0.6);
}
