#include <gtest/gtest.h>
#include <torch/torch.h>

#include "adapters/adaptable_linear.h"

using strata::adapters::AdaptableLinear;

namespace {

// Every gradient of `sum(y · w)` with respect to the inputs that require one (undefined otherwise).
std::vector<torch::Tensor> grads_of(const torch::Tensor& y, const torch::Tensor& w, const std::vector<torch::Tensor>& in,
                                    bool create_graph = false) {
  std::vector<torch::Tensor> need;
  for (const auto& t : in)
    if (t.defined() && t.requires_grad()) need.push_back(t);
  auto g = torch::autograd::grad({(y * w).sum()}, need, {}, /*retain_graph=*/create_graph, create_graph);
  std::vector<torch::Tensor> out;
  size_t i = 0;
  for (const auto& t : in) out.push_back(t.defined() && t.requires_grad() ? g[i++] : torch::Tensor());
  return out;
}

}  // namespace

// The plain layer (no adapter, no projection) has its own backward node. Against ATen's linear
// and its autograd, in float64: the output and the gradients of x, weight and bias, for 2-D, 3-D
// (tokens) and empty inputs, with and without a bias, with the input, the weight or both needing a
// gradient, and under no grad (no history at all).
TEST(AdaptableLinear, PlainLayerMatchesATenLinearValuesAndGradients) {
  torch::manual_seed(5);
  for (bool bias : {false, true}) {
    for (auto shape : {std::vector<int64_t>{4, 9}, std::vector<int64_t>{2, 3, 9}, std::vector<int64_t>{0, 9}}) {
      for (int needs = 1; needs < 4; ++needs) {  // bit 0: x needs a gradient, bit 1: the parameters do
        const bool x_grad = needs & 1, w_grad = needs & 2;
        const std::string what = std::string(bias ? "bias " : "no bias ") + torch::str(torch::IntArrayRef(shape)) +
                                 " x_grad " + std::to_string(x_grad) + " w_grad " + std::to_string(w_grad);
        AdaptableLinear layer(9, 7, bias);
        layer->to(torch::kDouble);
        for (auto& p : layer->parameters()) p.requires_grad_(w_grad);
        const auto x = torch::randn(shape, torch::kDouble).requires_grad_(x_grad);
        const auto W = layer->weight.detach().clone().requires_grad_(w_grad);
        const auto b = bias ? layer->bias.detach().clone().requires_grad_(w_grad) : torch::Tensor();
        const auto x_ref = x.detach().clone().requires_grad_(x_grad);

        const auto y = layer(x), y_ref = torch::nn::functional::linear(x_ref, W, b);
        ASSERT_EQ(y.sizes(), y_ref.sizes()) << what;
        EXPECT_TRUE(torch::allclose(y, y_ref, 1e-12, 1e-12)) << what;
        ASSERT_TRUE(y.requires_grad()) << what;
        const auto w = torch::randn(y.sizes(), torch::kDouble);
        const auto g = grads_of(y, w, {x, layer->weight, bias ? layer->bias : torch::Tensor()});
        const auto g_ref = grads_of(y_ref, w, {x_ref, W, b});
        for (size_t i = 0; i < g.size(); ++i) {
          ASSERT_EQ(g[i].defined(), g_ref[i].defined()) << what << " input " << i;
          if (g[i].defined()) {
            EXPECT_EQ(g[i].sizes(), g_ref[i].sizes()) << what << " input " << i;
            EXPECT_TRUE(torch::allclose(g[i], g_ref[i], 1e-12, 1e-12)) << what << " input " << i;
          }
        }
      }
      torch::NoGradGuard no_grad;
      AdaptableLinear layer(9, 7, bias);
      EXPECT_FALSE(layer(torch::randn(shape)).requires_grad()) << "no grad";
    }
  }
}

// Gradients accumulate into .grad over two backwards like any leaf's, and a second-order gradient
// (create_graph) through the node equals ATen's: d/dx of Σ (dL/dx)² for L = Σ tanh(y)·w.
TEST(AdaptableLinear, PlainLayerAccumulatesAndHasASecondDerivative) {
  torch::manual_seed(6);
  AdaptableLinear layer(6, 5);
  layer->to(torch::kDouble);
  const auto W = layer->weight.detach().clone().requires_grad_(true);
  const auto b = layer->bias.detach().clone().requires_grad_(true);
  const auto x = torch::randn({3, 6}, torch::kDouble);
  const auto w = torch::randn({3, 5}, torch::kDouble);
  for (int i = 0; i < 2; ++i) {
    (layer(x) * w).sum().backward();
    (torch::nn::functional::linear(x, W, b) * w).sum().backward();
  }
  EXPECT_TRUE(torch::allclose(layer->weight.grad(), W.grad(), 1e-12, 1e-12));
  EXPECT_TRUE(torch::allclose(layer->bias.grad(), b.grad(), 1e-12, 1e-12));
  EXPECT_TRUE(torch::allclose(layer->weight.grad(), 2 * w.t().mm(x), 1e-12, 1e-12));

  auto second = [&](const std::function<torch::Tensor(const torch::Tensor&)>& f) {
    const auto xi = x.clone().requires_grad_(true);
    const auto gx = torch::autograd::grad({(torch::tanh(f(xi)) * w).sum()}, {xi}, {}, true, true)[0];
    return torch::autograd::grad({gx.pow(2).sum()}, {xi})[0];
  };
  const auto h = second([&](const torch::Tensor& xi) { return layer(xi); });
  const auto h_ref = second([&](const torch::Tensor& xi) { return torch::nn::functional::linear(xi, W, b); });
  EXPECT_GT(h_ref.abs().max().item<double>(), 1e-3);
  EXPECT_TRUE(torch::allclose(h, h_ref, 1e-10, 1e-10)) << (h - h_ref).abs().max().item<double>();
}
