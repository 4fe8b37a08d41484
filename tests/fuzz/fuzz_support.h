#pragma once
// Shared by the libFuzzer targets: the product readers take a path, so each input is written to a
// scratch file first. A clean error (c10::Error or another std::exception) is the expected answer to
// bad input; anything else — a crash, a sanitizer report, a hang, an exception of another type —
// escapes and is a finding.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>

namespace strata::fuzz {

/// One scratch file per process (libFuzzer's -jobs/-workers run several processes), removed at exit.
inline const std::string& scratch_path(const char* suffix) {
  static const std::string path = [suffix] {
    std::string p =
        (std::filesystem::temp_directory_path() / ("strata_fuzz_" + std::to_string(::getpid()) + suffix)).string();
    static std::string keep = p;
    std::atexit([] { std::remove(keep.c_str()); });
    return p;
  }();
  return path;
}

inline const std::string& write_scratch(const uint8_t* data, size_t size, const char* suffix) {
  const std::string& p = scratch_path(suffix);
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  out.close();
  if (!out) std::abort();  // the harness itself failed, not the product
  return p;
}

/// Runs `f`, swallowing the clean errors a reader may answer bad input with.
template <class F>
void expect_clean(F&& f) {
  try {
    f();
  } catch (const std::exception&) {
    // c10::Error derives from std::exception: a one-line error is the right answer to bad bytes.
  }
}

}  // namespace strata::fuzz
