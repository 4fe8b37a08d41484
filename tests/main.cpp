// Shared GoogleTest entry point: the CLI's BLAS kernels (core/threads.h), a fixed thread count, and
// *_CUDA tests skipped without a GPU.
#include "core/threads.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

int main(int argc, char** argv) {
  strata::core::select_blas_kernels();
  ::testing::InitGoogleTest(&argc, argv);
  torch::set_num_threads(1);
  if (!torch::cuda::is_available()) {
    std::string filter = ::testing::GTEST_FLAG(filter);
    if (filter.find('-') == std::string::npos)
      filter += "-*_CUDA";
    else
      filter += ":*_CUDA";
    ::testing::GTEST_FLAG(filter) = filter;
  }
  return RUN_ALL_TESTS();
}
