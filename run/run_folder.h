#pragma once
// RunFolder: the one place that knows the layout of a run folder.
//
//   runs/NAME/
//     config.ini          the fully resolved configuration (re-runnable with --config)
//     metrics.csv         one row per epoch and task (header below)
//     report.json         accuracy matrix, CL metrics, timings, compatibility section
//     subspaces.h5        the append-only SubspaceStore the methods record into
//     predictions.h5      per version, per task: every test item's prediction
//     versions/vNNN.h5    one resumable checkpoint per finished task
//     plots/              SVG heatmaps and charts
//
// Every file is written through core::AtomicFile (temporary, fsync, rename, directory fsync), so a
// crash or a full disk never leaves a half-written file where a good one was. metrics.csv is kept in
// memory and rewritten whole after every epoch for the same reason.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace strata::run {

class RunFolder {
 public:
  static constexpr const char* kMetricsHeader =
      "task,epoch,steps,examples,loss,train_acc,val_acc,seconds,examples_per_s";

  RunFolder() = default;
  explicit RunFolder(std::string dir) : dir_(std::move(dir)) {}

  const std::string& dir() const { return dir_; }
  std::string config_ini() const { return dir_ + "/config.ini"; }
  std::string metrics_csv() const { return dir_ + "/metrics.csv"; }
  std::string report_json() const { return dir_ + "/report.json"; }
  std::string subspaces_h5() const { return dir_ + "/subspaces.h5"; }
  std::string predictions_h5() const { return dir_ + "/predictions.h5"; }
  std::string plots() const { return dir_ + "/plots"; }
  std::string version(int64_t v) const;

  /// True when the folder already holds a run (its config.ini exists).
  bool holds_run() const;
  /// Creates the folder (refusing one that holds a run) and checks it is writable.
  void create() const;
  /// Checks an existing run folder can be resumed in place (config.ini present, writable).
  void check_resumable() const;

  std::string read_config() const;
  void write_config(const std::string& text) const;
  void write_report(const std::string& json_text) const;
  /// The report given in pieces (core::atomic_write_text's streaming form).
  void write_report(const std::vector<std::string_view>& json_parts) const;
  /// plots/<file> (creating plots/), atomically.
  void write_plot(const std::string& file, const std::string& text) const;
  /// report.json's text; "" when there is none.
  std::string read_report() const;

  /// metrics.csv: rows without the header; written whole, atomically.
  void write_metrics(const std::vector<std::string>& rows) const;
  /// The rows of metrics.csv whose task column is <= last_task (a resumed run keeps these).
  std::vector<std::string> read_metrics(int64_t last_task) const;

 private:
  std::string dir_;
};

}  // namespace strata::run
