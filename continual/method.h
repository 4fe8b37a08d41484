#pragma once
// The method interface: a continual-learning method is a set of hooks the Runner calls at fixed
// points. Every hook has a no-op default, so `naive` is empty.
//
// Per step the Runner does:
//   logits = model(x) masked by training_logit_mask;
//   loss = w·CE(method.training_logits(logits), y) + method.extra_loss(step) [+ compat loss],
//   w = method.task_loss_weight(step) (1 for every method alone)
//   loss.backward(); method.after_backward(step); optimizer.step(); method.after_step(step)
#include "continual/parallel.h"
#include "models/models.h"
#include "subspaces/store.h"
#include "tasks/task.h"

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace strata::continual {

/// Method options as strings, from the CLI (`--gpm.threshold 0.97`) or an INI section ([gpm]).
/// Typed getters fall back to the registered default and name the key and value on a bad parse.
class MethodConfig {
 public:
  MethodConfig() = default;
  MethodConfig(std::string method, std::map<std::string, std::string> values)
      : method_(std::move(method)), values_(std::move(values)) {}
  const std::string& method() const { return method_; }
  bool has(const std::string& key) const { return values_.count(key) > 0; }
  std::string get_string(const std::string& key) const;
  double get_double(const std::string& key) const;
  int64_t get_int(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  /// Comma-separated list of doubles, e.g. "0.95,0.99,0.99".
  std::vector<double> get_doubles(const std::string& key) const;
  void set(const std::string& key, const std::string& value) { values_[key] = value; }
  const std::map<std::string, std::string>& values() const { return values_; }

 private:
  const std::string& raw(const std::string& key) const;
  std::string method_;
  std::map<std::string, std::string> values_;
};

/// A method's state for a checkpoint: named tensors plus JSON scalars. Keys are flat paths
/// ("basis/fc1", "step"); the version store writes tensors as HDF5 datasets under method/.
struct MethodState {
  std::map<std::string, torch::Tensor> tensors;
  nlohmann::json meta = nlohmann::json::object();
};

struct TrainOptions;  // trainer.h

/// What a method sees at task boundaries.
struct TaskContext {
  models::Model model;
  const tasks::TaskStream* stream = nullptr;
  int64_t task_index = 0;  ///< the task being trained (0-based)
  const TrainOptions* train = nullptr;
  /// Where task-end subspaces go (the run's subspaces.h5); null = not recorded. Methods never open files.
  subspaces::SubspaceRecorder* recorder = nullptr;
  /// Training stage of the task: 0 = the task's own training, k >= 1 = the k-th extra stage a method
  /// asked for through Method::next_stage (e.g. MUSCLE's compatibility stage).
  int64_t stage = 0;
  /// The workers training this model together (null = one process). Each takes a share of every batch;
  /// gradients are summed over workers before after_backward, so hooks see the global gradient, and
  /// every other hook runs on every worker with identical inputs.
  DataParallel* parallel = nullptr;
  /// The run started from pre-trained weights (--init or --pretrain), not a fresh initialisation.
  bool pretrained = false;
  const tasks::Task& task() const { return stream->tasks.at(task_index); }
};

/// What a method sees at every step.
struct StepContext {
  TaskContext* task = nullptr;
  int64_t epoch = 0;
  int64_t step = 0;         ///< step within the task, 0-based
  int64_t global_step = 0;  ///< step over the whole run
  /// Batch inputs [B,...] and labels [B]; with several workers, this worker's share of the global batch.
  torch::Tensor x, y;
  torch::Tensor batch_index;  ///< [B] int64 rows of the training split (for precomputed per-example data)
  torch::Tensor logits;     ///< [B, num_classes], masked as the scenario requires
  torch::Tensor raw_logits;  ///< [B, num_classes], the same forward before masking (== logits in domain-IL)
  /// Task loss CE(method.training_logits(logits), y) (scalar), unweighted; undefined when
  /// Method::task_loss_weight is 0 (the Trainer then does not compute it).
  torch::Tensor loss;
};

/// The optimizer settings of a method's published training recipe (Method::recipe). The run
/// configuration applies them when the user set none of the optimizer options (run/config.h).
struct OptimizerRecipe {
  std::string optimizer = "adamw";  ///< sgd | adam | adamw
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999;  ///< adam, adamw
  double momentum = 0;                ///< sgd
  double weight_decay = 0;
  std::string schedule = "constant";  ///< constant | cosine (per task, TrainOptions::schedule)
};

class Method {
 public:
  virtual ~Method() = default;
  virtual std::string name() const = 0;

  /// The method's own training recipe; nullopt = the trainer's defaults. Used only where the user
  /// set no optimizer option (optimizer, lr, momentum, weight decay, betas, schedule).
  virtual std::optional<OptimizerRecipe> recipe() const { return std::nullopt; }
  /// Class-incremental streams: true = the training loss sees only the current task's classes (each
  /// example's own task's classes; earlier tasks' logits masked to −inf), false = every class seen so
  /// far. Evaluation always masks by the scenario. The default training_logit_mask reads it; a method
  /// that needs any other mask overrides training_logit_mask instead.
  virtual bool mask_seen_classes() const { return false; }

  /// Once, before the first task (adapters wrap Linear layers here).
  virtual void attach(models::Model& model) {}
  virtual void on_task_start(TaskContext& ctx) {}
  /// Parameters the optimizer trains this task. Default: every parameter that requires grad.
  virtual std::vector<torch::Tensor> parameters(TaskContext& ctx);
  /// The training split for this task. Default: the task's own; `joint` returns the union so far.
  virtual tasks::Split training_data(TaskContext& ctx);
  /// A method-owned optimizer (e.g. CoSO's projected Adam); nullptr = the Trainer builds one.
  virtual std::unique_ptr<torch::optim::Optimizer> make_optimizer(TaskContext& ctx,
                                                                   const std::vector<torch::Tensor>& params) {
    return nullptr;
  }
  /// The logits the task loss sees while training: [num_tasks, num_classes] bool, row t = the
  /// logits allowed for an example of task t (masked ones are set to -inf before the loss);
  /// undefined = no mask. Evaluation always uses the scenario's mask. Default: the scenario's
  /// (task-IL: the example's task classes; class-IL: every class seen so far, or the example's own
  /// task's classes when mask_seen_classes(); domain-IL: none).
  virtual torch::Tensor training_logit_mask(TaskContext& ctx);
  /// What the task loss is computed from: loss = CE(training_logits(z), y) for the masked logits
  /// z [B, C]; returns [B, C]. Default: z itself. CoSO returns z / T (its training temperature), so
  /// the Trainer computes CE(z / T) once instead of a CE(z) that an extra loss would cancel. Only
  /// StepContext::loss sees the result: StepContext::logits and raw_logits stay the model's z, so
  /// extra_loss terms, the compatibility terms (continual/compat_training.h) and the training
  /// accuracy read the logits the model produced.
  virtual torch::Tensor training_logits(const torch::Tensor& logits) { return logits; }
  /// The weight w of the task loss in this step's total w·CE(training_logits(z), y) + extra_loss.
  /// Called before the task loss is computed (StepContext::logits is set, StepContext::loss not
  /// yet); w = 0 skips the cross-entropy and its backward altogether, and extra_loss must then
  /// return a loss. Default 1. MUSCLE's stage 2 returns 1 − λ (continual/compat_training.h), so the
  /// step computes (1 − λ)·CE + λ·L_mcomp instead of CE plus an extra loss that cancels λ·CE.
  virtual double task_loss_weight(const StepContext& step) const { return 1.0; }
  /// Added to the weighted task loss (undefined tensor = nothing).
  virtual torch::Tensor extra_loss(StepContext& step) { return {}; }
  /// Extra training stages of a task. After the task's own training (stage 0) the Runner calls
  /// next_stage(ctx, 1), then next_stage(ctx, 2), ...: options returned make it train the task again
  /// with them (same hooks, a fresh optimizer, ctx.stage = k); nullopt ends training, and
  /// on_task_end follows. Default: no extra stage.
  virtual std::optional<TrainOptions> next_stage(TaskContext& ctx, int64_t stage);
  /// Between backward and optimizer step (gradient projection).
  virtual void after_backward(StepContext& step) {}
  /// After the optimizer step (re-projection, soft-thresholding).
  virtual void after_step(StepContext& step) {}
  /// When train_task() has run its last step (of every stage, before next_stage): a method that
  /// keeps the trained weights in another form while training writes them back here (GPM's
  /// factored SGD), so that the model's parameters hold them from then on.
  virtual void on_train_end(TaskContext& ctx) {}
  /// After the task's last step (subspace updates, merging, pruning).
  virtual void on_task_end(TaskContext& ctx) {}

  /// All state needed to resume exactly, written with every version.
  virtual MethodState save() const { return {}; }
  virtual void load(const MethodState& state, models::Model& model) {}
  /// Method-specific numbers for report.json (ranks, memory, atoms...), per task.
  virtual nlohmann::json report() const { return nlohmann::json::object(); }
};

/// One registered option: key, default (as text), one-line help.
struct MethodOption {
  std::string key, default_value, help;
};

struct MethodInfo {
  std::string name, summary;
  std::vector<MethodOption> options;
  std::function<std::unique_ptr<Method>(const MethodConfig&)> make;
};

/// Explicit registry (no static self-registration: static libraries would drop it).
class MethodRegistry {
 public:
  void add(MethodInfo info);
  bool has(const std::string& name) const;
  const MethodInfo& get(const std::string& name) const;  ///< throws listing the valid names
  std::vector<std::string> names() const;
  /// Builds a method; unknown option keys are an error naming the key and the valid ones.
  std::unique_ptr<Method> make(const MethodConfig& config) const;

 private:
  std::vector<MethodInfo> infos_;
};

/// The built-in methods: one line each in method_registry.cpp.
const MethodRegistry& builtin_methods();

}  // namespace strata::continual
