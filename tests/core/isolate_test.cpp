#include <gtest/gtest.h>
#include <torch/torch.h>

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "core/h5.h"
#include "core/isolate.h"
#include "tests/support.h"

namespace sc = strata::core;
using Outcome = sc::IsolatedResult::Outcome;
using strata::testing::error_of;

namespace {
std::string tmp_file(const std::string& name) {
  return ::testing::TempDir() + "strata_isolate_" + std::to_string(::getpid()) + "_" + name;
}
}  // namespace

TEST(Isolated, FinishedCrashedAndTimedOutAreTold) {
  EXPECT_EQ(sc::run_isolated([] {}, 10).outcome, Outcome::kFinished);
  // An exception is a clean answer, not a crash.
  EXPECT_EQ(sc::run_isolated([] { throw std::runtime_error("bad bytes"); }, 10).outcome, Outcome::kFinished);

  const auto segv = sc::run_isolated([] { ::raise(SIGSEGV); }, 10);
  EXPECT_EQ(segv.outcome, Outcome::kCrashed);
  EXPECT_EQ(segv.signal, SIGSEGV);
  EXPECT_NE(segv.describe().find("signal 11"), std::string::npos) << segv.describe();

  const auto exit3 = sc::run_isolated([] { ::_exit(3); }, 10);  // what a sanitizer's report ends with
  EXPECT_EQ(exit3.outcome, Outcome::kCrashed);
  EXPECT_EQ(exit3.exit_code, 3);

  const auto t0 = std::chrono::steady_clock::now();
  const auto hang = sc::run_isolated([] { std::this_thread::sleep_for(std::chrono::seconds(60)); }, 0.3);
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(hang.outcome, Outcome::kTimedOut);
  EXPECT_LT(waited, 10.0);  // killed at the deadline, not waited for
}

TEST(Isolated, TheChildCannotChangeTheParent) {
  int value = 1;
  EXPECT_EQ(sc::run_isolated([&] { value = 2; }, 10).outcome, Outcome::kFinished);
  EXPECT_EQ(value, 1);
}

// A file without a Strata checksum (as h5py writes one) is probed and then read as before; the
// probe walks groups, attributes of every kind and string datasets without a false alarm.
TEST(H5Probe, AnUncheckedSoundFileReadsAsBefore) {
  const std::string path = tmp_file("plain.h5");
  {
    auto f = sc::open_file(path, sc::FileMode::kTruncate);
    sc::write_tensor(f, "a/b/x", torch::arange(12, torch::kFloat32).view({3, 4}));
    auto g = sc::open_group(f, "a");
    sc::set_attr(g, "name", std::string("a variable-length string"));
    sc::set_attr(g, "n", int64_t(7));
    sc::set_attr(f, "format", std::string("not strata"));
  }
  EXPECT_NO_THROW(sc::probe_h5_file(path, "test"));
  auto f = sc::open_file(path, sc::FileMode::kRead);
  EXPECT_EQ(sc::get_attr_string(sc::open_group(f, "a"), "name"), "a variable-length string");
  EXPECT_TRUE(torch::equal(sc::read_tensor(f, "a/b/x"), torch::arange(12, torch::kFloat32).view({3, 4})));
  std::filesystem::remove(path);
}

// A file that hangs HDF5 (the probe's deadline) is refused with one line naming it; HDF5 1.10.8 can
// spend minutes on a damaged global heap. The reproducer from the fuzzer does that or crashes, by
// build; whichever it does, the answer is a clean error, never a crash of this process.
TEST(H5Probe, AKnownHdf5CrasherIsAnErrorNamingTheFile) {
  const std::string path = std::string(STRATA_SOURCE_DIR) + "/tests/fuzz/known/version-hdf5-H5HG_read-overflow.h5";
  ASSERT_TRUE(std::filesystem::exists(path));
  const std::string err = error_of([&] {
    auto f = sc::open_file(path, sc::FileMode::kRead);
    for (const auto& a : sc::list_attrs(f)) (void)a;
  });
  EXPECT_NE(err.find("'" + path + "': HDF5 crashed ("), std::string::npos) << err;
}

TEST(H5Probe, AFileThatHangsHdf5IsRefusedAtTheDeadline) {
  const std::string path = std::string(STRATA_SOURCE_DIR) + "/tests/fuzz/known/version-hdf5-H5HG-timeout.h5";
  ASSERT_TRUE(std::filesystem::exists(path));
  sc::set_h5_probe_timeout(1.0);
  const auto t0 = std::chrono::steady_clock::now();
  const std::string err = error_of([&] { (void)sc::open_file(path, sc::FileMode::kRead); });
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  sc::set_h5_probe_timeout(30.0);
  EXPECT_NE(err.find("'" + path + "': HDF5 did not finish reading its metadata within 1 s"), std::string::npos)
      << err;
  EXPECT_LT(waited, 20.0);
}
