#pragma once
// Compatibility-aware training for ANY method: `CompatMethod` wraps the run's method,
// forwards every hook to it unchanged (projections, optimizers, state, report) and adds a compatibility
// loss against the previous version M_{t-1}. The Runner uses it when `--compat` is not `none`.
//
// focal (PCT focal distillation). At task start (t ≥ 1) the model IS M_{t-1} (the stored
// version v_{t-1}); its raw logits z^old [N, C] on this task's training data (the inner method's
// training_data()) are cached once (eval mode, no grad, batched). Each step adds
//     weight · (1/|S|) Σ_{i∈S} w_i · T²·KL(σ(z_i^old/T) ‖ σ(z_i/T)),   w_i = α + β·1[argmax z_i^old = y_i]
// over the logit columns the reference knows ("known" = the classes of tasks 0..t-1 under the
// scenario's masks; all columns in domain-IL), so softmaxes are renormalised over those columns.
// S = samples whose label is a known class (drop_new_class_samples, PCT's default), or every sample
// with new-class samples weighted α only. In a stream without replay and with disjoint classes
// (split-fmnist) the default would drop every sample (a focal term of exactly 0), so the run refuses at
// task 0, before any training, naming --compat-drop-new-classes false (then the term is LwF-style KD on
// the old heads, β having no effect).
//
// muscle (MUSCLE, two stages, Echterhoff et al. 2024; our interpretation of Eq. 1). The Runner's
// training of task t is stage 1 (plain M_t^plain, inner hooks only). next_stage(ctx, 1) caches
// M_t^plain's logits z^new on the training data and asks the Runner for stage 2: the task trained again
// (same inner hooks, so e.g. GPM's projection still applies; a fresh optimizer) for `stage2_epochs` epochs with
//     L = λ·L_mcomp + (1 − λ)·CE,  L_mcomp = mean_i [m_i·KL(ref_i‖student_i) + (1 − m_i)·KL(new_i‖student_i)],
// m_i = 1[student argmax ≠ y_i], T = 2, ref = M_{t-1}'s cached logits; KL(ref‖student) is taken over
// the classes M_{t-1} was trained on only (its other head rows are untrained), as focal does. Then it
// forwards on_task_end to the inner method (subspace updates see the final model: on_task_end comes
// after every stage). All three logit sets use the per-example
// logit mask the trainer applies at stage t. Stage-2 shuffles use seed + 1000003 so they differ from
// stage 1's.
//
// Per-step cost: everything of a term that depends on the row alone (the teachers' log-softmax and
// softmax, focal's weights and keep flags) is built once per task (MUSCLE's new teacher once per
// stage) as a per-row table; a step gathers its rows with one index_select and computes the term as
// one autograd node (KL distance; focal's L2 distance takes the generic path), with no cross-entropy
// of its own, no host sync and no per-step mask rebuild. MUSCLE's node reads its rows of the tables,
// the trainer's row masks and the known-first column order in place (one loop over the step's
// logits, forward and backward; CPU), so its term costs no gather, reorder or mask operator.
//
// Loss bookkeeping: the Trainer's task loss is w·CE(inner.training_logits(masked logits), y) (plain
// CE(z) for every method but CoSO, whose task loss is CE(z / T)), w = task_loss_weight. In muscle
// stage 2 the wrapper weights it by 1 − λ (times the inner method's weight) and extra_loss adds
// λ·L_mcomp, so the total is λ·L_mcomp + (1 − λ)·CE without a CE that is computed and then cancelled;
// for λ = 1 the Trainer computes no cross-entropy. (Until 2026-12-02 extra_loss returned
// λ·L_mcomp − λ·CE with the Trainer's CE tensor: the same total to float round-off.) Both terms read the model's logits z (StepContext::raw_logits / logits), never the inner method's
// training logits: the teachers' cached logits are a model's z (no method temperature), and a KL
// between a student and a teacher is only meaningful on the same scale; each term applies its own
// temperature (focal 100, MUSCLE 2). With CoSO inside, the total is then CE(z / T) + focal term, or
// λ·L_mcomp + (1 − λ)·CE(z / T). (Until 2026-12-02 CoSO's temperature was an extra loss
// CE(z / T) − CE(z), so MUSCLE's −λ·CE removed CE(z) instead of the task loss: CE(z / T) − λ·CE(z) +
// λ·L_mcomp. Focal's total is unchanged.)
//
// Resume: the caches are recomputed from the restored model at task start, and stage 2 runs inside a
// task (versions are written after on_task_end), so a resumed run equals an uninterrupted one.
// name() is the inner method's: versions stay loadable by the bare method (`strata eval`); save()
// adds one meta key, "compat_training" (per-task statistics), which inner loads ignore.
#include "compat/distill.h"
#include "continual/trainer.h"

#include <memory>

namespace strata::continual {

struct CompatTrainingOptions {
  /// Mode, α, β, T (≤ 0: the mode's default: 100 focal, 2 MUSCLE), weight λ, distance, class-IL rule.
  TORCH_ARG(compat::CompatTrainOptions, loss) = compat::CompatTrainOptions();
  /// MUSCLE stage-2 epochs; 0 = the run's --epochs.
  TORCH_ARG(int64_t, stage2_epochs) = 0;

 public:
  void validate() const;
};

class CompatMethod : public Method {
 public:
  CompatMethod(std::unique_ptr<Method> inner, CompatTrainingOptions options);

  std::string name() const override { return inner_->name(); }
  std::optional<OptimizerRecipe> recipe() const override { return inner_->recipe(); }
  bool mask_seen_classes() const override { return inner_->mask_seen_classes(); }
  void attach(models::Model& model) override { inner_->attach(model); }
  void on_task_start(TaskContext& ctx) override;
  std::vector<torch::Tensor> parameters(TaskContext& ctx) override { return inner_->parameters(ctx); }
  tasks::Split training_data(TaskContext& ctx) override { return inner_->training_data(ctx); }
  torch::Tensor training_logit_mask(TaskContext& ctx) override { return inner_->training_logit_mask(ctx); }
  std::unique_ptr<torch::optim::Optimizer> make_optimizer(TaskContext& ctx,
                                                          const std::vector<torch::Tensor>& params) override {
    return inner_->make_optimizer(ctx, params);
  }
  /// The inner method's (CoSO: z / T): the task loss is the inner method's; the terms read z.
  torch::Tensor training_logits(const torch::Tensor& logits) override { return inner_->training_logits(logits); }
  /// MUSCLE stage 2: (1 − λ)·the inner method's weight (the total is λ·L_mcomp + (1 − λ)·task loss);
  /// otherwise the inner method's.
  double task_loss_weight(const StepContext& step) const override;
  torch::Tensor extra_loss(StepContext& step) override;
  void after_backward(StepContext& step) override { inner_->after_backward(step); }
  void after_step(StepContext& step) override { inner_->after_step(step); }
  void on_train_end(TaskContext& ctx) override { inner_->on_train_end(ctx); }
  /// MUSCLE: stage 1 = the task's own training; next_stage(ctx, 1) caches M_t^plain's logits and
  /// returns stage 2's options; next_stage(ctx, 2) closes stage 2. Stages of the inner method are not
  /// forwarded (no built-in method has any).
  std::optional<TrainOptions> next_stage(TaskContext& ctx, int64_t stage) override;
  void on_task_end(TaskContext& ctx) override;
  MethodState save() const override;
  void load(const MethodState& state, models::Model& model) override;
  /// The inner report (object) plus "compat_training": {settings, per-task statistics}.
  nlohmann::json report() const override;

  Method& inner() { return *inner_; }
  const CompatTrainingOptions& options() const { return options_; }
  /// The reference (M_{t-1}) logits cached at the current task's start: [N, C] float32 in the
  /// training split's row order; undefined on task 0 or when the mode is none.
  const torch::Tensor& reference_logits() const { return ref_logits_; }
  /// MUSCLE: M_t^plain's logits cached before stage 2 (undefined otherwise).
  const torch::Tensor& plain_logits() const { return new_logits_; }

 private:
  /// MUSCLE: a report warning when the plain model beats the previous version on the current task's
  /// training data by more than this (accuracy difference).
  static constexpr double kWeakReferenceGap = 0.3;
  torch::Tensor focal_term(StepContext& step);
  torch::Tensor muscle_term(StepContext& step);

  std::unique_ptr<Method> inner_;
  CompatTrainingOptions options_;
  torch::Tensor ref_logits_, new_logits_;
  /// Per-row teacher data, built once per task (focal, the reference side of MUSCLE) or per stage
  /// (MUSCLE's new teacher) instead of at every step; a step gathers its rows with one index_select.
  ///   focal_rows_       [N, 2·K_old + 2]: log p, p of the reference over the known columns at T,
  ///                     the focal weight w_i and the keep flag (float)
  ///   muscle_ref_rows_  [N, 2·K_old]: log p, p of the reference over the known columns at T
  ///   muscle_new_rows_  [N, 2·C]: log p, p of M_t^plain, masked like the trainer's loss (-1e9) and
  ///                     in the known-first column order
  torch::Tensor focal_rows_, muscle_ref_rows_, muscle_new_rows_;
  /// The known columns are every column, in order (domain-IL): the student needs no gather.
  bool all_known_ = false;
  torch::Tensor known_columns_;  ///< [K_old] int64: the logit columns the reference was trained on
  torch::Tensor data_ids_;       ///< ids of the cached rows (checked against the trainer's data)
  torch::Tensor data_task_;      ///< MUSCLE: task of each training row (for the per-example logit masks)
  // Built once per task, not per step: the label -> position-among-known-columns map (focal), the
  // known-first column order and its inverse (MUSCLE), and MUSCLE's per-row "masked out" table [N, C].
  torch::Tensor focal_pos_, muscle_order_, muscle_pos_, row_masked_;
  bool stage2_ = false;
  // Per-task statistics for report(): the sum stays a tensor so a step costs no host sync.
  torch::Tensor compat_sum_;
  /// Mean compatibility term of the stage, over steps (and workers).
  double mean_compat_term(TaskContext& ctx) const;
  int64_t compat_steps_ = 0;
  nlohmann::json stats_ = nlohmann::json::array();
  nlohmann::json current_ = nlohmann::json::object();
};

/// Raw (unmasked) logits of `model` on x [N, ...] in eval mode without gradients, in batches: [N, C] float32.
torch::Tensor model_logits(models::ModelImpl& model, const tasks::Inputs& x, int64_t batch_size);

/// Wraps `inner` when options.loss().mode() != none; returns it unchanged otherwise.
std::unique_ptr<Method> with_compat_training(std::unique_ptr<Method> inner, const CompatTrainingOptions& options);

}  // namespace strata::continual
