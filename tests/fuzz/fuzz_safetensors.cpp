// libFuzzer target: strata::core::read_safetensors (header parse, validation and the data read).
#include "core/safetensors.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = strata::fuzz::write_scratch(data, size, ".safetensors");
  (void)strata::core::looks_like_safetensors(path);  // documented never to throw
  strata::fuzz::expect_clean([&] {
    std::map<std::string, std::string> meta;
    (void)strata::core::read_safetensors_header(path, &meta);
  });
  strata::fuzz::expect_clean([&] { (void)strata::core::read_safetensors(path); });
  return 0;
}
