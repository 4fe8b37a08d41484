#pragma once
// Comparison reports: compat_report.json, flips.csv and SVG plots.
#include "compat/flips.h"
#include "compat/gate.h"

#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>

namespace strata::compat {

/// Schema id written as "schema_version" in every report.
constexpr const char* kReportSchema = "strata-compat-report/1";

/// Identification of one comparison, copied into the report header.
struct ReportHeader {
  std::string old_version;                       ///< e.g. "runs/a/predictions.h5:v001"
  std::string new_version;
  std::string eval_set;                          ///< free text, e.g. "test splits of tasks 0..4"
  std::map<std::string, std::string> artifacts;  ///< name -> relative path (flips_csv, plots...)
  /// Which items were scored, copied as "scored": e.g. {"tasks": [0, 1], "items": 20000,
  /// "rule": "tasks the older version (v001) was trained on", "excluded_tasks": [2], "excluded_items": 10000}.
  nlohmann::json scored = nlohmann::json::object();
};

/// The full compat_report.json document: {"schema_version", "created_at" (UTC ISO 8601), "tool",
/// "old", "new", "eval_set", "n", "alpha", "counts", "metrics", "tests": {"mcnemar"}, "per_task",
/// "per_class", "multiplicity", "warnings", "scored", "gate" (if given), "artifacts"}.
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
/// (or the overall counts as a single bar group when there are no groups). The two halves have their own
/// scales (each labelled with its maximum, the NF one as a negative count), so a new task's many positive
/// flips do not flatten the old tasks' negative ones; every bar carries its count.
void write_task_flips_svg(const std::string& path, const FlipReport& report);

}  // namespace strata::compat
