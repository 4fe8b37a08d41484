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

#include <string>

namespace strata::compat {

/// The "compat" section for the versions held in `table` (must have consecutive keys 0..V-1 to form
/// pairs; a missing version drops the pairs and matrix cells that need it, listed under "missing_versions").
/// `alpha`: level of the Wilson intervals, one-sided Wilson NFR upper bounds and Holm alarms.
nlohmann::json compat_section(const PredictionVersions& table, double alpha = 0.05);

/// Writes <run_dir>/plots/nfr_heatmap.svg (the matrix above over the versions present) and, for the
/// newest version v ≥ 1, <run_dir>/plots/flips_per_task_vNNN.svg (PF up / NF down per task, tasks 0..v,
/// v-1 → v). Returns the paths written, relative to run_dir.
std::vector<std::string> write_compat_plots(const std::string& run_dir, const PredictionVersions& table);

}  // namespace strata::compat
