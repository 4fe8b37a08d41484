#include "core/threads.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>

using namespace strata;

TEST(Threads, BlasKernelChoiceSwitchesOnlyUnchosenAvx2SetsOnAvx512Cpus) {
  EXPECT_EQ(core::blas_kernels_to_select("Haswell", nullptr, true), "SkylakeX");
  EXPECT_EQ(core::blas_kernels_to_select("Zen", nullptr, true), "SkylakeX");
  EXPECT_EQ(core::blas_kernels_to_select("Haswell", nullptr, false), "");     // no AVX-512
  EXPECT_EQ(core::blas_kernels_to_select("Haswell", "Haswell", true), "");    // the user's choice
  EXPECT_EQ(core::blas_kernels_to_select("Haswell", "", true), "");           // even an empty one
  EXPECT_EQ(core::blas_kernels_to_select("SkylakeX", nullptr, true), "");     // already AVX-512
  EXPECT_EQ(core::blas_kernels_to_select("Cooperlake", nullptr, true), "");
  EXPECT_EQ(core::blas_kernels_to_select("Sandybridge", nullptr, true), "");  // not an AVX2 set
  EXPECT_EQ(core::blas_kernels_to_select("", nullptr, true), "");             // not OpenBLAS
}

TEST(Threads, SelectedBlasKernelsAreInUseAndExported) {
  // tests/main.cpp ran select_blas_kernels() first, as the CLI does.
  const std::string kernels = core::blas_kernels();
  if (kernels.empty()) GTEST_SKIP() << "the BLAS is not a dynamic-architecture OpenBLAS";
  EXPECT_EQ(core::select_blas_kernels(), kernels);  // a second call changes nothing
  const char* env = std::getenv("OPENBLAS_CORETYPE");
  if (core::cpu_has_avx512() && (kernels == "SkylakeX" || (env && std::string(env) == "SkylakeX"))) {
    // Switched here or chosen by the user: either way the variable and the kernels agree.
    ASSERT_NE(env, nullptr);
    EXPECT_EQ(kernels, "SkylakeX");
  }
}

TEST(Threads, ProductsOnTheSelectedKernelsMatchDoublePrecision) {
  // The shapes of a batch-10 MLP step (forward, input and weight gradients, the in-place update)
  // and a larger one, against float64 products.
  torch::manual_seed(3);
  struct Case { int64_t m, k, n; };
  for (const Case c : {Case{10, 784, 100}, Case{10, 100, 100}, Case{100, 10, 784}, Case{10, 100, 10},
                       Case{256, 784, 100}, Case{37, 129, 65}}) {
    auto a = torch::randn({c.m, c.k}), b = torch::randn({c.n, c.k}), w = torch::randn({c.m, c.n});
    auto ref = a.to(torch::kFloat64).mm(b.to(torch::kFloat64).t());
    const double tol = 1e-5 * std::sqrt(static_cast<double>(c.k)) * 4;
    EXPECT_LT((a.mm(b.t()).to(torch::kFloat64) - ref).abs().max().item<double>(), tol) << c.m << "x" << c.k << "x" << c.n;
    // Transposed operand in memory, and addmm's beta/alpha as the fused SGD update uses them.
    auto at = a.t().contiguous();
    EXPECT_LT((at.t().mm(b.t()).to(torch::kFloat64) - ref).abs().max().item<double>(), tol);
    auto upd = w.clone().addmm_(a, b.t(), 1.0, -0.01);
    auto upd_ref = w.to(torch::kFloat64) - 0.01 * ref;
    EXPECT_LT((upd.to(torch::kFloat64) - upd_ref).abs().max().item<double>(), 1e-5);
  }
}
