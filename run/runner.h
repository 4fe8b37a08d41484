#pragma once
// The Runner: trains a model over a task stream with one method, evaluates after every task on
// every task's test set, and writes the run folder (layout in run/run_folder.h; version and
// predictions formats in checkpoints/version_store.h and compat/predictions.h).
//
// After each task the order is: versions/vNNN.h5, predictions.h5, plots, on_task_done, report.json —
// so the newest complete version is always the point a resume continues from.
//
// The libraries never print: progress and log lines go to the sinks the caller sets (`on_log`,
// `on_progress`); without them the Runner is silent.
#include "compat/predictions.h"
#include "compat/stream_report.h"
#include "checkpoints/version_store.h"
#include "continual/metrics.h"
#include "dist/group.h"
#include "run/config.h"
#include "run/run_folder.h"

#include <functional>
#include <memory>

namespace strata::run {

/// Everything a finished task produced: its row of the accuracy matrix and the predictions.
struct TaskResult {
  int64_t task = 0;
  std::vector<continual::EvalResult> evals;  ///< one per task of the stream (seen or not)
  double train_seconds = 0, eval_seconds = 0, examples_per_s = 0;
  int64_t train_steps = 0;
};

/// Where a run is inside a task, for a progress display (one call per step at most).
struct Progress {
  int64_t task = 0, num_tasks = 0;  ///< 0-based task, stream size
  int64_t stage = 0;                ///< 0 = the task's own training, k >= 1 = a method's extra stage
  int64_t epoch = 0, epochs = 0;    ///< 0-based epoch within the stage, the stage's epochs
  int64_t step = 0, steps = 0;      ///< steps done in the epoch, steps per epoch
  double loss = 0;                  ///< running mean loss of the epoch
};

class Runner {
 public:
  /// Validates the config, builds the stream and model (no files are written yet). Methods come from
  /// `registry`, which must outlive the Runner (a C++ user registers their own methods there).
  explicit Runner(RunConfig config, const continual::MethodRegistry& registry = continual::builtin_methods());

  /// Creates the run folder (refusing an existing one) and trains every task.
  /// Returns the final metrics; throws on error (finished files stay intact).
  continual::ClMetrics run();

  /// Continues the run in config().run_dir() after its last complete version (the config must be
  /// the folder's config.ini). The version is restored with load_version() (method state first, so
  /// adapter methods re-create their modules, then every tensor by name), then the accuracy matrix,
  /// timings and the global CPU RNG state; stray partial files are ignored and reported. With the
  /// same threads the final accuracy matrix equals an uninterrupted run's. A folder without any
  /// version restarts from the first task. Throws if the run is already complete.
  continual::ClMetrics resume();

  /// Trains with the workers of `group` (must outlive the Runner; null = one process). Every worker
  /// builds its own Runner from the same config and calls run() or resume(): each trains on its share
  /// of every batch, evaluation is sharded and gathered, task-end state is computed on every worker
  /// from identical inputs and compared (a checksum of the parameters and of the method state), and
  /// only rank 0 writes the run folder. Set before run() / resume().
  void set_group(dist::Group* group) { group_ = group; }
  /// True on the process that writes the run folder (rank 0, or the only process).
  bool writes_files() const { return !group_ || group_->rank() == 0; }

  /// Log lines (ignored files, task summaries, pre-training); unset = silent.
  std::function<void(const std::string&)> on_log;
  /// Progress inside a task; unset = none. Called at most every step: keep it cheap.
  std::function<void(const Progress&)> on_progress;
  /// Called after each task is trained and evaluated (versions, predictions, compat hook here); with
  /// several workers, on rank 0 only.
  std::function<void(const TaskResult&)> on_task_done;

  const RunConfig& config() const { return config_; }
  const RunFolder& folder() const { return folder_; }
  const tasks::TaskStream& stream() const { return stream_; }
  const models::Model& model() const { return model_; }
  continual::Method& method() { return *method_; }
  /// R [T, T] float64 (rows not yet trained are zero) and b [T].
  const torch::Tensor& accuracy_matrix() const { return R_; }
  const torch::Tensor& initial_accuracy() const { return b_; }
  /// Printable accuracy matrix (percent) and metrics.
  std::string summary() const;

 private:
  void evaluate_all(int64_t stage, TaskResult& result);
  /// --init and --pretrain: the model the stream starts from (before Method::attach).
  void prepare_start();
  void measure_initial_accuracy();
  /// plots/accuracy_matrix.svg: the accuracy matrix so far (rows not trained yet grey).
  void write_accuracy_plot(int64_t stages_done) const;
  void write_report(int64_t stages_done) const;
  void add_metrics_row(const continual::EpochStats& s);
  continual::ClMetrics train_tasks(int64_t first);
  /// Trains every stage of the task; returns the examples seen in stage 0.
  int64_t train_stages(continual::TaskContext& ctx, TaskResult& result);
  checkpoints::Version snapshot(int64_t task) const;
  /// Adds the version's test predictions to the compatibility accounting and appends them to
  /// predictions.h5 (replacing this and later versions there); only where this worker writes files.
  void record_predictions(int64_t version, const TaskResult& result);
  void log(const std::string& line) const;
  /// Several workers, at a task end: one RNG state for all (before on_task_end), then the check that
  /// parameters and method state agree (after it).
  void sync_rng_state();
  void broadcast_model();
  void check_workers_agree(int64_t task);

  dist::Group* group_ = nullptr;

  RunConfig config_;
  const continual::MethodRegistry* registry_;
  RunFolder folder_;
  tasks::TaskStream stream_;
  models::Model model_;
  std::unique_ptr<continual::Method> method_;
  std::unique_ptr<subspaces::SubspaceRecorder> recorder_;
  torch::Tensor R_, b_;
  std::vector<TaskResult> results_;  ///< per finished task, timings only (evals dropped)
  std::vector<std::string> metrics_rows_;  ///< metrics.csv without its header
  std::string config_text_;  ///< config.ini as written (stored in every version)
  compat::StreamCompat compat_;  ///< flips and NFR matrix of the versions so far (rank 0)
};

/// The run's method: the registered method, wrapped for compatibility-aware training when
/// config.compat asks for it (what the Runner, eval and compare all build).
std::unique_ptr<continual::Method> make_run_method(const RunConfig& config, const continual::MethodRegistry& registry);

/// Accuracy of `model` on every task's test set after training task `stage`, with the scenario's
/// logit masks (what the Runner's accuracy-matrix rows are made of).
std::vector<continual::EvalResult> evaluate_stream(models::ModelImpl& model, const tasks::TaskStream& stream,
                                                   int64_t stage, int64_t batch_size,
                                                   continual::DataParallel* parallel = nullptr);

/// Restores a stored version into `model` (built from the version's config, method attached):
/// method.load() first, so methods re-create the modules they add, then every parameter and
/// buffer by name. Throws naming `file` and the dataset on a method mismatch, missing or
/// unexpected tensors, or shapes that differ from the model's.
void restore_version(const checkpoints::Version& version, models::Model& model, continual::Method& method,
                     const std::string& file);

/// A stored version, restored: the configuration it was trained with (overrides applied), the stream
/// it names, the model with its weights and the method with its state.
struct LoadedVersion {
  std::string path;
  checkpoints::Version version;
  RunConfig config;
  tasks::TaskStream stream;
  models::Model model;
  std::unique_ptr<continual::Method> method;
};

struct LoadVersionOptions {
  /// Command-line style options that win over the stored config ("--stream", "split-fmnist", ...).
  std::vector<std::string> overrides;
  const continual::MethodRegistry* registry = &continual::builtin_methods();
  /// Use this stream instead of building the stored config's (a resuming Runner has it already).
  const tasks::TaskStream* stream = nullptr;
};

/// Reads, verifies and restores the version file at `path` (what resume, `strata eval` and
/// `strata compare` use). Throws naming the file on any problem.
LoadedVersion load_version(const std::string& path, const LoadVersionOptions& options = {});

/// A stored version (runs/X/versions/vNNN.h5) re-evaluated on its run's stream, rebuilt from the
/// config.ini stored in the version: predictions on the test splits of tasks 0..last_task (tasks = task,
/// ids = example id, conf = probability of the prediction), as `strata compare` consumes them. *version_out gets
/// the version number. Throws naming the file when it cannot be read or restored.
compat::PredictionTable evaluate_version_file(const std::string& path, int64_t last_task, int64_t* version_out = nullptr);
/// The version number stored in a version file (cheap header read is not available: reads the file).
int64_t version_file_number(const std::string& path);

}  // namespace strata::run
