// STRATA_FAULT: inert unless set; "enospc:PATTERN:N" fails the N-th matching atomic write as a full disk
// does, leaving the previous file and no temporary; "kill:task=T[:rank=R]" kills the process (of that
// rank) as task T starts; a malformed spec is an error naming it.
#include "core/fault.h"
#include "core/h5.h"
#include "tests/support.h"

#include <gtest/gtest.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace {

std::string slurp(const std::string& p) {
  std::ifstream f(p);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

TEST(Fault, InjectedDiskFullKeepsThePreviousFile) {
  strata::testing::TempDir dir;
  const std::string path = dir / "target.txt", other = dir / "other.txt";
  ::setenv("STRATA_FAULT", "enospc:target.txt:2", 1);
  strata::core::atomic_write_text(path, "first");
  strata::core::atomic_write_text(other, "unaffected");  // another path: not counted
  const std::string err = strata::testing::error_of([&] { strata::core::atomic_write_text(path, "second"); });
  const std::string after_failure = slurp(path);
  strata::core::atomic_write_text(path, "third");  // only the 2nd commit fails
  ::unsetenv("STRATA_FAULT");
  EXPECT_NE(err.find("writing '" + path + "' failed: No space left on device"), std::string::npos) << err;
  EXPECT_EQ(after_failure, "first");
  EXPECT_EQ(slurp(path), "third");
  EXPECT_EQ(slurp(other), "unaffected");
  for (const auto& e : std::filesystem::directory_iterator(dir.path))
    EXPECT_EQ(e.path().string().find(".tmp-"), std::string::npos) << e.path();
  strata::core::atomic_write_text(path, "unset");  // inert without the variable
  EXPECT_EQ(slurp(path), "unset");
}

TEST(Fault, TaskFaultKillsOnlyTheNamedRankAtTheNamedTask) {
  ::testing::GTEST_FLAG(death_test_style) = "threadsafe";  // LibTorch has threads: re-run, not fork
  ::setenv("STRATA_FAULT", "kill:task=2:rank=1;enospc:elsewhere:1", 1);
  strata::core::fault_at_task_start(1, 0);  // task 2, rank 0: not named
  strata::core::fault_at_task_start(0, 1);  // task 1, rank 1
  strata::core::fault_at_task_start(2, 1);  // task 3
  EXPECT_EQ(strata::core::injected_fault("some/file"), "");  // task faults never fire on a write
  EXPECT_EXIT(strata::core::fault_at_task_start(1, 1), ::testing::KilledBySignal(SIGKILL), "");
  ::setenv("STRATA_FAULT", "kill:task=3", 1);  // no rank: every process
  strata::core::fault_at_task_start(1, 4);
  EXPECT_EXIT(strata::core::fault_at_task_start(2, 4), ::testing::KilledBySignal(SIGKILL), "");
  ::unsetenv("STRATA_FAULT");
  strata::core::fault_at_task_start(2, 4);  // inert without the variable
}

TEST(Fault, MalformedSpecsAreAnErrorNamingThem) {
  for (const char* spec : {"kill:task=two", "enospc:task=2", "stop:report.json:1", "kill:task=2:rank=x",
                           "kill:task=2:1", "kill:report.json", "kill:report.json:0", "kill::3", "1:2:kill"}) {
    ::setenv("STRATA_FAULT", (std::string("enospc:x:1;") + spec).c_str(), 1);
    const std::string err = strata::testing::error_of([] { strata::core::fault_at_task_start(0, 0); });
    const std::string err_write = strata::testing::error_of([] { strata::core::injected_fault("a/b"); });
    EXPECT_NE(err.find(std::string("STRATA_FAULT: '") + spec + "' is not ACTION:PATTERN:N"), std::string::npos)
        << spec << ": " << err;
    EXPECT_EQ(err_write, err) << spec;
  }
  ::unsetenv("STRATA_FAULT");
}

}  // namespace
