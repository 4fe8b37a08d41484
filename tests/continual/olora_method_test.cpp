// `olora` method: the orthogonality loss (the one-node OLoRAPenalty against the composed operators,
// and its cache across task ends and loads), per-task banking without touching the base, save/load of
// a grown bank, a Runner run.
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
  // Task 1: empty bank, λ₂ = 0 -> the penalty is exactly 0: no term at all (undefined).
  train_without_end(*m, ctx, train);
  EXPECT_FALSE(m->extra_loss(sc).defined());
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

namespace {

// The penalty as composed operators (what autograd differentiates without OLoRAPenalty):
// Σ_l λ₁ Σ|A_old,l A_lᵀ| + λ₂ (‖A_l‖ + ‖B_l‖), layers with an empty bank adding no λ₁ term.
torch::Tensor composed_penalty(const std::vector<std::shared_ptr<ad::LoRAImpl>>& layers, double lambda1,
                               double lambda2) {
  torch::Tensor total = torch::zeros({});
  for (const auto& a : layers) {
    if (a->bank_rank() > 0) total = total + lambda1 * torch::matmul(a->A_old, a->A.t()).abs().sum();
    if (lambda2 != 0) total = total + lambda2 * (a->A.norm() + a->B.norm());
  }
  return total;
}

// Layers of different widths and bank ranks (R = 3, 6, 0, 2), random factors, B non-zero.
std::vector<std::shared_ptr<ad::LoRAImpl>> banked_layers() {
  torch::manual_seed(41);
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{7, 5}, {4, 9}, {6, 6}, {5, 3}};
  const std::vector<int64_t> tasks = {1, 2, 0, 1};
  std::vector<std::shared_ptr<ad::LoRAImpl>> out;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const int64_t rank = i == 3 ? 2 : 3;
    auto a = std::make_shared<ad::LoRAImpl>(shapes[i].first, shapes[i].second, ad::LoRAOptions(rank).alpha(2.0 * rank));
    for (int64_t t = 0; t < tasks[i]; ++t) {
      {
        torch::NoGradGuard no_grad;
        a->B.normal_();
      }
      a->bank_current();
    }
    {
      torch::NoGradGuard no_grad;
      a->B.normal_();
    }
    out.push_back(a);
  }
  return out;
}

// (value, ∂/∂A_l, ∂/∂B_l) of `scale` · penalty, gradients cleared afterwards.
std::pair<double, std::vector<torch::Tensor>> value_and_grads(const torch::Tensor& penalty,
                                                              const std::vector<std::shared_ptr<ad::LoRAImpl>>& layers,
                                                              double scale) {
  for (const auto& a : layers)  // a training step leaves its gradients
    for (auto* p : {&a->A, &a->B})
      if (p->grad().defined()) p->mutable_grad().reset();
  (scale * penalty).backward();
  std::vector<torch::Tensor> grads;
  for (const auto& a : layers)
    for (auto* p : {&a->A, &a->B}) {
      grads.push_back(p->grad().defined() ? p->grad().clone() : torch::zeros_like(*p));
      if (p->grad().defined()) p->mutable_grad().reset();
    }
  return {penalty.item<double>(), grads};
}

void expect_matches_composed(ad::OLoRAPenalty& penalty, const std::vector<std::shared_ptr<ad::LoRAImpl>>& layers,
                             double lambda1, double lambda2, double scale, const std::string& what) {
  const auto [v, g] = value_and_grads(penalty(layers, lambda1, lambda2), layers, scale);
  const auto [ev, eg] = value_and_grads(composed_penalty(layers, lambda1, lambda2), layers, scale);
  EXPECT_NEAR(v, ev, 1e-5 * std::max(1.0, std::abs(ev))) << what;
  ASSERT_EQ(g.size(), eg.size());
  for (size_t i = 0; i < g.size(); ++i)
    EXPECT_LT(max_abs_diff(g[i], eg[i]), 1e-5 * std::max(1.0, eg[i].abs().max().item<double>()))
        << what << ", gradient " << i;
}

}  // namespace

TEST(OLoRAPenalty, OneNodeMatchesTheComposedOperatorsValuesAndGradients) {
  auto layers = banked_layers();
  ad::OLoRAPenalty penalty;
  // λ₂ on and off; a gradient factor other than 1 (the penalty scaled after the node).
  for (double lambda2 : {0.0, 0.3})
    for (double scale : {1.0, -2.5})
      expect_matches_composed(penalty, layers, 0.7, lambda2, scale,
                              "lambda2 " + std::to_string(lambda2) + " scale " + std::to_string(scale));
  // The orthogonality term is one node whose inputs are the banked layers' A (the R = 0 layer is not one).
  const auto p = penalty(layers, 0.7, 0.0);
  ASSERT_TRUE(p.grad_fn());
  EXPECT_EQ(p.grad_fn()->next_edges().size(), 3u);
  // sign(0) = 0, as abs's gradient: an A = 0 gets no gradient from the term.
  {
    torch::NoGradGuard no_grad;
    layers[0]->A.zero_();
  }
  expect_matches_composed(penalty, layers, 0.7, 0.0, 1.0, "A = 0");
  // No banked layer and λ₂ = 0: no term at all.
  std::vector<std::shared_ptr<ad::LoRAImpl>> empty_bank = {layers[2]};
  EXPECT_FALSE(penalty(empty_bank, 0.7, 0.0).defined());
}

TEST(OLoRAPenalty, TheCachedBanksFollowTaskEndsLoadsAndEdits) {
  auto layers = banked_layers();
  ad::OLoRAPenalty penalty;
  expect_matches_composed(penalty, layers, 0.5, 0.0, 1.0, "first call");
  // A task end grows every bank (the empty one included).
  for (auto& a : layers) {
    {
      torch::NoGradGuard no_grad;
      a->B.normal_();
    }
    a->bank_current();
    torch::NoGradGuard no_grad;
    a->A.normal_();
  }
  expect_matches_composed(penalty, layers, 0.5, 0.0, 1.0, "after a task end");
  // load_state() with banks of the same shapes but other values (a resumed run).
  for (auto& a : layers) {
    auto st = a->state();
    st["A_old"] = torch::randn_like(st["A_old"]);
    a->load_state(st);
  }
  expect_matches_composed(penalty, layers, 0.5, 0.0, 1.0, "after load_state");
  // A bank edited in place (same storage, another version).
  {
    torch::NoGradGuard no_grad;
    layers[1]->A_old.mul_(-3.0);
  }
  expect_matches_composed(penalty, layers, 0.5, 0.0, 1.0, "after an in-place edit");
  // Another list of adapters (a re-attachment).
  std::vector<std::shared_ptr<ad::LoRAImpl>> other = {layers[3], layers[0]};
  expect_matches_composed(penalty, other, 0.5, 0.0, 1.0, "another list");
  expect_matches_composed(penalty, layers, 0.5, 0.0, 1.0, "the first list again");
}

TEST(OLoRAMethod, EveryStepAfterTheFirstTaskMatchesTheComposedPenalty) {
  // Through the method's hook (AdapterCache + OLoRAPenalty), after banking and after a load.
  auto s = small_stream(3);
  auto model = small_mlp(s, 5);
  const std::map<std::string, std::string> opts = {{"rank", "3"}, {"dropout", "0"}, {"lambda1", "0.4"}, {"lambda2", "0.05"}};
  auto m = make_method("olora", opts);
  m->attach(model);
  auto train = fast_train();
  TaskContext ctx{model, &s, 0, &train};
  StepContext sc;
  sc.task = &ctx;
  for (int64_t t = 0; t < 3; ++t) {
    ctx.task_index = t;
    train_without_end(*m, ctx, train);
    std::vector<std::shared_ptr<ad::LoRAImpl>> layers;
    for (auto& [name, a] : ad::adapters_of<ad::LoRAImpl>(*model)) layers.push_back(a);
    const auto [v, g] = value_and_grads(m->extra_loss(sc), layers, 1.0);
    const auto [ev, eg] = value_and_grads(composed_penalty(layers, 0.4, 0.05), layers, 1.0);
    EXPECT_NEAR(v, ev, 1e-5 * std::max(1.0, ev)) << "task " << t;
    for (size_t i = 0; i < g.size(); ++i) EXPECT_LT(max_abs_diff(g[i], eg[i]), 1e-5) << "task " << t << " grad " << i;
    m->on_task_end(ctx);
  }
  // A fresh method loading the saved state (banks R = 9) gives the same penalty.
  auto saved = m->save();
  auto model2 = small_mlp(s, 6);
  auto m2 = make_method("olora", opts);
  m2->load(saved, model2);
  const double a = m->extra_loss(sc).item<double>();
  TaskContext ctx2{model2, &s, 2, &train};
  StepContext sc2;
  sc2.task = &ctx2;
  EXPECT_NEAR(m2->extra_loss(sc2).item<double>(), a, 1e-6 * std::max(1.0, a));
}
