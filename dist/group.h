#pragma once
// A c10d process group for data-parallel training: rendezvous through c10d's TCPStore, collectives
// over ProcessGroupGloo (CPU tensors) or, in builds with a CUDA LibTorch, ProcessGroupNCCL. The
// same engine PyTorch's DistributedDataParallel uses; Strata adds only the bucketing, the sharded
// gathers and the agreement check.
//
// Environment (the torchrun conventions), read by options_from_env():
//   RANK          this worker's rank, 0 .. WORLD_SIZE-1 (rank 0 hosts the TCPStore and writes files)
//   WORLD_SIZE    number of workers over all machines
//   LOCAL_RANK    rank on this machine (selects the GPU with NCCL)
//   MASTER_ADDR   address of rank 0's machine, reachable from every worker
//   MASTER_PORT   free TCP port on that machine
// GLOO_SOCKET_IFNAME, when set, names the network interface Gloo binds to (as in PyTorch).
#include "continual/parallel.h"

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace strata::dist {

struct GroupOptions {
  TORCH_ARG(int64_t, rank) = 0;
  TORCH_ARG(int64_t, world_size) = 1;
  TORCH_ARG(int64_t, local_rank) = 0;
  TORCH_ARG(std::string, master_addr) = "127.0.0.1";
  TORCH_ARG(int64_t, master_port) = 29500;
  /// Seconds the rendezvous and every collective wait for the slowest worker before they fail: a
  /// worker that died or hung makes the others stop with an error after at most this long.
  TORCH_ARG(double, timeout) = 60;
  /// "gloo" (CPU tensors) | "nccl" (CUDA tensors; only in builds with NCCL).
  TORCH_ARG(std::string, backend) = "gloo";
  /// Gradients are flattened into contiguous buckets of at most about this many bytes (a larger
  /// gradient gets a bucket of its own), one all-reduce per bucket.
  TORCH_ARG(int64_t, bucket_bytes) = 25 << 20;

 public:
  void validate() const;
};

/// The options the torchrun environment variables give; nullopt when WORLD_SIZE is unset. Throws
/// naming the variable on a malformed or inconsistent value. MASTER_ADDR defaults to 127.0.0.1,
/// MASTER_PORT to 29500, LOCAL_RANK to RANK.
std::optional<GroupOptions> options_from_env();

/// True when the build has NCCL (a CUDA LibTorch with c10d's NCCL backend).
bool have_nccl();

class Group final : public continual::DataParallel {
 public:
  /// Joins the group: blocks until all world_size workers have connected (or the timeout passes,
  /// which throws naming the address and port).
  explicit Group(const GroupOptions& options);
  ~Group() override;
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;

  int64_t rank() const override;
  int64_t world_size() const override;
  const GroupOptions& options() const;

  /// Bucketed: gradients of one dtype are flattened into buckets of options().bucket_bytes, every
  /// bucket's all-reduce is started, then all are awaited and copied back. `stats` (float64) and a
  /// has-gradient flag per parameter travel in one more all-reduce.
  void all_reduce_gradients(const std::vector<torch::Tensor>& params, torch::Tensor& stats) override;
  void all_reduce_sum(torch::Tensor& t) override;
  torch::Tensor all_gather_rows(const torch::Tensor& local, int64_t total_rows) override;
  void broadcast(std::vector<torch::Tensor>& tensors, int64_t root) override;
  void barrier() override;

  /// Every worker passes its checksum of `what` (e.g. "the model parameters after task 2"); throws on
  /// every worker, naming the ranks whose checksum differs from rank 0's, unless all are equal.
  void check_agreement(uint64_t checksum, const std::string& what);

  /// Seconds spent inside all_reduce_gradients (flatten, communicate, copy back) and its calls.
  double reduce_seconds() const;
  int64_t reduce_calls() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// 64-bit hash of the tensors' dtypes, shapes and bytes, in order, then of `text`. Tensors are read
/// as contiguous CPU copies; equal values with equal layouts hash equal on every machine.
uint64_t checksum(const std::vector<torch::Tensor>& tensors, const std::string& text = "");

}  // namespace strata::dist
