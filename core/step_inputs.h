#pragma once
// A training step's inputs, known ahead of the step.
//
// The trainer draws each epoch's order of the training rows before the epoch starts, so every later
// step's input is known before that step runs. A layer whose input is the step's input itself (the
// first Linear of an MLP on raw features, or on features from a frozen backbone) and which applies a
// map that is fixed for the task to it (GPM's factored update: x·F with F constant, and x·W₀ᵀ when
// the weight is frozen for the task) can then compute that map for many steps at once: one GEMM over a
// chunk of rows [C, in]·[in, f] instead of one [B, in]·[in, f] per step. At batch 10 a per-step
// product of that shape runs at a third of the speed of the chunked one: BLAS packs the whole
// [in, f] operand for ten rows, every step.
//
// The trainer holds a StepInputsGuard around each step's forward pass (single process only). Inside
// it, StepInputsGuard::current() names the step's input tensor, the epoch's order, the step's rows
// order[begin, end) and a gather for any rows. A consumer must check that its input *is* the step's
// input (aliases(), which also refuses one modified in place since the trainer gathered it) before it
// uses anything precomputed from gathered rows; otherwise it computes from its input as usual.
#include <torch/torch.h>

#include <cstdint>
#include <functional>

namespace strata::core {

struct StepInputs {
  /// The step's model input as the trainer gathered it ([B, ...]).
  torch::Tensor x;
  /// The epoch's order of the training rows ([n] int64) and this step's share of it, order[begin, end).
  torch::Tensor order;
  int64_t begin = 0, end = 0;
  /// Unique per order for the process's lifetime (new_order_id()): a cache keyed by it cannot
  /// mistake a later epoch's order for an earlier one.
  uint64_t order_id = 0;
  /// The training rows' identity (new_order_id(), 0 = unknown): the same under every epoch's order
  /// of the same rows, so a consumer may keep per-row products across epochs, indexed by row, while
  /// rows_id is unchanged. `num_rows` is their count: order holds each of 0 .. num_rows - 1 once.
  uint64_t rows_id = 0;
  int64_t num_rows = 0;
  /// The model inputs of the given training rows ([r] int64), shaped like x with r rows, the same
  /// values the trainer's own gather gives (gathers are deterministic: a split's transforms are
  /// fixed permutations and rotations, no random augmentation); written into `buffer` (grown when
  /// too small), of which the result is a view, so that a consumer refilling chunks reuses one
  /// allocation.
  std::function<torch::Tensor(const torch::Tensor& rows, torch::Tensor& buffer)> gather;

  /// Whether `input` is x itself, or a contiguous view of all of it (x.flatten(1)), unmodified since
  /// the guard was made (same data, same version counter).
  bool aliases(const torch::Tensor& input) const;

 private:
  friend class StepInputsGuard;
  int64_t version_ = 0;
};

/// A fresh id for order_id or rows_id (never 0).
uint64_t new_order_id();

/// Makes `inputs` the current step inputs of this thread for the guard's lifetime (guards nest).
class StepInputsGuard {
 public:
  explicit StepInputsGuard(StepInputs inputs);
  ~StepInputsGuard();
  StepInputsGuard(const StepInputsGuard&) = delete;
  StepInputsGuard& operator=(const StepInputsGuard&) = delete;

  /// The innermost guard's inputs on this thread, or null.
  static const StepInputs* current();

 private:
  StepInputs inputs_;
  const StepInputs* previous_;
};

}  // namespace strata::core
