#pragma once
// `osft`: orthogonal subspace fine-tuning with an adaptive weight SVD ("Sculpting Subspaces"),
// in the full-matrix "OSFT-lite" form: the weight itself is trained and projected, not U/S/V factors.
//
// For every target Linear weight W [m = out, n = in], R = min(m, n):
//   task start   thin SVD W = U Σ Vᵀ (float32); the top-k triplets (U_h [m,k], σ_h [k], V_h [n,k])
//                are frozen, the remaining R − k directions train.
//   after_backward   G ← (I − U_hU_hᵀ) G (I − V_hV_hᵀ)               (two-sided, factored, O(mnk))
//   after_step       W ← (I − U_hU_hᵀ) W (I − V_hV_hᵀ) + U_h diag(σ_h) V_hᵀ
//                    = W_start + P(W − W_start): the optimizer's own update (Adam scaling, weight
//                    decay, momentum) is re-projected every step, so U_hᵀΔW = 0 and ΔW V_h = 0 and
//                    the top-k singular triplets of W stay fixed within the task (mini_trainer's
//                    project_parameter_to_orthogonal_space, without storing W_start).
//   task end     nothing to merge: the next task re-decomposes the current W.
// Cost: both projections run in place through subspaces::project_out_both_; a side with
// k > dim/2 goes through its complement basis (U_h⊥ [m, m − k], V_h⊥ [n, n − k], from the task-start
// SVD), so a step costs O(mn·min(k, m − k) + ...) rather than O(mnk); after_step adds the frozen part
// W_h = U_h diag(σ_h) V_hᵀ, kept once per task ([m, n], one extra weight copy per decomposed layer).
// Layers with k = 0 cost nothing. With plain SGD (no momentum, no weight decay) the step is
// W ← W − lr·P(G) with W already satisfying the constraint, so the layer's backward writes P(G)
// directly from its factors (AdaptableLinear output and input projections: (δ − δU_hU_hᵀ)ᵀ and
// X − XV_hV_hᵀ, O(r·(m + n)·k) for r batch rows instead of O(mnk)), and after_step re-projects
// only every 256 steps to clear round-off drift.
// Deviation from the factored form (U_l, s_l, V_l trainable): the constraint set is the same, the
// optimizer geometry differs (stock optimizer on W): one optimizer for every method keeps runs comparable.
//
// Rank rules (k per layer, task t 0-based; task 0 is plain full fine-tuning, k = 0, as in the T5
// script):
//   "importance" (R1, paper; default)  I_l = mean over examples/tokens of cos(x, W x) on
//                `importance_samples` examples of the *previous* task's training split (option
//                importance_data = current: the new task's), recorded from each layer's input with
//                the model as it stands at task start; for non-square W only the first min(m, n)
//                coordinates of x and W x are compared (R2's resolution; R1 leaves it undefined).
//                I_n = I_l / mean_l I_l;  r = mrr + I_n (trr − mrr);  k = clamp(⌊r R⌋, 1, R − 1).
//                If mean_l I_l ≤ 1e-8 (no usable signal) every layer gets I_n = 1.
//   "progressive"  k = ⌊t / T · R⌋, a further 1/T of each layer per task.
//   "fixed"       (R4 uniform)          k = ⌊fraction · R⌋ for t ≥ 1 (fraction 1 = fully frozen).
//
// Targets: `target` regex (full match on the module path); "auto" = mlp `fc[0-9]+` (hidden
// layers), cnn `fc1`, vit `blocks\..*` (every Linear inside the blocks; patch embedding excluded).
// Head: layers matching `head` (default "head") are never decomposed and always train (each task
// needs its classifier rows; masking keeps other tasks' rows out of the loss). Every other
// parameter (biases, norms, embeddings, convs) trains in task 0 and is frozen afterwards
// (PEFT convention); train_other = true trains them in every task (T5 script).
//
// Store: the frozen bases of each task go to the run's recorder (TaskContext::recorder) as
// tasks/taskTT/<layer>: basis = V_h [n, k] (side "input"), singular_values = σ_h, extra/U_h = U_h [m, k],
// threshold = retained fraction k/R, captured_energy = Σσ_h² / Σσ².
#include "continual/method.h"

#include <string>
#include <vector>

namespace strata::continual {

std::vector<MethodOption> osft_options();

/// The importance score of one layer (R1): mean_i cos(x_i[:d], (W x_i)[:d]), d = min(m, n).
/// x [..., n] (rows are examples/tokens), W [m, n]; the bias is not part of the score.
double osft_layer_importance(const torch::Tensor& x, const torch::Tensor& W);

/// R1 mapping of raw importances to frozen ranks: I_n = I / mean(I), r = mrr + I_n (trr − mrr),
/// k = clamp(⌊r R_l⌋, min(1, R_l − 1), R_l − 1). Returns k per layer.
std::vector<int64_t> osft_importance_ranks(const std::vector<double>& importance, const std::vector<int64_t>& full_rank,
                                           double mrr, double trr);

class OSFTMethod : public Method {
 public:
  explicit OSFTMethod(const MethodConfig& config);
  ~OSFTMethod() override;
  std::string name() const override { return "osft"; }

  void on_task_start(TaskContext& ctx) override;
  void after_backward(StepContext& step) override;
  void after_step(StepContext& step) override;
  void on_task_end(TaskContext& ctx) override;

  MethodState save() const override;
  void load(const MethodState& state, models::Model& model) override;
  nlohmann::json report() const override;

  /// One decomposed layer of the current task.
  struct Layer {
    std::string name;
    adapters::AdaptableLinear layer{nullptr};
    torch::Tensor U;  ///< U_h [m, k] (undefined when k = 0)
    torch::Tensor S;  ///< σ_h [k]
    torch::Tensor V;  ///< V_h [n, k]
    torch::Tensor U_perp, V_perp;  ///< complements, only where k > m/2 (resp. n/2)
    torch::Tensor frozen;          ///< U_h diag(σ_h) V_hᵀ [m, n]
    int64_t k = 0, rank = 0;
    double importance = 0;  ///< raw I_l (NaN when the rule does not use it)
    double energy = 0;      ///< Σσ_h² / Σσ² at task start
  };
  const std::vector<Layer>& layers() const { return layers_; }
  int64_t task_index() const { return task_; }

 private:
  std::string target_pattern(const models::Model& model) const;
  std::vector<double> importances(TaskContext& ctx, const std::vector<Layer>& layers) const;
  void set_trainable(models::Model& model, int64_t task) const;
  void write_store(const TaskContext& ctx) const;
  static void prepare(Layer& l);

  std::string target_, head_, rule_, importance_data_;
  double mrr_, trr_, fraction_;
  int64_t importance_samples_;
  bool train_other_;

  void clear_projections();

  int64_t task_ = -1;
  bool factored_ = false;   // plain SGD this task: P(G) in the layers' backward
  int64_t steps_ = 0;       // after_step calls this task
  std::vector<Layer> layers_;
  nlohmann::json history_ = nlohmann::json::array();
};

}  // namespace strata::continual
