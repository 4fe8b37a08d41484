#pragma once
// `codyra`: CoDyRA. Each task trains a gated LoRA on the target layers,
//   y = base + B·(w ⊙ (A·x)),   A [r, n] Kaiming-uniform, B [m, r] zeros, gates w [r] ~ N(0, 1),
// densely for the first dense_fraction·N optimizer steps (N = steps of the task = epochs·⌈n/batch⌉),
// then after every optimizer step applies the proximal L1 step w ← T_κ(w) with κ ramped linearly from
// 0 to kappa_max over num_kappas values (adapters::kappa_at: the official code's schedule; κ is not
// multiplied by the learning rate). At task end the zeroed ranks are pruned, B·diag(w)·A
// is merged into W, and A, B, w are re-initialised (adapters::codyra_end_task): inference costs
// nothing extra. If N − dense < num_kappas the code's schedule never leaves κ = 0 (no shrinkage);
// the report flags this ("shrinkage": false).
//
// Options: rank 16, kappa_max 0.005 (runner script), dense_fraction 0.5,
// num_kappas 50, shrink paper|code-compat (default paper), dropout 0, target auto (vit: every
// attention q, k, v, o and MLP fc1, fc2), train_head true.
// report(): per task and layer, ranks kept (of r) and ‖ΔW‖_F merged; totals and pruned fraction.
#include "adapters/codyra.h"
#include "continual/adapter_method.h"

namespace strata::continual {

std::vector<MethodOption> codyra_options();

class CoDyRAMethod : public AdapterMethod {
 public:
  explicit CoDyRAMethod(const MethodConfig& config);
  std::string name() const override { return "codyra"; }
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
};



}  // namespace strata::continual
