#pragma once
// AdapterMethod: what the four adapter-based continual-learning methods (lora, olora, codyra, mora)
// share — which layers get an adapter, which base parameters stay trainable, the optimizer's
// parameter list, save/load of the adapter structure, and the per-task report.
//
// Layers. Option `target` is an adapters::inject glob ("blocks.*.attn.q|blocks.*.attn.v", "fc*",
// "**"). "auto" picks a per-architecture default that each method defines (default_target()):
//   lora, olora   vit: attention q and v of every block (PEFT default)
//                 mlp: every hidden layer (fc*);  cnn: fc1
//   codyra, mora  vit: every attention q, k, v, o and MLP fc1, fc2 of every block ("qkvoinout",
//                 the MoRA and CoDyRA papers);  mlp: fc*;  cnn: fc1
// The classification head ("head") is never adapted by "auto".
//
// Base weights. attach() freezes every base parameter (adapters::freeze_base). With `train_head`
// (default true) the classification head's weight and bias stay trainable: Strata models have one
// shared head over all classes and the papers' CLIP text-side classifiers have no equivalent here,
// so with a frozen randomly initialised head task- and class-incremental runs could not learn new
// classes at all. A trainable shared head then dominates forgetting.
//
// Checkpoints. save() stores every attached adapter's full state (adapters::adapters_state, keys
// "adapters/<layer>/<key>") plus the per-task report in meta; load() re-creates the adapters on the
// model (attach() if needed) and loads that state, so the adapter parameter/buffer shapes (banks,
// pruned ranks) match the version's model tensors the Runner copies in afterwards. Methods that merge
// at task end (lora, codyra) remove their adapters there, so their versions hold no adapter state:
// load() then leaves the model without adapters (the plain base, as saved) and the next task's
// on_task_start attaches fresh ones; a resumed run draws their initialisation from the RNG state the
// version stored, exactly as the uninterrupted run did.
//
// Subspace store. With a recorder (TaskContext::recorder, the run's subspaces.h5), every task end
// records the task's adapter factors, task "taskTT" (0-based), one record per adapted layer, side
// "input", method = the method name:
//   extra/A [k, n], extra/B [m, k] with the task's update (or atom bank slice) = B·A (scale folded in B)
//   basis [n, k]: orthonormal input-side singular vectors of B·A (lora, olora, codyra: the merged or
//                 banked ΔW) or of A alone (mora: the span of the task's keys), singular_values [k] sorted
//   computed in factored form (QR of Aᵀ, SVD of a k-column matrix; never an n×n or m×n SVD).
// Layers with k = 0 (CoDyRA: every rank pruned) get no record. A task already in the store (a resumed
// run re-training the task it was killed in) is not written again: history is append-only.
#include "adapters/inject.h"
#include "continual/method.h"
#include "continual/option_table.h"

#include <memory>
#include <string>
#include <vector>

namespace strata::continual {

/// The options every adapter method has; each method's options struct embeds one (`common`).
struct AdapterCommonOptions {
  /// An inject glob over module paths; "auto" = the method's per-architecture default.
  TORCH_ARG(std::string, target) = "auto";
  /// Keep the classification head "head" trainable (base weights stay frozen).
  TORCH_ARG(bool, train_head) = true;
};

/// The shared entries, appended (OptionTable::include) to every adapter method's table.
const OptionTable<AdapterCommonOptions>& adapter_common_table();

class AdapterMethod : public Method {
 public:
  /// `method` names the options in error messages (name() is not callable in a constructor).
  AdapterMethod(const std::string& method, const AdapterCommonOptions& options);

  void attach(models::Model& model) override;
  /// Measures the trainable parameter counts of the task (subclasses call it after adding adapters).
  void on_task_start(TaskContext& ctx) override;
  /// The trainable adapter factors (+ the head's weight and bias with train_head); never a frozen tensor.
  std::vector<torch::Tensor> parameters(TaskContext& ctx) override;
  MethodState save() const override;
  void load(const MethodState& state, models::Model& model) override;
  /// {"target": pattern, "layers": [...], "train_head": bool, "tasks": [per-task entries]}.
  nlohmann::json report() const override;

  /// The resolved layer pattern (after attach()).
  const std::string& target() const { return target_; }
  const std::vector<std::string>& layers() const { return layers_; }

 protected:
  /// Which layers `target = auto` means (models::ModelImpl::default_targets).
  virtual models::TargetRole target_role() const = 0;
  /// A fresh adapter for one layer (called by attach()).
  virtual std::shared_ptr<adapters::Adapter> make_adapter(const std::string& name,
                                                          const adapters::AdaptableLinearImpl& layer) = 0;
  /// Attaches make_adapter() to every target layer (target() must be resolved).
  void inject_adapters();
  /// Methods that merge and remove their adapters at task end (lora, codyra) call this at task start:
  /// fresh adapters if the model has none (after a merge, or after loading a merged version).
  void reattach_adapters();
  /// Appends a per-task report entry; adds "task" and the counts measured by on_task_start().
  void record_task(int64_t task, nlohmann::json entry);
  /// Per layer: (A [k, n], B [m, k]) of this task. Writes them as described above.
  void store_task_factors(const TaskContext& ctx,
                          const std::vector<std::pair<std::string, std::pair<torch::Tensor, torch::Tensor>>>& factors,
                          bool delta_basis) const;
  /// Scalars parameters() counts for the optimizer (adapters only / adapters + head).
  int64_t trainable_adapter_parameters() const;
  int64_t trainable_head_parameters() const;

  models::Model model_;
  std::string target_option_, target_;
  bool train_head_ = true;
  std::vector<std::string> layers_;
  nlohmann::json tasks_ = nlohmann::json::array();
  int64_t start_adapter_params_ = 0, start_head_params_ = 0;
};

}  // namespace strata::continual
