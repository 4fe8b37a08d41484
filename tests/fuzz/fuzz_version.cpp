// libFuzzer target: strata::checkpoints::read_version (vNNN.h5 version files: HDF5, schema, checksum).
#include "checkpoints/version_store.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = strata::fuzz::write_scratch(data, size, ".h5");
  strata::fuzz::expect_clean([&] { (void)strata::checkpoints::read_version(path); });
  return 0;
}
