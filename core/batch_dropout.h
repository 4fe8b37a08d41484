#pragma once
// Dropout whose masks are a function of the global batch, so that a data-parallel run draws the same
// mask for the same example whatever the number of workers.
//
// The trainer holds a BatchShardGuard around each step's forward pass: it names the step's global
// batch (global_rows examples), the rows this process computes ([first, first + rows)) and the seed of
// the step's draws (the same on every worker). Inside it, batch_dropout() draws the mask of the whole
// global batch from a generator seeded with that seed and keeps this process's rows: with one process
// that is exactly one mask of the input's shape, as torch::dropout draws; with N workers each draws the
// global mask and multiplies its share. Outside a guard, batch_dropout() is torch::dropout.
#include <torch/torch.h>

#include <cstdint>

namespace strata::core {

struct BatchShard {
  /// Examples in the step's global batch.
  TORCH_ARG(int64_t, global_rows) = 0;
  /// This process's examples: rows [first, first + rows) of the global batch.
  TORCH_ARG(int64_t, first) = 0;
  TORCH_ARG(int64_t, rows) = 0;
  /// Seed of the step's random draws; every worker must pass the same one.
  TORCH_ARG(uint64_t, seed) = 0;

 public:
  void validate() const;
};

/// Makes `shard` the current batch shard of this thread for the guard's lifetime (guards nest; the
/// previous one is current again afterwards). The step's generator is made on first use, seeded with
/// shard.seed(): a step without dropout costs nothing.
class BatchShardGuard {
 public:
  explicit BatchShardGuard(const BatchShard& shard);
  ~BatchShardGuard();
  BatchShardGuard(const BatchShardGuard&) = delete;
  BatchShardGuard& operator=(const BatchShardGuard&) = delete;

  const BatchShard& shard() const { return shard_; }
  /// The step's CPU generator: the same sequence on every worker.
  at::Generator& generator();
  /// The innermost guard of this thread, or null.
  static BatchShardGuard* current();

 private:
  BatchShard shard_;
  BatchShardGuard* previous_;
  at::Generator generator_;
};

/// Inverted dropout in training (each element zeroed with probability p, the rest scaled by
/// 1/(1 − p)), the first dimension of `x` being the batch (or a whole number of rows per example, as
/// a flattened [B·T, D] input has). Inside a BatchShardGuard the mask is rows [first, first + rows)
/// of the global batch's mask, drawn on the CPU (and moved to x's device, should x live elsewhere);
/// outside one it is torch::dropout(x, p, true). p in [0, 1); p = 0 returns x.
torch::Tensor batch_dropout(const torch::Tensor& x, double p);

}  // namespace strata::core
