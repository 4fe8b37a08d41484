#pragma once
// The data-parallel hooks the trainer and the evaluator call when several worker processes train one
// model (strata::dist implements them over c10d). Every worker runs the same code on the same data
// with the same seed; each takes a disjoint share of every global batch, and these collectives are
// what keeps the workers' models identical.
#include <torch/torch.h>

#include <cstdint>
#include <utility>
#include <vector>

namespace strata::continual {

class DataParallel {
 public:
  virtual ~DataParallel() = default;
  virtual int64_t rank() const = 0;
  virtual int64_t world_size() const = 0;
  /// Sums over workers, in place, the gradients of `params` and the float64 tensor `stats` (batch
  /// statistics that travel with them). Each worker's gradient must already be weighted by its share
  /// of the global batch, so the sum is the gradient of the global batch's mean loss. An undefined
  /// gradient counts as zeros; it stays undefined only where it is undefined on every worker.
  virtual void all_reduce_gradients(const std::vector<torch::Tensor>& params, torch::Tensor& stats) = 0;
  /// Sums `t` over workers, in place.
  virtual void all_reduce_sum(torch::Tensor& t) = 0;
  /// The rows of every worker's `local`, in rank order: worker r passes the rows shard_range(total_rows,
  /// r, world_size()) of a [total_rows, ...] tensor; every worker gets the whole tensor back.
  virtual torch::Tensor all_gather_rows(const torch::Tensor& local, int64_t total_rows) = 0;
  /// Every worker's `tensors` (same shapes and dtypes everywhere) overwritten with worker `root`'s.
  virtual void broadcast(std::vector<torch::Tensor>& tensors, int64_t root) = 0;
  virtual void barrier() = 0;
};

/// Rows [first, second) of `n` that worker `rank` of `world` owns: contiguous, in rank order, sizes
/// differing by at most one, so the union over ranks is [0, n) for any world size.
inline std::pair<int64_t, int64_t> shard_range(int64_t n, int64_t rank, int64_t world) {
  return {n * rank / world, n * (rank + 1) / world};
}

/// True when `p` spans more than one worker.
inline bool is_parallel(const DataParallel* p) { return p && p->world_size() > 1; }

}  // namespace strata::continual
