// libFuzzer target: strata::checkpoints::read_version (vNNN.h5 version files: the user block checked
// before HDF5 opens the file, then HDF5, schema, checksum).
//
// Beyond "no crash": a file that starts with a version user block which core::check_user_block finds
// damaged must be refused with exactly that problem — the proof that the refusal came from the
// check before HDF5 parsed anything (an HDF5 error would read differently). A mismatch aborts (a
// finding). Files without a user block (older versions, and every input that loses its first bytes)
// go to HDF5 after its probe in a child process (core::probe_h5_file): an input that crashes or hangs
// HDF5 there is a clean error, here with a 3 s deadline (libFuzzer's -timeout is 10 s).
#include "checkpoints/version_store.h"
#include "core/h5.h"
#include "tests/fuzz/fuzz_support.h"

#include <cstdio>

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  strata::core::set_h5_probe_timeout(3.0);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = strata::fuzz::write_scratch(data, size, ".h5");
  const auto block = strata::core::check_user_block(path, strata::checkpoints::kUserBlockMagic);
  if (!block.problem.empty()) {
    std::string msg;
    try {
      (void)strata::checkpoints::read_version(path);
    } catch (const c10::Error& e) {
      msg = e.msg();
    }
    if (msg != "strata::checkpoints::read_version(): '" + path + "': " + block.problem) {
      std::fprintf(stderr, "fuzz_version: damaged user block (%s) not refused first: '%s'\n", block.problem.c_str(),
                   msg.c_str());
      std::abort();
    }
    return 0;
  }
  strata::fuzz::expect_clean([&] { (void)strata::checkpoints::read_version(path); });
  return 0;
}
