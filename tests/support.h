#pragma once
// Helpers every test program shares: scratch folders and the message of an expected error.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>

namespace strata::testing {

/// A fresh, empty scratch folder /tmp/strata_<name>_<pid> (any earlier one is removed first).
inline std::filesystem::path fresh_dir(const std::string& name) {
  namespace fs = std::filesystem;
  const fs::path d = fs::temp_directory_path() / ("strata_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

/// A scratch folder named after the running test, removed when the object goes away.
struct TempDir {
  std::filesystem::path path;
  TempDir() : path(fresh_dir(::testing::UnitTest::GetInstance()->current_test_info()->name())) {}
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

/// The message (without backtrace) of the c10::Error `f` throws; "" when it throws none.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

}  // namespace strata::testing
