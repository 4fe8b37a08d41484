#pragma once
// Comparison reports (compat.md §6.4-6.5): compat_report.json, flips.csv, SVG plots, and the NFR gate.
#include "compat/flips.h"

#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>

namespace strata::compat {

/// Schema id written as "schema_version" in every report.
constexpr const char* kReportSchema = "strata-compat-report/1";

/// NF-budget gate (compat.md §6.4 rule 2): pass iff the one-sided (1 − alpha) Wilson upper bound of the
/// overall NFR = NF/N is ≤ max_nfr. With N = 0 the bound is 1 (no evidence), so it fails unless max_nfr ≥ 1.
struct GateResult {
  bool passed = false;
  double max_nfr = 0.0;
  double alpha = 0.05;
  double nfr = 0.0;        ///< observed NF/N (NaN when N = 0)
  double nfr_upper = 1.0;  ///< the Wilson upper bound compared with max_nfr
  int64_t nf = 0, n = 0;
  /// {"passed", "rules": [{"name": "nfr_wilson_upper", "threshold", "observed", "point", "alpha", "passed"}]}
  nlohmann::json to_json() const;
};
GateResult gate_check(const FlipReport& report, double max_nfr, double alpha);
/// gate_check(...).passed.
bool gate(const FlipReport& report, double max_nfr, double alpha);

/// Identification of one comparison, copied into the report header.
struct ReportHeader {
  std::string old_version;                       ///< e.g. "runs/a/predictions.h5:v001"
  std::string new_version;
  std::string eval_set;                          ///< free text, e.g. "test splits of tasks 0..4"
  std::map<std::string, std::string> artifacts;  ///< name -> relative path (flips_csv, plots...)
};

/// The full compat_report.json document: {"schema_version", "created_at" (UTC ISO 8601), "tool",
/// "old", "new", "eval_set", "n", "alpha", "counts", "metrics", "tests": {"mcnemar"}, "per_task",
/// "per_class", "multiplicity", "warnings", "gate" (if given), "artifacts"}.
nlohmann::json make_report_json(const FlipReport& report, const ReportHeader& header, double alpha,
                                const GateResult* gate = nullptr);

/// Writes any JSON document (2-space indent). Throws naming the path if it cannot be written.
void write_json(const std::string& path, const nlohmann::json& doc);

/// flips.csv: one row per item whose prediction changed or that flipped (NF, PF, WW_changed; CC and
/// WW_same rows are omitted). Columns:
///   item_id,task_id,label,old_pred,new_pred,old_correct,new_correct,flip_type,old_conf,new_conf
/// NF rows first, then PF, then WW_changed; within each, by old confidence descending (confident
/// regressions first), ties by input order. item_id is the row index when in.ids is undefined;
/// task_id / conf fields are empty when not given. Returns the number of rows written.
int64_t write_flips_csv(const std::string& path, const FlipInputs& in);

/// SVG heatmap of a [V, V] version×version NFR matrix (row = old, column = new), cells labelled in %.
/// labels: one name per version (defaults to "v0", "v1", ...).
void write_nfr_heatmap_svg(const std::string& path, const torch::Tensor& matrix,
                           const std::vector<std::string>& labels = {});

/// SVG diverging bar chart per task: PF count up (green), NF count down (red), from report.per_group
/// (or the overall counts as a single bar group when there are no groups).
void write_task_flips_svg(const std::string& path, const FlipReport& report);

}  // namespace strata::compat
