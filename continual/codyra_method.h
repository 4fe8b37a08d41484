#pragma once
// `codyra`: CoDyRA. Each task trains a gated LoRA on the target layers,
//   y = base + B·(w ⊙ (A·x)),   A [r, n] Kaiming-uniform, B [m, r] zeros, gates w [r] ~ N(0, 1),
// densely for the first dense_fraction·N optimizer steps (N = steps of the task = epochs·⌈n/batch⌉),
// then after every optimizer step applies the proximal L1 step w ← T_κ(w) with κ ramped linearly from
// 0 to kappa_max over num_kappas values (adapters::kappa_at: the official code's schedule; κ is not
// multiplied by the learning rate). At task end the zeroed ranks are pruned, B·diag(w)·A
// is merged into W and the adapters removed: every version is the plain base model (inference costs
// nothing extra); the next task's on_task_start attaches fresh ones (A, B, w re-drawn). If N − dense < num_kappas the code's schedule never leaves κ = 0 (no shrinkage);
// the report flags this ("shrinkage": false).
//
// Options: rank 16, kappa_max 0.005 (runner script), dense_fraction 0.5,
// num_kappas 50, shrink paper|code-compat (default paper), dropout 0, mask_seen true (class-incremental
// streams: the loss sees only the current task's classes, as the official code masks seen classes),
// target auto (vit: every attention q, k, v, o and MLP fc1, fc2), train_head true.
// Training recipe (Method::recipe, used unless the user sets the optimizer options): codyra_recipe().
// report(): per task and layer, ranks kept (of r) and ‖ΔW‖_F merged; totals and pruned fraction.
#include "adapters/codyra.h"
#include "continual/adapter_method.h"

namespace strata::continual {

struct CoDyRAMethodOptions {
  /// Initial LoRA rank r per layer (pruned by the gates).
  TORCH_ARG(int64_t, rank) = 16;
  /// Final soft-threshold κ of the ramp (the runner script's value; not scaled by the learning rate).
  TORCH_ARG(double, kappa_max) = 0.005;
  TORCH_ARG(double, dense_fraction) = 0.5;
  TORCH_ARG(int64_t, num_kappas) = 50;
  /// paper | code-compat.
  TORCH_ARG(std::string, shrink) = "paper";
  TORCH_ARG(double, dropout) = 0.0;
  /// Class-incremental: earlier tasks' classes masked out of the training loss (Method::mask_seen_classes).
  TORCH_ARG(bool, mask_seen) = true;
  TORCH_ARG(AdapterCommonOptions, common);
};

const OptionTable<CoDyRAMethodOptions>& codyra_table();

/// The official CoDyRA/MoRAM recipe: AdamW lr 5e-4, β (0.9, 0.9999), weight decay 0, cosine schedule
/// over each task's steps without warm-up.
OptimizerRecipe codyra_recipe();

class CoDyRAMethod : public AdapterMethod {
 public:
  explicit CoDyRAMethod(const CoDyRAMethodOptions& options = {});
  std::string name() const override { return "codyra"; }
  std::optional<OptimizerRecipe> recipe() const override { return codyra_recipe(); }
  bool mask_seen_classes() const override { return mask_seen_; }
  void on_task_start(TaskContext& ctx) override;
  void after_step(StepContext& step) override;
  void on_task_end(TaskContext& ctx) override;

  /// The κ schedule of the current task (total_steps set by on_task_start).
  const adapters::KappaSchedule& schedule() const { return schedule_; }
  adapters::ShrinkMode shrink_mode() const { return mode_; }

 protected:
  models::TargetRole target_role() const override { return models::TargetRole::kAttentionAndMlp; }
  std::shared_ptr<adapters::Adapter> make_adapter(const std::string& name,
                                                  const adapters::AdaptableLinearImpl& layer) override;

 private:
  adapters::CoDyRAOptions options_;
  adapters::KappaSchedule schedule_;
  adapters::ShrinkMode mode_ = adapters::ShrinkMode::Paper;
  double last_kappa_ = 0;
  bool mask_seen_ = true;
  adapters::AdapterCache<adapters::CoDyRAImpl> codyra_adapters_;  // after_step runs at every step
};



}  // namespace strata::continual
