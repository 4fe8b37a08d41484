// The CLI end to end: bad input gives one clear line and a non-zero exit, never a crash.
#include "tests/tools/cli_support.h"
#include <gtest/gtest.h>

#include "tests/support.h"

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

namespace fs = std::filesystem;

namespace {

using Result = strata::testing::CliResult;
Result run(const std::string& args) { return strata::testing::run_strata(args); }

using strata::testing::fresh_dir;
fs::path temp_dir(const std::string& name) { return fresh_dir("cli_" + name); }

}  // namespace

TEST(Cli, HelpListsOptionsWithDefaults) {
  auto r = run("train --help");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.output.find("--lr"), std::string::npos);
  EXPECT_NE(r.output.find("(=0.01)"), std::string::npos) << r.output;
  auto m = run("methods");
  EXPECT_EQ(m.code, 0);
  EXPECT_NE(m.output.find("naive"), std::string::npos);
}

TEST(Cli, BadValuesGiveOneLineAndNonZeroExit) {
  auto out = temp_dir("bad");
  const std::string base = "train --quiet --out " + out.string() + " ";
  struct Case {
    std::string args, expect;
  } cases[] = {
      {"--stream synthetic --method nope", "unknown method 'nope'"},
      {"--stream nope", "nope"},
      {"--stream synthetic --lr -1", "lr"},
      {"--stream synthetic --tasks 0", "tasks"},
      {"--stream synthetic --epochs abc", "epochs"},
      {"--stream synthetic --model resnet", "resnet"},
      {"--data-dir /nonexistent --stream permuted-fmnist", "/nonexistent"},
      {"--stream synthetic --no-such-option 1", "no-such-option"},
      {"--stream synthetic --pretrain split:9", "--pretrain"},
      {"--stream synthetic --init /nonexistent/v000.h5", "/nonexistent/v000.h5"},
  };
  for (const auto& c : cases) {
    auto r = run(base + c.args);
    EXPECT_NE(r.code, 0) << c.args;
    EXPECT_NE(r.output.find(c.expect), std::string::npos) << c.args << " -> " << r.output;
    EXPECT_EQ(r.output.find("Exception raised from"), std::string::npos) << "stack trace leaked: " << r.output;
    EXPECT_LE(std::count(r.output.begin(), r.output.end(), '\n'), 2) << c.args << " -> " << r.output;
  }
  // Nothing half-written: no run folder was created for the failed runs.
  EXPECT_TRUE(fs::is_empty(out));
  fs::remove_all(out);
}

TEST(Cli, UnwritableOutputFolderIsAClearError) {
  auto r = run("train --quiet --stream synthetic --tasks 1 --out /proc/strata-cannot-write");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("/proc/strata-cannot-write"), std::string::npos) << r.output;
}

TEST(Cli, ConfigFileRoundTrip) {
  auto out = temp_dir("cfg");
  auto r = run("train --quiet --out " + out.string() + " --name a --stream synthetic --tasks 2 --epochs 1");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("ACC"), std::string::npos);
  // Re-running from the written config.ini under a new name gives the same accuracy matrix.
  auto r2 = run("train --quiet --config " + (out / "a" / "config.ini").string() + " --name b");
  ASSERT_EQ(r2.code, 0) << r2.output;
  auto strip = [](std::string s) { return s.substr(0, s.find("run folder:")); };
  EXPECT_EQ(strip(r.output), strip(r2.output));
  fs::remove_all(out);
}

TEST(Cli, FocalOnDisjointClassesRefusesBeforeTraining) {
  if (!fs::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")) GTEST_SKIP() << "no Fashion-MNIST";
  auto out = temp_dir("focal");
  // split-fmnist: every label of task 1 is a class version 0 never saw, so the default
  // --compat-drop-new-classes would drop every sample (a focal term of exactly 0).
  auto r = run("train --quiet --stream split-fmnist --tasks 2 --compat focal --train-limit 50 --test-limit 50 --out " +
               out.string() + " --name f");
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("--compat-drop-new-classes false"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("Exception raised from"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out / "f" / "versions" / "v000.h5")) << "refused only after training task 0";
  // With the samples kept, the run trains.
  r = run("train --quiet --stream split-fmnist --tasks 2 --compat focal --compat-drop-new-classes false "
          "--train-limit 50 --test-limit 50 --out " + out.string() + " --name k");
  EXPECT_EQ(r.code, 0) << r.output;
  // MUSCLE on a class-incremental stream distils over the old version's classes only and trains.
  r = run("train --quiet --stream split-fmnist --scenario class --tasks 2 --compat muscle --train-limit 50 "
          "--test-limit 50 --out " + out.string() + " --name m");
  EXPECT_EQ(r.code, 0) << r.output;
  fs::remove_all(out);
}
