// Faults through the CLI, injected with STRATA_FAULT (core/fault.h): a full disk while a version,
// predictions.h5 or subspaces.h5 is written is one clear error with every earlier version intact, and
// --resume then finishes the run; SIGKILLs at seeded random points across a whole run (including the
// subspace-store append and the report write) each resume to the uninterrupted run's accuracy matrix,
// bit for bit, in a folder `strata verify` finds sound; so does a kill as a task starts ("kill:task=T").
#ifdef STRATA_CLI_PATH
#include "checkpoints/version_store.h"
#include "tests/tools/cli_support.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>

namespace fs = std::filesystem;
using strata::testing::run_strata;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

struct Faults : ::testing::Test {
  fs::path root;
  void SetUp() override {
    root = fs::temp_directory_path() / ("strata-faults-" + std::to_string(::getpid()));
    fs::remove_all(root);
    fs::create_directories(root);
  }
  void TearDown() override {
    ::unsetenv("STRATA_FAULT");
    fs::remove_all(root);
  }
  // 3 tiny synthetic tasks with GPM (it records a subspace per task), 2 epochs each.
  std::string train(const std::string& name) const {
    return "train --method gpm --gpm.samples 32 --stream synthetic --tasks 3 --epochs 2 --batch-size 16 "
           "--train-limit 64 --test-limit 40 --hidden 16 --lr 0.05 --seed 7 --threads 1 --quiet --out " +
           root.string() + " --name " + name;
  }
  std::string dir(const std::string& name) const { return (root / name).string(); }
  nlohmann::json matrix(const std::string& name) const {
    return nlohmann::json::parse(slurp(root / name / "report.json")).at("accuracy_matrix");
  }
  // Runs with STRATA_FAULT set (only for that process).
  strata::testing::CliResult with_fault(const std::string& fault, const std::string& args) const {
    ::setenv("STRATA_FAULT", fault.c_str(), 1);
    auto r = run_strata(args);
    ::unsetenv("STRATA_FAULT");
    return r;
  }
};

TEST_F(Faults, DiskFullIsOneErrorEarlierVersionsStayAndResumeFinishes) {
  ASSERT_EQ(run_strata(train("ref")).code, 0);
  const auto ref = matrix("ref");
  const std::pair<const char*, const char*> faults[] = {
      {"enospc:versions/v001:1", "versions/v001.h5"},
      {"enospc:predictions.h5:2", "predictions.h5"},
      {"enospc:subspaces.h5:3", "subspaces.h5"}};
  int k = 0;
  for (const auto& [fault, file] : faults) {
    const std::string name = "full" + std::to_string(k++);
    const auto r = with_fault(fault, train(name));
    EXPECT_EQ(r.code, 1) << fault << "\n" << r.output;
    EXPECT_NE(r.output.find("strata train: "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("No space left on device"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(file), std::string::npos) << r.output;
    // v000 is intact; no temporary is left behind; nothing past the failure exists.
    EXPECT_NO_THROW(strata::checkpoints::read_version(strata::checkpoints::version_path(dir(name), 0))) << fault;
    EXPECT_FALSE(fs::exists(strata::checkpoints::version_path(dir(name), 2))) << fault;
    for (const auto& e : fs::recursive_directory_iterator(dir(name)))
      EXPECT_EQ(e.path().string().find(".tmp-"), std::string::npos) << e.path();
    // Space is back: resume completes to the uninterrupted matrix.
    const auto resumed = run_strata("train --resume " + dir(name));
    ASSERT_EQ(resumed.code, 0) << fault << "\n" << resumed.output;
    EXPECT_EQ(matrix(name), ref) << fault;
    const auto v = run_strata("verify " + dir(name));
    EXPECT_EQ(v.code, 0) << fault << "\n" << v.output;
  }
}

TEST_F(Faults, KilledAtSeededRandomPointsResumesBitIdentical) {
  ASSERT_EQ(run_strata(train("ref")).code, 0);
  const auto ref = matrix("ref");
  // Commits in this run: metrics.csv 1 + 3 x 2 epochs, subspaces.h5 1 (created) + 3, one per task of the rest.
  const std::vector<std::pair<std::string, int>> files = {
      {"versions/v", 3}, {"subspaces.h5", 4}, {"predictions.h5", 3}, {"report.json", 3}, {"metrics.csv", 7}};
  // Every atomic write of the run is a kill point; a seeded shuffle picks six, always including a
  // subspace-store append, a report write and the last report (after the last version).
  std::vector<std::string> events;
  for (const auto& [pattern, count] : files)
    for (int n = 1; n <= count; ++n) events.push_back("kill:" + pattern + ":" + std::to_string(n));
  std::mt19937 rng(15);
  std::shuffle(events.begin(), events.end(), rng);
  std::vector<std::string> points = {"kill:report.json:3"};
  auto take = [&](const std::string& want) {
    for (const auto& e : events)
      if (e.find(want) != std::string::npos && std::find(points.begin(), points.end(), e) == points.end()) {
        points.push_back(e);
        return;
      }
  };
  take("subspaces.h5");
  take("report.json");
  for (int i = 0; i < 3; ++i) take("");
  int k = 0;
  for (const auto& point : points) {
    const std::string name = "kill" + std::to_string(k++);
    std::cout << "kill point " << point << "\n";
    const auto r = with_fault(point, train(name));
    ASSERT_EQ(r.code, 128 + 9) << point << " was not reached\n" << r.output;
    const auto resumed = run_strata("train --resume " + dir(name));
    ASSERT_EQ(resumed.code, 0) << point << "\n" << resumed.output;
    EXPECT_EQ(matrix(name), ref) << point;
    if (point == points.front()) {  // the tail case: predictions.h5 and report.json rewritten
      const auto v = run_strata("verify " + dir(name));
      EXPECT_EQ(v.code, 0) << point << "\n" << v.output;
    }
  }
}

TEST_F(Faults, KilledAsATaskStartsResumesBitIdenticalAndABadSpecIsOneError) {
  ASSERT_EQ(run_strata(train("ref")).code, 0);
  const auto r = with_fault("kill:task=2", train("task"));
  ASSERT_EQ(r.code, 128 + 9) << r.output;
  EXPECT_TRUE(fs::exists(strata::checkpoints::version_path(dir("task"), 0)));
  EXPECT_FALSE(fs::exists(strata::checkpoints::version_path(dir("task"), 1)));
  const auto resumed = run_strata("train --resume " + dir("task"));
  ASSERT_EQ(resumed.code, 0) << resumed.output;
  EXPECT_EQ(matrix("task"), matrix("ref"));
  // The retired STRATA_DIST_FAULT form is not a spec.
  const auto bad = with_fault("1:2:kill", train("bad"));
  EXPECT_EQ(bad.code, 1) << bad.output;
  EXPECT_NE(bad.output.find("STRATA_FAULT: '1:2:kill' is not ACTION:PATTERN:N"), std::string::npos) << bad.output;
}

TEST_F(Faults, VerifyExitCodes) {
  ASSERT_EQ(run_strata(train("ref")).code, 0);
  auto ok = run_strata("verify " + dir("ref"));
  EXPECT_EQ(ok.code, 0) << ok.output;
  EXPECT_NE(ok.output.find("versions/v002.h5: ok"), std::string::npos) << ok.output;
  EXPECT_NE(ok.output.find("report.json: ok"), std::string::npos) << ok.output;
  const auto missing = run_strata("verify " + dir("nope"));
  EXPECT_EQ(missing.code, 2) << missing.output;
  EXPECT_NE(missing.output.find("strata verify: no run folder"), std::string::npos) << missing.output;
  EXPECT_EQ(run_strata("verify").code, 2);
  fs::resize_file(root / "ref" / "versions" / "v001.h5", 100);
  const auto bad = run_strata("verify " + dir("ref"));
  EXPECT_EQ(bad.code, 1) << bad.output;
  EXPECT_NE(bad.output.find("versions/v001.h5: "), std::string::npos) << bad.output;
  EXPECT_EQ(bad.output.find("versions/v001.h5: ok"), std::string::npos) << bad.output;
  EXPECT_NE(bad.output.find("versions/v000.h5: ok"), std::string::npos) << bad.output;
}

TEST_F(Faults, OptionsOfAnotherMethodAreRefusedByTheCli) {
  const auto r = run_strata("train --coso.r1 -3 --method gpm --out " + root.string());
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.output, "strata train: option --coso.r1 belongs to method coso, but --method is gpm\n");
  const auto t = run_strata("train --gpm.thresold 0.9 --out " + root.string());
  EXPECT_EQ(t.output, "strata train: unrecognised option --gpm.thresold (did you mean --gpm.thresholds?)\n");
  std::ofstream(root / "c.ini") << "tasks = 99999999999\n";
  const auto c = run_strata("train --config " + (root / "c.ini").string() + " --out " + root.string());
  EXPECT_EQ(c.code, 1);
  EXPECT_EQ(c.output, "strata train: option --tasks: 99999999999 is out of range 1..10000\n");
  const auto many = run_strata("train --tasks 1000 --out " + root.string());
  EXPECT_EQ(many.code, 1);
  EXPECT_EQ(many.output, "strata train: option --tasks: a run holds at most 100 tasks (predictions.h5 names them "
                         "task00..task99), got 1000\n");
  const auto big = run_strata("train --model vit --patch 1 --dim 8192 --depth 64 --heads 8 --out " + root.string());
  EXPECT_EQ(big.code, 1);
  EXPECT_EQ(big.output.find("strata train: this run needs an estimated "), 0u) << big.output;
  EXPECT_NE(big.output.find(" GiB"), std::string::npos) << big.output;
  EXPECT_FALSE(fs::exists(root / "gpm-permuted-fmnist")) << "nothing is written for a refused run";
}

}  // namespace
#endif  // STRATA_CLI_PATH
