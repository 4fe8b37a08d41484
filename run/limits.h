#pragma once
// Bounds on a run before anything is allocated: every count and size a user sets is range-checked
// (one line naming the option and the value), and the memory the run will need is estimated from the
// configuration alone (no dataset, model or stream is built) and compared with what the machine has
// (/proc/meminfo MemAvailable). A run over the estimate is refused with the estimate, instead of being
// killed by the kernel part-way through.
//
// The estimate (bytes; every term is an upper bound for the built-in models and methods):
//   model       P parameters x 4 bytes x (weights + gradients + optimizer state: 1 for SGD with
//               momentum, 2 for Adam/AdamW) + one version snapshot being written (P x 4)
//   activations training batch x (sum of layer widths) x 4 bytes x 4 (forward, backward, masks),
//               ViT: batch x tokens x depth x (12 dim + 2 mlp_dim + heads x tokens) x 4 bytes; the
//               same for the evaluation batch without the backward factor
//   method      projection methods (gpm, coso, osft): per Linear layer (in^2 + out^2) x 4 bytes x 2;
//               adapter methods (lora, olora, codyra, mora): tasks x rank x (in + out) x 4 bytes x 4
//               per Linear layer; joint: the union of the task indices
//   data        the dataset once (N x C x H x W x 4 bytes) plus per task 40 bytes per example kept
//               (row index, label, id, split bookkeeping) - permuted and rotated tasks each index
//               every example, split tasks partition them
//   predictions every version keeps every task's test predictions (36 bytes per row), and the file
//               write holds a second copy: versions x test rows x 72 bytes
#include "run/config.h"

#include <cstdint>
#include <string>

namespace strata::run {

/// Tasks a run can hold: predictions.h5 names its tasks with two digits (task00..task99).
constexpr int64_t kMaxRunTasks = 100;

/// Throws one line naming the option and the value for any count or size out of range.
/// (Streams for `strata eval` may be longer; a run is also bounded by kMaxRunTasks, checked by the Runner.)
void check_bounds(const RunConfig& config,
                  const continual::MethodRegistry& registry = continual::builtin_methods());

struct MemoryEstimate {
  int64_t model = 0, activations = 0, method = 0, data = 0, predictions = 0;
  int64_t total() const { return model + activations + method + data + predictions; }
  /// "1.2 GiB (model 3.1 MiB, activations ..., predictions ...)".
  std::string describe() const;
};

/// The estimate for `config` (sizes of the built-in datasets are known; a user HDF5 dataset's are read
/// from its dataset shapes without reading the data).
MemoryEstimate estimate_memory(const RunConfig& config);

/// MemAvailable of /proc/meminfo in bytes; -1 when it cannot be read.
int64_t available_memory();

/// Throws "run needs an estimated X but the machine has Y available ..." when the estimate exceeds
/// `available` (< 0 = unknown: no check).
void check_memory(const MemoryEstimate& estimate, int64_t available);

/// "512 B", "3.2 MiB", "1.50 GiB".
std::string format_bytes(double bytes);

}  // namespace strata::run
