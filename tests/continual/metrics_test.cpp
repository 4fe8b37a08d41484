#include "continual/metrics.h"

#include <gtest/gtest.h>

using strata::continual::compute_metrics;

// Hand-computed 3-task example.
//   R = [[0.9, 0.1, 0.2],
//        [0.7, 0.8, 0.3],
//        [0.6, 0.75, 0.95]]   b = [0.1, 0.15, 0.1]
TEST(Metrics, HandComputedMatrix) {
  auto R = torch::tensor({0.9, 0.1, 0.2, 0.7, 0.8, 0.3, 0.6, 0.75, 0.95}, torch::kFloat64).view({3, 3});
  auto b = torch::tensor({0.1, 0.15, 0.1}, torch::kFloat64);
  auto m = compute_metrics(R, b);
  EXPECT_NEAR(m.acc, (0.6 + 0.75 + 0.95) / 3, 1e-12);
  EXPECT_NEAR(m.avg_incremental, (0.9 + (0.7 + 0.8) / 2 + (0.6 + 0.75 + 0.95) / 3) / 3, 1e-12);
  EXPECT_NEAR(m.bwt, ((0.6 - 0.9) + (0.75 - 0.8)) / 2, 1e-12);
  EXPECT_NEAR(m.fwt, ((0.1 - 0.15) + (0.3 - 0.1)) / 2, 1e-12);
  // Forgetting: task 0 max(0.9, 0.7) - 0.6 = 0.3; task 1 max(0.8) - 0.75 = 0.05.
  EXPECT_NEAR(m.forgetting, (0.3 + 0.05) / 2, 1e-12);
}

TEST(Metrics, ForgettingCanBeNegativeAndPartialStages) {
  auto R = torch::tensor({0.5, 0.0, 0.7, 0.9}, torch::kFloat64).view({2, 2});
  auto m = compute_metrics(R);
  EXPECT_NEAR(m.forgetting, 0.5 - 0.7, 1e-12);  // a later task improved task 0
  EXPECT_NEAR(m.bwt, 0.2, 1e-12);
  auto first = compute_metrics(R, {}, 1);
  EXPECT_NEAR(first.acc, 0.5, 1e-12);
  EXPECT_EQ(first.bwt, 0.0);
  EXPECT_EQ(first.forgetting, 0.0);
}

TEST(Metrics, RejectsBadShapes) {
  EXPECT_THROW(compute_metrics(torch::zeros({2, 3})), c10::Error);
  EXPECT_THROW(compute_metrics(torch::zeros({2, 2}), torch::zeros({1})), c10::Error);
}
