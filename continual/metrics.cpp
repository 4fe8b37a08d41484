#include "continual/metrics.h"

#include <algorithm>

namespace strata::continual {

nlohmann::json ClMetrics::to_json() const {
  return {{"acc", acc}, {"avg_incremental_acc", avg_incremental}, {"bwt", bwt}, {"fwt", fwt}, {"forgetting", forgetting}};
}

ClMetrics compute_metrics(const torch::Tensor& R_in, const torch::Tensor& b_in, int64_t stages) {
  TORCH_CHECK(R_in.dim() == 2 && R_in.size(0) == R_in.size(1) && R_in.size(0) > 0,
              "strata::continual::compute_metrics(): R must be a non-empty square matrix, got ", R_in.sizes());
  const int64_t T = stages < 0 ? R_in.size(0) : stages;
  TORCH_CHECK(T >= 1 && T <= R_in.size(0), "strata::continual::compute_metrics(): stages ", stages, " out of range");
  auto R = R_in.to(torch::kFloat64).contiguous();
  auto r = R.accessor<double, 2>();
  ClMetrics m;
  // Metrics over the first T tasks, as seen at stage T-1.
  for (int64_t j = 0; j < T; ++j) m.acc += r[T - 1][j];
  m.acc /= T;
  for (int64_t k = 0; k < T; ++k) {
    double a = 0;
    for (int64_t j = 0; j <= k; ++j) a += r[k][j];
    m.avg_incremental += a / (k + 1);
  }
  m.avg_incremental /= T;
  if (T > 1) {
    for (int64_t j = 0; j < T - 1; ++j) {
      m.bwt += r[T - 1][j] - r[j][j];
      double best = r[j][j];
      for (int64_t l = j; l < T - 1; ++l) best = std::max(best, r[l][j]);
      m.forgetting += best - r[T - 1][j];
    }
    m.bwt /= (T - 1);
    m.forgetting /= (T - 1);
    if (b_in.defined()) {
      TORCH_CHECK(b_in.numel() >= T, "strata::continual::compute_metrics(): b has ", b_in.numel(), " entries, need ", T);
      auto b = b_in.to(torch::kFloat64).contiguous();
      auto bb = b.accessor<double, 1>();
      for (int64_t j = 1; j < T; ++j) m.fwt += r[j - 1][j] - bb[j];
      m.fwt /= (T - 1);
    }
  }
  return m;
}

}  // namespace strata::continual
