// inject.h (pattern selection, freezing, unwrap, merge, state) and lora.h (LoRA, O-LoRA penalty).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <set>

#include "adapters/inject.h"
#include "adapters/lora.h"
#include "tests/adapters/test_model.h"

using namespace strata::adapters;
using strata::adapters::testing::max_abs_diff;
using strata::adapters::testing::Net;

namespace {

std::set<std::string> names(const std::vector<NamedLayer>& layers) {
  std::set<std::string> out;
  for (auto& l : layers) out.insert(l.name);
  return out;
}

AdapterFactory lora_factory(int64_t r, double alpha) {
  return [=](const std::string&, const AdaptableLinearImpl& l) {
    return std::make_shared<LoRAImpl>(l.in_features(), l.out_features(), LoRAOptions(r).alpha(alpha));
  };
}

// Give B non-zero values so the adapter actually changes the output.
void randomise_B(const torch::nn::Module& model) {
  torch::NoGradGuard g;
  for (auto& [n, a] : adapters_of<LoRAImpl>(model)) a->B.normal_(0, 0.1);
}

}  // namespace

TEST(AdaptersGlob, Semantics) {
  EXPECT_TRUE(glob_match("blocks.*.attn.q", "blocks.0.attn.q"));
  EXPECT_TRUE(glob_match("blocks.*.attn.q", "blocks.12.attn.q"));
  EXPECT_FALSE(glob_match("blocks.*.attn.q", "blocks.0.attn.qq"));     // whole-path match
  EXPECT_FALSE(glob_match("blocks.*.attn.q", "x.blocks.0.attn.q"));
  EXPECT_FALSE(glob_match("blocks.*.q", "blocks.0.attn.q"));           // * stays inside a segment
  EXPECT_TRUE(glob_match("blocks.**.q", "blocks.0.attn.q"));           // ** spans segments
  EXPECT_TRUE(glob_match("**", "fc1"));
  EXPECT_TRUE(glob_match("fc?", "fc1"));
  EXPECT_FALSE(glob_match("fc1", "fcX1"));
  EXPECT_FALSE(glob_match("fc.", "fcX"));                              // '.' is literal
  EXPECT_TRUE(glob_match("head|fc1", "head"));
  EXPECT_TRUE(glob_match("head|fc1", "fc1"));
  EXPECT_FALSE(glob_match("head|fc1", "fc1head"));
  EXPECT_THROW(glob_to_regex("a||b"), c10::Error);
}

TEST(AdaptersInject, PatternSelectsExactlyTheNamedLayers) {
  Net net(6, 8, 3);
  EXPECT_EQ(all_layers(*net).size(), 2u + 2u * 4u);
  auto sel = find_layers(*net, "blocks.*.attn.q|blocks.*.attn.v");
  EXPECT_EQ(names(sel), (std::set<std::string>{"blocks.0.attn.q", "blocks.0.attn.v", "blocks.1.attn.q",
                                               "blocks.1.attn.v"}));
  EXPECT_EQ(names(find_layers(*net, "fc1")), (std::set<std::string>{"fc1"}));
  EXPECT_EQ(names(find_layers(*net, std::regex("blocks\\.1\\..*"))),
            (std::set<std::string>{"blocks.1.attn.q", "blocks.1.attn.k", "blocks.1.attn.v", "blocks.1.mlp"}));

  auto adapted = inject(*net, "blocks.*.attn.q|blocks.*.attn.v", lora_factory(2, 2.0));
  EXPECT_EQ(names(adapted), names(sel));
  EXPECT_EQ(names(adapted_layers(*net)), names(sel));
  // Adapter parameters are registered under the layer: "<path>.adapter.A".
  auto params = net->named_parameters();
  EXPECT_NE(params.find("blocks.0.attn.q.adapter.A"), nullptr);
  EXPECT_EQ(params.find("blocks.0.attn.k.adapter.A"), nullptr);
  EXPECT_THROW(inject(*net, "nothing.matches", lora_factory(2, 2.0)), c10::Error);
}

TEST(AdaptersInject, FreezeBaseAndCountAndUnwrap) {
  Net net(6, 8, 3);
  const int64_t base = count_parameters(*net);
  inject(*net, "blocks.**", lora_factory(2, 2.0));  // 8 layers of 8x8, r=2: 8 * 2*(8+8) = 256
  EXPECT_EQ(count_parameters(*net), base + 256);
  freeze_base(*net);
  EXPECT_EQ(count_parameters(*net), 256);
  EXPECT_EQ(count_parameters(*net, /*trainable_only=*/false), base + 256);
  auto ap = adapter_parameters(*net);
  EXPECT_EQ(ap.size(), 16u);
  for (auto& item : net->named_parameters())
    EXPECT_EQ(item.value().requires_grad(), item.key().find(".adapter.") != std::string::npos) << item.key();

  torch::manual_seed(0);
  auto x = torch::randn({5, 6});
  auto y0 = net->forward(x);
  randomise_B(*net);
  EXPECT_GT(max_abs_diff(net->forward(x), y0), 1e-3);
  auto removed = unwrap(*net);
  EXPECT_EQ(removed.size(), 8u);
  EXPECT_TRUE(adapted_layers(*net).empty());
  EXPECT_LT(max_abs_diff(net->forward(x), y0), 1e-6);  // unwrapped: base untouched
}

TEST(AdaptersLoRA, MergedAndUnmergedAgree) {
  torch::manual_seed(1);
  Net net(6, 8, 3);
  inject(*net, "**", lora_factory(3, 6.0));  // s = 2
  randomise_B(*net);
  auto x = torch::randn({7, 6});
  net->eval();
  auto y = net->forward(x);
  EXPECT_EQ(merge_all(*net), 10);
  EXPECT_TRUE(adapted_layers(*net).empty());
  EXPECT_LT(max_abs_diff(net->forward(x), y), 1e-5);
}

TEST(AdaptersLoRA, DeltaWeightIsScaledBA) {
  torch::manual_seed(2);
  LoRA l(5, 4, LoRAOptions(2).alpha(1.0));  // s = 0.5
  {
    torch::NoGradGuard g;
    l->B.normal_();
  }
  EXPECT_LT(max_abs_diff(l->delta_weight(), 0.5 * torch::matmul(l->B, l->A)), 1e-6);
  // Kaiming-uniform(a=√5) on A: bound 1/√in.
  EXPECT_LE(l->A.abs().max().item<double>(), 1.0 / std::sqrt(5.0) + 1e-7);
  auto x = torch::randn({3, 5});
  auto base = torch::randn({3, 4});
  EXPECT_LT(max_abs_diff(l->forward(x, base), base + torch::matmul(x, l->delta_weight().t())), 1e-5);
}

TEST(AdaptersLoRA, FrozenPartsDoNotChangeUnderTraining) {
  torch::manual_seed(3);
  Net net(6, 8, 3);
  inject(*net, "blocks.*.attn.q|blocks.*.attn.v|head", lora_factory(2, 2.0));
  // One O-LoRA task boundary so the bank is non-empty.
  randomise_B(*net);
  EXPECT_EQ(olora_end_task(*net), 5);
  randomise_B(*net);
  freeze_base(*net);
  std::vector<torch::Tensor> frozen_before;
  for (auto& p : net->parameters()) frozen_before.push_back(p.detach().clone());
  std::vector<torch::Tensor> bank_before;
  for (auto& b : net->buffers()) bank_before.push_back(b.clone());

  torch::optim::Adam opt(adapter_parameters(*net), torch::optim::AdamOptions(1e-2));
  auto x = torch::randn({16, 6});
  auto t = torch::randint(0, 3, {16});
  for (int i = 0; i < 5; ++i) {
    opt.zero_grad();
    auto loss = torch::cross_entropy_loss(net->forward(x), t) + olora_penalty(*net, 0.5, 0.01);
    loss.backward();
    opt.step();
  }
  auto params = net->parameters();
  int changed = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    const bool same = torch::equal(params[i].detach(), frozen_before[i]);
    if (params[i].requires_grad()) changed += !same;
    else EXPECT_TRUE(same) << "frozen parameter " << i << " changed";
  }
  EXPECT_EQ(changed, 10);  // every trainable A and B moved
  auto bufs = net->buffers();
  ASSERT_EQ(bufs.size(), bank_before.size());
  for (size_t i = 0; i < bufs.size(); ++i) EXPECT_TRUE(torch::equal(bufs[i], bank_before[i]));
}

TEST(AdaptersLoRA, BankingKeepsOutputAndGrowsBank) {
  torch::manual_seed(4);
  LoRA l(6, 5, LoRAOptions(2).alpha(4.0));
  {
    torch::NoGradGuard g;
    l->B.normal_();
  }
  auto x = torch::randn({4, 6});
  auto base = torch::zeros({4, 5});
  auto y = l->forward(x, base);
  auto A1 = l->A.detach().clone();
  l->bank_current();
  EXPECT_EQ(l->bank_rank(), 2);
  EXPECT_TRUE(torch::equal(l->A_old, A1));
  EXPECT_EQ(l->B.abs().sum().item<double>(), 0.0);
  EXPECT_FALSE(torch::equal(l->A.detach(), A1));  // re-initialised
  EXPECT_LT(max_abs_diff(l->forward(x, base), y), 1e-5);
  l->bank_current();
  EXPECT_EQ(l->bank_rank(), 4);
  EXPECT_EQ(l->A_old.sizes(), (std::vector<int64_t>{4, 6}));
  EXPECT_EQ(l->B_old.sizes(), (std::vector<int64_t>{5, 4}));
}

TEST(AdaptersOLoRA, PenaltyValueAndGradientSign) {
  LoRA l(3, 2, LoRAOptions(1));
  EXPECT_EQ(l->orthogonality_penalty().item<double>(), 0.0);  // empty bank
  {
    torch::NoGradGuard g;
    l->A.copy_(torch::tensor({{1.0f, 0.0f, 0.0f}}));
  }
  l->bank_current();  // A_old = [1 0 0]
  {
    torch::NoGradGuard g;
    l->A.copy_(torch::tensor({{0.5f, 2.0f, 0.0f}}));
  }
  // Add a second banked row by hand-made state: A_old = [[1,0,0],[0,-1,0]].
  auto s = l->state();
  s["A_old"] = torch::tensor({{1.0f, 0.0f, 0.0f}, {0.0f, -1.0f, 0.0f}});
  s["B_old"] = torch::zeros({2, 2});
  l->load_state(s);
  // A_old Aᵀ = [0.5, -2] → Σ|.| = 2.5
  auto pen = l->orthogonality_penalty();
  EXPECT_NEAR(pen.item<double>(), 2.5, 1e-6);
  pen.backward();
  // d/dA Σ|A_old Aᵀ| = Σ_i sign((A_old Aᵀ)_i) A_old[i] = (+1)[1,0,0] + (−1)[0,−1,0] = [1, 1, 0]
  auto g = l->A.grad();
  ASSERT_TRUE(g.defined());
  EXPECT_LT(max_abs_diff(g, torch::tensor({{1.0f, 1.0f, 0.0f}})), 1e-6);
  // A gradient step reduces the overlap.
  double before = pen.item<double>();
  {
    torch::NoGradGuard ng;
    l->A.sub_(0.1 * g);
  }
  EXPECT_LT(l->orthogonality_penalty().item<double>(), before);
  // λ-weighted sum over a model: λ₁·2.5 + λ₂(‖A‖+‖B‖)
  EXPECT_EQ(l->B_old.requires_grad(), false);
}

TEST(AdaptersOLoRA, ModelPenaltySumsLayers) {
  torch::manual_seed(5);
  Net net(6, 8, 3);
  inject(*net, "blocks.*.attn.q|blocks.*.attn.v", lora_factory(2, 2.0));
  EXPECT_EQ(olora_penalty(*net).item<double>(), 0.0);
  olora_end_task(*net);
  double expect = 0.0, l2 = 0.0;
  for (auto& [n, a] : adapters_of<LoRAImpl>(*net)) {
    expect += torch::matmul(a->A_old, a->A.t()).abs().sum().item<double>();
    l2 += a->A.norm().item<double>() + a->B.norm().item<double>();
  }
  EXPECT_GT(expect, 0.0);
  EXPECT_NEAR(olora_penalty(*net, 0.5, 0.0).item<double>(), 0.5 * expect, 1e-4);
  EXPECT_NEAR(olora_penalty(*net, 0.5, 0.1).item<double>(), 0.5 * expect + 0.1 * l2, 1e-4);
}

TEST(AdaptersLoRA, StateRoundTrip) {
  torch::manual_seed(6);
  Net a(6, 8, 3), b(6, 8, 3);
  torch::NoGradGuard g;
  for (auto& item : b->named_parameters()) item.value().copy_(a->named_parameters()[item.key()]);
  inject(*a, "blocks.*.attn.q|fc1", lora_factory(2, 4.0));
  randomise_B(*a);
  olora_end_task(*a);
  randomise_B(*a);
  inject(*b, "blocks.*.attn.q|fc1", lora_factory(2, 4.0));
  auto st = adapters_state(*a);
  EXPECT_EQ(st.size(), 3u * 4u);
  EXPECT_TRUE(st.count("blocks.1.attn.q/A_old"));
  load_adapters_state(*b, st);
  auto x = torch::randn({4, 6});
  EXPECT_LT(max_abs_diff(a->forward(x), b->forward(x)), 1e-6);
  for (auto& [n, t] : adapters_state(*b)) EXPECT_TRUE(torch::equal(t, st[n])) << n;
  st["extra/A"] = torch::zeros({1});
  EXPECT_THROW(load_adapters_state(*b, st), c10::Error);
}

TEST(AdaptersLoRA, MergeAndResetKeepsOutputAndRearms) {
  torch::manual_seed(7);
  Net net(6, 8, 3);
  inject(*net, "blocks.*.mlp|head", lora_factory(2, 4.0));
  randomise_B(*net);
  olora_end_task(*net);  // a bank too: it must be merged as well
  randomise_B(*net);
  auto x = torch::randn({5, 6});
  auto y = net->forward(x).detach();
  std::map<std::string, torch::Tensor> expect_dw;
  for (auto& [n, a] : adapters_of<LoRAImpl>(*net)) expect_dw[n] = a->delta_weight().detach();
  auto merged = lora_merge_and_reset(*net);
  ASSERT_EQ(merged.size(), 3u);
  for (auto& [n, norm] : merged) EXPECT_NEAR(norm, expect_dw[n].norm().item<double>(), 1e-5) << n;
  EXPECT_LT(max_abs_diff(net->forward(x), y), 1e-5);
  for (auto& [n, a] : adapters_of<LoRAImpl>(*net)) {
    EXPECT_EQ(a->bank_rank(), 0);
    EXPECT_EQ(a->B.abs().sum().item<double>(), 0.0);
  }
  unwrap(*net);
  EXPECT_LT(max_abs_diff(net->forward(x), y), 1e-5);  // the update now lives in W
}

TEST(AdaptersOLoRA, PenaltyOverACachedListEqualsTheModelWalk) {
  torch::manual_seed(31);
  Net net(6, 8, 3);
  inject(*net, "blocks.*.attn.q|blocks.*.attn.v", lora_factory(2, 2.0));
  AdapterCache<LoRAImpl> cache;
  // Empty banks and no norm term: nothing to add (undefined), where the model version returns 0.
  EXPECT_FALSE(olora_penalty(cache.get(*net), 0.5, 0.0).defined());
  EXPECT_EQ(olora_penalty(*net, 0.5, 0.0).item<double>(), 0.0);
  EXPECT_TRUE(torch::equal(olora_penalty(cache.get(*net), 0.5, 0.1), olora_penalty(*net, 0.5, 0.1)));
  olora_end_task(*net);
  randomise_B(*net);
  for (double l2 : {0.0, 0.1}) {
    auto a = olora_penalty(cache.get(*net), 0.5, l2);
    auto b = olora_penalty(*net, 0.5, l2);
    EXPECT_TRUE(torch::equal(a, b)) << "lambda2 " << l2;
  }
  // New adapters on the same layers (a load re-attaches them): the cache follows.
  inject(*net, "blocks.*.attn.q|blocks.*.attn.v", lora_factory(2, 2.0));
  EXPECT_FALSE(olora_penalty(cache.get(*net), 0.5, 0.0).defined());  // fresh adapters, empty banks
  auto expected = adapters_of<LoRAImpl>(*net);
  ASSERT_EQ(cache.get(*net).size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_EQ(cache.get(*net)[i].get(), expected[i].second.get());
}

TEST(AdaptersLoRA, FusedUpdateMatchesComposedOperatorsValuesAndGradients) {
  // The one-node forward/backward against the composed operators autograd differentiates, with and
  // without a bank, on a [2, 5, n] input and on a [10, n] one (an MLP's, which skips the reshapes),
  // both needing their gradient.
  for (const std::vector<int64_t>& lead : {std::vector<int64_t>{2, 5}, std::vector<int64_t>{10}}) {
    torch::manual_seed(32);
    LoRA l(6, 4, LoRAOptions(3).alpha(12.0));
    auto shape = [&](int64_t last) {
      auto v = lead;
      v.push_back(last);
      return v;
    };
    for (int bank = 0; bank < 2; ++bank) {
      {
        torch::NoGradGuard g;
        l->A.normal_();
        l->B.normal_();
      }
      auto x = torch::randn(shape(6), torch::requires_grad());
      auto base = torch::randn(shape(4), torch::requires_grad());
      const auto g = torch::randn(shape(4));
      auto y = l->forward(x, base);
      ASSERT_EQ(y.sizes(), base.sizes());
      const double s = l->scaling();
      auto y_ref = base + s * torch::matmul(torch::matmul(x, l->A.t()), l->B.t());
      if (l->bank_rank() > 0) y_ref = y_ref + s * torch::matmul(torch::matmul(x, l->A_old.t()), l->B_old.t());
      EXPECT_LT(max_abs_diff(y, y_ref), 1e-5) << "bank " << bank << " input dims " << lead.size() + 1;
      auto grads = torch::autograd::grad({y}, {x, base, l->A, l->B}, {g});
      auto refs = torch::autograd::grad({y_ref}, {x, base, l->A, l->B}, {g});
      for (size_t i = 0; i < grads.size(); ++i)
        EXPECT_TRUE(torch::allclose(grads[i], refs[i], 1e-4, 1e-5))
            << "gradient " << i << " bank " << bank << " input dims " << lead.size() + 1 << ": max diff "
            << max_abs_diff(grads[i], refs[i]);
      l->bank_current();
    }
  }
}
