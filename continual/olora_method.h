#pragma once
// `olora`: O-LoRA. Each task trains a fresh LoRA (A [r, n], B [m, r]) next to a frozen
// bank of all earlier tasks' factors (A_old [R, n], B_old [m, R]; forward y = base + s·B·A·x +
// s·B_old·A_old·x), with the loss
//   L = L_task + λ₁ Σ_layers Σ_ij |(A_old Aᵀ)_ij| + λ₂ Σ_layers (‖A‖ + ‖B‖)
// (extra_loss hook: adapters::OLoRAPenalty, one autograd node for the orthogonality term of every
// layer; undefined, i.e. no term, while every bank is empty and λ₂ = 0). At task end A, B are
// appended to the bank and re-initialised (adapters::olora_end_task); the bank is kept unmerged, as in
// the official code, so the forward cost grows by r(m+n) per task per layer.
//
// Options: rank 8, alpha 32, dropout 0.1, lambda1 0.5, lambda2 0,
// target auto (vit: attention q, v), train_head true. Training recipe (used unless the user sets the
// optimizer options): AdamW lr 1e-3, β (0.9, 0.999), weight decay 0, constant schedule.
// report(): per task, the unweighted orthogonality term Σ|A_old Aᵀ| at the end of the task (before
// banking) and the bank rank per layer after it.
#include "adapters/lora.h"
#include "continual/adapter_method.h"

namespace strata::continual {

struct OLoRAMethodOptions {
  TORCH_ARG(int64_t, rank) = 8;
  TORCH_ARG(double, alpha) = 32.0;
  TORCH_ARG(double, dropout) = 0.1;
  /// Weight of the orthogonality term Σ|A_old Aᵀ|.
  TORCH_ARG(double, lambda1) = 0.5;
  /// Weight of the norm term ‖A‖ + ‖B‖.
  TORCH_ARG(double, lambda2) = 0.0;
  TORCH_ARG(AdapterCommonOptions, common);
};

const OptionTable<OLoRAMethodOptions>& olora_table();

class OLoRAMethod : public AdapterMethod {
 public:
  explicit OLoRAMethod(const OLoRAMethodOptions& options = {});
  std::string name() const override { return "olora"; }
  /// The official scripts' setting: AdamW (the Hugging Face trainer's), lr 1e-3, constant schedule.
  std::optional<OptimizerRecipe> recipe() const override;
  torch::Tensor extra_loss(StepContext& step) override;
  void on_task_end(TaskContext& ctx) override;

  double lambda1() const { return lambda1_; }
  double lambda2() const { return lambda2_; }

 protected:
  models::TargetRole target_role() const override { return models::TargetRole::kAttentionQV; }
  std::shared_ptr<adapters::Adapter> make_adapter(const std::string& name,
                                                  const adapters::AdaptableLinearImpl& layer) override;

 private:
  adapters::LoRAOptions options_;
  double lambda1_, lambda2_;
  adapters::AdapterCache<adapters::LoRAImpl> lora_adapters_;  // extra_loss runs at every step
  adapters::OLoRAPenalty penalty_;                            // one node; the banks read once per task
};

}  // namespace strata::continual
