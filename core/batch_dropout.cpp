#include "core/batch_dropout.h"

#include <ATen/CPUGeneratorImpl.h>

namespace strata::core {

namespace {
thread_local BatchShardGuard* current_guard = nullptr;
}  // namespace

void BatchShard::validate() const {
  TORCH_CHECK(global_rows_ > 0 && rows_ > 0 && first_ >= 0 && first_ + rows_ <= global_rows_,
              "strata::core::BatchShard: rows [", first_, ", ", first_ + rows_, ") are not inside a global batch of ",
              global_rows_, " rows");
}

BatchShardGuard::BatchShardGuard(const BatchShard& shard) : shard_(shard), previous_(current_guard) {
  shard_.validate();
  current_guard = this;
}

BatchShardGuard::~BatchShardGuard() { current_guard = previous_; }

BatchShardGuard* BatchShardGuard::current() { return current_guard; }

at::Generator& BatchShardGuard::generator() {
  if (!generator_.defined()) generator_ = at::detail::createCPUGenerator(shard_.seed());
  return generator_;
}

torch::Tensor batch_dropout(const torch::Tensor& x, double p) {
  TORCH_CHECK(p >= 0 && p < 1, "strata::core::batch_dropout(): p must be in [0, 1), got ", p);
  if (p == 0) return x;
  BatchShardGuard* guard = BatchShardGuard::current();
  if (!guard) return torch::dropout(x, p, /*train=*/true);
  const BatchShard& s = guard->shard();
  TORCH_CHECK(x.dim() >= 1 && x.size(0) % s.rows() == 0, "strata::core::batch_dropout(): an input of ",
              x.dim() >= 1 ? x.size(0) : 0, " rows in a step of ", s.rows(), " examples on this process (the first "
              "dimension must be the batch, or a whole number of rows per example)");
  const int64_t per_example = x.size(0) / s.rows();
  auto shape = x.sizes().vec();
  shape[0] = s.global_rows() * per_example;
  // What torch::dropout computes on the CPU (a Bernoulli(1 − p) mask scaled by 1/(1 − p), times x),
  // with the mask drawn for the global batch.
  torch::Tensor noise = torch::empty(shape, x.options().device(torch::kCPU));
  noise.bernoulli_(1 - p, guard->generator());
  noise.div_(1 - p);
  if (s.rows() != s.global_rows())
    noise = noise.slice(0, s.first() * per_example, (s.first() + s.rows()) * per_example);
  return x * (x.is_cpu() ? noise : noise.to(x.device()));
}

}  // namespace strata::core
