#include "core/threads.h"

#include <gtest/gtest.h>

#include <strings.h>

#include <cstdlib>

using namespace strata;

TEST(Threads, BlasKernelsNameWhatOpenBlasRuns) {
  const std::string kernels = core::blas_kernels();
  if (kernels.empty()) GTEST_SKIP() << "the BLAS is not a dynamic-architecture OpenBLAS";
  // A kernel set named in the environment is the one OpenBLAS loaded (case-insensitively). Only
  // for names every x86-64 dynamic build knows: an unknown name makes OpenBLAS fall back silently.
  const char* forced = std::getenv("OPENBLAS_CORETYPE");
  if (forced && (strcasecmp(forced, "Haswell") == 0 || strcasecmp(forced, "SkylakeX") == 0)) {
    EXPECT_EQ(strcasecmp(forced, kernels.c_str()), 0) << "OPENBLAS_CORETYPE=" << forced << ", running " << kernels;
  }
  EXPECT_NE(kernels, "unknown");
}
