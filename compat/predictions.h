#pragma once
// Prediction ledgers: one model version's predictions on a labelled evaluation set, and every file
// format they are stored in. This is the only place that reads or writes them.
//
// predictions.h5 (written by a training run after each version; NNN = version, TT = task, zero-padded):
//   /                   attrs: format = "strata-predictions", format_version = 1 (int64)
//   /vNNN               attrs: version (int64)
//   /vNNN/taskTT        attrs: task (int64)
//   /vNNN/taskTT/id     int64   [N] stable example id (index into the source data)
//   /vNNN/taskTT/label  int64   [N] true class
//   /vNNN/taskTT/pred   int64   [N] predicted class
//   /vNNN/taskTT/prob   float32 [N] probability of pred
// The file starts with a 512-byte HDF5 user block, magic "strata-predictions-userblock" (a
// whole-file CRC-32, core/h5.h), checked before HDF5 opens the file; files without one still read.
// A version number is the index of the last task that version was trained on. Every version holds
// predictions on every task's test split, also the tasks it has not been trained on yet.
//
// CSV (any model; a header line is required, columns in any order):
//   id,label,pred[,prob][,task]          e.g.  "id,label,pred,prob\n17,3,3,0.91\n"
// JSON lines (one object per line, blank lines skipped):
//   {"id": 17, "label": 3, "pred": 3, "prob": 0.91, "task": 0}    (prob, task optional)
// ids, labels, preds and tasks are integers; prob is a number in [0, 1]. With a task column an item is
// the pair (task, id), so the same example may appear once per task (permuted/rotated streams).
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace strata::compat {

/// One model version's predictions on an evaluation set, in any row order. Row i of every tensor is
/// the same item.
struct PredictionTable {
  torch::Tensor ids;     ///< [N] int64 stable example ids, unique (within a task when tasks is defined)
  torch::Tensor labels;  ///< [N] int64 gold labels
  torch::Tensor preds;   ///< [N] int64 predicted labels
  torch::Tensor conf;    ///< optional [N] float32: probability of the predicted label
  torch::Tensor tasks;   ///< optional [N] int64 task index; items are keyed (task, id) when defined
};

/// Every version of a run: version -> its table (tasks always defined).
using PredictionVersions = std::map<int64_t, PredictionTable>;

/// Throws naming `what` (a file, "OLD", ...) unless ids/labels/preds are defined, every defined tensor
/// is 1-D of the same length, and the integer/floating dtypes are right.
void check_table(const PredictionTable& t, const std::string& what);

/// Distinct task indices of `t`, ascending (empty when t.tasks is undefined).
std::vector<int64_t> table_tasks(const PredictionTable& t);

/// The rows of `t` whose task is in `tasks` (row order kept). Requires t.tasks.
PredictionTable select_tasks(const PredictionTable& t, const std::vector<int64_t>& tasks);

/// Concatenation of tables with the same optional columns.
PredictionTable concat_tables(const std::vector<PredictionTable>& parts);

/// Tasks version `version` was trained on: 0..version (a version number is the index of the last task
/// it was trained on).
std::vector<int64_t> tasks_trained_by(int64_t version);

/// What a comparison of two versions of one stream scores by default: the tasks the older version was
/// trained on. Tasks only the newer one learned would count its gains on items the older one could not
/// know as "compatibility" and dilute the regressions on the tasks both serve.
std::vector<int64_t> default_compare_tasks(int64_t old_version, int64_t new_version);

// ---- predictions.h5 ----

/// Atomically (re)writes `path` with every version (each table is split by task into taskTT groups,
/// rows in table order). Throws naming the file and the offending version on inconsistent inputs
/// (lengths, dtypes, missing tasks or conf); nothing changes on error.
void write_predictions(const std::string& path, const PredictionVersions& versions);

/// Adds version `version` to the predictions.h5 at `path` (created when missing), atomically (a copy
/// of the file is extended and renamed over it). Groups of this and later versions are replaced: a
/// run that retrains from version v rewrites v and has nothing after it yet. Throws as write_predictions,
/// and when `path` is not a strata-predictions file.
void append_predictions(const std::string& path, int64_t version, const PredictionTable& table);

/// Every version in a predictions.h5. Throws naming the file and group on a missing or malformed file.
PredictionVersions read_predictions(const std::string& path);

/// One version of a predictions.h5 (rows in task order, then file order). Throws naming the file when
/// the version is missing, listing the versions present.
PredictionTable read_predictions(const std::string& path, int64_t version);

/// Version numbers present in a predictions.h5, ascending.
std::vector<int64_t> list_prediction_versions(const std::string& path);

// ---- CSV / JSON lines (one version per file) ----

/// Reads a CSV ledger. Errors name the file and line: missing or unknown column, a field that is not
/// an integer (or a number in [0, 1] for prob), a wrong number of fields, a duplicate item (with the
/// line where it first appeared), no rows.
PredictionTable read_predictions_csv(const std::string& path);

/// Reads a JSON-lines ledger; the same checks as the CSV reader. Every line must carry the same keys.
PredictionTable read_predictions_jsonl(const std::string& path);

/// Writes `t` as CSV (prob / task columns only when defined), atomically. Returns the rows written.
int64_t write_predictions_csv(const std::string& path, const PredictionTable& t);

/// True for paths the CSV / JSONL readers take (".csv", ".jsonl", ".ndjson").
bool is_ledger_file(const std::string& path);
/// read_predictions_csv or read_predictions_jsonl by extension.
PredictionTable read_ledger_file(const std::string& path);

}  // namespace strata::compat
