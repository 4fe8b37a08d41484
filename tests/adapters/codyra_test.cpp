// codyra.h: soft-threshold operators, κ schedule, pruning, merge-at-task-end, state.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "adapters/codyra.h"
#include "adapters/inject.h"
#include "tests/adapters/test_model.h"

using namespace strata::adapters;
using strata::adapters::testing::max_abs_diff;
using strata::adapters::testing::Net;

namespace {
AdapterFactory codyra_factory(int64_t r) {
  return [=](const std::string&, const AdaptableLinearImpl& l) {
    return std::make_shared<CoDyRAImpl>(l.in_features(), l.out_features(), CoDyRAOptions(r));
  };
}
}  // namespace

TEST(AdaptersCoDyRA, SoftThresholdPaperIsExactProx) {
  const double k = 0.3;
  auto w = torch::tensor({-1.0, -0.31, -0.3, -0.1, 0.0, 0.2, 0.3, 0.45, 0.6, 2.0}, torch::kFloat64);
  auto expect = torch::tensor({-0.7, -0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 0.15, 0.3, 1.7}, torch::kFloat64);
  auto v = w.clone();
  soft_threshold_(v, k, ShrinkMode::Paper);
  EXPECT_LT(max_abs_diff(v, expect), 1e-12);
  // Closed form T_κ(x) = 1(|x|>κ)(x − sign(x)κ) on random data.
  auto r = torch::randn({1000}, torch::kFloat64);
  auto closed = (r.abs() > k).to(torch::kFloat64) * (r - torch::sign(r) * k);
  soft_threshold_(r, k, ShrinkMode::Paper);
  EXPECT_LT(max_abs_diff(r, closed), 1e-12);
  // It is the prox of κ|·|: x* minimises ½(x−w)² + κ|x| — check against a fine grid for one value.
  const double w0 = 0.77;
  auto grid = torch::linspace(-2, 2, 400001, torch::kFloat64);
  auto obj = 0.5 * (grid - w0).pow(2) + k * grid.abs();
  EXPECT_NEAR(grid[obj.argmin()].item<double>(), w0 - k, 1e-4);
  // κ = 0 is the identity.
  auto z = w.clone();
  soft_threshold_(z, 0.0, ShrinkMode::Paper);
  EXPECT_TRUE(torch::equal(z, w));
}

TEST(AdaptersCoDyRA, SoftThresholdCodeCompatZeroesBelowTwoKappa) {
  const double k = 0.25;  // exact in binary, so the ±κ / ±2κ boundaries are exact
  auto w = torch::tensor({-1.0, -0.5, -0.4, -0.25, -0.1, 0.0, 0.1, 0.25, 0.3, 0.49, 0.5, 0.75}, torch::kFloat64);
  // w>κ: −κ; w<−κ: +κ; then |w|<κ → 0.  ±κ itself stays; ±2κ lands on ±κ and stays.
  auto expect = torch::tensor({-0.75, -0.25, 0.0, -0.25, 0.0, 0.0, 0.0, 0.25, 0.0, 0.0, 0.25, 0.5}, torch::kFloat64);
  soft_threshold_(w, k, ShrinkMode::CodeCompat);
  EXPECT_LT(max_abs_diff(w, expect), 1e-12);
}

TEST(AdaptersCoDyRA, KappaScheduleMatchesCodeLoop) {
  // Replay the official loop (models/codyra.py) and compare κ after every step.
  for (int64_t N : {500, 137, 120, 60}) {
    KappaSchedule s;
    s.total_steps(N).kappa_max(0.05).num_kappas(50).dense_fraction(0.5);
    const double dense = 0.5 * N;
    const auto hop = static_cast<int64_t>((N - dense) / 50);
    int64_t id = 0;
    double thr = 0.0;
    for (int64_t it = 0; it < N; ++it) {
      if (hop > 0 && it >= dense && it % hop == 0) {
        ++id;
        thr = 0.05 * std::min<int64_t>(49, id) / 49.0;
      }
      const double applied = it > dense ? thr : 0.0;
      ASSERT_NEAR(kappa_at(it, s), applied, 1e-12) << "N=" << N << " step=" << it;
    }
  }
  KappaSchedule s;  // defaults: 500 steps, κ_max 0.005
  EXPECT_EQ(kappa_at(250, s), 0.0);
  EXPECT_NEAR(kappa_at(499, s), 0.005, 1e-12);
  EXPECT_GT(kappa_at(251, s), 0.0);
}

TEST(AdaptersCoDyRA, ForwardAndDeltaWeight) {
  torch::manual_seed(0);
  CoDyRA c(6, 4, CoDyRAOptions(3));
  {
    torch::NoGradGuard g;
    c->B.normal_();
  }
  auto x = torch::randn({5, 6});
  auto base = torch::randn({5, 4});
  auto dw = torch::matmul(torch::matmul(c->B, torch::diag(c->w)), c->A);
  EXPECT_LT(max_abs_diff(c->delta_weight(), dw), 1e-5);
  EXPECT_LT(max_abs_diff(c->forward(x, base), base + torch::matmul(x, dw.t())), 1e-5);
  EXPECT_EQ(c->w.sizes(), (std::vector<int64_t>{3}));
}

TEST(AdaptersCoDyRA, PruneRemovesExactlyZeroedRanksOutputUnchanged) {
  torch::manual_seed(1);
  CoDyRA c(6, 4, CoDyRAOptions(5));
  {
    torch::NoGradGuard g;
    c->B.normal_();
    c->w.copy_(torch::tensor({0.9f, 0.05f, -0.7f, -0.02f, 0.3f}));
  }
  c->soft_threshold_(0.1);  // zeroes ranks 1 and 3 exactly
  EXPECT_EQ(c->active_ranks(), 3);
  auto A = c->A.detach().clone(), B = c->B.detach().clone(), w = c->w.detach().clone();
  auto x = torch::randn({7, 6});
  auto base = torch::randn({7, 4});
  auto y = c->forward(x, base).detach();
  EXPECT_EQ(c->prune(), 3);
  EXPECT_EQ(c->rank(), 3);
  auto keep = torch::tensor({0, 2, 4}, torch::kLong);
  EXPECT_TRUE(torch::equal(c->A.detach(), A.index_select(0, keep)));
  EXPECT_TRUE(torch::equal(c->B.detach(), B.index_select(1, keep)));
  EXPECT_TRUE(torch::equal(c->w.detach(), w.index_select(0, keep)));
  EXPECT_LT(max_abs_diff(c->forward(x, base), y), 1e-6);
  // Pruned adapter still trains (parameters keep their registration).
  auto loss = c->forward(x, base).pow(2).sum();
  loss.backward();
  EXPECT_EQ(c->w.grad().sizes(), (std::vector<int64_t>{3}));
  EXPECT_EQ(c->parameters().size(), 3u);
}

TEST(AdaptersCoDyRA, TrainThresholdEndTaskMergesAndResets) {
  torch::manual_seed(2);
  Net net(6, 8, 3);
  inject(*net, "**", codyra_factory(4));
  freeze_base(*net);
  EXPECT_EQ(count_parameters(*net), 10 * 4 + 8 * (4 * 8 + 8 * 4) + 4 * 6 + 4 * 8 + 4 * 8 + 4 * 3);
  std::vector<torch::Tensor> frozen;
  for (auto& p : net->parameters())
    if (!p.requires_grad()) frozen.push_back(p.detach().clone());

  KappaSchedule sched;
  sched.total_steps(120).kappa_max(0.5).num_kappas(10);
  torch::optim::Adam opt(adapter_parameters(*net), torch::optim::AdamOptions(1e-2));
  auto x = torch::randn({32, 6});
  auto t = torch::randint(0, 3, {32});
  for (int64_t step = 0; step < sched.total_steps(); ++step) {
    opt.zero_grad();
    torch::cross_entropy_loss(net->forward(x), t).backward();
    opt.step();
    codyra_after_step(*net, step, sched);
  }
  // Frozen base untouched by training.
  size_t i = 0;
  for (auto& p : net->parameters())
    if (!p.requires_grad()) {
      EXPECT_TRUE(torch::equal(p.detach(), frozen[i++]));
    }

  int64_t active = 0;
  for (auto& [n, a] : adapters_of<CoDyRAImpl>(*net)) active += a->active_ranks();
  EXPECT_LT(active, 40);  // κ_max = 0.5 on N(0,1) gates prunes some ranks
  net->eval();
  auto y = net->forward(x).detach();
  auto stats = codyra_end_task(*net);
  ASSERT_EQ(stats.size(), 10u);
  int64_t kept = 0;
  for (auto& s : stats) {
    EXPECT_EQ(s.rank, 4);
    kept += s.kept;
  }
  EXPECT_EQ(kept, active);
  // After merge the adapters are fresh (B = 0) so the output is the merged base alone.
  for (auto& [n, a] : adapters_of<CoDyRAImpl>(*net)) {
    EXPECT_EQ(a->rank(), 4);
    EXPECT_EQ(a->B.abs().sum().item<double>(), 0.0);
  }
  EXPECT_LT(max_abs_diff(net->forward(x), y), 1e-5);
  // And after unwrapping too.
  unwrap(*net);
  EXPECT_LT(max_abs_diff(net->forward(x), y), 1e-5);
}

TEST(AdaptersCoDyRA, AllRanksPrunedMergesNothing) {
  torch::manual_seed(3);
  Net net(6, 8, 3);
  inject(*net, "fc1", codyra_factory(3));
  auto W = net->fc1->weight.detach().clone();
  for (auto& [n, a] : adapters_of<CoDyRAImpl>(*net)) {
    torch::NoGradGuard g;
    a->B.normal_();
    a->soft_threshold_(1e9);
  }
  auto stats = codyra_end_task(*net);
  ASSERT_EQ(stats.size(), 1u);
  EXPECT_EQ(stats[0].kept, 0);
  EXPECT_EQ(stats[0].delta_norm, 0.0);
  EXPECT_TRUE(torch::equal(net->fc1->weight.detach(), W));
  EXPECT_EQ(stats[0].A_gated.sizes(), (std::vector<int64_t>{0, 6}));
}

TEST(AdaptersCoDyRA, EndTaskStatsCarryMergedFactors) {
  torch::manual_seed(6);
  Net net(6, 8, 3);
  inject(*net, "fc1", codyra_factory(4));
  auto a = adapters_of<CoDyRAImpl>(*net).at(0).second;
  {
    torch::NoGradGuard g;
    a->B.normal_();
    a->w.copy_(torch::tensor({0.0f, 1.5f, -0.5f, 0.0f}));
  }
  auto W = net->fc1->weight.detach().clone();
  auto stats = codyra_end_task(*net);
  ASSERT_EQ(stats.size(), 1u);
  EXPECT_EQ(stats[0].kept, 2);
  EXPECT_EQ(stats[0].A_gated.sizes(), (std::vector<int64_t>{2, 6}));
  auto dW = net->fc1->weight.detach() - W;
  EXPECT_LT(max_abs_diff(torch::matmul(stats[0].B, stats[0].A_gated), dW), 1e-5);
  EXPECT_NEAR(stats[0].delta_norm, dW.norm().item<double>(), 1e-4);
}

TEST(AdaptersCoDyRA, MergedAndUnmergedAgreeAfterPruning) {
  torch::manual_seed(4);
  Net net(6, 8, 3);
  inject(*net, "blocks.*.attn.*|head", codyra_factory(4));
  for (auto& [n, a] : adapters_of<CoDyRAImpl>(*net)) {
    torch::NoGradGuard g;
    a->B.normal_(0, 0.2);
    a->soft_threshold_(0.8);
    a->prune();
  }
  auto x = torch::randn({9, 6});
  auto y = net->forward(x).detach();
  EXPECT_EQ(merge_all(*net), 7);
  EXPECT_LT(max_abs_diff(net->forward(x), y), 1e-5);
}

TEST(AdaptersCoDyRA, StateRoundTripAfterPruning) {
  torch::manual_seed(5);
  CoDyRA a(6, 4, CoDyRAOptions(5)), b(6, 4, CoDyRAOptions(5));
  {
    torch::NoGradGuard g;
    a->B.normal_();
  }
  a->soft_threshold_(0.7);
  a->prune();
  auto st = a->state();
  b->load_state(st);
  EXPECT_EQ(b->rank(), a->rank());
  auto x = torch::randn({3, 6});
  auto base = torch::zeros({3, 4});
  EXPECT_LT(max_abs_diff(a->forward(x, base), b->forward(x, base)), 1e-7);
  for (auto& [k, t] : b->state()) EXPECT_TRUE(torch::equal(t, st[k])) << k;
  st.erase("w");
  EXPECT_THROW(b->load_state(st), c10::Error);
  b->reset_parameters();
  EXPECT_EQ(b->rank(), 5);
}

TEST(AdaptersCoDyRA, SoftThresholdPaperIsBitwiseTheSignClampFormula) {
  // The in-place softshrink kernel against the operator as first written, on many values, ties at
  // ±κ included.
  torch::manual_seed(21);
  for (double kappa : {1e-3, 0.05, 0.7}) {
    auto w = torch::randn({4096});
    {
      torch::NoGradGuard no_grad;
      w[0] = static_cast<float>(kappa);
      w[1] = -static_cast<float>(kappa);
      w[2] = 0.0f;
    }
    const auto expected = torch::sign(w) * torch::clamp_min(w.abs() - kappa, 0.0);
    soft_threshold_(w, kappa, ShrinkMode::Paper);
    EXPECT_TRUE(torch::equal(w, expected)) << "kappa " << kappa;
    EXPECT_EQ((w == 0).sum().item<int64_t>(), (expected == 0).sum().item<int64_t>());
  }
}

TEST(AdaptersCoDyRA, AfterStepOnACachedListFollowsReattachment) {
  torch::manual_seed(22);
  Net net(6, 8, 3);
  inject(*net, "blocks.*.attn.q|fc1", codyra_factory(4));
  AdapterCache<CoDyRAImpl> cache;
  KappaSchedule s;
  s.total_steps(100).dense_fraction(0.5).kappa_max(0.5).num_kappas(5);
  const auto& first = cache.get(*net);
  ASSERT_EQ(first.size(), 3u);
  // The list version shrinks exactly what the model walk shrinks.
  auto before = adapters_state(*net);
  codyra_after_step(cache.get(*net), 90, s, ShrinkMode::Paper);
  auto via_list = adapters_state(*net);
  load_adapters_state(*net, before);
  codyra_after_step(*net, 90, s, ShrinkMode::Paper);
  for (const auto& [k, v] : adapters_state(*net)) EXPECT_TRUE(torch::equal(v, via_list.at(k))) << k;
  // Task end removes the adapters and the next task attaches fresh ones: the cache must not hand
  // out the removed ones.
  auto old = cache.get(*net);
  codyra_end_task(*net);
  unwrap(*net);
  EXPECT_TRUE(cache.get(*net).empty());
  inject(*net, "blocks.*.attn.q|fc1", codyra_factory(4));
  const auto& fresh = cache.get(*net);
  ASSERT_EQ(fresh.size(), 3u);
  for (size_t i = 0; i < fresh.size(); ++i) EXPECT_NE(fresh[i].get(), old[i].get());
  auto expected = adapters_of<CoDyRAImpl>(*net);
  for (size_t i = 0; i < fresh.size(); ++i) EXPECT_EQ(fresh[i].get(), expected[i].second.get());
}
