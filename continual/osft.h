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
// Starting point. From a fresh model, task 0 is plain full fine-tuning (k = 0, as in the T5 script).
// From pre-trained weights (the Runner sets TaskContext::pretrained for --init and --pretrain;
// option protect_start = auto | always | never) the starting weights are what the paper protects:
// the top-k directions of the pre-trained W are frozen already during task 0, and the non-target,
// non-head parameters are frozen from task 0 on (unless train_other).
//
// Rank rules (k per layer, task t 0-based, T tasks):
//   "importance" (R1, paper)  I_l = a per-layer input/output similarity on
//                `importance_samples` examples drawn at random (seeded by the run seed and the task)
//                from the *previous* task's training split (importance_data = current: the new task's;
//                task 0 of a protected start uses the new task's), recorded from each layer's input with
//                the model as it stands at task start (osft_layer_importance):
//                  square W (m = n): the paper's mean over examples/tokens of cos(x, W x);
//                  non-square W: the input and output spaces share no coordinates, so cos(x, W x) is
//                  undefined (comparing the first min(m, n) coordinates pairs, e.g., pixels with hidden
//                  units). The score is then the basis-free analogue, the uncentred linear CKA
//                  ‖XᵀY‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) of the sample inputs X [N, n] and outputs Y = X Wᵀ:
//                  1 when W acts on the samples' span as a scaled isometry (passes the input's geometry
//                  through), near 0 when it discards it; like cos it ignores the bias.
//                I_n = I_l / mean I;  r = mrr + I_n (trr − mrr);  k = clamp(⌊r R⌋, 1, R − 1), the mean
//                taken over the layers of the same kind (square layers among themselves, non-square
//                among themselves: cos and CKA have different scales, a random square layer scores
//                ≈ 0 by cos and a random non-square one ≈ 0.5 by CKA, so one mean would freeze every
//                non-square layer almost fully). A layer alone of its kind (the MLP's fc1) gets trr.
//                If the kind's mean is ≤ 1e-8 (no usable signal) its layers get I_n = 1.
//   "progressive" (default; R4's progressive budget)  k = ⌊t / T · R⌋, a further 1/T of each layer per task; with a protected start
//                k = ⌊(t + 1) / (T + 1) · R⌋ (the starting weights are the first of T + 1 parts).
//   "fixed"       (R4 uniform)          k = ⌊fraction · R⌋ for t ≥ 1 (and t = 0 with a protected
//                start; fraction 1 = fully frozen).
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
#include "continual/option_table.h"

#include <string>
#include <vector>

namespace strata::continual {

struct OSFTOptions {
  /// Decomposed Linear layers (a layer glob); "auto" = the model's block layers.
  TORCH_ARG(std::string, target) = "auto";
  /// Classifier layers (a glob): never decomposed, always trained.
  TORCH_ARG(std::string, head) = "head";
  /// progressive | importance | fixed (progressive: the better rule in the pre-trained regime, README).
  TORCH_ARG(std::string, rank_rule) = "progressive";
  TORCH_ARG(double, mrr) = 0.1;
  TORCH_ARG(double, trr) = 0.8;
  TORCH_ARG(double, fraction) = 0.5;
  /// previous | current.
  TORCH_ARG(std::string, importance_data) = "previous";
  TORCH_ARG(int64_t, importance_samples) = 128;
  TORCH_ARG(bool, train_other) = false;
  /// auto | always | never (see "Starting point").
  TORCH_ARG(std::string, protect_start) = "auto";

 public:
  void validate() const;
};

const OptionTable<OSFTOptions>& osft_table();

/// The importance score of one layer: square W, mean_i cos(x_i, W x_i) (the paper's); non-square W,
/// the uncentred linear CKA ‖XᵀY‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F), Y = X Wᵀ, in [0, 1].
/// x [..., n] (rows are examples/tokens), W [m, n]; the bias is not part of the score.
double osft_layer_importance(const torch::Tensor& x, const torch::Tensor& W);

/// R1 mapping of raw importances to frozen ranks: I_n = I / mean(I), r = mrr + I_n (trr − mrr),
/// k = clamp(⌊r R_l⌋, min(1, R_l − 1), R_l − 1). Returns k per layer. `group` (empty = one group):
/// the mean is taken over the layers of the same group only (scores of different definitions are
/// never compared).
std::vector<int64_t> osft_importance_ranks(const std::vector<double>& importance, const std::vector<int64_t>& full_rank,
                                           double mrr, double trr, const std::vector<int64_t>& group = {});

class OSFTMethod : public Method {
 public:
  explicit OSFTMethod(OSFTOptions options = {});
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

  bool protects_start(const TaskContext& ctx) const;

  std::string target_, head_, rule_, importance_data_, protect_start_;
  double mrr_, trr_, fraction_;
  int64_t importance_samples_;
  bool train_other_;

  void clear_projections();

  int64_t task_ = -1;
  bool protected_start_ = false;  // this run protects the starting weights (fixed at task start)
  bool factored_ = false;   // plain SGD this task: P(G) in the layers' backward
  int64_t steps_ = 0;       // after_step calls this task
  std::vector<Layer> layers_;
  nlohmann::json history_ = nlohmann::json::array();
};

}  // namespace strata::continual
