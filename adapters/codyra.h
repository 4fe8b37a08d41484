#pragma once
// CoDyRA adapter: LoRA with a learnable importance gate per rank, sparsified by a
// proximal L1 step, pruned and merged into the base at every task end.
//
// Shapes (W [m=out, n=in]): A [r, n] Kaiming-uniform (U(-1/√n, 1/√n)), B [m, r] zeros, w [r] ~ N(0,1).
//   forward:  y = base + B·(w ⊙ (A·x))        (LoRA scale 1, as in the code; one mm and one addmm)
//   ΔW = B·diag(w)·A = Σ_i w_i B[:,i] A[i,:]   (effective rank ≤ ‖w‖₀)
//
// Per task (N optimizer steps, steps numbered 0..N-1):
//   start:       (nothing; a fresh adapter is in place — attach one, or the previous codyra_end_task reset it)
//   after step:  adapter.soft_threshold_(kappa_at(step, schedule))  — or codyra_after_step(model, ...)
//   end:         codyra_end_task(model): prune zeroed ranks, W += B·diag(w)·A, re-initialise A, B, w.
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "adapters/stateful_adapter.h"

namespace strata::adapters {

/// Which shrinkage operator soft_threshold_() applies.
enum class ShrinkMode {
  /// The paper's T_κ(w) = 1(|w| > κ)·(w − sign(w)·κ): the exact proximal operator of κ‖w‖₁.
  Paper,
  /// The official code's three in-place steps: w[w>κ] −= κ; w[w<−κ] += κ; w[|w|<κ] = 0.
  /// Net effect: zeroes every |w| < 2κ (except values landing exactly on ±κ).
  CodeCompat,
};

/// The κ ramp of the official code (models/codyra.py, train_model), for steps numbered from 0:
///   dense = dense_fraction·N (not floored, as in the code); kappas = linspace(0, kappa_max, num_kappas);
///   hop = ⌊(N − dense) / num_kappas⌋; the κ index starts at 0 and increases by one at every step
///   s ≥ dense with s % hop == 0 (capped at num_kappas−1); shrinkage is applied after step s only when
///   s > dense. If hop == 0 (N − dense < num_kappas) κ stays 0: no shrinkage at all, as in the code.
struct KappaSchedule {
  TORCH_ARG(int64_t, total_steps) = 500;
  TORCH_ARG(double, dense_fraction) = 0.5;
  TORCH_ARG(double, kappa_max) = 0.005;
  TORCH_ARG(int64_t, num_kappas) = 50;
};

/// The κ to apply after optimizer step `step` (0-based); 0 in the dense phase (T_0 is the identity in
/// both modes). κ is NOT multiplied by the learning rate; a caller wanting the
/// textbook prox of λ‖w‖₁ after a plain SGD step passes κ = η·λ itself.
double kappa_at(int64_t step, const KappaSchedule& schedule);

/// Apply the shrinkage operator to a tensor in place (exposed for tests and reuse).
void soft_threshold_(torch::Tensor& w, double kappa, ShrinkMode mode = ShrinkMode::Paper);

struct CoDyRAOptions {
  /* implicit */ CoDyRAOptions(int64_t rank) : rank_(rank) {}
  TORCH_ARG(int64_t, rank);
  /// Dropout on the adapter's input (training only); the CLIP code uses 0.
  TORCH_ARG(double, dropout) = 0.0;
};

class CoDyRAImpl : public StatefulAdapter {
 public:
  CoDyRAImpl(int64_t in_features, int64_t out_features, CoDyRAOptions options);

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& base_out) override;
  torch::Tensor delta_weight() const override;

  /// Back to the configured rank r: A Kaiming-uniform(a=√5), B = 0, w ~ N(0,1) (fresh random gates).
  void reset_parameters();
  /// w ← T_κ(w) in place (see ShrinkMode). No-op for κ ≤ 0.
  void soft_threshold_(double kappa, ShrinkMode mode = ShrinkMode::Paper);
  /// ‖w‖₀: ranks whose gate is not exactly zero.
  int64_t active_ranks() const;
  /// Drop exactly the ranks with w_i == 0 from A, B and w (the output is unchanged, since those ranks
  /// contribute nothing). Returns the number of ranks kept (0 if all were pruned).
  int64_t prune();
  /// Current number of ranks (r before pruning).
  int64_t rank() const { return w.size(0); }
  const CoDyRAOptions& options() const { return options_; }

  /// Keys: "A", "B", "w" (shapes may reflect a pruned rank).
  TensorMap state() const override;
  void load_state(const TensorMap& state) override;

  torch::Tensor A, B, w;  ///< [r, n], [m, r], [r] — all trainable

 private:
  CoDyRAOptions options_;
  int64_t in_, out_;
};
TORCH_MODULE(CoDyRA);

/// soft_threshold_(kappa_at(step, schedule), mode) on every CoDyRA adapter in the model.
void codyra_after_step(const torch::nn::Module& model, int64_t step, const KappaSchedule& schedule,
                       ShrinkMode mode = ShrinkMode::Paper);
/// The same on given adapters (a per-step caller keeps them in an AdapterCache instead of walking
/// the model at every optimizer step).
void codyra_after_step(const std::vector<std::shared_ptr<CoDyRAImpl>>& adapters, int64_t step,
                       const KappaSchedule& schedule, ShrinkMode mode = ShrinkMode::Paper);

struct CoDyRALayerStats {
  std::string name;
  int64_t rank = 0;        ///< configured rank r
  int64_t kept = 0;        ///< ranks that survived (merged into W)
  double delta_norm = 0;   ///< ‖ΔW‖_F of what was merged (0 when every rank was pruned)
  /// The merged update in factored form, ΔW = B·A_gated (the official code's bookkeeping of old
  /// factors): A_gated = diag(w)·A [kept, n], B [m, kept]. Empty (0 rows/cols) when kept == 0.
  torch::Tensor A_gated, B;
};

/// Task end for every CoDyRA adapter: prune(), W += B·diag(w)·A (nothing when all ranks were pruned,
/// so an all-zero update never touches W), then reset_parameters() so the adapter is ready for the next task. The
/// adapter stays attached. Returns per-layer statistics for the report.
std::vector<CoDyRALayerStats> codyra_end_task(const torch::nn::Module& model);

}  // namespace strata::adapters
