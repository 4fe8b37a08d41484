#include "run/runner.h"

#include "compat/stream_report.h"
#include "core/fault.h"
#include "core/svg.h"
#include "run/limits.h"
#include "run/verify.h"
#include "models/weights.h"
#include "run/pretrain.h"

#include <chrono>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <algorithm>
#include <filesystem>
#include <limits>
#include <iomanip>
#include <sstream>

namespace fs = std::filesystem;

namespace strata::run {

using namespace strata::continual;

std::unique_ptr<Method> make_run_method(const RunConfig& config, const MethodRegistry& registry) {
  // --compat wraps the method (every hook forwarded), so any method can train compatibly.
  return with_compat_training(registry.make(config.method), config.compat);
}

Runner::Runner(RunConfig config, const MethodRegistry& registry)
    : config_(std::move(config)), registry_(&registry) {
  config_.validate(registry);
  TORCH_CHECK(config_.stream.num_tasks() <= kMaxRunTasks, "option --tasks: a run holds at most ", kMaxRunTasks,
              " tasks (predictions.h5 names them task00..task99), got ", config_.stream.num_tasks());
  // Before the stream or the model exists: a run that cannot fit is one line, not an OOM kill.
  check_memory(estimate_memory(config_), available_memory());
  torch::manual_seed(config_.train.seed());
  stream_ = tasks::make_stream(config_.stream);
  config_.model.input_shape(stream_.input_shape).num_classes(stream_.num_classes);
  model_ = models::make_model(config_.model);
  method_ = make_run_method(config_, registry);
  const int64_t T = stream_.size();
  R_ = torch::zeros({T, T}, torch::kFloat64);
  b_ = torch::zeros({T}, torch::kFloat64);
  folder_ = RunFolder(config_.run_dir());
  recorder_ = std::make_unique<subspaces::StoreRecorder>(folder_.subspaces_h5());
}

std::vector<EvalResult> evaluate_stream(models::ModelImpl& model, const tasks::TaskStream& stream, int64_t stage,
                                        int64_t batch_size, DataParallel* parallel) {
  const bool masked = stream.scenario != tasks::Scenario::kDomainIncremental;
  const torch::Tensor masks = masked ? stream.logit_mask(std::max<int64_t>(stage, 0)) : torch::Tensor();
  std::vector<EvalResult> out;
  for (int64_t t = 0; t < stream.size(); ++t)
    out.push_back(evaluate(model, stream.tasks[t].test, masked ? masks[t] : torch::Tensor(), batch_size, parallel));
  return out;
}

void restore_version(const checkpoints::Version& version, models::Model& model, Method& method, const std::string& file) {
  TORCH_CHECK(version.method == method.name(), "strata::continual::restore_version(): '", file,
              "' was written by method '", version.method, "' but the run uses method '", method.name(), "'");
  MethodState state;
  state.tensors = version.method_tensors;
  state.meta = version.method_meta;
  // The method first: adapter methods re-create the modules (and names) the version holds.
  method.load(state, model);
  checkpoints::NamedTensors stored = version.parameters, targets;
  stored.insert(stored.end(), version.buffers.begin(), version.buffers.end());
  for (const auto& p : model->named_parameters()) targets.emplace_back(p.key(), p.value());
  for (const auto& b : model->named_buffers()) targets.emplace_back(b.key(), b.value());
  checkpoints::copy_named_tensors(stored, targets, file, "model");
}

void Runner::evaluate_all(int64_t stage, TaskResult& result) {
  result.evals = evaluate_stream(*model_, stream_, stage, config_.train.eval_batch_size(), group_);
}

void Runner::log(const std::string& line) const {
  if (on_log) on_log(line);
}

void Runner::prepare_start() {
  if (!config_.init.empty()) {
    const auto r = models::load_weights(
        *model_, config_.init,
        models::LoadOptions().names(config_.weights_names == "auto" ? "" : config_.weights_names).init_head(config_.init_head));
    log("init: " + std::to_string(r.tensors) + " tensors from '" + config_.init + "' (" + r.format + ", " +
        models::to_string(r.names) + " names)" + (r.head_kept ? "; classifier kept fresh: " + r.head_reason : ""));
  }
  if (!config_.pretrain.empty()) {
    const auto t0 = std::chrono::steady_clock::now();
    // Sharded like a task: every worker trains its rows of each global batch (the same model on all).
    const int64_t n =
        pretrain(model_, config_.pretrain, config_.pretrain_epochs, config_.train, stream_, config_.stream, group_);
    std::ostringstream line;
    line << "pretrain " << config_.pretrain << ": " << config_.pretrain_epochs << " epoch(s) on " << n << " examples in "
         << std::fixed << std::setprecision(2)
         << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() << " s";
    log(line.str());
  }
}

void Runner::measure_initial_accuracy() {
  TaskResult init;
  evaluate_all(0, init);
  for (int64_t t = 0; t < stream_.size(); ++t) b_[t] = init.evals[t].accuracy();
}

ClMetrics Runner::run() {
  config_text_ = config_.to_ini();
  metrics_rows_.clear();
  if (writes_files()) {
    folder_.create();
    folder_.write_config(config_text_);
    folder_.write_metrics(metrics_rows_);
  }
  prepare_start();
  method_->attach(model_);
  if (group_) broadcast_model();
  measure_initial_accuracy();
  return train_tasks(0);
}

ClMetrics Runner::resume() {
  if (writes_files()) folder_.check_resumable();
  config_text_ = folder_.read_config();
  const std::string& dir = folder_.dir();
  const auto scan = checkpoints::scan_versions(dir);
  for (const auto& p : scan.partial) log("resume: ignoring partial file '" + p + "' (left by an interrupted write)");
  for (const auto& p : scan.other) log("resume: ignoring unexpected file '" + p + "'");
  const int64_t T = stream_.size();
  std::vector<int64_t> versions = scan.versions;
  if (!versions.empty()) {
    const int64_t newest = versions.back();
    for (int64_t v = 0; v <= newest; ++v)
      TORCH_CHECK(std::binary_search(versions.begin(), versions.end(), v), "cannot resume '", dir, "': '",
                  folder_.version(v), "' is missing but '", folder_.version(newest), "' exists");
    // Every version the continued run builds on is verified (checksum, format, position, shapes)
    // before anything is decided: a damaged newest version must never pass for a complete run.
    for (int64_t v = 0; v <= newest; ++v) {
      const std::string path = folder_.version(v);
      const std::string problem = check_version(path, v, T, method_->name(), &model_);
      if (problem.empty()) continue;
      TORCH_CHECK(v == newest, "cannot resume '", dir, "': version '", path, "' is damaged (", problem,
                  "); the versions after it were trained from it, so the run cannot continue past it");
      // The newest one only: its task is trained again from the version before it.
      // (Only the rank that writes files moves it; the others just do not build on it.)
      const std::string aside = path + ".corrupt";
      if (writes_files()) {
        std::error_code ec;
        fs::rename(path, aside, ec);
        TORCH_CHECK(!ec, "cannot resume '", dir, "': version '", path, "' is damaged (", problem,
                    ") and cannot be moved aside to '", aside, "': ", ec.message());
      }
      log("resume: version '" + path + "' is damaged (" + problem + "); moved aside to '" + aside + "', task " +
          std::to_string(v + 1) + " is trained again" +
          (v > 0 ? " from version " + std::to_string(v - 1) : std::string(" from the start")));
      versions.pop_back();
    }
  }
  if (versions.empty()) {
    // Killed during the first task: start over in the same folder (same seed => same run).
    prepare_start();  // the fresh model needs its starting point again
    method_->attach(model_);
    if (group_) broadcast_model();
    log("resume: no complete version in '" + dir + "/versions'; starting again from task 1");
    metrics_rows_.clear();
    if (writes_files()) folder_.write_metrics(metrics_rows_);
    measure_initial_accuracy();
    return train_tasks(0);
  }
  const int64_t last = versions.back();
  // Every task has a version: complete only if the report written after the last one says so (a
  // kill between the last version and its report leaves predictions.h5 and report.json behind).
  bool reported = false;
  try {
    reported = nlohmann::json::parse(folder_.read_report()).value("stages_done", int64_t(-1)) == T;
  } catch (const std::exception&) {
    // No report, or a damaged one: the run is not complete.
  }
  TORCH_CHECK(last + 1 < T || !reported, "run '", dir, "' is already complete: all ", T,
              " tasks have a verified version (last: '", folder_.version(last), "'); nothing to resume");
  const std::string path = folder_.version(last);
  LoadVersionOptions lo;
  lo.registry = registry_;
  lo.stream = &stream_;
  LoadedVersion lv = load_version(path, lo);
  const auto& v = lv.version;
  TORCH_CHECK(v.version == last && v.position.next_task == last + 1 && v.position.num_tasks == T, "cannot resume '",
              dir, "': '", path, "' holds version ", v.version, " (next task ", v.position.next_task, " of ",
              v.position.num_tasks, "), expected version ", last, " of a ", T, "-task stream");
  model_ = lv.model;
  method_ = std::move(lv.method);
  R_ = v.position.accuracy_matrix.clone();
  b_ = v.position.initial_accuracy.clone();
  results_.clear();
  for (const auto& tm : v.position.timings) {
    TaskResult r;
    r.task = tm.task;
    r.train_seconds = tm.train_seconds;
    r.eval_seconds = tm.eval_seconds;
    r.examples_per_s = tm.examples_per_s;
    r.train_steps = tm.train_steps;
    results_.push_back(r);
  }

  // Predictions of earlier versions from predictions.h5; the resumed version's are recomputed
  // (the file may have been written before or after the kill) and checked against its R row.
  compat_ = compat::StreamCompat();
  const std::string pred_path = folder_.predictions_h5();
  if (writes_files() && fs::exists(pred_path)) {
    try {
      for (int64_t u : compat::list_prediction_versions(pred_path))
        if (u < last) compat_.add(u, compat::read_predictions(pred_path, u));
    } catch (const c10::Error& e) {
      // Appending needs a sound file: the damaged one is kept aside, and a new one starts.
      compat_ = compat::StreamCompat();
      const std::string aside = pred_path + ".corrupt";
      std::error_code ec;
      fs::rename(pred_path, aside, ec);
      log(std::string("resume: cannot read predictions.h5 (") + e.msg() + "); earlier versions' predictions are lost" +
          (ec ? "" : "; the file was moved to " + aside));
    }
  }
  for (int64_t u = 0; u < last && writes_files(); ++u)
    if (!std::binary_search(compat_.versions().begin(), compat_.versions().end(), u))
      log("resume: predictions.h5 lacks version " + std::to_string(u));
  TaskResult check;
  evaluate_all(last, check);
  for (int64_t j = 0; j < T; ++j)
    if (check.evals[j].accuracy() != R_[last][j].item<double>())
      log("resume: warning: re-evaluating version " + std::to_string(last) + " on task " + std::to_string(j) +
          " gives accuracy " + std::to_string(check.evals[j].accuracy()) + ", the version recorded " +
          std::to_string(R_[last][j].item<double>()) + " (different threads or hardware?)");
  record_predictions(last, check);

  // metrics.csv: drop the rows of the interrupted task.
  if (writes_files()) {
    metrics_rows_ = folder_.read_metrics(last);
    folder_.write_metrics(metrics_rows_);
  }
  // Last: the global RNG exactly as the uninterrupted run had it after writing this version.
  checkpoints::set_cpu_rng_state(v.rng_cpu);
  if (last + 1 == T) {
    // Nothing left to train: write what the interruption left behind the last version.
    if (writes_files()) {
      compat_.write_plots(folder_.dir());
      write_report(T);
    }
    log("resume: every task of '" + dir + "' has a version; rewrote predictions.h5 and report.json, which the "
        "interruption left behind");
    return compute_metrics(R_, b_);
  }
  log("resume: continuing '" + dir + "' after version " + std::to_string(last) + " (task " +
      std::to_string(last + 2) + " of " + std::to_string(T) + ")");
  return train_tasks(last + 1);
}

checkpoints::Version Runner::snapshot(int64_t task) const {
  checkpoints::Version v;
  v.version = task;
  v.method = method_->name();
  v.config_ini = config_text_;
  for (const auto& p : model_->named_parameters()) {
    v.parameters.emplace_back(p.key(), p.value());
    v.requires_grad.push_back(p.value().requires_grad());
  }
  for (const auto& b : model_->named_buffers()) v.buffers.emplace_back(b.key(), b.value());
  const MethodState state = method_->save();
  v.method_tensors = state.tensors;
  v.method_meta = state.meta;
  v.rng_cpu = checkpoints::cpu_rng_state();
  v.position.next_task = task + 1;
  v.position.num_tasks = stream_.size();
  v.position.accuracy_matrix = R_;
  v.position.initial_accuracy = b_;
  for (const auto& r : results_)
    v.position.timings.push_back({r.task, r.train_seconds, r.eval_seconds, r.examples_per_s, r.train_steps});
  return v;
}

void Runner::record_predictions(int64_t version, const TaskResult& result) {
  if (!writes_files()) return;
  std::vector<compat::PredictionTable> parts;
  for (int64_t j = 0; j < stream_.size(); ++j) {
    const auto& test = stream_.tasks[j].test;
    parts.push_back({test.ids, test.y, result.evals[j].pred, result.evals[j].prob,
                     torch::full({test.size()}, j, torch::kInt64)});
  }
  const compat::PredictionTable table = compat::concat_tables(parts);
  compat::append_predictions(folder_.predictions_h5(), version, table);
  compat_.add(version, table);
}

int64_t Runner::train_stages(TaskContext& ctx, TaskResult& result) {
  const int64_t t = ctx.task_index;
  int64_t examples = 0, epoch_offset = 0;
  std::optional<TrainOptions> stage_options = config_.train;
  for (int64_t stage = 0; stage_options; stage_options = method_->next_stage(ctx, ++stage)) {
    ctx.stage = stage;
    const TrainOptions& o = *stage_options;
    const int64_t offset = epoch_offset;
    train_task(
        ctx, *method_, o,
        [&](const EpochStats& s) {
          // Epochs of later stages are numbered after the earlier stages' in metrics.csv.
          EpochStats shifted = s;
          shifted.epoch += offset;
          add_metrics_row(shifted);
          std::ostringstream line;
          line << std::fixed << std::setprecision(4) << "task " << t + 1 << "/" << stream_.size();
          if (stage > 0) line << " stage " << stage + 1;
          line << " epoch " << s.epoch + 1 << "/" << o.epochs() << "  loss " << s.loss;
          if (stage == 0) {
            examples += s.examples;
            result.train_steps += s.steps;
            line << "  train acc " << std::setprecision(2) << 100 * s.train_acc << "%";
            if (s.val_acc >= 0) line << "  val acc " << 100 * s.val_acc << "%";
            line << "  " << std::setprecision(0) << s.examples_per_s() << " ex/s";
          }
          log(line.str());
        },
        [&](int64_t epoch, int64_t b, int64_t nb, double loss) {
          if (on_progress) on_progress({t, stream_.size(), stage, epoch, o.epochs(), b, nb, loss});
        });
    epoch_offset += o.epochs();
  }
  ctx.stage = 0;
  return examples;
}

ClMetrics Runner::train_tasks(int64_t first) {
  for (int64_t t = first; t < stream_.size(); ++t) {
    TaskContext ctx;
    ctx.model = model_;
    ctx.stream = &stream_;
    ctx.task_index = t;
    ctx.train = &config_.train;
    ctx.recorder = writes_files() ? recorder_.get() : nullptr;
    ctx.parallel = group_;
    ctx.pretrained = !config_.init.empty() || !config_.pretrain.empty();
    TaskResult result;
    result.task = t;
    core::fault_at_task_start(t, group_ ? group_->rank() : 0);
    const auto t0 = std::chrono::steady_clock::now();
    method_->on_task_start(ctx);
    const int64_t examples = train_stages(ctx, result);
    if (group_) sync_rng_state();
    method_->on_task_end(ctx);
    if (group_) check_workers_agree(t);
    const auto t1 = std::chrono::steady_clock::now();
    result.train_seconds = std::chrono::duration<double>(t1 - t0).count();
    result.examples_per_s = examples / std::max(result.train_seconds, 1e-9);
    evaluate_all(t, result);
    result.eval_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
    for (int64_t j = 0; j < stream_.size(); ++j) R_[t][j] = result.evals[j].accuracy();
    // Only the timings are kept: every task's predictions after every task would grow as T² (at 100
    // tasks of 1 000 test items, 130 MB); R_ holds the accuracies, predictions.h5 the predictions.
    TaskResult kept = result;
    kept.evals.clear();
    results_.push_back(std::move(kept));
    if (writes_files()) {
      // Version first (the resume point), then predictions, the hook, and the report.
      checkpoints::write_version(folder_.version(t), snapshot(t));
      record_predictions(t, result);
      compat_.write_plots(folder_.dir());
      if (on_task_done) on_task_done(result);
      write_report(t + 1);
    }
    std::ostringstream line;
    line << std::fixed << std::setprecision(2) << "task " << t + 1 << "/" << stream_.size() << " done in "
         << result.train_seconds << " s; accuracy on tasks seen: ";
    for (int64_t j = 0; j <= t; ++j) line << 100 * R_[t][j].item<double>() << (j < t ? " " : "%");
    log(line.str());
#ifdef __GLIBC__
    // The end of a task frees its evaluation, report text and HDF5 buffers in the middle of a heap
    // that glibc does not shrink by itself: a 100-task run's RSS otherwise grows by ~180 MB of free
    // chunks (measured). Giving them back costs one call per task.
    malloc_trim(0);
#endif
  }
  return compute_metrics(R_, b_);
}

void Runner::broadcast_model() {
  // Every worker built the same model from the same seed; rank 0's copy wins anyway, as in PyTorch's
  // DistributedDataParallel, so a difference in the start cannot grow unnoticed until the first check.
  std::vector<torch::Tensor> tensors;
  for (const auto& p : model_->parameters()) tensors.push_back(p.detach());
  for (const auto& b : model_->buffers()) tensors.push_back(b.detach());
  torch::NoGradGuard no_grad;
  group_->broadcast(tensors, 0);
}

void Runner::sync_rng_state() {
  // Training draws nothing from the global generator (dropout masks come from per-step generators,
  // core/batch_dropout.h), so the workers' states agree already; rank 0's is broadcast anyway, so that
  // what follows (on_task_end, the next task's start, the version's stored RNG state) sees it whatever
  // a method drew on one worker only.
  std::vector<torch::Tensor> state{checkpoints::cpu_rng_state()};
  group_->broadcast(state, 0);
  checkpoints::set_cpu_rng_state(state[0]);
}

void Runner::check_workers_agree(int64_t task) {
  std::vector<torch::Tensor> tensors;
  for (const auto& p : model_->named_parameters()) tensors.push_back(p.value());
  for (const auto& b : model_->named_buffers()) tensors.push_back(b.value());
  group_->check_agreement(dist::checksum(tensors), "the model's parameters after task " + std::to_string(task + 1));
  const MethodState state = method_->save();
  tensors.clear();
  std::string keys;
  for (const auto& [k, v] : state.tensors) {
    keys += k + "\n";
    tensors.push_back(v);
  }
  group_->check_agreement(dist::checksum(tensors, keys + state.meta.dump()),
                          "the state of method '" + method_->name() + "' after task " + std::to_string(task + 1));
}

void Runner::add_metrics_row(const EpochStats& s) {
  std::ostringstream row;
  row << s.task << "," << s.epoch << "," << s.steps << "," << s.examples << "," << s.loss << "," << s.train_acc << ","
      << s.val_acc << "," << s.seconds << "," << s.examples_per_s();
  metrics_rows_.push_back(row.str());
  if (writes_files()) folder_.write_metrics(metrics_rows_);
}

namespace {
nlohmann::json matrix_json(const torch::Tensor& m) {
  auto c = m.to(torch::kFloat64).contiguous();
  nlohmann::json rows = nlohmann::json::array();
  if (c.dim() == 1) {
    for (int64_t i = 0; i < c.size(0); ++i) rows.push_back(c[i].item<double>());
    return rows;
  }
  for (int64_t i = 0; i < c.size(0); ++i) rows.push_back(matrix_json(c[i]));
  return rows;
}
}  // namespace

void Runner::write_report(int64_t stages_done) const {
  nlohmann::json r;
  r["strata_report_version"] = 1;
  r["run"] = {{"name", fs::path(folder_.dir()).filename().string()}, {"method", method_->name()},
              {"threads", config_.threads},
              {"workers", group_ ? group_->world_size() : 1}, {"seed", config_.train.seed()}, {"torch_version", TORCH_VERSION}};
  nlohmann::json tasks = nlohmann::json::array();
  for (const auto& t : stream_.tasks)
    tasks.push_back({{"index", t.index}, {"name", t.name}, {"classes", t.classes}, {"train", t.train.size()},
                     {"val", t.val.size()}, {"test", t.test.size()}});
  r["stream"] = {{"name", stream_.name}, {"scenario", tasks::to_string(stream_.scenario)}, {"tasks", tasks}};
  r["conventions"] = {
      {"accuracy_matrix", "R[i][j] = test accuracy on task j after training task i (GEM convention, full T x T)"},
      {"initial_accuracy", "b[j] = accuracy of the freshly initialised model on task j"},
      {"bwt", "mean over j < T-1 of R[T-1][j] - R[j][j]"},
      {"fwt", "mean over j >= 1 of R[j-1][j] - b[j]"},
      {"forgetting", "Chaudhry et al. 2018: mean over j < T-1 of max_{l in [j, T-2]} R[l][j] - R[T-1][j]"},
      {"masking", stream_.scenario == tasks::Scenario::kTaskIncremental
                      ? "task-IL: logits masked to the example's task classes in training and evaluation"
                      : stream_.scenario == tasks::Scenario::kClassIncremental
                            ? "class-IL: logits masked to the classes seen so far in training and evaluation"
                            : "domain-IL: all logits, shared labels"}};
  r["stages_done"] = stages_done;
  r["accuracy_matrix"] = matrix_json(R_);
  r["initial_accuracy"] = matrix_json(b_);
  r["metrics"] = compute_metrics(R_, b_, stages_done).to_json();
  nlohmann::json timing = nlohmann::json::array();
  for (const auto& res : results_)
    timing.push_back({{"task", res.task}, {"train_seconds", res.train_seconds}, {"eval_seconds", res.eval_seconds},
                      {"steps", res.train_steps}, {"examples_per_s", res.examples_per_s}});
  r["timing"] = timing;
  int64_t n_params = 0, n_trainable = 0;
  for (const auto& p : model_->parameters()) {
    n_params += p.numel();
    if (p.requires_grad()) n_trainable += p.numel();
  }
  r["model"] = {{"arch", config_.model.arch()}, {"parameters", n_params}, {"trainable_parameters", n_trainable}};
  r["method_report"] = method_->report();
  // Flips between consecutive versions and the version x version NFR matrix (conventions inside).
  r["compat"] = compat_.section(/*with_pairs=*/false);  // spliced in as text below
  r["compat"]["training"] = config_.compat.loss().mode() == compat::CompatMode::kNone
                                ? nlohmann::json("none")
                                : method_->report().value("compat_training", nlohmann::json());
  r["compat"]["plots"] = {{"nfr_heatmap", "plots/nfr_heatmap.svg"}, {"flips_per_task", "plots/flips_per_task_vNNN.svg (NNN = new version; tasks 0..NNN)"}};
  r["plots"] = {{"accuracy_matrix", "plots/accuracy_matrix.svg"}};
  // The pairs are streamed into the file between the two halves of the dump, never joined: at 100
  // tasks they are ~20 MB, and a joined copy of the whole report would double the peak.
  const std::string text = r.dump(2) + "\n";
  const std::string placeholder = std::string("\"") + compat::StreamCompat::kPairsPlaceholder + "\"";
  const size_t at = text.find(placeholder, text.find("\"compat\": {"));
  TORCH_INTERNAL_ASSERT(at != std::string::npos, "report.json: the compat pairs placeholder is missing");
  std::vector<std::string_view> parts{std::string_view(text).substr(0, at)};
  for (const auto& part : compat_.pairs_parts()) parts.push_back(part);
  parts.push_back(std::string_view(text).substr(at + placeholder.size()));
  folder_.write_report(parts);
  write_accuracy_plot(stages_done);
}

void Runner::write_accuracy_plot(int64_t stages_done) const {
  // Rows not trained yet are NaN (drawn grey), so a partial run's plot shows what exists.
  torch::Tensor shown = R_.clone();
  if (stages_done < shown.size(0)) shown.slice(0, stages_done).fill_(std::numeric_limits<double>::quiet_NaN());
  std::vector<std::string> rows, cols;
  for (int64_t i = 0; i < shown.size(0); ++i) {
    rows.push_back("after " + std::to_string(i));
    cols.push_back(std::to_string(i));
  }
  folder_.write_plot("accuracy_matrix.svg",
                     core::heatmap_svg(shown, core::HeatmapOptions()
                                                  .title("Test accuracy (%): row = after training task i, column = task j")
                                                  .row_axis("trained through task")
                                                  .column_axis("evaluated task")
                                                  .row_labels(rows)
                                                  .column_labels(cols)
                                                  .vmax(1.0)
                                                  .palette("greens")));
}

std::string Runner::summary() const {
  std::ostringstream o;
  const int64_t T = stream_.size();
  const int64_t done = static_cast<int64_t>(results_.size());
  o << "Accuracy matrix (%), row = after training task i, column = task j:\n      ";
  for (int64_t j = 0; j < T; ++j) o << std::setw(7) << ("T" + std::to_string(j + 1));
  o << "\n" << std::fixed << std::setprecision(2);
  for (int64_t i = 0; i < done; ++i) {
    o << std::setw(6) << ("T" + std::to_string(i + 1));
    for (int64_t j = 0; j < T; ++j) o << std::setw(7) << 100 * R_[i][j].item<double>();
    o << "\n";
  }
  if (done > 0) {
    auto m = compute_metrics(R_, b_, done);
    o << "ACC " << 100 * m.acc << "%  avg-incremental " << 100 * m.avg_incremental << "%  BWT " << 100 * m.bwt
      << "  FWT " << 100 * m.fwt << "  forgetting " << 100 * m.forgetting << "  (points)\n";
  }
  return o.str();
}

LoadedVersion load_version(const std::string& path, const LoadVersionOptions& options) {
  TORCH_INTERNAL_ASSERT(options.registry, "strata::run::load_version(): null registry");
  LoadedVersion lv;
  lv.path = path;
  lv.version = checkpoints::read_version(path);
  lv.config = parse_run_config_text(lv.version.config_ini, path + " (its stored config.ini)", *options.registry,
                                    options.overrides);
  if (!options.stream) lv.stream = tasks::make_stream(lv.config.stream);
  const tasks::TaskStream& stream = options.stream ? *options.stream : lv.stream;
  lv.config.model.input_shape(stream.input_shape).num_classes(stream.num_classes);
  // The weights are overwritten by the version; seeding keeps any unrestored state deterministic.
  torch::manual_seed(lv.config.train.seed());
  lv.model = models::make_model(lv.config.model);
  lv.method = make_run_method(lv.config, *options.registry);
  lv.method->attach(lv.model);
  restore_version(lv.version, lv.model, *lv.method, path);
  return lv;
}

int64_t version_file_number(const std::string& path) { return checkpoints::read_version(path).version; }

compat::PredictionTable evaluate_version_file(const std::string& path, int64_t last_task, int64_t* version_out) {
  const LoadedVersion lv = load_version(path);
  const auto& v = lv.version;
  const auto& stream = lv.stream;
  if (version_out) *version_out = v.version;
  TORCH_CHECK(last_task >= 0 && last_task < stream.size(), "strata::run::evaluate_version_file(): '", path,
              "': task ", last_task, " is not in its ", stream.size(), "-task stream");
  const auto evals = evaluate_stream(*lv.model, stream, v.version, lv.config.train.eval_batch_size());
  std::vector<compat::PredictionTable> parts;
  for (int64_t t = 0; t <= last_task; ++t) {
    const auto& test = stream.tasks[t].test;
    parts.push_back({test.ids, test.y, evals[t].pred, evals[t].prob, torch::full({test.size()}, t, torch::kInt64)});
  }
  return compat::concat_tables(parts);
}

}  // namespace strata::run
