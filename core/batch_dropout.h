#pragma once
// Dropout whose masks are a function of the global batch, so that a data-parallel run draws the same
// mask for the same example whatever the number of workers.
//
// The trainer holds a BatchShardGuard around each step's forward pass: it names the step's global
// batch (global_rows examples), the rows this process computes ([first, first + rows)) and the seed of
// the step's draws (the same on every worker). Inside it, the mask is a counter-based function of
// (seed, the call's number in the step, the element's index in the global batch): each worker computes
// its own rows' mask elements directly, never the others', and the values are those one process
// would compute for the whole batch. Outside a guard, batch_dropout() is torch::dropout.
//
// The mask: the c-th batch_dropout call of a step (c = 0, 1, ... in forward order, the same on every
// worker) keeps element g of the global batch's flattened input (row-major) iff
//     u(g) >= t,   t = ceil(p · 2³²),
// where u(2j) and u(2j + 1) are the high and low 32 bits of h(j) = splitmix64_mix(k_c + (j + 1) · γ),
// k_c = splitmix64_mix(seed + (c + 1) · γ), γ = 0x9E3779B97F4A7C15; kept elements are scaled by
// 1/(1 − p). One 64-bit hash gives two elements (≈ 0.15 ns each where AVX-512 is there, ≈ 1 ns
// scalar; the loop is compiled per instruction set): LibTorch's CPU bernoulli_ without MKL draws one
// double per element (≈ 8 ns), which made a LoRA step at dropout 0.1 cost 0.4× a whole plain step at
// batch 10.
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
  /// The number of the next batch_dropout call in this step (0, 1, ...), counted up by it.
  uint64_t next_call() { return calls_++; }
  /// The innermost guard of this thread, or null.
  static BatchShardGuard* current();

 private:
  BatchShard shard_;
  BatchShardGuard* previous_;
  uint64_t calls_ = 0;
};

/// Inverted dropout in training (each element zeroed with probability p, the rest scaled by
/// 1/(1 − p)), the first dimension of `x` being the batch (or a whole number of rows per example, as
/// a flattened [B·T, D] input has). Inside a BatchShardGuard the mask is rows [first, first + rows)
/// of the global batch's mask above, computed on the CPU (and moved to x's device, should x live
/// elsewhere), and the result is x · mask; a contiguous float32 CPU input that autograd does not track
/// gets that product in one pass, without a mask tensor. Outside a guard it is torch::dropout(x, p,
/// true). p in [0, 1); p = 0 returns x.
torch::Tensor batch_dropout(const torch::Tensor& x, double p);

/// The scaled mask itself: `numel` float32 values of the global batch's mask from element `offset`
/// on (0 or 1/(1 − p)), for the given seed and call number. What batch_dropout multiplies by.
torch::Tensor dropout_mask(uint64_t seed, uint64_t call, int64_t offset, int64_t numel, double p);

}  // namespace strata::core
