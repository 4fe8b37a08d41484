#include "continual/trainer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>

using namespace strata;

namespace {

// The trainer's fused task loss against the composed operators it replaces: values, gradients
// and the hit count, for one dtype, with some logits masked to -inf as the trainer masks them.
void expect_matches_composed(torch::ScalarType dtype, int64_t B, int64_t C, bool masked) {
  torch::manual_seed(B * 131 + C);
  auto z0 = torch::randn({B, C}, torch::TensorOptions().dtype(dtype)) * 3;
  auto y = torch::randint(C, {B}, torch::kInt64);
  if (masked) {
    // Mask every third class except each row's target.
    auto mask = torch::arange(C).remainder(3).eq(0).unsqueeze(0).expand({B, C}).clone();
    mask.scatter_(1, y.unsqueeze(1), false);
    z0 = z0.masked_fill(mask, -std::numeric_limits<double>::infinity());
  }
  auto za = z0.clone().requires_grad_(true), zb = z0.clone().requires_grad_(true);
  const auto fused = continual::cross_entropy_hits(za, y);
  const auto ref = torch::nn::functional::cross_entropy(zb, y);
  const double tol = dtype == torch::kDouble ? 1e-12 : 1e-5;
  EXPECT_NEAR(fused.loss.item<double>(), ref.item<double>(), tol * std::max(1.0, ref.item<double>()));
  EXPECT_NEAR(fused.value, ref.item<double>(), tol * std::max(1.0, ref.item<double>()));
  EXPECT_EQ(fused.hits, z0.argmax(1).eq(y).sum().item<int64_t>());
  EXPECT_EQ(fused.loss.scalar_type(), dtype);
  // A non-unit upstream gradient, as a data-parallel worker's share scales it.
  (fused.loss * 0.375).backward();
  (ref * 0.375).backward();
  EXPECT_LT((za.grad() - zb.grad()).abs().max().item<double>(), tol);
}

}  // namespace

TEST(CrossEntropyHits, MatchesTheComposedLossGradientAndArgmaxCount) {
  for (auto dtype : {torch::kFloat, torch::kDouble})
    for (bool masked : {false, true}) {
      expect_matches_composed(dtype, 10, 10, masked);
      expect_matches_composed(dtype, 1, 7, masked);
      expect_matches_composed(dtype, 33, 100, masked);
      expect_matches_composed(dtype, 200, 100, masked);  // past the fused size: the composed path
    }
}

TEST(CrossEntropyHits, TiesCountTheFirstLargestLogitLikeArgmax) {
  // Rows 0 and 1 tie classes 1 and 2; the target is class 1 in row 0 (a hit) and 2 in row 1 (a miss).
  auto z = torch::tensor({{0.f, 5.f, 5.f}, {0.f, 5.f, 5.f}, {9.f, 1.f, 1.f}});
  auto y = torch::tensor({1, 2, 0}, torch::kInt64);
  EXPECT_EQ(continual::cross_entropy_hits(z, y).hits, 2);
  EXPECT_EQ(z.argmax(1).eq(y).sum().item<int64_t>(), 2);
}

TEST(CrossEntropyHits, NonFiniteLogitsGiveANonFiniteLossAndBadTargetsAreRefused) {
  auto z = torch::tensor({{0.f, 1.f}, {2.f, 3.f}});
  auto y = torch::tensor({0, 1}, torch::kInt64);
  auto nan_z = z.clone();
  nan_z[1][0] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(std::isfinite(continual::cross_entropy_hits(nan_z, y).value));
  auto masked_target = z.clone();
  masked_target[0][0] = -std::numeric_limits<float>::infinity();
  EXPECT_FALSE(std::isfinite(continual::cross_entropy_hits(masked_target, y).value));
  try {
    continual::cross_entropy_hits(z, torch::tensor({0, 2}, torch::kInt64));
    FAIL() << "an out-of-range target was accepted";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("target 2 of row 1 is out of range for 2 classes"),
              std::string::npos)
        << e.what_without_backtrace();
  }
}
