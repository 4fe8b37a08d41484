#include "continual/trainer.h"

#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <cmath>
#include <limits>

namespace strata::continual {

void TrainOptions::validate() const {
  TORCH_CHECK(optimizer_ == "sgd" || optimizer_ == "adam" || optimizer_ == "adamw",
              "strata::continual::TrainOptions: unknown optimizer '", optimizer_, "' (valid: sgd, adam, adamw)");
  TORCH_CHECK(std::isfinite(lr_) && lr_ > 0, "strata::continual::TrainOptions: lr must be > 0, got ", lr_);
  TORCH_CHECK(momentum_ >= 0 && momentum_ < 1, "strata::continual::TrainOptions: momentum must be in [0,1), got ", momentum_);
  TORCH_CHECK(weight_decay_ >= 0, "strata::continual::TrainOptions: weight_decay must be >= 0, got ", weight_decay_);
  TORCH_CHECK(beta1_ >= 0 && beta1_ < 1 && beta2_ >= 0 && beta2_ < 1,
              "strata::continual::TrainOptions: adam betas must be in [0,1), got ", beta1_, ", ", beta2_);
  TORCH_CHECK(schedule_ == "constant" || schedule_ == "cosine", "strata::continual::TrainOptions: unknown lr schedule '",
              schedule_, "' (valid: constant, cosine)");
  TORCH_CHECK(batch_size_ > 0, "strata::continual::TrainOptions: batch_size must be > 0, got ", batch_size_);
  TORCH_CHECK(epochs_ > 0, "strata::continual::TrainOptions: epochs must be > 0, got ", epochs_);
  TORCH_CHECK(eval_batch_size_ > 0, "strata::continual::TrainOptions: eval_batch_size must be > 0, got ", eval_batch_size_);
}

double EvalResult::accuracy() const {
  if (!correct.defined() || correct.numel() == 0) return 0.0;
  return correct.to(torch::kFloat64).mean().item<double>();
}

torch::Tensor mask_logits(const torch::Tensor& logits, const torch::Tensor& mask) {
  if (!mask.defined()) return logits;
  return logits.masked_fill(mask.logical_not(), -std::numeric_limits<float>::infinity());
}

EvalResult evaluate(models::ModelImpl& model, const tasks::Split& split, const torch::Tensor& mask, int64_t batch_size) {
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  const int64_t n = split.size();
  EvalResult r;
  r.pred = torch::empty({n}, torch::kInt64);
  r.prob = torch::empty({n}, torch::kFloat32);
  torch::Tensor buffer;  // each batch is dropped before the next is made: reuse its memory
  for (int64_t s = 0; s < n; s += batch_size) {
    const int64_t e = std::min(n, s + batch_size);
    auto logits = mask_logits(model.forward(split.slice(s, e, buffer)), mask);
    auto [p, idx] = torch::softmax(logits, 1).max(1);
    r.pred.slice(0, s, e).copy_(idx);
    r.prob.slice(0, s, e).copy_(p);
  }
  r.correct = r.pred.eq(split.y);
  if (was_training) model.train();
  return r;
}

TrainOptions with_recipe(TrainOptions o, const OptimizerRecipe& r) {
  return o.optimizer(r.optimizer)
      .lr(r.lr)
      .beta1(r.beta1)
      .beta2(r.beta2)
      .momentum(r.momentum)
      .weight_decay(r.weight_decay)
      .schedule(r.schedule);
}

double scheduled_lr(const TrainOptions& o, int64_t step, int64_t total_steps) {
  if (o.schedule() != "cosine" || total_steps <= 0) return o.lr();
  const double pi = std::acos(-1.0);
  return o.lr() * 0.5 * (1.0 + std::cos(pi * static_cast<double>(step) / static_cast<double>(total_steps)));
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const TrainOptions& o, const std::vector<torch::Tensor>& params) {
  if (o.optimizer() == "sgd")
    return std::make_unique<torch::optim::SGD>(
        params, torch::optim::SGDOptions(o.lr()).momentum(o.momentum()).weight_decay(o.weight_decay()));
  const auto betas = std::make_tuple(o.beta1(), o.beta2());
  if (o.optimizer() == "adam")
    return std::make_unique<torch::optim::Adam>(
        params, torch::optim::AdamOptions(o.lr()).betas(betas).weight_decay(o.weight_decay()));
  return std::make_unique<torch::optim::AdamW>(
      params, torch::optim::AdamWOptions(o.lr()).betas(betas).weight_decay(o.weight_decay()));
}

namespace {

// Distinct, reproducible stream per (seed, task, epoch): resuming at a task boundary draws the
// same shuffles as an uninterrupted run without saving generator state.
at::Generator shuffle_generator(int64_t seed, int64_t task, int64_t epoch) {
  uint64_t h = static_cast<uint64_t>(seed) * 0x9E3779B97F4A7C15ull;
  h ^= (static_cast<uint64_t>(task) + 1) * 0xBF58476D1CE4E5B9ull;
  h ^= (static_cast<uint64_t>(epoch) + 1) * 0x94D049BB133111EBull;
  return at::detail::createCPUGenerator(h);
}

// [T, C]: row t allows exactly task t's classes.
torch::Tensor own_task_classes(const tasks::TaskStream& stream) {
  auto mask = torch::zeros({stream.size(), stream.num_classes}, torch::kBool);
  auto acc = mask.accessor<bool, 2>();
  for (int64_t t = 0; t < stream.size(); ++t)
    for (int64_t c : stream.tasks[t].classes) {
      TORCH_CHECK(c >= 0 && c < stream.num_classes, "strata::continual::train_task(): task ", t, " has class ", c,
                  " outside the head of ", stream.num_classes, " classes");
      acc[t][c] = true;
    }
  return mask;
}

}  // namespace

void train_task(TaskContext& ctx, Method& method, const TrainOptions& options, const EpochCallback& on_epoch,
                const StepCallback& on_step) {
  options.validate();
  auto& model = *ctx.model;
  const auto& stream = *ctx.stream;
  tasks::Split data = method.training_data(ctx);
  const int64_t n = data.size();
  TORCH_CHECK(n > 0, "strata::continual::train_task(): task ", ctx.task_index, " has no training examples");
  // Per-example logit masks by each example's own task (joint training mixes tasks).
  const bool masked = stream.scenario != tasks::Scenario::kDomainIncremental;
  const torch::Tensor mask_table = masked ? stream.logit_mask(ctx.task_index) : torch::Tensor();
  // The loss's masks: by default the evaluation's; a method that masks seen classes in class-IL trains
  // each example on its own task's classes only.
  torch::Tensor loss_mask_table = mask_table;
  if (masked && stream.scenario == tasks::Scenario::kClassIncremental && method.mask_seen_classes())
    loss_mask_table = own_task_classes(stream);

  auto params = method.parameters(ctx);
  TORCH_CHECK(!params.empty(), "strata::continual::train_task(): method '", method.name(), "' trains no parameters");
  auto optimizer = method.make_optimizer(ctx, params);
  // A method-owned optimizer (CoSO) runs its own schedule; the trainer schedules only its own.
  const bool own_optimizer = !optimizer;
  if (!optimizer) optimizer = make_optimizer(options, params);

  model.train();
  const int64_t bs = options.batch_size();
  const int64_t steps_per_epoch = (n + bs - 1) / bs;
  const int64_t total_steps = steps_per_epoch * options.epochs();
  const bool cosine = own_optimizer && options.schedule() == "cosine";
  int64_t step = 0;
  for (int64_t epoch = 0; epoch < options.epochs(); ++epoch) {
    const auto t0 = std::chrono::steady_clock::now();
    auto gen = shuffle_generator(options.seed(), ctx.task_index, epoch);
    const torch::Tensor perm = torch::randperm(n, gen, torch::TensorOptions().dtype(torch::kInt64));
    double loss_sum = 0;
    torch::Tensor correct_sum = torch::zeros({}, torch::kInt64);
    for (int64_t s = 0, b = 0; s < n; s += bs, ++b) {
      StepContext sc;
      sc.task = &ctx;
      sc.epoch = epoch;
      sc.step = step;
      sc.batch_index = perm.slice(0, s, std::min(n, s + bs));
      sc.x = data.gather(sc.batch_index);
      sc.y = data.y.index_select(0, sc.batch_index);
      auto logits = model.forward(sc.x);
      if (masked)
        logits = mask_logits(logits, loss_mask_table.index_select(0, data.task.index_select(0, sc.batch_index)));
      sc.logits = logits;
      sc.loss = torch::nn::functional::cross_entropy(logits, sc.y);
      torch::Tensor total = sc.loss;
      if (auto extra = method.extra_loss(sc); extra.defined()) total = total + extra;
      const double loss_value = total.item<double>();
      TORCH_CHECK(std::isfinite(loss_value), "strata::continual::train_task(): non-finite loss (", loss_value,
                  ") at task ", ctx.task_index, " epoch ", epoch, " step ", step,
                  "; lower the learning rate. Finished versions are untouched.");
      // Drop the gradients (PyTorch's zero_grad(set_to_none=True)) rather than zeroing them: one
      // kernel less per parameter and step, which matters at small batches; backward() writes
      // fresh gradients, and hooks check grad().defined() for parameters a step did not reach.
      for (auto& group : optimizer->param_groups())
        for (auto& p : group.params()) p.mutable_grad().reset();
      if (cosine)
        for (auto& group : optimizer->param_groups()) group.options().set_lr(scheduled_lr(options, step, total_steps));
      total.backward();
      method.after_backward(sc);
      optimizer->step();
      method.after_step(sc);
      loss_sum += loss_value * sc.y.size(0);
      correct_sum += logits.detach().argmax(1).eq(sc.y).sum();
      ++step;
      if (on_step) on_step(epoch, b + 1, steps_per_epoch, loss_sum / std::min(n, s + bs));
    }
    EpochStats st;
    st.task = ctx.task_index;
    st.epoch = epoch;
    st.steps = steps_per_epoch;
    st.examples = n;
    st.loss = loss_sum / n;
    st.train_acc = correct_sum.item<double>() / n;
    st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto& val = ctx.task().val;
    if (val.size() > 0) {
      torch::Tensor mask = masked ? mask_table[ctx.task_index] : torch::Tensor();
      st.val_acc = evaluate(model, val, mask, options.eval_batch_size()).accuracy();
    }
    if (on_epoch) on_epoch(st);
  }
}

}  // namespace strata::continual
