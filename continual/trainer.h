#pragma once
// The per-task training loop and the evaluator.
#include "continual/method.h"

#include <functional>
#include <ostream>

namespace strata::continual {

struct TrainOptions {
  /// "sgd" | "adam" | "adamw"
  TORCH_ARG(std::string, optimizer) = "sgd";
  TORCH_ARG(double, lr) = 0.01;
  TORCH_ARG(double, momentum) = 0.0;      ///< SGD only
  TORCH_ARG(double, weight_decay) = 0.0;
  /// Adam / AdamW moment decay rates β₁, β₂.
  TORCH_ARG(double, beta1) = 0.9;
  TORCH_ARG(double, beta2) = 0.999;
  /// Learning-rate schedule within each task: "constant" | "cosine" (lr·½(1 + cos(π s / N)) at step
  /// s of the task's N steps, no warm-up: each task starts again from lr, like the fresh optimizer).
  /// Applies to the optimizer the trainer builds; a method's own (Method::make_optimizer) keeps its own.
  TORCH_ARG(std::string, schedule) = "constant";
  TORCH_ARG(int64_t, batch_size) = 10;
  TORCH_ARG(int64_t, epochs) = 1;
  /// Seeds model init and every shuffle. Shuffles use a generator derived from (seed, task,
  /// epoch), so a resumed run draws exactly what an uninterrupted one would.
  TORCH_ARG(int64_t, seed) = 0;
  TORCH_ARG(int64_t, eval_batch_size) = 1000;

 public:
  void validate() const;
};

/// One epoch's numbers (a metrics.csv row).
struct EpochStats {
  int64_t task = 0, epoch = 0, steps = 0, examples = 0;
  double loss = 0, train_acc = 0, val_acc = -1, seconds = 0;
  double examples_per_s() const { return seconds > 0 ? examples / seconds : 0; }
};

/// Predictions of a model on one split.
struct EvalResult {
  torch::Tensor pred;  ///< [N] int64 predicted class (argmax over the allowed logits)
  torch::Tensor prob;  ///< [N] float32 softmax probability of the prediction (over allowed logits)
  torch::Tensor correct;  ///< [N] bool
  double accuracy() const;
};

/// Evaluates without gradients, in eval mode, in batches. `mask`: [num_classes] bool of allowed
/// logits (undefined = all). With `parallel` (several workers), each worker evaluates its shard_range of
/// the split and every worker gets the gathered result.
EvalResult evaluate(models::ModelImpl& model, const tasks::Split& split, const torch::Tensor& mask,
                    int64_t batch_size = 1000, DataParallel* parallel = nullptr);

/// The training loop's task loss and what it reads beside it.
struct CrossEntropyHits {
  torch::Tensor loss;  ///< 0-d mean cross-entropy, with its autograd node
  double value = 0;    ///< loss as a double, accumulated in double (no .item() needed)
  int64_t hits = 0;    ///< rows whose first largest logit is the target (argmax(z) == y)
};

/// Mean cross-entropy of logits z [B, C] against targets y [B] (int64 in [0, C)), the value of
/// torch::nn::functional::cross_entropy: (1/B) Σ_b (logsumexp(z_b) − z_{b,y_b}), with gradient
/// (softmax(z) − onehot(y)) / B. One autograd node and one pass over z instead of log_softmax, nll_loss
/// and the accuracy count's argmax, eq and sum: at batch 10 the operators, not the arithmetic, are
/// the cost. Masked logits (−inf) are allowed; a −inf target logit gives an infinite loss, as in
/// torch. Float and double.
CrossEntropyHits cross_entropy_hits(const torch::Tensor& logits, const torch::Tensor& target);

/// Called after every epoch (progress display, metrics.csv).
using EpochCallback = std::function<void(const EpochStats&)>;
/// Called every `progress_every` steps with (epoch, step, steps_in_epoch, running loss).
using StepCallback = std::function<void(int64_t, int64_t, int64_t, double)>;

/// Trains the model on ctx's task with the method's hooks. Throws on a non-finite loss
/// (naming task, epoch and step) before any optimizer step applies it.
///
/// With ctx.parallel (several workers), worker r takes the rows shard_range(B, r, N) of every global
/// batch of B rows (the same shuffle everywhere), weights its mean loss (step_loss) by
/// its share of the batch, and the gradients are summed over workers before after_backward: the
/// update is the one-process update up to float round-off, whatever N. Epoch statistics are global.
/// Each step's forward pass runs inside a core::BatchShardGuard seeded by (seed, task, stage, step):
/// adapter dropout draws the global batch's mask and keeps the worker's rows, so one worker and N
/// draw the same mask for the same example.
void train_task(TaskContext& ctx, Method& method, const TrainOptions& options, const EpochCallback& on_epoch = {},
                const StepCallback& on_step = {});

/// `options` with the recipe's optimizer settings (optimizer, lr, betas, momentum, weight decay, schedule).
TrainOptions with_recipe(TrainOptions options, const OptimizerRecipe& recipe);

/// The learning rate of step `step` (0-based) of a task of `total_steps` steps under options.schedule().
double scheduled_lr(const TrainOptions& options, int64_t step, int64_t total_steps);

/// Builds the optimizer the options name over `params`.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(const TrainOptions& options,
                                                        const std::vector<torch::Tensor>& params);

/// A step's total loss as train_task computes it (before a worker's share weighting): w·CE(
/// method.training_logits(step.logits), step.y) + method.extra_loss(step), w = method.task_loss_weight(
/// step). Sets step.loss to the unweighted CE, or leaves it undefined when w = 0 (no CE computed).
/// Throws when w is negative or not finite, or when w = 0 and the method adds no extra loss.
torch::Tensor step_loss(Method& method, StepContext& step);

/// Masked logits: entries where `mask` ([B, C] or [C] bool) is false set to -inf.
torch::Tensor mask_logits(const torch::Tensor& logits, const torch::Tensor& mask);

}  // namespace strata::continual
