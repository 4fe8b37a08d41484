#pragma once
// predictions.h5: per model version, per task's test set, every example's predicted class and the
// probability of that prediction, keyed by a stable example id (compat/ reads it).
//
// Layout (NNN = version = task index zero-padded to 3, TT = task index zero-padded to 2):
//   /                 attrs: format = "strata-predictions", format_version = 1 (int64)
//   /vNNN             attrs: version (int64)
//   /vNNN/taskTT      attrs: task (int64)
//   /vNNN/taskTT/id     int64   [N] stable example id (index into the source data)
//   /vNNN/taskTT/label  int64   [N] true class
//   /vNNN/taskTT/pred   int64   [N] predicted class (argmax over the allowed logits)
//   /vNNN/taskTT/prob   float32 [N] softmax probability of pred (over the allowed logits)
// Rows are in the task's test-split order, identical for every version.
//
// The file is rewritten whole from memory after each version, atomically (temporary + rename).
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace strata::checkpoints {

struct TaskPredictions {
  int64_t task = 0;
  torch::Tensor id, label, pred;  ///< [N] int64
  torch::Tensor prob;             ///< [N] float32
};

/// version -> predictions on every task's test set (ordered by task).
using PredictionTable = std::map<int64_t, std::vector<TaskPredictions>>;

/// Atomically (re)writes `path` with every version in `table`. Throws naming the file and the
/// offending version/task on inconsistent inputs (lengths, dtypes); nothing changes on error.
void write_predictions(const std::string& path, const PredictionTable& table);

/// Reads a predictions.h5. Throws c10::Error naming the file and group on a missing or
/// malformed file.
PredictionTable read_predictions(const std::string& path);

}  // namespace strata::checkpoints
