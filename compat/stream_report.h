#pragma once
// Compatibility of consecutive model versions in a run:
// the "compat" section of report.json and the run's plots/, computed from the predictions the Runner
// keeps for every version (predictions.h5: per version, per task's test split, id/label/pred/prob).
//
// Conventions (also written into the section):
//   * version v = the model after training task v (0-based).
//   * pair (v-1 → v), "seen_tasks": flips on the test splits of tasks 0..v-1 (where the old version
//     was trained), overall and per task (Holm over the per-task one-sided McNemar p-values).
//   * pair (v-1 → v), "current_task": flips on task v's test split alone (the old version never
//     trained on it, so it shows mostly PF); not included in "seen_tasks".
//   * seen_tasks is what `strata compare` scores by default (default_compare_tasks).
//   * nfr_matrix M[a][b] = #{a right, b wrong}/N over the test splits of tasks 0..min(a, b)
//     (row = old, column = new; M[b][a] is then PFR(a → b) on the same items; diagonal 0).
#include "compat/flips.h"
#include "compat/predictions.h"

#include <nlohmann/json.hpp>

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace strata::compat {

/// The report.json "compat" section and the run's compatibility plots, built one version at a time, so
/// that a run keeps neither every version's predictions nor recomputes old pairs after each task:
///   * each consecutive pair's entry is computed once, when its newer version arrives;
///   * the NFR matrix keeps per (version, task) only which items the version got right (one bit per
///     item, ordered like the task's first version), and NF counts against every earlier version;
///   * the newest version's rows on tasks 0..v+1 are kept for the next pair.
/// Memory is (Σ_v (v+1)) · N_task / 8 bytes of correctness bits plus one version's rows: at 100 tasks of
/// 10 000 test items each, about 6 MB of bits.
class StreamCompat {
 public:
  /// `alpha`: level of the Wilson intervals, one-sided Wilson NFR upper bounds and Holm alarms.
  explicit StreamCompat(double alpha = 0.05) : alpha_(alpha) {}

  /// Adds version `version`'s predictions (tasks column required; at least tasks 0..version). Versions
  /// come in increasing order; a gap drops the pairs that need the missing version and is listed under
  /// "missing_versions". Throws naming the version on missing tasks or items that differ from the
  /// earlier versions' (the tables are checked before anything is kept).
  void add(int64_t version, const PredictionTable& table);

  bool empty() const { return versions_.empty(); }
  const std::vector<int64_t>& versions() const { return versions_; }

  /// The "compat" section of report.json. With `with_pairs` false, "pairs" holds the string
  /// kPairsPlaceholder instead, for a writer that splices pairs_parts() into the dumped report: at 100
  /// tasks the pairs are ~20 MB of JSON text and several times that as nlohmann::json objects.
  nlohmann::json section(bool with_pairs = true) const;
  /// The "pairs" array as compact JSON text.
  std::string pairs_text() const;
  /// The same array as pieces ("[", entry, ",", entry, ..., "]") that point into this object, for a
  /// writer that streams them without joining.
  std::vector<std::string_view> pairs_parts() const;
  static constexpr const char* kPairsPlaceholder = "@@strata:compat-pairs@@";
  /// NFR matrix over the versions added (stream_nfr_matrix's definition).
  StreamMatrix matrix() const;
  /// Writes <run_dir>/plots/nfr_heatmap.svg and, for the newest version v ≥ 1 whose predecessor was
  /// added, <run_dir>/plots/flips_per_task_vNNN.svg (PF up / NF down per task, tasks 0..v, v-1 → v).
  /// Returns the paths written, relative to run_dir.
  std::vector<std::string> write_plots(const std::string& run_dir) const;

 private:
  double alpha_;
  std::vector<int64_t> versions_;
  std::vector<std::string> pairs_;  // each pair's entry, dumped (text is ~5x smaller than json objects)
  std::map<int64_t, PredictionTable> reference_;                // task -> ids, labels of its first version
  std::map<int64_t, int64_t> reference_version_;                // task -> that version
  std::vector<std::vector<torch::Tensor>> correct_;             // [version index][task] uint8 bit-packed
  std::vector<std::vector<int64_t>> nf_, n_;                    // [V][V] NF counts and items per cell
  PredictionTable newest_;                                      // newest version, tasks 0..v+1
  std::optional<FlipReport> newest_flips_;                      // v-1 → v on tasks 0..v, for the plot
};

/// The "compat" section for the versions held in `table` (StreamCompat over them in order).
nlohmann::json compat_section(const PredictionVersions& table, double alpha = 0.05);

/// StreamCompat::write_plots over the versions held in `table`.
std::vector<std::string> write_compat_plots(const std::string& run_dir, const PredictionVersions& table);

}  // namespace strata::compat
