#include "continual/compat_training.h"

#include <ATen/AccumulateType.h>

#include <cmath>
#include <limits>

namespace strata::continual {

void CompatTrainingOptions::validate() const {
  const auto& l = loss_;
  TORCH_CHECK(std::isfinite(l.alpha()) && l.alpha() >= 0, "option --compat-alpha: must be >= 0, got ", l.alpha());
  TORCH_CHECK(std::isfinite(l.beta()) && l.beta() >= 0, "option --compat-beta: must be >= 0, got ", l.beta());
  TORCH_CHECK(std::isfinite(l.temperature()), "option --compat-temperature: must be finite, got ", l.temperature());
  TORCH_CHECK(std::isfinite(l.weight()) && l.weight() >= 0, "option --compat-weight: must be >= 0, got ", l.weight());
  TORCH_CHECK(l.mode() != compat::CompatMode::kMuscle || l.weight() <= 1.0,
              "option --compat-weight: MUSCLE's lambda must be in [0, 1], got ", l.weight());
  TORCH_CHECK(stage2_epochs_ >= 0, "option --compat-epochs: must be >= 0, got ", stage2_epochs_);
}

torch::Tensor model_logits(models::ModelImpl& model, const tasks::Inputs& x, int64_t batch_size) {
  TORCH_CHECK(batch_size > 0, "strata::continual::model_logits(): batch_size must be > 0, got ", batch_size);
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  std::vector<torch::Tensor> parts;
  if (!x.defined()) return torch::empty({0, 0});
  torch::Tensor buffer;  // each batch's logits are copied out before the next batch is made
  for (int64_t s = 0; s < x.size(0); s += batch_size)
    parts.push_back(model.forward(x.slice(s, std::min(x.size(0), s + batch_size), buffer)).to(torch::kFloat32));
  if (was_training) model.train();
  return parts.empty() ? torch::empty({0, 0}) : torch::cat(parts).contiguous();
}

CompatMethod::CompatMethod(std::unique_ptr<Method> inner, CompatTrainingOptions options)
    : inner_(std::move(inner)), options_(std::move(options)) {
  TORCH_CHECK(inner_, "strata::continual::CompatMethod: no inner method");
  options_.validate();
}

namespace {
int64_t eval_batch(const TaskContext& ctx) { return ctx.train ? ctx.train->eval_batch_size() : 1000; }

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// [log p | p] of a teacher's logits at temperature t, as compat::kl_per_example computes them
// (float32), for every cached row at once: the rows are independent, so a step's slice of it is
// what the step would have computed.
torch::Tensor teacher_log_p_and_p(const torch::Tensor& logits, double t) {
  const torch::Tensor log_p = torch::log_softmax(logits.to(torch::kFloat32) / t, 1);
  return torch::cat({log_p, log_p.exp()}, 1);
}

// The focal KL term of one step as one autograd node, with the teacher side read from the
// per-row cache: (1/n) Σ_i w_i·T²·KL(p_i ‖ q_i), q_i = softmax(z_i / T), n = max(kept rows, 1).
// Forward: the operators compat::focal_distillation_loss runs. Backward: dL/dz_i = (w_i·T/n)(q_i − p_i)
// (the teacher rows sum to 1), instead of autograd's nine nodes.
struct FocalKL : public torch::autograd::Function<FocalKL> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& student, const torch::Tensor& log_p,
                               const torch::Tensor& p, const torch::Tensor& w, const torch::Tensor& n_keep, double t) {
    const torch::Tensor log_q = torch::log_softmax(student / t, 1);
    const torch::Tensor kl = (p * (log_p - log_q)).sum(1) * (t * t);
    ctx->saved_data["log_q"] = log_q;
    ctx->saved_data["p"] = p;
    ctx->saved_data["w"] = w;
    ctx->saved_data["n"] = n_keep;
    ctx->saved_data["t"] = t;
    return (w * kl).sum() / n_keep;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const double t = ctx->saved_data["t"].toDouble();
    const torch::Tensor coef = ctx->saved_data["w"].toTensor() * (grad_out[0] * t / ctx->saved_data["n"].toTensor());
    const torch::Tensor g = (ctx->saved_data["log_q"].toTensor().exp() - ctx->saved_data["p"].toTensor()) * coef.unsqueeze(1);
    return {g, {}, {}, {}, {}, {}};
  }
};

// MUSCLE's per-step tables, built once per task (reference side) and per stage (new teacher, masks).
struct MuscleTables {
  torch::Tensor new_rows;  ///< [N, 2·C] float32: log p, p of M_t^plain at T in the known-first order
  torch::Tensor ref_rows;  ///< [N, 2·K_old] float32: log p, p of the reference at T over the known columns
  torch::Tensor masked;    ///< [N, C] bool: the trainer's masked-out logits per row (model order); undefined = none
  torch::Tensor order;     ///< [C] int64: the known columns first, then the others
  torch::Tensor pos;       ///< [C] int64: label -> its position in `order`
  int64_t k_old = 0;
  double t = 2;
};

// MUSCLE's L_mcomp of one step as one autograd node over the student's unmasked logits z [B, C] (its
// only differentiable input), reading the step's rows of the tables in place (no gather, reorder or
// mask copy):
//   L = (1/B) Σ_i [m_i·KL(p_i^old ‖ q_i^old) + (1 − m_i)·KL(p_i^new ‖ q_i)],   m_i = 1[argmax s_i ≠ y_i],
// s_i = z_i in the known-first order with the trainer's masked logits at −1e9 (not −inf: 0·log 0 stays
// finite), q_i = softmax(s_i / T), q_i^old = softmax(z_i / T) over the K_old known columns (the
// unmasked logits: task-IL masks exactly those for a current-task example). Only the side m_i
// selects is computed. Backward: dL/dz_i = (q_i^old − p_i^old)/(B·T) on the known columns when m_i,
// else (q_i − p_i^new)/(B·T) (exactly 0 on masked logits, where q and p underflow to 0).
// compat::muscle_loss's value and gradient to float round-off (sums accumulate in acc_type).
struct MuscleKL : public torch::autograd::Function<MuscleKL> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& logits, const torch::Tensor& rows,
                               const torch::Tensor& labels, const MuscleTables* tab) {
    const torch::Tensor z = logits.contiguous(), row = rows.contiguous(), y_all = labels.contiguous();
    TORCH_CHECK(z.device().is_cpu(), "strata::continual::CompatMethod: MUSCLE's term runs on CPU tensors, got logits on ",
                z.device());
    const int64_t B = z.size(0), C = z.size(1), K = tab->k_old, N = tab->new_rows.size(0);
    TORCH_INTERNAL_ASSERT(tab->order.size(0) == C && tab->new_rows.size(1) == 2 * C &&
                              tab->ref_rows.size(1) == 2 * K && rows.size(0) == B && labels.size(0) == B,
                          "MuscleKL: logits ", z.sizes(), " do not match the tables");
    const bool masked = tab->masked.defined();
    // Per row, in `order`: q (or q^old) and p of the side m_i selects, then m_i.
    torch::Tensor saved = torch::empty({B, 2 * C + 1}, z.options());
    torch::Tensor out = torch::empty({}, z.options());
    AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "MuscleKL::forward", [&] {
      using acc_t = at::acc_type<scalar_t, false>;
      const scalar_t* zp = z.data_ptr<scalar_t>();
      scalar_t* sp = saved.data_ptr<scalar_t>();
      const float *np = tab->new_rows.data_ptr<float>(), *rp = tab->ref_rows.data_ptr<float>();
      const bool* mp = masked ? tab->masked.data_ptr<bool>() : nullptr;
      const int64_t *op = tab->order.data_ptr<int64_t>(), *pp = tab->pos.data_ptr<int64_t>();
      const int64_t *rowp = row.data_ptr<int64_t>(), *yp = y_all.data_ptr<int64_t>();
      const scalar_t t = static_cast<scalar_t>(tab->t);
      acc_t total = 0;
      for (int64_t i = 0; i < B; ++i) {
        const int64_t r = rowp[i], y = yp[i];
        TORCH_INTERNAL_ASSERT(r >= 0 && r < N && y >= 0 && y < C, "MuscleKL: row ", r, " or label ", y, " out of range");
        const scalar_t* zi = zp + i * C;
        scalar_t *q = sp + i * (2 * C + 1), *p = q + C;
        // The student as the new teacher sees it and its argmax (the first maximum; NaN wins, as torch::argmax).
        scalar_t best = -std::numeric_limits<scalar_t>::infinity();
        int64_t arg = 0;
        for (int64_t j = 0; j < C; ++j) {
          const scalar_t s = (mp && mp[r * C + op[j]]) ? static_cast<scalar_t>(-1e9) : zi[op[j]];
          q[j] = s / t;
          if (!std::isnan(best) && !(s <= best)) best = s, arg = j;
        }
        const bool m = arg != pp[y];
        const int64_t n = m ? K : C;
        if (m)
          for (int64_t j = 0; j < K; ++j) q[j] = zi[op[j]] / t;
        const float* lp = m ? rp + r * 2 * K : np + r * 2 * C;  // [log p | p] of the selected teacher
        scalar_t mx = -std::numeric_limits<scalar_t>::infinity();
        for (int64_t j = 0; j < n; ++j) mx = std::max(mx, q[j]);
        acc_t sum = 0;
        for (int64_t j = 0; j < n; ++j) sum += std::exp(static_cast<acc_t>(q[j] - mx));
        const acc_t lse = static_cast<acc_t>(mx) + std::log(sum);
        acc_t a = 0;
        for (int64_t j = 0; j < n; ++j) {
          const acc_t log_q = static_cast<acc_t>(q[j]) - lse;
          a += static_cast<acc_t>(lp[n + j]) * (static_cast<acc_t>(lp[j]) - log_q);
          q[j] = static_cast<scalar_t>(std::exp(log_q));
          p[j] = lp[n + j];
        }
        q[2 * C] = m ? 1 : 0;
        total += a;
      }
      *out.data_ptr<scalar_t>() = static_cast<scalar_t>(total / static_cast<acc_t>(B));
    });
    ctx->saved_data["saved"] = saved;
    ctx->saved_data["order"] = tab->order;
    ctx->saved_data["k_old"] = K;
    ctx->saved_data["t"] = tab->t;
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    if (!grad_out[0].defined()) return {torch::Tensor(), {}, {}, {}};
    const torch::Tensor saved = ctx->saved_data["saved"].toTensor(), order = ctx->saved_data["order"].toTensor();
    const int64_t B = saved.size(0), C = order.size(0), K = ctx->saved_data["k_old"].toInt();
    const double t = ctx->saved_data["t"].toDouble();
    TORCH_INTERNAL_ASSERT(grad_out[0].scalar_type() == saved.scalar_type() && grad_out[0].numel() == 1);
    torch::Tensor g = torch::zeros({B, C}, saved.options());
    AT_DISPATCH_FLOATING_TYPES(saved.scalar_type(), "MuscleKL::backward", [&] {
      const scalar_t c = static_cast<scalar_t>(*grad_out[0].data_ptr<scalar_t>() / (t * static_cast<double>(B)));
      const scalar_t* sp = saved.data_ptr<scalar_t>();
      const int64_t* op = order.data_ptr<int64_t>();
      scalar_t* gp = g.data_ptr<scalar_t>();
      for (int64_t i = 0; i < B; ++i) {
        const scalar_t *q = sp + i * (2 * C + 1), *p = q + C;
        const int64_t n = q[2 * C] != 0 ? K : C;
        for (int64_t j = 0; j < n; ++j) gp[i * C + op[j]] = (q[j] - p[j]) * c;
      }
    });
    return {g, {}, {}, {}};
  }
};

}  // namespace

void CompatMethod::on_task_start(TaskContext& ctx) {
  ref_logits_ = new_logits_ = known_columns_ = data_ids_ = torch::Tensor();
  focal_pos_ = muscle_order_ = muscle_pos_ = row_masked_ = torch::Tensor();
  focal_rows_ = muscle_ref_rows_ = muscle_new_rows_ = torch::Tensor();
  all_known_ = false;
  stage2_ = false;
  compat_sum_ = torch::zeros({}, torch::kFloat64);
  compat_steps_ = 0;
  current_ = {{"task", ctx.task_index}};
  const auto mode = options_.loss().mode();
  if (mode == compat::CompatMode::kFocal && options_.loss().drop_new_class_samples() && ctx.task_index == 0 &&
      ctx.stream != nullptr) {
    // Refuse before anything is trained: a task whose every label is a class the previous version
    // never saw keeps no sample, so the focal term would be exactly 0 and the run would be plain CE.
    const auto& stream = *ctx.stream;
    for (int64_t t = 1; t < stream.size(); ++t) {
      const torch::Tensor known = stream.logit_mask(t - 1).slice(0, 0, t).any(0);
      const torch::Tensor y = stream.tasks[t].train.y;
      TORCH_CHECK(y.numel() == 0 || known.index_select(0, y).any().item<bool>(),
                  "option --compat focal: every training label of task ", t,
                  " is a class the previous version never saw (classes are disjoint across tasks), so "
                  "--compat-drop-new-classes true (the default) would drop every sample and the focal term would "
                  "be exactly 0; pass --compat-drop-new-classes false to distil the old classes' logits with weight "
                  "alpha");
    }
  }
  if (mode != compat::CompatMode::kNone && ctx.task_index >= 1) {
    // Before the inner hook: the model is exactly the stored previous version here (adapter methods
    // may add or merge modules in on_task_start).
    const tasks::Split data = inner_->training_data(ctx);
    ref_logits_ = model_logits(*ctx.model, data.x, eval_batch(ctx));
    data_ids_ = data.ids;
    const auto& stream = *ctx.stream;
    // Columns the reference was trained on: the union of the allowed logits of tasks 0..t-1 at stage t-1.
    const torch::Tensor known = stream.logit_mask(ctx.task_index - 1).slice(0, 0, ctx.task_index).any(0);
    known_columns_ = known.nonzero().flatten().to(torch::kInt64);
    const torch::Tensor ref_pred = known_columns_.index_select(0, ref_logits_.index_select(1, known_columns_).argmax(1));
    current_["reference_train_acc"] = ref_pred.eq(data.y).to(torch::kFloat64).mean().item<double>();
    current_["known_classes"] = known_columns_.size(0);
    current_["known_label_fraction"] = known.index_select(0, data.y).to(torch::kFloat64).mean().item<double>();
    const int64_t k = known.size(0), k_old = known_columns_.size(0);
    // Labels as positions among the known columns; unknown labels -> k_old (focal's "new class").
    focal_pos_ = torch::full({k}, k_old, torch::kInt64);
    focal_pos_.index_put_({known_columns_}, torch::arange(k_old, torch::kInt64));
    // MUSCLE compares the first K_old student columns with the reference: known columns first (a
    // permutation of the columns changes no KL), and where each label lands in that order.
    muscle_order_ = torch::cat({known_columns_, known.logical_not().nonzero().flatten().to(torch::kInt64)});
    muscle_pos_ = torch::empty({k}, torch::kInt64);
    muscle_pos_.index_put_({muscle_order_}, torch::arange(k, torch::kInt64));
    all_known_ = k_old == k;  // known_columns_ is then 0..k-1 in order
    // The reference side of every step's term, per row (it depends on the row alone).
    const torch::Tensor teacher = ref_logits_.index_select(1, known_columns_);
    const double t = options_.loss().resolved_temperature();
    if (mode == compat::CompatMode::kFocal) {
      const torch::Tensor y_local = focal_pos_.index_select(0, data.y);
      const torch::Tensor keep = options_.loss().drop_new_class_samples() ? y_local.lt(k_old)
                                                                           : torch::ones_like(y_local, torch::kBool);
      const torch::Tensor old_correct = teacher.argmax(1).eq(y_local);
      const torch::Tensor w = (options_.loss().alpha() + options_.loss().beta() * old_correct.to(torch::kFloat)) *
                              keep.to(torch::kFloat);
      focal_rows_ = torch::cat({teacher_log_p_and_p(teacher, t), w.unsqueeze(1), keep.to(torch::kFloat).unsqueeze(1)}, 1)
                        .contiguous();
    } else if (mode == compat::CompatMode::kMuscle) {
      muscle_ref_rows_ = teacher_log_p_and_p(teacher, t).contiguous();
    }
  }
  inner_->on_task_start(ctx);
  if (ref_logits_.defined()) {
    const tasks::Split data = inner_->training_data(ctx);
    TORCH_CHECK(data.size() == data_ids_.size(0) && torch::equal(data.ids, data_ids_),
                "strata::continual::CompatMethod::on_task_start(): method '", name(),
                "' changed its training data in on_task_start; the cached reference logits would not match");
  }
}

torch::Tensor CompatMethod::focal_term(StepContext& step) {
  // The unmasked logits: task-IL masks the old tasks' columns to -inf for current-task examples, and
  // the distillation needs their raw values (a hand-made StepContext may carry only the logits).
  const torch::Tensor& raw = step.raw_logits.defined() ? step.raw_logits : step.logits;
  const torch::Tensor student = all_known_ ? raw : raw.index_select(1, known_columns_);
  torch::Tensor term;
  if (options_.loss().distance() == compat::DistillDistance::kKL) {
    // One gather of the step's rows of the cached teacher side, one autograd node, no host sync.
    const int64_t k_old = known_columns_.size(0);
    const torch::Tensor rows = focal_rows_.index_select(0, step.batch_index);
    const torch::Tensor keep = rows.select(1, 2 * k_old + 1);
    term = FocalKL::apply(student, rows.narrow(1, 0, k_old), rows.narrow(1, k_old, k_old), rows.select(1, 2 * k_old),
                          keep.sum().clamp_min(1), options_.loss().resolved_temperature());
  } else {
    // Labels as positions among the known columns; labels >= k_old are the "new class" samples.
    const torch::Tensor teacher = ref_logits_.index_select(0, step.batch_index).index_select(1, known_columns_);
    term = compat::focal_compat_term(student, teacher, focal_pos_.index_select(0, step.y), options_.loss());
  }
  compat_sum_ += term.detach();
  ++compat_steps_;
  return options_.loss().weight() == 1.0 ? term : options_.loss().weight() * term;
}

torch::Tensor CompatMethod::muscle_term(StepContext& step) {
  // The unmasked logits: the old teacher is compared on the classes it was trained on with the
  // student's unmasked logits there (as focal distils; a task-IL loss masks exactly those columns
  // out for the current task's examples, and two masked rows would make the old-teacher term 0);
  // the node applies the trainer's masks for the new-teacher side itself, from row_masked_.
  const torch::Tensor& raw = step.raw_logits.defined() ? step.raw_logits : step.logits;
  // Both teachers' per-row [log p | p] were built once (task start, next_stage); the term is one node.
  const MuscleTables tables{muscle_new_rows_, muscle_ref_rows_, row_masked_, muscle_order_, muscle_pos_,
                            known_columns_.size(0), options_.loss().resolved_temperature()};
  const torch::Tensor term = MuscleKL::apply(raw, step.batch_index, step.y, &tables);
  compat_sum_ += term.detach();
  ++compat_steps_;
  // The (1 − λ)·CE part is the Trainer's, through task_loss_weight.
  const double lambda = options_.loss().weight();
  return lambda == 1.0 ? term : lambda * term;
}

double CompatMethod::task_loss_weight(const StepContext& step) const {
  const double w = inner_->task_loss_weight(step);
  const bool muscle_stage2 = options_.loss().mode() == compat::CompatMode::kMuscle && stage2_ && ref_logits_.defined();
  return muscle_stage2 ? (1.0 - options_.loss().weight()) * w : w;
}

torch::Tensor CompatMethod::extra_loss(StepContext& step) {
  torch::Tensor extra = inner_->extra_loss(step), term;
  if (ref_logits_.defined()) {
    if (options_.loss().mode() == compat::CompatMode::kFocal) term = focal_term(step);
    if (options_.loss().mode() == compat::CompatMode::kMuscle && stage2_) term = muscle_term(step);
  }
  if (!term.defined()) return extra;
  return extra.defined() ? extra + term : term;
}

std::optional<TrainOptions> CompatMethod::next_stage(TaskContext& ctx, int64_t stage) {
  if (options_.loss().mode() != compat::CompatMode::kMuscle || !ref_logits_.defined()) return std::nullopt;
  TORCH_INTERNAL_ASSERT(ctx.train, "strata::continual::CompatMethod::next_stage(): the Runner passes no TrainOptions");
  if (stage == 1) {
    const tasks::Split data = inner_->training_data(ctx);
    new_logits_ = model_logits(*ctx.model, data.x, eval_batch(ctx));
    data_task_ = data.task;
    // The same per-example masks the trainer applies (the wrapped method's training_logit_mask).
    if (const torch::Tensor table = training_logit_mask(ctx); table.defined())
      row_masked_ = table.index_select(0, data_task_).logical_not();
    current_["plain_train_acc"] = new_logits_.argmax(1).eq(data.y).to(torch::kFloat64).mean().item<double>();
    // The new teacher as every stage-2 step compares it: masked like the trainer's loss (-1e9, not
    // -inf, keeps 0·log 0 terms finite) and in the known-first column order, once for the stage.
    const torch::Tensor teacher = row_masked_.defined() ? new_logits_.masked_fill(row_masked_, -1e9) : new_logits_;
    muscle_new_rows_ =
        teacher_log_p_and_p(all_known_ ? teacher : teacher.index_select(1, muscle_order_),
                            options_.loss().resolved_temperature())
            .contiguous();
    // MUSCLE's old teacher is meant to be a comparable model. On a new task's data the previous
    // version is often far weaker (it never saw these classes): then a^old mostly pulls wrong
    // examples towards a model that is wrong too, and only the known classes' logits are kept.
    const double gap = current_["plain_train_acc"].get<double>() - current_["reference_train_acc"].get<double>();
    if (gap > kWeakReferenceGap)
      current_["warnings"].push_back("the previous version is " + std::to_string(static_cast<int>(100 * gap)) +
                                     " points less accurate than the plain model on this task's training data "
                                     "(it never saw most of its classes): the old-teacher term can only keep the "
                                     "old classes' logits, it cannot make the new task compatible");
    TrainOptions o = *ctx.train;
    o.epochs(options_.stage2_epochs() > 0 ? options_.stage2_epochs() : ctx.train->epochs());
    // Stage-2 shuffles differ from stage 1's.
    o.seed(ctx.train->seed() + 1000003);
    stage2_ = true;
    compat_sum_ = torch::zeros({}, torch::kFloat64);
    compat_steps_ = 0;
    current_["stage2_epochs"] = o.epochs();
    return o;
  }
  if (stage2_) {
    stage2_ = false;
    current_["mean_l_mcomp"] = mean_compat_term(ctx);
    new_logits_ = muscle_new_rows_ = row_masked_ = torch::Tensor();  // not needed past the stage
  }
  return std::nullopt;
}

double CompatMethod::mean_compat_term(TaskContext& ctx) const {
  double mean = compat_steps_ ? compat_sum_.item<double>() / compat_steps_ : 0.0;
  // Each worker saw its own share of the batches: report the mean over workers, so every worker
  // stores the same statistics (their states are compared at every task end).
  if (is_parallel(ctx.parallel)) {
    auto t = torch::tensor({mean}, torch::kFloat64);
    ctx.parallel->all_reduce_sum(t);
    mean = t.item<double>() / ctx.parallel->world_size();
  }
  return mean;
}

void CompatMethod::on_task_end(TaskContext& ctx) {
  if (options_.loss().mode() == compat::CompatMode::kFocal && ref_logits_.defined())
    current_["mean_focal_term"] = mean_compat_term(ctx);
  // A stage 2 cut short by an exception leaves the flag set; the next task must start in stage 1.
  stage2_ = false;
  if (current_.size() > 1) stats_.push_back(current_);
  inner_->on_task_end(ctx);
}

MethodState CompatMethod::save() const {
  MethodState s = inner_->save();
  if (!s.meta.is_object()) s.meta = nlohmann::json::object();
  s.meta["compat_training"] = stats_;
  return s;
}

void CompatMethod::load(const MethodState& state, models::Model& model) {
  MethodState inner_state = state;
  stats_ = nlohmann::json::array();
  if (inner_state.meta.is_object() && inner_state.meta.contains("compat_training")) {
    stats_ = inner_state.meta["compat_training"];
    inner_state.meta.erase("compat_training");
  }
  inner_->load(inner_state, model);
}

nlohmann::json CompatMethod::report() const {
  nlohmann::json r = inner_->report();
  if (!r.is_object()) r = {{"inner", r}};
  const auto& l = options_.loss();
  r["compat_training"] = {
      {"mode", compat::to_string(l.mode())},
      {"alpha", l.alpha()},
      {"beta", l.beta()},
      {"temperature", l.resolved_temperature()},
      {"weight", l.weight()},
      {"distance", l.distance() == compat::DistillDistance::kKL ? "kl" : "l2"},
      {"drop_new_class_samples", l.drop_new_class_samples()},
      {"stage2_epochs", options_.stage2_epochs()},
      {"reference", "previous version v_{t-1} (the model at task start)"},
      {"tasks", stats_}};
  return r;
}

std::unique_ptr<Method> with_compat_training(std::unique_ptr<Method> inner, const CompatTrainingOptions& options) {
  if (options.loss().mode() == compat::CompatMode::kNone) return inner;
  return std::make_unique<CompatMethod>(std::move(inner), options);
}

}  // namespace strata::continual
