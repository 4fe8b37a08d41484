#include "core/batch_dropout.h"

#include <cmath>

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

namespace {
constexpr uint64_t kGamma = 0x9E3779B97F4A7C15ull;
inline uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
}  // namespace

torch::Tensor dropout_mask(uint64_t seed, uint64_t call, int64_t offset, int64_t numel, double p) {
  TORCH_CHECK(p >= 0 && p < 1, "strata::core::dropout_mask(): p must be in [0, 1), got ", p);
  TORCH_CHECK(offset >= 0 && numel >= 0, "strata::core::dropout_mask(): bad range offset=", offset, " numel=", numel);
  torch::Tensor mask = torch::empty({numel}, torch::kFloat32);
  float* m = mask.data_ptr<float>();
  const uint64_t key = mix(seed + (call + 1) * kGamma);
  // t = ceil(p·2³²) <= 2³² − 1 for p < 1 − 2⁻³²; compared in 64 bits so that t = 2³² cannot wrap.
  const uint64_t t = static_cast<uint64_t>(std::ceil(std::ldexp(p, 32)));
  const float scale = static_cast<float>(1.0 / (1.0 - p));
  for (int64_t i = 0; i < numel; ++i) {
    const uint64_t g = static_cast<uint64_t>(offset + i);
    const uint64_t h = mix(key + (g / 2 + 1) * kGamma);
    const uint64_t u = (g % 2 == 0) ? (h >> 32) : (h & 0xFFFFFFFFull);
    m[i] = u >= t ? scale : 0.0f;
  }
  return mask;
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
  const int64_t row_numel = x.size(0) > 0 ? x.numel() / x.size(0) : 0;
  // This process's rows of the global batch's mask, and nothing else.
  torch::Tensor mask =
      dropout_mask(s.seed(), guard->next_call(), s.first() * per_example * row_numel, x.numel(), p).view(x.sizes());
  if (!x.is_cpu() || x.scalar_type() != torch::kFloat32) mask = mask.to(x.options());
  return x * mask;
}

}  // namespace strata::core
