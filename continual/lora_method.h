#pragma once
// `lora`: sequential LoRA (the SeqLoRA baseline of the O-LoRA paper). Every task trains a fresh
// LoRA adapter (A [r, n] Kaiming-uniform, B [m, r] zeros, y = base + s·B·A·drop(x), s = alpha/r) on
// the target layers with the base frozen (head trainable, see AdapterMethod); at task end ΔW is
// merged into W and the adapter removed, so every version (the last one included) is the plain
// base model at the base model's cost; the next task's on_task_start attaches a fresh adapter (also
// after a resume from that version). Nothing protects earlier tasks except the low rank itself.
//
// Options (defaults: the O-LoRA/TRACE LoRA configuration):
//   rank 8, alpha 32, dropout 0.1, target auto (vit: attention q, v), train_head true.
// report(): per task, ‖ΔW‖_F merged per layer.
#include "adapters/lora.h"
#include "continual/adapter_method.h"

namespace strata::continual {

struct LoRAMethodOptions {
  /// LoRA rank r per adapted layer.
  TORCH_ARG(int64_t, rank) = 8;
  /// Scale s = alpha / rank.
  TORCH_ARG(double, alpha) = 32.0;
  /// Dropout on the adapter input (training only).
  TORCH_ARG(double, dropout) = 0.1;
  TORCH_ARG(AdapterCommonOptions, common);
};

const OptionTable<LoRAMethodOptions>& lora_table();

class LoRAMethod : public AdapterMethod {
 public:
  explicit LoRAMethod(const LoRAMethodOptions& options = {});
  std::string name() const override { return "lora"; }
  void on_task_start(TaskContext& ctx) override;
  void on_task_end(TaskContext& ctx) override;

  const adapters::LoRAOptions& adapter_options() const { return options_; }

 protected:
  models::TargetRole target_role() const override { return models::TargetRole::kAttentionQV; }
  std::shared_ptr<adapters::Adapter> make_adapter(const std::string& name,
                                                  const adapters::AdaptableLinearImpl& layer) override;

 private:
  adapters::LoRAOptions options_;
};

/// The adapter options of lora and olora (rank, alpha, dropout), checked; errors name `method`.
adapters::LoRAOptions lora_adapter_options(const std::string& method, int64_t rank, double alpha, double dropout);

}  // namespace strata::continual
