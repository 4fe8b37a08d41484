#include "continual/trainer.h"

#include "core/batch_dropout.h"
#include "core/step_inputs.h"

#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <optional>

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

EvalResult evaluate(models::ModelImpl& model, const tasks::Split& split, const torch::Tensor& mask, int64_t batch_size,
                    DataParallel* parallel) {
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  const int64_t n = split.size();
  // Several workers: each evaluates its own rows, then the predictions are gathered.
  const auto [first, last] = is_parallel(parallel) ? shard_range(n, parallel->rank(), parallel->world_size())
                                                    : std::pair<int64_t, int64_t>{0, n};
  EvalResult r;
  r.pred = torch::empty({last - first}, torch::kInt64);
  r.prob = torch::empty({last - first}, torch::kFloat32);
  torch::Tensor buffer;  // each batch is dropped before the next is made: reuse its memory
  for (int64_t s = first; s < last; s += batch_size) {
    const int64_t e = std::min(last, s + batch_size);
    auto logits = mask_logits(model.forward(split.slice(s, e, buffer)), mask);
    auto [p, idx] = torch::softmax(logits, 1).max(1);
    r.pred.slice(0, s - first, e - first).copy_(idx);
    r.prob.slice(0, s - first, e - first).copy_(p);
  }
  if (is_parallel(parallel)) {
    // One gather for both: class ids and float32 probabilities are exact in float64.
    auto both = torch::stack({r.pred.to(torch::kFloat64), r.prob.to(torch::kFloat64)}, 1);
    auto all = parallel->all_gather_rows(both, n);
    r.pred = all.select(1, 0).to(torch::kInt64).contiguous();
    r.prob = all.select(1, 1).to(torch::kFloat32).contiguous();
  }
  r.correct = r.pred.eq(split.y);
  if (was_training) model.train();
  return r;
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Rows whose first largest logit is the target, by the composed operators (the fused node counts
// them in its own pass).
int64_t count_hits(const torch::Tensor& logits, const torch::Tensor& target) {
  return logits.detach().argmax(1).eq(target).sum().item<int64_t>();
}

struct CrossEntropyHitsNode : public torch::autograd::Function<CrossEntropyHitsNode> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& logits_in, const torch::Tensor& target_in,
                               CrossEntropyHits* out) {
    TORCH_CHECK(logits_in.dim() == 2 && target_in.dim() == 1 && target_in.size(0) == logits_in.size(0) &&
                    target_in.scalar_type() == torch::kInt64,
                "strata::continual::cross_entropy_hits(): expected logits [B, C] and int64 targets [B], got ",
                logits_in.sizes(), " and ", target_in.sizes(), " ", target_in.scalar_type());
    const auto z = logits_in.contiguous();
    const auto y = target_in.contiguous();
    const int64_t B = z.size(0), C = z.size(1);
    TORCH_CHECK(B > 0 && C > 0, "strata::continual::cross_entropy_hits(): empty logits ", z.sizes());
    auto p = torch::empty_like(z);  // softmax(z), kept for the backward
    double total = 0;
    int64_t hits = 0;
    const int64_t* yp = y.data_ptr<int64_t>();
    AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "cross_entropy_hits", [&] {
      const scalar_t* zp = z.data_ptr<scalar_t>();
      scalar_t* pp = p.data_ptr<scalar_t>();
      for (int64_t b = 0; b < B; ++b) {
        const scalar_t* row = zp + b * C;
        const int64_t t = yp[b];
        TORCH_CHECK(t >= 0 && t < C, "strata::continual::cross_entropy_hits(): target ", t, " of row ", b,
                    " is out of range for ", C, " classes");
        int64_t arg = 0;
        scalar_t mx = row[0];
        for (int64_t c = 1; c < C; ++c)
          if (row[c] > mx || (std::isnan(row[c]) && !std::isnan(mx))) mx = row[c], arg = c;
        hits += arg == t;
        scalar_t* prow = pp + b * C;
        // All-masked or infinite rows: shift by 0 so the sum reads inf/nan, as log_softmax does.
        const scalar_t shift = std::isfinite(mx) ? mx : scalar_t(0);
        double sum = 0;
        for (int64_t c = 0; c < C; ++c) {
          prow[c] = std::exp(row[c] - shift);
          sum += prow[c];
        }
        const scalar_t inv = static_cast<scalar_t>(1.0 / sum);
        for (int64_t c = 0; c < C; ++c) prow[c] *= inv;
        total += std::log(sum) + static_cast<double>(shift) - static_cast<double>(row[t]);
      }
    });
    out->value = total / static_cast<double>(B);
    out->hits = hits;
    ctx->save_for_backward({p, y});
    return torch::scalar_tensor(out->value, z.options());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    const auto &p = saved[0], &y = saved[1];
    auto g = torch::empty_like(p);  // (softmax − onehot) · grad / B; p stays intact for a retained graph
    const int64_t B = p.size(0), C = p.size(1);
    const int64_t* yp = y.data_ptr<int64_t>();
    AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "cross_entropy_hits_backward", [&] {
      const scalar_t scale = grad_out[0].item<scalar_t>() / static_cast<scalar_t>(B);
      const scalar_t* pp = p.data_ptr<scalar_t>();
      scalar_t* gp = g.data_ptr<scalar_t>();
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t c = 0; c < C; ++c) gp[b * C + c] = pp[b * C + c] * scale;
        gp[b * C + yp[b]] -= scale;
      }
    });
    return {g, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

CrossEntropyHits cross_entropy_hits(const torch::Tensor& logits, const torch::Tensor& target) {
  CrossEntropyHits r;
  // Past a few thousand logits the arithmetic outweighs the operators, and LibTorch's vectorised
  // log_softmax beats this scalar loop: the composed operators, same values.
  // Off the CPU, or in reduced precision, the composed operators too.
  constexpr int64_t kFusedMaxLogits = 16384;
  const bool fused = logits.is_cpu() && target.is_cpu() && logits.numel() <= kFusedMaxLogits &&
                     (logits.scalar_type() == torch::kFloat || logits.scalar_type() == torch::kDouble);
  if (!fused) {
    r.loss = torch::nn::functional::cross_entropy(logits, target);
    r.value = r.loss.item<double>();
    r.hits = count_hits(logits, target);
    return r;
  }
  r.loss = CrossEntropyHitsNode::apply(logits, target, &r);
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

// The seed of one step's random draws (dropout masks, core/batch_dropout.h): a function of (seed,
// task, stage, step) alone, the same on every worker and in a resumed run.
uint64_t step_seed(int64_t seed, int64_t task, int64_t stage, int64_t step) {
  uint64_t h = static_cast<uint64_t>(seed) * 0xD1B54A32D192ED03ull;
  h ^= (static_cast<uint64_t>(task) + 1) * 0xAEF17502108EF2D9ull;
  h ^= (static_cast<uint64_t>(stage) + 1) * 0x9E3779B97F4A7C15ull;
  h ^= (static_cast<uint64_t>(step) + 1) * 0xBF58476D1CE4E5B9ull;
  return h ^ (h >> 31);
}

void check_finite(double loss, int64_t task, int64_t epoch, int64_t step) {
  TORCH_CHECK(std::isfinite(loss), "strata::continual::train_task(): non-finite loss (", loss, ") at task ", task,
              " epoch ", epoch, " step ", step, "; lower the learning rate. Finished versions are untouched.");
}

// step_loss with what the loop reads beside it: the total's value, and the hit count when the
// loss node saw the logits themselves (-1: count them apart, as for CoSO's z/T or at w = 0).
struct CountedLoss {
  torch::Tensor total;
  double value = 0;
  int64_t hits = -1;
};

CountedLoss counted_step_loss(Method& method, StepContext& step) {
  // A method that weights its task loss (MUSCLE's stage 2: 1 − λ) gets it weighted here instead of
  // cancelling part of it in extra_loss; w = 0 computes no cross-entropy at all.
  const double w = method.task_loss_weight(step);
  TORCH_CHECK(std::isfinite(w) && w >= 0, "strata::continual::step_loss(): method '", method.name(),
              "' returned a task loss weight of ", w, ", expected a finite value >= 0");
  CountedLoss r;
  if (w != 0) {
    const torch::Tensor task_logits = method.training_logits(step.logits);
    const CrossEntropyHits ce = cross_entropy_hits(task_logits, step.y);
    step.loss = ce.loss;
    r.total = w == 1 ? step.loss : step.loss * w;
    r.value = w * ce.value;
    if (task_logits.unsafeGetTensorImpl() == step.logits.unsafeGetTensorImpl()) r.hits = ce.hits;
  }
  if (auto extra = method.extra_loss(step); extra.defined()) {
    r.total = r.total.defined() ? r.total + extra : extra;
    r.value = r.total.item<double>();
  }
  TORCH_CHECK(r.total.defined(), "strata::continual::step_loss(): method '", method.name(),
              "' returned a task loss weight of 0 and no extra_loss: the step has no loss");
  return r;
}

}  // namespace

torch::Tensor step_loss(Method& method, StepContext& step) { return counted_step_loss(method, step).total; }

void train_task(TaskContext& ctx, Method& method, const TrainOptions& options, const EpochCallback& on_epoch,
                const StepCallback& on_step) {
  options.validate();
  auto& model = *ctx.model;
  const auto& stream = *ctx.stream;
  tasks::Split data = method.training_data(ctx);
  const int64_t n = data.size();
  TORCH_CHECK(n > 0, "strata::continual::train_task(): task ", ctx.task_index, " has no training examples");
  // Per-example logit masks by each example's own task (joint training mixes tasks).
  const torch::Tensor mask_table = method.training_logit_mask(ctx);
  const bool masked = mask_table.defined();
  TORCH_CHECK(!masked || (mask_table.dim() == 2 && mask_table.size(0) == stream.size() &&
                          mask_table.size(1) == stream.num_classes),
              "strata::continual::train_task(): method '", method.name(), "' returned a training logit mask of shape ",
              mask_table.sizes(), ", expected [", stream.size(), ", ", stream.num_classes, "]");
  // Validation reports the scenario's accuracy whatever the method trains on.
  const bool eval_masked = stream.scenario != tasks::Scenario::kDomainIncremental;

  auto params = method.parameters(ctx);
  TORCH_CHECK(!params.empty(), "strata::continual::train_task(): method '", method.name(), "' trains no parameters");
  auto optimizer = method.make_optimizer(ctx, params);
  // A method-owned optimizer (CoSO) runs its own schedule; the trainer schedules only its own.
  const bool own_optimizer = !optimizer;
  if (!optimizer) optimizer = make_optimizer(options, params);

  DataParallel* parallel = is_parallel(ctx.parallel) ? ctx.parallel : nullptr;
  model.train();
  const int64_t bs = options.batch_size();
  const int64_t steps_per_epoch = (n + bs - 1) / bs;
  const int64_t total_steps = steps_per_epoch * options.epochs();
  const bool cosine = own_optimizer && options.schedule() == "cosine";
  int64_t step = 0;
  // The batch's inputs are gathered into one buffer for the whole task: the previous step's graph,
  // the only holder of its view, is freed by backward() before the next gather overwrites it.
  torch::Tensor x_buffer;
  const uint64_t rows_id = core::new_order_id();
  for (int64_t epoch = 0; epoch < options.epochs(); ++epoch) {
    const auto t0 = std::chrono::steady_clock::now();
    auto gen = shuffle_generator(options.seed(), ctx.task_index, epoch);
    const torch::Tensor perm = torch::randperm(n, gen, torch::TensorOptions().dtype(torch::kInt64));
    const uint64_t order_id = core::new_order_id();
    double loss_sum = 0;
    int64_t correct_local = 0;
    double correct_global = 0;  // several workers: the all-reduced count
    for (int64_t s = 0, b = 0; s < n; s += bs, ++b) {
      const int64_t e = std::min(n, s + bs);
      StepContext sc;
      sc.task = &ctx;
      sc.epoch = epoch;
      sc.step = step;
      // This worker's rows [first, last) of the global batch (all of it with one process).
      const auto [first, last] = parallel ? shard_range(e - s, parallel->rank(), parallel->world_size())
                                          : std::pair<int64_t, int64_t>{0, e - s};
      sc.batch_index = perm.slice(0, s + first, s + last);
      sc.x = data.x.gather(sc.batch_index, x_buffer);
      sc.y = data.y.index_select(0, sc.batch_index);
      const int64_t local = sc.y.size(0);
      // Drop the gradients (PyTorch's zero_grad(set_to_none=True)) rather than zeroing them: one
      // kernel less per parameter and step, which matters at small batches; backward() writes
      // fresh gradients, and hooks check grad().defined() for parameters a step did not reach.
      for (auto& group : optimizer->param_groups())
        for (auto& p : group.params()) p.mutable_grad().reset();
      if (cosine)
        for (auto& group : optimizer->param_groups()) group.options().set_lr(scheduled_lr(options, step, total_steps));
      double loss_value = 0;
      int64_t hits = 0;
      torch::Tensor logits;
      if (local > 0) {
        {
          // Dropout masks of the whole global batch, this worker's rows kept: the same mask for the
          // same example whatever the number of workers.
          core::BatchShardGuard shard(core::BatchShard()
                                          .global_rows(e - s)
                                          .first(first)
                                          .rows(local)
                                          .seed(step_seed(options.seed(), ctx.task_index, ctx.stage, step)));
          // The epoch's order is known ahead: a layer fed the step's input itself may compute a fixed
          // map of it for many steps at once (core/step_inputs.h). One process only: a worker's rows
          // are a slice of the global batch, and its chunks would hold the other workers' rows.
          std::optional<core::StepInputsGuard> ahead;
          if (!parallel) {
            core::StepInputs si;
            si.x = sc.x;
            si.order = perm;
            si.begin = s;
            si.end = e;
            si.order_id = order_id;
            si.rows_id = rows_id;
            si.num_rows = n;
            si.gather = [&data](const torch::Tensor& rows, torch::Tensor& buffer) {
              return data.x.gather(rows, buffer);
            };
            ahead.emplace(std::move(si));
          }
          logits = model.forward(sc.x);
        }
        sc.raw_logits = logits;
        if (masked) logits = mask_logits(logits, mask_table.index_select(0, data.task.index_select(0, sc.batch_index)));
        sc.logits = logits;
        const CountedLoss counted = counted_step_loss(method, sc);
        torch::Tensor total = counted.total;
        loss_value = counted.value;
        hits = counted.hits >= 0 ? counted.hits : count_hits(logits, sc.y);
        // This worker's share of the global batch's mean loss (the whole of it with one worker).
        if (parallel) {
          const double share = static_cast<double>(local) / (e - s);
          total = total * share;
          loss_value *= share;
        }
        if (!parallel) check_finite(loss_value, ctx.task_index, epoch, step);
        total.backward();
      }
      if (parallel) {
        // The loss and the correct count travel with the gradients; every worker then checks the
        // same global loss, so all stop together on a non-finite one.
        auto stats = torch::tensor({loss_value, static_cast<double>(hits)}, torch::kFloat64);
        parallel->all_reduce_gradients(params, stats);
        loss_value = stats[0].item<double>();
        correct_global += stats[1].item<double>();
        check_finite(loss_value, ctx.task_index, epoch, step);
      }
      method.after_backward(sc);
      optimizer->step();
      method.after_step(sc);
      loss_sum += loss_value * (e - s);
      if (!parallel) correct_local += hits;
      ++step;
      if (on_step) on_step(epoch, b + 1, steps_per_epoch, loss_sum / e);
    }
    EpochStats st;
    st.task = ctx.task_index;
    st.epoch = epoch;
    st.steps = steps_per_epoch;
    st.examples = n;
    st.loss = loss_sum / n;
    st.train_acc = (parallel ? correct_global : static_cast<double>(correct_local)) / n;
    st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto& val = ctx.task().val;
    if (val.size() > 0) {
      torch::Tensor mask = eval_masked ? stream.logit_mask(ctx.task_index)[ctx.task_index] : torch::Tensor();
      st.val_acc = evaluate(model, val, mask, options.eval_batch_size(), ctx.parallel).accuracy();
    }
    if (on_epoch) on_epoch(st);
  }
  method.on_train_end(ctx);
}

}  // namespace strata::continual
