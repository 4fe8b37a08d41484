#pragma once
// `lora`: sequential LoRA (the SeqLoRA baseline of the O-LoRA paper). Every task trains a fresh
// LoRA adapter (A [r, n] Kaiming-uniform, B [m, r] zeros, y = base + s·B·A·drop(x), s = alpha/r) on
// the target layers with the base frozen (head trainable, see AdapterMethod); at task end ΔW is
// merged into W and the adapter re-initialised (adapters::lora_merge_and_reset), so inference has
// no overhead and nothing protects earlier tasks except the low rank itself.
//
// Options (defaults: the O-LoRA/TRACE LoRA configuration):
//   rank 8, alpha 32, dropout 0.1, target auto (vit: attention q, v), train_head true.
// report(): per task, ‖ΔW‖_F merged per layer.
#include "adapters/lora.h"
#include "continual/adapter_method.h"

namespace strata::continual {

std::vector<MethodOption> lora_options();

class LoRAMethod : public AdapterMethod {
 public:
  explicit LoRAMethod(const MethodConfig& config);
  std::string name() const override { return "lora"; }
  void on_task_end(TaskContext& ctx) override;

  const adapters::LoRAOptions& adapter_options() const { return options_; }

 protected:
  models::TargetRole target_role() const override { return models::TargetRole::kAttentionQV; }
  std::shared_ptr<adapters::Adapter> make_adapter(const std::string& name,
                                                  const adapters::AdaptableLinearImpl& layer) override;

 private:
  adapters::LoRAOptions options_;
};

/// LoRA options shared by lora and olora (rank, alpha, dropout); checks them naming `who`.
adapters::LoRAOptions parse_lora_options(const MethodConfig& config);


}  // namespace strata::continual
