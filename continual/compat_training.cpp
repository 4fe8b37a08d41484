#include "continual/compat_training.h"

#include <cmath>

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
}  // namespace

void CompatMethod::on_task_start(TaskContext& ctx) {
  ref_logits_ = new_logits_ = known_columns_ = data_ids_ = torch::Tensor();
  focal_pos_ = muscle_order_ = muscle_pos_ = row_masked_ = torch::Tensor();
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
  const torch::Tensor student = raw.index_select(1, known_columns_);
  const torch::Tensor teacher = ref_logits_.index_select(0, step.batch_index).index_select(1, known_columns_);
  // A constant dummy student column k_old keeps unknown labels valid for the (unused) CE inside
  // focal_distillation_loss; its KL and focal weights use only the first k_old columns, and labels
  // >= k_old are the "new class" samples.
  const torch::Tensor y_local = focal_pos_.index_select(0, step.y);
  const torch::Tensor student_ext = torch::cat({student, torch::zeros({student.size(0), 1}, student.options())}, 1);
  const auto l = compat::focal_distillation_loss(student_ext, teacher, y_local, options_.loss());
  compat_sum_ += l.compat.detach();
  ++compat_steps_;
  return options_.loss().weight() * l.compat;
}

torch::Tensor CompatMethod::muscle_term(StepContext& step) {
  const torch::Tensor rows = step.batch_index;
  torch::Tensor student = step.logits, neu = new_logits_.index_select(0, rows);
  // The old teacher is compared on the classes it was trained on, with the student's unmasked
  // logits there (as focal distils): a task-IL loss masks exactly those columns out for the current
  // task's examples, and two masked rows would make the old-teacher term 0.
  const torch::Tensor& raw = step.raw_logits.defined() ? step.raw_logits : step.logits;
  const torch::Tensor ref = ref_logits_.index_select(0, rows).index_select(1, known_columns_);
  const torch::Tensor student_old = raw.index_select(1, known_columns_);
  if (row_masked_.defined()) {
    // The new teacher against the student as the trainer's loss sees it (its per-example mask);
    // -1e9 (not -inf) keeps 0·log 0 terms finite.
    const torch::Tensor masked = row_masked_.index_select(0, rows);
    student = student.masked_fill(masked, -1e9);
    neu = neu.masked_fill(masked, -1e9);
  }
  const auto l = compat::muscle_loss(student.index_select(1, muscle_order_), ref, neu.index_select(1, muscle_order_),
                                     muscle_pos_.index_select(0, step.y), options_.loss(), student_old);
  compat_sum_ += l.compat.detach();
  ++compat_steps_;
  const double lambda = options_.loss().weight();
  return lambda * l.compat - lambda * step.loss;
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
    new_logits_ = row_masked_ = torch::Tensor();  // not needed past the task; keeps memory at one cache
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
