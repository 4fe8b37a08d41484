// core::batch_dropout: outside a BatchShardGuard it is torch::dropout; inside one the mask is a
// function of the global batch, the step's seed and the call's number, so the shards' outputs put together are the
// one-process output bit for bit, for batch-first and flattened [B·T, D] inputs.
#include "core/batch_dropout.h"
#include "tests/support.h"

#include <cmath>
#include <gtest/gtest.h>

using strata::core::batch_dropout;
using strata::core::BatchShard;
using strata::core::BatchShardGuard;

namespace {

torch::Tensor in_shard(const torch::Tensor& x, int64_t global, int64_t first, uint64_t seed, double p) {
  BatchShardGuard guard(BatchShard().global_rows(global).first(first).rows(x.size(0)).seed(seed));
  return batch_dropout(x, p);
}

}  // namespace

TEST(BatchDropout, OutsideAGuardItIsTorchDropout) {
  const auto x = torch::randn({6, 5});
  torch::manual_seed(11);
  const auto a = batch_dropout(x, 0.3);
  torch::manual_seed(11);
  const auto b = torch::dropout(x, 0.3, /*train=*/true);
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_TRUE(batch_dropout(x, 0.0).is_same(x));
  EXPECT_NE(strata::testing::error_of([&] { batch_dropout(x, 1.0); }).find("p must be in [0, 1), got 1"),
            std::string::npos);
}

// The mask as the header defines it, written out element by element (splitmix64's finaliser).
static float reference_mask(uint64_t seed, uint64_t call, uint64_t g, double p) {
  auto mix = [](uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  const uint64_t gamma = 0x9E3779B97F4A7C15ull;
  const uint64_t h = mix(mix(seed + (call + 1) * gamma) + (g / 2 + 1) * gamma);
  const uint64_t u = g % 2 == 0 ? h >> 32 : h & 0xFFFFFFFFull;
  return u >= static_cast<uint64_t>(std::ceil(p * 4294967296.0)) ? static_cast<float>(1.0 / (1.0 - p)) : 0.0f;
}

TEST(BatchDropout, OneProcessDrawsTheDefinedMaskFromTheStepSeed) {
  const auto x = torch::randn({8, 4, 3});
  const auto y = in_shard(x, 8, 0, 42, 0.25);
  auto mask = torch::empty({96});
  for (int64_t g = 0; g < 96; ++g) mask[g] = reference_mask(42, 0, static_cast<uint64_t>(g), 0.25);
  EXPECT_TRUE(torch::equal(y, x * mask.view({8, 4, 3})));
  EXPECT_TRUE(torch::equal(in_shard(x, 8, 0, 42, 0.25), y));     // a function of the seed
  EXPECT_FALSE(torch::equal(in_shard(x, 8, 0, 43, 0.25), y));    // another step, another mask
  // Two adapters in one step draw two different masks (the call number advances).
  BatchShardGuard guard(BatchShard().global_rows(8).rows(8).seed(42));
  EXPECT_FALSE(torch::equal(batch_dropout(x, 0.25), batch_dropout(x, 0.25)));
}

TEST(BatchDropout, EveryOffsetAndLengthIsTheReferenceMask) {
  // One hash serves a pair of elements: windows starting or ending inside a pair (odd offsets and
  // lengths, the empty and the one-element window) still read the defined sequence.
  for (int64_t offset : {0, 1, 2, 7, 100})
    for (int64_t numel : {0, 1, 2, 3, 64, 65}) {
      const auto m = strata::core::dropout_mask(5, 2, offset, numel, 0.4);
      ASSERT_EQ(m.numel(), numel);
      for (int64_t i = 0; i < numel; ++i)
        ASSERT_EQ(m[i].item<float>(), reference_mask(5, 2, static_cast<uint64_t>(offset + i), 0.4))
            << "offset " << offset << " element " << i;
    }
}

TEST(BatchDropout, AnUntrackedInputIsMaskedInOnePassAsByTheProduct) {
  // An input autograd does not track takes the one-pass path; a tracked one the product x · mask
  // (whose gradient is the mask). Both give x · mask bit for bit, negative zeros included, for a
  // shard whose rows start at an odd element (5 odd columns, second worker).
  const auto x = torch::randn({4, 5});
  const auto tracked = x.clone().requires_grad_(true);
  const auto fused = in_shard(x, 6, 1, 17, 0.3);
  const auto product = in_shard(tracked, 6, 1, 17, 0.3);
  ASSERT_FALSE(fused.requires_grad());
  ASSERT_TRUE(product.requires_grad());
  const auto mask = strata::core::dropout_mask(17, 0, 5, 20, 0.3).view({4, 5});
  EXPECT_TRUE(torch::equal(fused, x * mask));
  EXPECT_TRUE(torch::equal(product.detach(), x * mask));
  EXPECT_TRUE(torch::equal(fused.signbit(), (x * mask).signbit()));
  product.sum().backward();
  EXPECT_TRUE(torch::equal(tracked.grad(), mask));
  // A non-contiguous input takes the product path and gives the same values.
  const auto xt = torch::randn({5, 4}).t();
  EXPECT_TRUE(torch::equal(in_shard(xt, 4, 0, 3, 0.5), xt * strata::core::dropout_mask(3, 0, 0, 20, 0.5).view({4, 5})));
}

TEST(BatchDropout, TheMaskKeepsOneMinusPAndIsUnbiased) {
  // 2·10⁶ elements: the kept fraction's standard error is about 3·10⁻⁴ at p = 0.1 and 0.5.
  for (double p : {0.1, 0.5}) {
    const auto m = strata::core::dropout_mask(7, 3, 12345, 2000000, p);
    const double kept = m.ne(0).to(torch::kFloat64).mean().item<double>();
    EXPECT_NEAR(kept, 1 - p, 2e-3) << "p=" << p;
    EXPECT_NEAR(m.to(torch::kFloat64).mean().item<double>(), 1.0, 5e-3) << "p=" << p;  // E[mask] = 1
    // Neighbouring elements (the two halves of one hash, and consecutive hashes) are uncorrelated.
    const auto k = m.ne(0).to(torch::kFloat64);
    const auto a = k.slice(0, 0, -1) - (1 - p), b = k.slice(0, 1) - (1 - p);
    EXPECT_NEAR((a * b).mean().item<double>() / (p * (1 - p)), 0.0, 1e-2) << "p=" << p;
  }
  // Another call of the same step is another mask, not a shifted copy.
  const auto m0 = strata::core::dropout_mask(7, 0, 0, 100000, 0.5), m1 = strata::core::dropout_mask(7, 1, 0, 100000, 0.5);
  EXPECT_NEAR(m0.eq(m1).to(torch::kFloat64).mean().item<double>(), 0.5, 1e-2);
  // An offset is a window onto the same sequence.
  EXPECT_TRUE(torch::equal(strata::core::dropout_mask(7, 0, 999, 1001, 0.5), m0.slice(0, 999, 2000)));
}

TEST(BatchDropout, ShardsTogetherAreTheOneProcessOutput) {
  // 7 examples over 2 and over 3 workers (shares 3/4 and 2/2/3), batch-first [B, T, D] and
  // flattened [B·T, D] inputs.
  const auto x = torch::randn({7, 5, 6});
  const auto x_flat = x.reshape({35, 6});
  const auto whole = in_shard(x, 7, 0, 9, 0.1);
  const auto whole_flat = in_shard(x_flat, 7 * 5, 0, 9, 0.1);
  EXPECT_TRUE(torch::equal(whole_flat, whole.reshape({35, 6})));
  for (const std::vector<int64_t>& cuts : {std::vector<int64_t>{0, 3, 7}, std::vector<int64_t>{0, 2, 4, 7}}) {
    std::vector<torch::Tensor> parts, flat_parts;
    for (size_t k = 0; k + 1 < cuts.size(); ++k) {
      const int64_t f = cuts[k], l = cuts[k + 1];
      parts.push_back(in_shard(x.slice(0, f, l), 7, f, 9, 0.1));
      BatchShardGuard guard(BatchShard().global_rows(7).first(f).rows(l - f).seed(9));
      flat_parts.push_back(batch_dropout(x_flat.slice(0, f * 5, l * 5), 0.1));
    }
    EXPECT_TRUE(torch::equal(torch::cat(parts), whole)) << cuts.size() - 1 << " workers";
    EXPECT_TRUE(torch::equal(torch::cat(flat_parts), whole.reshape({35, 6}))) << cuts.size() - 1 << " workers";
  }
}

TEST(BatchDropout, GuardsNestAndCheckTheirRows) {
  EXPECT_EQ(BatchShardGuard::current(), nullptr);
  {
    BatchShardGuard outer(BatchShard().global_rows(4).rows(4).seed(1));
    {
      BatchShardGuard inner(BatchShard().global_rows(2).first(1).rows(1).seed(2));
      EXPECT_EQ(BatchShardGuard::current(), &inner);
    }
    EXPECT_EQ(BatchShardGuard::current(), &outer);
    const std::string err = strata::testing::error_of([] { batch_dropout(torch::ones({6, 2}), 0.5); });
    EXPECT_NE(err.find("an input of 6 rows in a step of 4 examples"), std::string::npos) << err;
  }
  EXPECT_EQ(BatchShardGuard::current(), nullptr);
  const std::string err = strata::testing::error_of(
      [] { BatchShardGuard g(BatchShard().global_rows(5).first(3).rows(3)); });
  EXPECT_NE(err.find("rows [3, 6) are not inside a global batch of 5 rows"), std::string::npos) << err;
}
