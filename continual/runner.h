#pragma once
// The Runner: trains a model over a task stream with one method, evaluates after every task on
// every task's test set, and writes the run folder (config.ini, metrics.csv, report.json,
// versions/vNNN.h5, predictions.h5; formats in checkpoints/version_store.h and compat/predictions.h).
//
// Run folder files are written to a temporary name and renamed into place. After each task the
// order is: versions/vNNN.h5, predictions.h5, on_task_done, report.json — so the newest complete
// version is always the point a resume continues from.
#include "compat/predictions.h"
#include "checkpoints/version_store.h"
#include "continual/config.h"
#include "continual/metrics.h"

#include <functional>
#include <memory>

namespace strata::continual {

/// Everything a finished task produced: its row of the accuracy matrix and the predictions.
struct TaskResult {
  int64_t task = 0;
  std::vector<EvalResult> evals;  ///< one per task of the stream (seen or not)
  double train_seconds = 0, eval_seconds = 0, examples_per_s = 0;
  int64_t train_steps = 0;
};

class Runner {
 public:
  /// Validates the config, builds the stream and model (no files are written yet).
  explicit Runner(RunConfig config);

  /// Creates the run folder (refusing an existing one) and trains every task.
  /// Returns the final metrics; throws on error (finished files stay intact).
  ClMetrics run();

  /// Continues the run in config().run_dir() after its last complete version (the config must be
  /// the folder's config.ini). Restores the model (method.load() first, so adapter methods
  /// re-create their modules, then every tensor by name), the method state, the accuracy matrix,
  /// timings and the global CPU RNG state; stray partial files are ignored and reported. With the
  /// same threads the final accuracy matrix equals an uninterrupted run's. A folder without any
  /// version restarts from the first task. Throws if the run is already complete.
  ClMetrics resume();

  /// Messages about ignored files etc. (default: stderr unless quiet).
  std::function<void(const std::string&)> on_log;

  const RunConfig& config() const { return config_; }
  const tasks::TaskStream& stream() const { return stream_; }
  const Model& model() const { return model_; }
  Method& method() { return *method_; }
  /// R [T, T] float64 (rows not yet trained are zero) and b [T].
  const torch::Tensor& accuracy_matrix() const { return R_; }
  const torch::Tensor& initial_accuracy() const { return b_; }
  /// Printable accuracy matrix (percent) and metrics.
  std::string summary() const;

  /// Called after each task is trained and evaluated (versions, predictions, compat hook here).
  std::function<void(const TaskResult&)> on_task_done;

 private:
  void evaluate_all(int64_t stage, TaskResult& result);
  /// --init and --pretrain: the model the stream starts from (before Method::attach).
  void prepare_start();
  void write_report(int64_t stages_done) const;
  void append_metrics_csv(const EpochStats& s) const;
  ClMetrics train_tasks(int64_t first);
  checkpoints::Version snapshot(int64_t task) const;
  void store_predictions(int64_t version, const TaskResult& result);
  void log(const std::string& line) const;

  RunConfig config_;
  tasks::TaskStream stream_;
  Model model_;
  std::unique_ptr<Method> method_;
  torch::Tensor R_, b_;
  std::vector<TaskResult> results_;
  std::string dir_;
  std::string config_text_;  ///< config.ini as written (stored in every version)
  compat::PredictionVersions predictions_;
};

/// Accuracy of `model` on every task's test set after training task `stage`, with the scenario's
/// logit masks (what the Runner's accuracy-matrix rows are made of).
std::vector<EvalResult> evaluate_stream(ModelImpl& model, const tasks::TaskStream& stream, int64_t stage,
                                        int64_t batch_size);

/// Restores a stored version into `model` (built from the version's config, method attached):
/// method.load() first, so methods re-create the modules they add, then every parameter and
/// buffer by name. Throws naming `file` and the dataset on a method mismatch, missing or
/// unexpected tensors, or shapes that differ from the model's.
void restore_version(const checkpoints::Version& version, Model& model, Method& method, const std::string& file);

/// Writes `text` to `path` atomically (temporary file in the same folder, flush, rename).
void write_file_atomic(const std::string& path, const std::string& text);

}  // namespace strata::continual
