#pragma once
// Continual-learning metrics from the accuracy matrix.
//
// R[i][j] = test accuracy (fraction in [0,1]) on task j right after training task i; the full
// T×T matrix is kept, upper triangle included (FWT needs it). b[j] = accuracy of the freshly
// initialised model on task j.
#include <nlohmann/json.hpp>
#include <torch/torch.h>

namespace strata::continual {

struct ClMetrics {
  double acc = 0;              ///< ACC = mean_j R[T-1][j] (final average accuracy)
  double avg_incremental = 0;  ///< Ā = mean_k A_k, A_k = mean_{j<=k} R[k][j] (Rebuffi et al.)
  double bwt = 0;              ///< BWT = mean_{j<T-1} (R[T-1][j] - R[j][j]); 0 when T = 1
  double fwt = 0;              ///< FWT = mean_{j>=1} (R[j-1][j] - b[j]); 0 when T = 1 or b undefined
  /// Forgetting (Chaudhry et al. 2018): mean_{j<T-1} max_{l in [j, T-2]} R[l][j] - R[T-1][j]
  /// (max over earlier rows only, so it can be negative). 0 when T = 1.
  double forgetting = 0;
  nlohmann::json to_json() const;
};

/// R: [T, T] float64 (rows = training stage, columns = evaluated task). b: [T] or undefined.
/// Uses the first `stages` rows (default all): metrics of a partial run are those at its last stage.
ClMetrics compute_metrics(const torch::Tensor& R, const torch::Tensor& b = {}, int64_t stages = -1);

}  // namespace strata::continual
