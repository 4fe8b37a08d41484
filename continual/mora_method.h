#pragma once
// `mora`: MoRA / MoRAM. Every target layer holds a growing bank of rank-1 atoms
// (a_i ∈ R^n, b_i ∈ R^m). Each task appends `rank` fresh trainable atoms (on_task_start:
// adapters::mora_start_task; A_new Kaiming-uniform, B_new zeros) and freezes them into the bank at its
// end; routing is self-activated per token: z = A_all x, ŝ = z/‖z‖, top-k on signed ŝ, softmax(·/τ),
// and at inference only the threshold w_i·1[ŝ_i ≥ δ]; y = base + B_all (w ⊙ z). No auxiliary loss.
// The update depends on the input, so nothing is merged: inference cost grows with the bank.
//
// Options: rank 16 atoms per task,
// top_k 0 (= rank; effective k = min(max(k, 2), R)), temperature 0.01, threshold 0.2 (δ, eval only;
// 0 = off), target auto (vit: every attention q, k, v, o and MLP fc1, fc2), train_head true.
// LoRA scale s = 1. A scaled-down setting for small models: rank 4, top_k 4, τ ∈ {0.01, 0.05}.
// mask_seen true: in class-incremental streams the loss sees only the current task's classes (the
// official code sets seen classes' logits to −inf while training). Training recipe (used unless the
// user sets the optimizer options): AdamW lr 5e-4, β (0.9, 0.9999), weight decay 0, cosine schedule.
//
// report(): per task, for every layer the bank size and, measured in eval mode (δ on) on up to
// report_samples test images of every task seen so far, the mean number of active atoms per token and
// the share of activations that fall on each task's atom group (the routing "activation map").
// The report pass reads test images only for these statistics; it never trains on them.
#include "adapters/mora.h"
#include "continual/adapter_method.h"

namespace strata::continual {

struct MoRAMethodOptions {
  /// New rank-1 atoms per task and layer (r).
  TORCH_ARG(int64_t, rank) = 16;
  /// Activation budget k per token; 0 = rank.
  TORCH_ARG(int64_t, top_k) = 0;
  TORCH_ARG(double, temperature) = 0.01;
  /// Inference-only pruning threshold δ (0 = off).
  TORCH_ARG(double, threshold) = 0.2;
  TORCH_ARG(int64_t, report_samples) = 256;
  /// Class-incremental: earlier tasks' classes masked out of the training loss (Method::mask_seen_classes).
  TORCH_ARG(bool, mask_seen) = true;
  TORCH_ARG(AdapterCommonOptions, common);
};

const OptionTable<MoRAMethodOptions>& mora_table();

class MoRAMethod : public AdapterMethod {
 public:
  explicit MoRAMethod(const MoRAMethodOptions& options = {});
  std::string name() const override { return "mora"; }
  /// The X-TAIL recipe of the official code: AdamW lr 5e-4, β (0.9, 0.9999), weight decay 0, cosine
  /// (the same as CoDyRA's, codyra_recipe()).
  std::optional<OptimizerRecipe> recipe() const override;
  bool mask_seen_classes() const override { return mask_seen_; }
  void on_task_start(TaskContext& ctx) override;
  void on_task_end(TaskContext& ctx) override;

  const adapters::MoRAOptions& adapter_options() const { return options_; }

 protected:
  models::TargetRole target_role() const override { return models::TargetRole::kAttentionAndMlp; }
  std::shared_ptr<adapters::Adapter> make_adapter(const std::string& name,
                                                  const adapters::AdaptableLinearImpl& layer) override;

 private:
  adapters::MoRAOptions options_;
  int64_t report_samples_;
  bool mask_seen_ = true;
};

}  // namespace strata::continual
