#include "continual/runner.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>

namespace fs = std::filesystem;

namespace strata::continual {

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
  method_ = builtin_methods().make(config_.method);
  const int64_t T = stream_.size();
  R_ = torch::zeros({T, T}, torch::kFloat64);
  b_ = torch::zeros({T}, torch::kFloat64);
  dir_ = config_.run_dir();
}

void Runner::evaluate_all(int64_t stage, TaskResult& result) {
  const bool masked = stream_.scenario != tasks::Scenario::kDomainIncremental;
  const torch::Tensor masks = masked ? stream_.logit_mask(std::max<int64_t>(stage, 0)) : torch::Tensor();
  result.evals.clear();
  for (int64_t t = 0; t < stream_.size(); ++t)
    result.evals.push_back(evaluate(*model_, stream_.tasks[t].test, masked ? masks[t] : torch::Tensor(),
                                    config_.train.eval_batch_size()));
}

ClMetrics Runner::run() {
  std::error_code ec;
  TORCH_CHECK(!fs::exists(fs::path(dir_) / "config.ini"), "run folder '", dir_,
              "' already holds a run; choose another --name, or --resume it");
  fs::create_directories(dir_, ec);
  TORCH_CHECK(!ec, "cannot create run folder '", dir_, "': ", ec.message());
  TORCH_CHECK(::access(dir_.c_str(), W_OK) == 0, "run folder '", dir_, "' is not writable");
  write_file_atomic(dir_ + "/config.ini", config_.to_ini());
  write_file_atomic(dir_ + "/metrics.csv", "task,epoch,steps,examples,loss,train_acc,val_acc,seconds,examples_per_s\n");

  const bool tty = ::isatty(2) && !config_.quiet;
  auto log = [&](const std::string& line) {
    if (!config_.quiet) std::cerr << (tty ? "\r\033[K" : "") << line << "\n";
  };

  method_->attach(model_);
  {
    TaskResult init;
    evaluate_all(0, init);
    for (int64_t t = 0; t < stream_.size(); ++t) b_[t] = init.evals[t].accuracy();
  }

  for (int64_t t = 0; t < stream_.size(); ++t) {
    TaskContext ctx;
    ctx.model = model_;
    ctx.stream = &stream_;
    ctx.task_index = t;
    ctx.train = &config_.train;
    TaskResult result;
    result.task = t;
    const auto t0 = std::chrono::steady_clock::now();
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
