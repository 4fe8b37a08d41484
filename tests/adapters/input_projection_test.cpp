#include <gtest/gtest.h>
#include <torch/torch.h>

#include "adapters/adaptable_linear.h"
#include "subspaces/basis.h"

using strata::adapters::AdaptableLinear;

namespace {
torch::Tensor orthonormal(int64_t n, int64_t k) { return std::get<0>(torch::linalg_qr(torch::randn({n, k}))); }
}  // namespace

// A layer with an input projection: the same output, the same input and bias gradients as a plain
// layer, and weight.grad = G (I − UUᵀ) of the plain layer's G; for 2-D and 3-D (token) inputs,
// with and without the complement basis, for batches narrower and wider than the output.
TEST(AdaptableLinear, InputProjectionProjectsOnlyTheWeightGradient) {
  torch::manual_seed(3);
  for (bool complement : {false, true}) {
    for (auto shape : {std::vector<int64_t>{4, 9}, std::vector<int64_t>{30, 9}, std::vector<int64_t>{2, 5, 9}}) {
      AdaptableLinear plain(9, 7), projected(9, 7);
      {
        torch::NoGradGuard ng;
        projected->weight.copy_(plain->weight);
        projected->bias.copy_(plain->bias);
      }
      auto U = orthonormal(9, 6);
      projected->set_input_projection(U, complement ? strata::subspaces::complement_basis(U) : torch::Tensor());
      auto x = torch::randn(shape);
      auto xa = x.clone().requires_grad_(true), xb = x.clone().requires_grad_(true);
      auto ya = plain(xa), yb = projected(xb);
      EXPECT_TRUE(torch::allclose(ya, yb, 1e-6, 1e-6));
      auto w = torch::randn(ya.sizes());
      (ya * w).sum().backward();
      (yb * w).sum().backward();
      auto G = plain->weight.grad();
      auto ref = G - G.mm(U).mm(U.t());
      EXPECT_TRUE(torch::allclose(projected->weight.grad(), ref, 1e-5, 1e-5)) << "complement " << complement;
      EXPECT_TRUE(torch::allclose(xa.grad(), xb.grad(), 1e-6, 1e-6));
      EXPECT_TRUE(torch::allclose(plain->bias.grad(), projected->bias.grad(), 1e-6, 1e-6));
      EXPECT_LT(projected->weight.grad().mm(U).abs().max().item<double>(), 1e-5);
    }
  }
  // Clearing restores the plain gradient; eval (no grad) never takes the projected path.
  AdaptableLinear l(5, 3);
  l->set_input_projection(orthonormal(5, 2));
  l->set_input_projection({});
  EXPECT_FALSE(l->input_projection().defined());
  EXPECT_THROW(l->set_input_projection(orthonormal(4, 2)), c10::Error);
}

// Output and input projections together: weight.grad = (I − MMᵀ) G (I − UUᵀ), with and without
// complements; the input gradient stays the plain one.
TEST(AdaptableLinear, OutputAndInputProjectionsGiveTheTwoSidedGradient) {
  torch::manual_seed(4);
  for (bool complement : {false, true}) {
    AdaptableLinear plain(9, 7), projected(9, 7);
    {
      torch::NoGradGuard ng;
      projected->weight.copy_(plain->weight);
      projected->bias.copy_(plain->bias);
    }
    auto U = orthonormal(9, 3), M = orthonormal(7, 5);
    projected->set_input_projection(U, complement ? strata::subspaces::complement_basis(U) : torch::Tensor());
    projected->set_output_projection(M, complement ? strata::subspaces::complement_basis(M) : torch::Tensor());
    auto x = torch::randn({6, 9});
    auto xa = x.clone().requires_grad_(true), xb = x.clone().requires_grad_(true);
    auto w = torch::randn({6, 7});
    (plain(xa) * w).sum().backward();
    (projected(xb) * w).sum().backward();
    auto G = plain->weight.grad();
    auto ref = strata::subspaces::project_out_both(G, M, U);
    EXPECT_TRUE(torch::allclose(projected->weight.grad(), ref, 1e-5, 1e-5)) << "complement " << complement;
    EXPECT_TRUE(torch::allclose(xa.grad(), xb.grad(), 1e-6, 1e-6));
    EXPECT_TRUE(torch::allclose(plain->bias.grad(), projected->bias.grad(), 1e-6, 1e-6));
  }
}

// Factored gradients (CoSO): the layer's backward leaves weight.grad undefined and records δ, X
// with δᵀX = the plain layer's weight gradient; the output, input and bias gradients are the plain
// ones; 3-D (token) inputs are flattened to rows; batches over max_rows take the dense path; eval
// (no grad) and layers whose weight is frozen record nothing; projections do not combine.
TEST(AdaptableLinear, GradientFactorsGiveTheDenseGradient) {
  torch::manual_seed(5);
  for (bool with_bias : {true, false}) {
    for (auto shape : {std::vector<int64_t>{4, 9}, std::vector<int64_t>{2, 5, 9}}) {
      AdaptableLinear plain(9, 7, with_bias), factored(9, 7, with_bias);
      {
        torch::NoGradGuard ng;
        factored->weight.copy_(plain->weight);
        if (with_bias) factored->bias.copy_(plain->bias);
      }
      auto sink = c10::make_intrusive<strata::adapters::GradientFactors>();
      factored->set_gradient_factors(sink);
      auto x = torch::randn(shape);
      auto xa = x.clone().requires_grad_(true), xb = x.clone().requires_grad_(true);
      auto ya = plain(xa), yb = factored(xb);
      EXPECT_TRUE(torch::allclose(ya, yb, 1e-6, 1e-6));
      auto w = torch::randn(ya.sizes());
      (ya * w).sum().backward();
      (yb * w).sum().backward();
      EXPECT_FALSE(factored->weight.grad().defined());
      ASSERT_EQ(sink->delta.size(), 1u);
      const int64_t rows = x.numel() / 9;
      EXPECT_EQ(sink->delta[0].sizes(), (torch::IntArrayRef{rows, 7}));
      EXPECT_EQ(sink->input[0].sizes(), (torch::IntArrayRef{rows, 9}));
      EXPECT_FALSE(sink->delta[0].requires_grad() || sink->input[0].requires_grad());
      EXPECT_TRUE(torch::allclose(sink->dense(), plain->weight.grad(), 1e-5, 1e-5));
      EXPECT_TRUE(torch::allclose(xa.grad(), xb.grad(), 1e-6, 1e-6));
      if (with_bias) EXPECT_TRUE(torch::allclose(plain->bias.grad(), factored->bias.grad(), 1e-6, 1e-6));
      // A second backward appends (accumulates like .grad()).
      (factored(x) * w).sum().backward();
      EXPECT_EQ(sink->delta.size(), 2u);
      EXPECT_TRUE(torch::allclose(sink->dense(), 2 * plain->weight.grad(), 1e-5, 1e-5));
      sink->clear();
      // Over max_rows: the dense gradient, no factors.
      sink->max_rows = rows - 1;
      (factored(x) * w).sum().backward();
      EXPECT_TRUE(sink->empty());
      ASSERT_TRUE(factored->weight.grad().defined());
      EXPECT_TRUE(torch::allclose(factored->weight.grad(), plain->weight.grad(), 1e-5, 1e-5));
      sink->max_rows = rows;
      {
        torch::NoGradGuard ng;
        factored(x);
      }
      factored->weight.requires_grad_(false);
      factored(xb).sum().backward();
      EXPECT_TRUE(sink->empty());
      factored->weight.requires_grad_(true);
    }
  }
  AdaptableLinear l(5, 3);
  l->set_gradient_factors(c10::make_intrusive<strata::adapters::GradientFactors>());
  EXPECT_THROW(l->set_input_projection(orthonormal(5, 2)), c10::Error);
  EXPECT_THROW(l->set_output_projection(orthonormal(3, 1)), c10::Error);
  l->set_gradient_factors({});
  l->set_output_projection(orthonormal(3, 1));
  EXPECT_THROW(l->set_gradient_factors(c10::make_intrusive<strata::adapters::GradientFactors>()), c10::Error);
}
