#include <gtest/gtest.h>
#include <torch/torch.h>

#include "adapters/adaptable_linear.h"
#include "core/step_inputs.h"
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

// The deferred projection under SGD (with and without momentum): each step's effective weight
// W = weight + C Fᵀ equals explicit projected SGD's, W ← W − η·G(I − UUᵀ), for both forms, for an
// input with and without a gradient; the output and the input gradient are the effective layer's.
// The cases are picked so that the layer takes the deferred path where the cost model says it pays
// (and the input projection elsewhere); both must give the projected steps.
TEST(AdaptableLinear, DeferredProjectionTakesTheProjectedSgdSteps) {
  torch::manual_seed(5);
  struct Case {
    int64_t k;
    bool free, input_grad, active;
  };
  // in 40, out 6, 8 rows: protected k 10 pays only without an input gradient; free (r = 4) pays with one.
  for (const Case c : {Case{10, false, false, true}, Case{10, false, true, false}, Case{36, true, true, true},
                       Case{36, true, false, true}}) {
    for (double momentum : {0.0, 0.9}) {
      AdaptableLinear ref(40, 6), deferred(40, 6);
      {
        torch::NoGradGuard ng;
        deferred->weight.copy_(ref->weight);
        deferred->bias.copy_(ref->bias);
      }
      auto U = orthonormal(40, c.k);
      auto U_perp = strata::subspaces::complement_basis(U);
      deferred->set_input_projection(U, c.free ? U_perp : torch::Tensor());
      auto C = torch::zeros({6, c.free ? 40 - c.k : c.k}).requires_grad_(true);
      deferred->set_deferred_projection(c.free ? U_perp : U, C, c.free);
      const double lr = 0.1;
      torch::optim::SGD opt_ref({ref->weight, ref->bias}, torch::optim::SGDOptions(lr).momentum(momentum));
      torch::optim::SGD opt_def({deferred->weight, deferred->bias, C}, torch::optim::SGDOptions(lr).momentum(momentum));
      for (int step = 0; step < 6; ++step) {
        auto x = torch::randn({8, 40});
        auto xa = x.clone().requires_grad_(c.input_grad), xb = x.clone().requires_grad_(c.input_grad);
        opt_ref.zero_grad();
        opt_def.zero_grad();
        auto ya = ref(xa), yb = deferred(xb);
        EXPECT_EQ(deferred->deferred_projection_active(), c.active) << "k " << c.k << " input grad " << c.input_grad;
        ASSERT_TRUE(torch::allclose(ya, yb, 1e-5, 1e-5)) << "step " << step;
        auto w = torch::randn(ya.sizes());
        (ya * w).sum().backward();
        (yb * w).sum().backward();
        {
          torch::NoGradGuard ng;
          auto& G = ref->weight.mutable_grad();
          G.sub_(G.mm(U).mm(U.t()));
        }
        if (c.input_grad) {
          EXPECT_TRUE(torch::allclose(xa.grad(), xb.grad(), 1e-5, 1e-5));
        }
        opt_ref.step();
        opt_def.step();
      }
      // No-grad forwards (evaluation) see the effective weight too.
      auto x = torch::randn({3, 40});
      torch::Tensor ya, yb;
      {
        torch::NoGradGuard ng;
        ya = ref(x);
        yb = deferred(x);
      }
      EXPECT_TRUE(torch::allclose(ya, yb, 1e-5, 1e-5));
      deferred->fold_deferred_projection();
      EXPECT_FALSE(deferred->deferred_projection_active());
      EXPECT_TRUE(torch::allclose(deferred->weight, ref->weight, 1e-5, 1e-5))
          << "k " << c.k << " free " << c.free << " momentum " << momentum << ": max diff "
          << (deferred->weight - ref->weight).abs().max().item<double>();
      EXPECT_TRUE(torch::allclose(deferred->bias, ref->bias, 1e-6, 1e-6));
    }
  }
  AdaptableLinear l(5, 3);
  EXPECT_THROW(l->set_deferred_projection(orthonormal(4, 2), torch::zeros({3, 2}), false), c10::Error);
  EXPECT_THROW(l->set_deferred_projection(orthonormal(5, 2), torch::zeros({3, 3}), false), c10::Error);
}

namespace {
// Step inputs over the rows of `data` in `order`, as the trainer publishes them: x is the step's
// gathered batch; the gather writes the asked rows into the buffer.
strata::core::StepInputs step_inputs(const torch::Tensor& data, const torch::Tensor& order, int64_t begin, int64_t end,
                                     uint64_t id, const torch::Tensor& x) {
  strata::core::StepInputs si;
  si.x = x;
  si.order = order;
  si.begin = begin;
  si.end = end;
  si.order_id = id;
  si.gather = [data](const torch::Tensor& rows, torch::Tensor& buffer) {
    buffer = data.index_select(0, rows);
    return buffer;
  };
  return si;
}

// Two 40 -> 6 layers with the same weights, each under a deferred projection of F (U with k
// orthonormal columns, or its complement when `free`) with its own C and SGD: `ref` computes its
// products every step (ahead_bytes 0), `other` takes them ahead, in chunks of `ahead_rows` rows,
// with the given whole-task cache budget.
struct DeferredPair {
  AdaptableLinear ref{40, 6}, other{40, 6};
  torch::Tensor C_ref, C_other;
  std::unique_ptr<torch::optim::SGD> opt_ref, opt_other;
  DeferredPair(bool free, int64_t k, double momentum, int64_t ahead_rows, int64_t cache_bytes) {
    {
      torch::NoGradGuard ng;
      other->weight.copy_(ref->weight);
      other->bias.copy_(ref->bias);
    }
    const auto U = orthonormal(40, k);
    const auto F = free ? strata::subspaces::complement_basis(U) : U;
    const int64_t f = F.size(1), width = f + (free ? 6 : 0);
    C_ref = torch::zeros({6, f}).requires_grad_(true);
    C_other = torch::zeros({6, f}).requires_grad_(true);
    ref->set_deferred_projection(F, C_ref, free, 0, /*ahead_bytes=*/0);
    other->set_deferred_projection(F, C_other, free, 0, ahead_rows * 4 * width, cache_bytes);
    const auto sgd = torch::optim::SGDOptions(0.1).momentum(momentum);
    opt_ref = std::make_unique<torch::optim::SGD>(std::vector<torch::Tensor>{ref->weight, ref->bias, C_ref}, sgd);
    opt_other =
        std::make_unique<torch::optim::SGD>(std::vector<torch::Tensor>{other->weight, other->bias, C_other}, sgd);
  }
  // One SGD step of both on x, `other` inside a guard of `si`: the outputs and the gradients must
  // agree at 1e-5.
  void step(const torch::Tensor& x, strata::core::StepInputs si, const std::string& where) {
    opt_ref->zero_grad();
    opt_other->zero_grad();
    auto ya = ref(x.clone());
    torch::Tensor yb;
    {
      strata::core::StepInputsGuard guard(std::move(si));
      yb = other(x);
    }
    ASSERT_TRUE(other->deferred_projection_active()) << where;
    ASSERT_TRUE(torch::allclose(ya, yb, 1e-5, 1e-5)) << where;
    auto w = torch::randn(ya.sizes());
    (ya * w).sum().backward();
    (yb * w).sum().backward();
    EXPECT_TRUE(torch::allclose(C_ref.grad(), C_other.grad(), 1e-5, 1e-5)) << where;
    ASSERT_EQ(ref->weight.grad().defined(), other->weight.grad().defined()) << where;
    if (ref->weight.grad().defined()) {
      EXPECT_TRUE(torch::allclose(ref->weight.grad(), other->weight.grad(), 1e-5, 1e-5)) << where;
    }
    opt_ref->step();
    opt_other->step();
  }
};
}  // namespace

// The deferred form with its input products taken from chunks of the epoch's coming rows: the
// same outputs and the same SGD steps as without, over two epochs of different orders, chunks of 12
// rows against batches of 5 (a chunk serves two steps, the second from inside it; the third step's
// range runs past it and refills), a short last batch, both forms, with and without momentum.
TEST(AdaptableLinear, DeferredProjectionTakesInputsAheadWithTheSameSteps) {
  torch::manual_seed(7);
  const int64_t n = 23, bs = 5;
  auto data = torch::randn({n, 40});
  for (const bool free : {false, true}) {
    for (double momentum : {0.0, 0.9}) {
      DeferredPair pair(free, free ? 36 : 10, momentum, /*ahead_rows=*/12, /*cache_bytes=*/0);
      auto &ref = pair.ref, &ahead = pair.other;
      for (int epoch = 0; epoch < 2; ++epoch) {
        auto order = torch::randperm(n, torch::kInt64);
        const uint64_t id = strata::core::new_order_id();
        for (int64_t b = 0; b < n; b += bs) {
          const int64_t e = std::min(n, b + bs);
          auto x = data.index_select(0, order.slice(0, b, e));
          pair.step(x, step_inputs(data, order, b, e, id, x),
                    "free " + std::to_string(free) + " epoch " + std::to_string(epoch) + " rows " + std::to_string(b));
        }
      }
      ref->fold_deferred_projection();
      ahead->fold_deferred_projection();
      EXPECT_TRUE(torch::allclose(ahead->weight, ref->weight, 1e-5, 1e-5))
          << "free " << free << " momentum " << momentum << ": max diff "
          << (ahead->weight - ref->weight).abs().max().item<double>();
      EXPECT_TRUE(torch::allclose(ahead->bias, ref->bias, 1e-6, 1e-6));
    }
  }
  AdaptableLinear l(5, 3);
  EXPECT_THROW(l->set_deferred_projection(orthonormal(5, 2), torch::zeros({3, 2}), false, 0, -1), c10::Error);
}

// The whole-task cache: with rows named (rows_id) and a budget that holds them, every row's products
// are computed once across two epochs of different orders (the gather sees each row once), and the
// steps match the layer without precomputed rows; a new rows_id refills it; a budget one byte short
// of the rows falls back to per-epoch chunks (every epoch gathers every row again).
TEST(AdaptableLinear, InputsCacheComputesEachRowOncePerTask) {
  torch::manual_seed(9);
  const int64_t n = 23, bs = 5;
  auto data = torch::randn({n, 40});
  for (const bool free : {false, true}) {
    const int64_t k = free ? 36 : 10, f = free ? 40 - k : k, width = f + (free ? 6 : 0);
    const int64_t need = n * width * static_cast<int64_t>(sizeof(float));
    for (const int64_t cache_bytes : {need, need - 1}) {
      DeferredPair pair(free, k, 0.9, /*ahead_rows=*/12, cache_bytes);
      auto &ref = pair.ref, &cached = pair.other;
      int64_t gathered = 0;
      uint64_t rows_id = strata::core::new_order_id();
      for (int epoch = 0; epoch < 3; ++epoch) {
        if (epoch == 2) {
          if (cache_bytes == need) {
            EXPECT_EQ(gathered, n) << "free " << free << ": each row once over two epochs";
          } else {
            EXPECT_GE(gathered, 2 * n) << "free " << free << ": over budget, every row every epoch";
          }
          rows_id = strata::core::new_order_id();  // other rows under the same layer: refilled
          gathered = 0;
        }
        auto order = torch::randperm(n, torch::kInt64);
        const uint64_t id = strata::core::new_order_id();
        for (int64_t b = 0; b < n; b += bs) {
          const int64_t e = std::min(n, b + bs);
          auto x = data.index_select(0, order.slice(0, b, e));
          {
            auto si = step_inputs(data, order, b, e, id, x);
            si.rows_id = rows_id;
            si.num_rows = n;
            auto inner = si.gather;
            si.gather = [&gathered, inner](const torch::Tensor& rows, torch::Tensor& buffer) {
              gathered += rows.numel();
              return inner(rows, buffer);
            };
            pair.step(x, std::move(si),
                      "free " + std::to_string(free) + " epoch " + std::to_string(epoch) + " rows " + std::to_string(b));
          }
        }
      }
      if (cache_bytes == need) EXPECT_EQ(gathered, n) << "a new rows_id fills the cache again, once";
      ref->fold_deferred_projection();
      cached->fold_deferred_projection();
      EXPECT_TRUE(torch::allclose(cached->weight, ref->weight, 1e-5, 1e-5));
    }
  }
  AdaptableLinear l(5, 3);
  EXPECT_THROW(l->set_deferred_projection(orthonormal(5, 2), torch::zeros({3, 2}), false, 0, 0, -1), c10::Error);
}

// The precomputed rows serve only the step's own input: a guard whose gather disagrees with x on
// purpose shows which forwards used them. The step's input itself (and its flattened view) does;
// a copy of it, the same tensor after an in-place change, a forward outside any guard, a no-grad
// forward and a layer with ahead_bytes 0 do not.
TEST(AdaptableLinear, InputsAheadServeOnlyTheStepsOwnInput) {
  torch::manual_seed(8);
  AdaptableLinear layer(12, 4);
  auto U = orthonormal(12, 9);
  auto C = torch::randn({4, 3}).requires_grad_(true);
  auto x4 = torch::randn({5, 3, 2, 2});  // as a trainer batch [B, C, H, W]; the layer sees x4.flatten(1)
  auto order = torch::arange(5, torch::kInt64);
  strata::core::StepInputs si = step_inputs(torch::zeros({5, 3, 2, 2}), order, 0, 5, strata::core::new_order_id(), x4);
  const auto F = strata::subspaces::complement_basis(U);
  const auto x2 = x4.flatten(1);
  // The effective weight's output, computed from the input itself.
  const auto plain = (x2.mm(layer->weight.t()) + x2.mm(F).mm(C.t()) + layer->bias).detach();
  const auto from_zeros = layer->bias.detach().expand({5, 4});  // what zero inputs give
  layer->set_deferred_projection(F, C, /*free=*/true);
  {
    strata::core::StepInputsGuard guard(si);
    EXPECT_TRUE(torch::allclose(layer(x4.flatten(1)), from_zeros)) << "the step's input takes the precomputed rows";
    EXPECT_TRUE(torch::allclose(layer(x4.flatten(1).clone()), plain, 1e-5, 1e-5)) << "a copy computes its own";
    {
      torch::NoGradGuard ng;
      EXPECT_TRUE(torch::allclose(layer(x4.flatten(1)), plain, 1e-5, 1e-5)) << "no-grad forwards compute their own";
    }
    x4.mul_(1);  // an in-place change: the version counter moves on
    EXPECT_TRUE(torch::allclose(layer(x4.flatten(1)), plain, 1e-5, 1e-5)) << "a changed input computes its own";
  }
  EXPECT_TRUE(torch::allclose(layer(x4.flatten(1)), plain, 1e-5, 1e-5)) << "no guard";
  AdaptableLinear off(12, 4);
  {
    torch::NoGradGuard ng;
    off->weight.copy_(layer->weight);
    off->bias.copy_(layer->bias);
  }
  off->set_deferred_projection(F, C, true, 0, 0);
  strata::core::StepInputs si2 = step_inputs(torch::zeros({5, 3, 2, 2}), order, 0, 5, strata::core::new_order_id(), x4);
  strata::core::StepInputsGuard guard(si2);
  EXPECT_TRUE(torch::allclose(off(x4.flatten(1)), plain, 1e-5, 1e-5)) << "ahead_bytes 0";
  EXPECT_THROW(strata::core::StepInputsGuard(strata::core::StepInputs()), c10::Error);
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
      if (with_bias) {
        EXPECT_TRUE(torch::allclose(plain->bias.grad(), factored->bias.grad(), 1e-6, 1e-6));
      }
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
