// STRATA_FAULT: inert unless set; "enospc:PATTERN:N" fails the N-th matching atomic write as a full disk
// does, leaving the previous file and no temporary.
#include "core/h5.h"
#include "tests/support.h"

#include <gtest/gtest.h>

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

}  // namespace
