#include "continual/runner.h"

#include "continual/pretrain.h"

#include "continual/compat_metrics.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>

namespace fs = std::filesystem;

namespace strata::continual {

namespace {
const char* const kMetricsHeader = "task,epoch,steps,examples,loss,train_acc,val_acc,seconds,examples_per_s\n";
}  // namespace

void write_file_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    TORCH_CHECK(f, "cannot write '", tmp, "'");
    f << text;
    f.flush();
    TORCH_CHECK(f, "write to '", tmp, "' failed (disk full?)");
  }
  if (FILE* fp = std::fopen(tmp.c_str(), "rb")) {
    ::fsync(fileno(fp));
    std::fclose(fp);
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp);
    TORCH_CHECK(false, "cannot rename '", tmp, "' to '", path, "': ", ec.message());
  }
}

Runner::Runner(RunConfig config) : config_(std::move(config)) {
  config_.validate();
  torch::manual_seed(config_.train.seed());
  stream_ = tasks::make_stream(config_.stream);
  config_.model.input_shape(stream_.input_shape).num_classes(stream_.num_classes);
  model_ = make_model(config_.model);
  // --compat wraps the method (every hook forwarded), so any method can train compatibly.
  method_ = with_compat_training(builtin_methods().make(config_.method), config_.compat);
  const int64_t T = stream_.size();
  R_ = torch::zeros({T, T}, torch::kFloat64);
  b_ = torch::zeros({T}, torch::kFloat64);
  dir_ = config_.run_dir();
}

std::vector<EvalResult> evaluate_stream(ModelImpl& model, const tasks::TaskStream& stream, int64_t stage,
                                        int64_t batch_size) {
  const bool masked = stream.scenario != tasks::Scenario::kDomainIncremental;
  const torch::Tensor masks = masked ? stream.logit_mask(std::max<int64_t>(stage, 0)) : torch::Tensor();
  std::vector<EvalResult> out;
  for (int64_t t = 0; t < stream.size(); ++t)
    out.push_back(evaluate(model, stream.tasks[t].test, masked ? masks[t] : torch::Tensor(), batch_size));
  return out;
}

void restore_version(const checkpoints::Version& version, Model& model, Method& method, const std::string& file) {
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
  result.evals = evaluate_stream(*model_, stream_, stage, config_.train.eval_batch_size());
}

void Runner::log(const std::string& line) const {
  if (on_log) {
    on_log(line);
    return;
  }
  if (config_.quiet) return;
  std::cerr << (::isatty(2) ? "\r\033[K" : "") << line << "\n";
}

void Runner::prepare_start() {
  if (!config_.init.empty()) {
    init_from_version(*model_, config_.init);
    log("init: weights from '" + config_.init + "'");
  }
  if (!config_.pretrain.empty()) {
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t n = pretrain(model_, config_.pretrain, config_.pretrain_epochs, config_.train, stream_, config_.stream);
    std::ostringstream line;
    line << "pretrain " << config_.pretrain << ": " << config_.pretrain_epochs << " epoch(s) on " << n << " examples in "
         << std::fixed << std::setprecision(2)
         << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() << " s";
    log(line.str());
  }
}

ClMetrics Runner::run() {
  std::error_code ec;
  TORCH_CHECK(!fs::exists(fs::path(dir_) / "config.ini"), "run folder '", dir_,
              "' already holds a run; choose another --name, or --resume it");
  fs::create_directories(dir_, ec);
  TORCH_CHECK(!ec, "cannot create run folder '", dir_, "': ", ec.message());
  TORCH_CHECK(::access(dir_.c_str(), W_OK) == 0, "run folder '", dir_, "' is not writable");
  config_text_ = config_.to_ini();
  write_file_atomic(dir_ + "/config.ini", config_text_);
  write_file_atomic(dir_ + "/metrics.csv", kMetricsHeader);

  prepare_start();
  method_->attach(model_);
  {
    TaskResult init;
    evaluate_all(0, init);
    for (int64_t t = 0; t < stream_.size(); ++t) b_[t] = init.evals[t].accuracy();
  }
  return train_tasks(0);
}

ClMetrics Runner::resume() {
  const std::string ini = dir_ + "/config.ini";
  TORCH_CHECK(fs::is_regular_file(ini), "cannot resume '", dir_, "': no config.ini there (not a run folder)");
  TORCH_CHECK(::access(dir_.c_str(), W_OK) == 0, "run folder '", dir_, "' is not writable");
  {
    std::ifstream in(ini, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    config_text_ = ss.str();
  }
  const auto scan = checkpoints::scan_versions(dir_);
  for (const auto& p : scan.partial) log("resume: ignoring partial file '" + p + "' (left by an interrupted write)");
  for (const auto& p : scan.other) log("resume: ignoring unexpected file '" + p + "'");
  const int64_t T = stream_.size();
  if (scan.versions.empty()) prepare_start();  // the fresh model needs its starting point again
  method_->attach(model_);
  if (scan.versions.empty()) {
    // Killed during the first task: start over in the same folder (same seed => same run).
    log("resume: no complete version in '" + dir_ + "/versions'; starting again from task 1");
    write_file_atomic(dir_ + "/metrics.csv", kMetricsHeader);
    TaskResult init;
    evaluate_all(0, init);
    for (int64_t t = 0; t < T; ++t) b_[t] = init.evals[t].accuracy();
    return train_tasks(0);
  }
  const int64_t last = scan.versions.back();
  for (int64_t v = 0; v <= last; ++v)
    TORCH_CHECK(std::binary_search(scan.versions.begin(), scan.versions.end(), v), "cannot resume '", dir_, "': '",
                checkpoints::version_path(dir_, v), "' is missing but '", checkpoints::version_path(dir_, last),
                "' exists");
  TORCH_CHECK(last + 1 < T, "run '", dir_, "' is already complete: all ", T, " tasks have a version (last: '",
              checkpoints::version_path(dir_, last), "'); nothing to resume");
  const std::string path = checkpoints::version_path(dir_, last);
  const auto v = checkpoints::read_version(path);
  TORCH_CHECK(v.version == last && v.position.next_task == last + 1 && v.position.num_tasks == T, "cannot resume '",
              dir_, "': '", path, "' holds version ", v.version, " (next task ", v.position.next_task, " of ",
              v.position.num_tasks, "), expected version ", last, " of a ", T, "-task stream");
  restore_version(v, model_, *method_, path);
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
  predictions_.clear();
  const std::string pred_path = dir_ + "/predictions.h5";
  if (fs::exists(pred_path)) {
    try {
      predictions_ = compat::read_predictions(pred_path);
    } catch (const c10::Error& e) {
      log(std::string("resume: cannot read predictions.h5 (") + e.msg() + "); earlier versions' predictions are lost");
    }
  }
  for (auto it = predictions_.begin(); it != predictions_.end();)
    it = it->first > last ? predictions_.erase(it) : std::next(it);
  for (int64_t u = 0; u < last; ++u)
    if (!predictions_.count(u)) log("resume: predictions.h5 lacks version " + std::to_string(u));
  TaskResult check;
  evaluate_all(last, check);
  for (int64_t j = 0; j < T; ++j)
    if (check.evals[j].accuracy() != R_[last][j].item<double>())
      log("resume: warning: re-evaluating version " + std::to_string(last) + " on task " + std::to_string(j) +
          " gives accuracy " + std::to_string(check.evals[j].accuracy()) + ", the version recorded " +
          std::to_string(R_[last][j].item<double>()) + " (different threads or hardware?)");
  store_predictions(last, check);

  // metrics.csv: drop the rows of the interrupted task.
  {
    std::ifstream in(dir_ + "/metrics.csv");
    std::string line, kept = kMetricsHeader;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      const auto comma = line.find(',');
      if (comma == std::string::npos) continue;
      try {
        if (std::stoll(line.substr(0, comma)) <= last) kept += line + "\n";
      } catch (const std::exception&) {
      }
    }
    write_file_atomic(dir_ + "/metrics.csv", kept);
  }
  // Last: the global RNG exactly as the uninterrupted run had it after writing this version.
  checkpoints::set_cpu_rng_state(v.rng_cpu);
  log("resume: continuing '" + dir_ + "' after version " + std::to_string(last) + " (task " +
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

void Runner::store_predictions(int64_t version, const TaskResult& result) {
  std::vector<compat::PredictionTable> parts;
  for (int64_t j = 0; j < stream_.size(); ++j) {
    const auto& test = stream_.tasks[j].test;
    parts.push_back({test.ids, test.y, result.evals[j].pred, result.evals[j].prob,
                     torch::full({test.size()}, j, torch::kInt64)});
  }
  predictions_[version] = compat::concat_tables(parts);
}

ClMetrics Runner::train_tasks(int64_t first) {
  const bool tty = ::isatty(2) && !config_.quiet;
  for (int64_t t = first; t < stream_.size(); ++t) {
    TaskContext ctx;
    ctx.model = model_;
    ctx.stream = &stream_;
    ctx.task_index = t;
    ctx.train = &config_.train;
    ctx.run_dir = dir_;
    TaskResult result;
    result.task = t;
    const auto t0 = std::chrono::steady_clock::now();
    if (auto* cm = dynamic_cast<CompatMethod*>(method_.get()))
      cm->on_stage2_epoch = [&](const EpochStats& s) {  // MUSCLE stage 2: more rows of the same task
        append_metrics_csv(s);
        std::ostringstream line;
        line << std::fixed << std::setprecision(4) << "task " << t + 1 << "/" << stream_.size()
             << " compat stage 2, epoch " << s.epoch + 1 << "  loss " << s.loss;
        log(line.str());
      };
    method_->on_task_start(ctx);
    auto last_print = std::chrono::steady_clock::now();
    int64_t examples = 0;
    train_task(
        ctx, *method_, config_.train,
        [&](const EpochStats& s) {
          append_metrics_csv(s);
          examples += s.examples;
          result.train_steps += s.steps;
          std::ostringstream line;
          line << std::fixed << std::setprecision(4) << "task " << t + 1 << "/" << stream_.size() << " epoch "
               << s.epoch + 1 << "/" << config_.train.epochs() << "  loss " << s.loss << "  train acc "
               << std::setprecision(2) << 100 * s.train_acc << "%";
          if (s.val_acc >= 0) line << "  val acc " << 100 * s.val_acc << "%";
          line << "  " << std::setprecision(0) << s.examples_per_s() << " ex/s";
          log(line.str());
        },
        [&](int64_t epoch, int64_t b, int64_t nb, double loss) {
          if (!tty) return;
          auto now = std::chrono::steady_clock::now();
          if (std::chrono::duration<double>(now - last_print).count() < 0.2 && b != nb) return;
          last_print = now;
          std::cerr << "\r\033[Ktask " << t + 1 << "/" << stream_.size() << " epoch " << epoch + 1 << "/"
                    << config_.train.epochs() << "  step " << b << "/" << nb << "  loss " << std::fixed
                    << std::setprecision(4) << loss << std::flush;
        });
    method_->on_task_end(ctx);
    const auto t1 = std::chrono::steady_clock::now();
    result.train_seconds = std::chrono::duration<double>(t1 - t0).count();
    result.examples_per_s = examples / std::max(result.train_seconds, 1e-9);
    evaluate_all(t, result);
    result.eval_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
    for (int64_t j = 0; j < stream_.size(); ++j) R_[t][j] = result.evals[j].accuracy();
    results_.push_back(result);
    // Version first (the resume point), then predictions, the hook, and the report.
    checkpoints::write_version(checkpoints::version_path(dir_, t), snapshot(t));
    store_predictions(t, result);
    compat::write_predictions(dir_ + "/predictions.h5", predictions_);
    write_compat_plots(dir_, predictions_);
    if (on_task_done) on_task_done(result);
    write_report(t + 1);
    std::ostringstream line;
    line << std::fixed << std::setprecision(2) << "task " << t + 1 << "/" << stream_.size() << " done in "
         << result.train_seconds << " s; accuracy on tasks seen: ";
    for (int64_t j = 0; j <= t; ++j) line << 100 * R_[t][j].item<double>() << (j < t ? " " : "%");
    log(line.str());
  }
  return compute_metrics(R_, b_);
}

void Runner::append_metrics_csv(const EpochStats& s) const {
  std::ofstream f(dir_ + "/metrics.csv", std::ios::app);
  TORCH_CHECK(f, "cannot append to '", dir_, "/metrics.csv'");
  f << s.task << "," << s.epoch << "," << s.steps << "," << s.examples << "," << s.loss << "," << s.train_acc << ","
    << s.val_acc << "," << s.seconds << "," << s.examples_per_s() << "\n";
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
  r["run"] = {{"name", fs::path(dir_).filename().string()}, {"method", method_->name()},
              {"threads", config_.threads}, {"seed", config_.train.seed()}, {"torch_version", TORCH_VERSION}};
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
  r["compat"] = compat_section(predictions_);
  r["compat"]["training"] = config_.compat.loss().mode() == compat::CompatMode::kNone
                                ? nlohmann::json("none")
                                : method_->report().value("compat_training", nlohmann::json());
  r["compat"]["plots"] = {{"nfr_heatmap", "plots/nfr_heatmap.svg"}, {"flips_per_task", "plots/flips_per_task_vNNN.svg (NNN = new version; tasks 0..NNN)"}};
  write_file_atomic(dir_ + "/report.json", r.dump(2) + "\n");
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

}  // namespace strata::continual
