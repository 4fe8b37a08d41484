#pragma once
// Reads one model version's predictions from a predictions.h5 (layout in checkpoints/predictions.h):
//   /vNNN/taskTT/{id int64 [N], label int64 [N], pred int64 [N], prob float32 [N]}
// compat/ sits below checkpoints/ in the dependency order, so it reads the file itself (via core/h5.h).
#include "compat/flips.h"

#include <cstdint>
#include <string>
#include <vector>

namespace strata::compat {

/// Version numbers present in the file (from the /vNNN group names), ascending.
std::vector<int64_t> list_prediction_versions(const std::string& path);

/// Every task of version `version`, concatenated in task order: ids (item = task·2^32 + example id,
/// since permuted/rotated streams reuse an example in every task), labels, preds, conf = prob,
/// groups = task index (from the taskTT name). Throws naming the file and group when the version is
/// missing (listing the versions present) or a dataset is missing or has the wrong length.
PredictionTable read_prediction_table(const std::string& path, int64_t version);

}  // namespace strata::compat
