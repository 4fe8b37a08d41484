#pragma once
// The Runner: trains a model over a task stream with one method, evaluates after every task on
// every task's test set, and writes the run folder (config.ini, metrics.csv, report.json).
//
// Run folder files are written to a temporary name and renamed into place.
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
  void write_report(int64_t stages_done) const;
  void append_metrics_csv(const EpochStats& s) const;

  RunConfig config_;
  tasks::TaskStream stream_;
  Model model_;
  std::unique_ptr<Method> method_;
  torch::Tensor R_, b_;
  std::vector<TaskResult> results_;
  std::string dir_;
};

/// Writes `text` to `path` atomically (temporary file in the same folder, flush, rename).
void write_file_atomic(const std::string& path, const std::string& text);

}  // namespace strata::continual
