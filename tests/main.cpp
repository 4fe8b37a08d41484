// Shared GoogleTest entry point: sets a fixed thread count and skips *_CUDA tests without a GPU.
#include <gtest/gtest.h>
#include <torch/torch.h>

int main(int argc, char** argv) {
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
