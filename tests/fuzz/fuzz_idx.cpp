// libFuzzer target: strata::tasks::read_idx (the Fashion-MNIST IDX reader, plain or gzip'd).
#include "tasks/idx.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = strata::fuzz::write_scratch(data, size, ".idx");
  strata::fuzz::expect_clean([&] {
    const torch::Tensor t = strata::tasks::read_idx(path);
    // A tensor that came back must be fully readable.
    if (t.numel() > 0) (void)t.sum().item<int64_t>();
  });
  return 0;
}
