// Distributed training end to end through the CLI, on 127.0.0.1: `strata train --nproc 2` gives one
// worker's accuracy matrix (global batch split in two) for naive, gpm, coso, osft, lora and olora (with
// adapter dropout) and from a --pretrain start; a killed worker is a clean error naming its rank, and
// resuming after it is bit-identical to an uninterrupted two-worker run (and works with one worker too);
// a hung worker stops the others within --dist-timeout.
#ifdef STRATA_CLI_PATH
#include "checkpoints/version_store.h"
#include "tests/support.h"
#include "tests/tools/cli_support.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace fs = std::filesystem;
using strata::testing::run_strata;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

nlohmann::json report(const std::string& dir) { return nlohmann::json::parse(slurp(dir + "/report.json")); }

// Batch 15: the two workers' shares are 7 and 8 rows, so the loss weighting matters.
std::string args(const std::string& method, const std::string& out, const std::string& name, int tasks = 2) {
  return "train --method " + method + " --stream synthetic --tasks " + std::to_string(tasks) +
         " --train-limit 200 --epochs 2 --batch-size 15 --hidden 32 --lr 0.05 --seed 5 --threads 1 --quiet --out " +
         out + " --name " + name;
}

// Runs the CLI commands at once (most of a tiny run is process start-up) and returns their results.
// A command may start with environment assignments, ending in "; " (e.g. the injected fault, a test
// hook of core/fault.h: "STRATA_FAULT=kill:task=2:rank=1; train ...").
std::vector<strata::testing::CliResult> run_all(const std::vector<std::string>& commands) {
  std::vector<strata::testing::CliResult> results(commands.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < commands.size(); ++i)
    threads.emplace_back([&, i] {
      const auto& c = commands[i];
      const auto semi = c.find("; ");
      results[i] = semi == std::string::npos ? run_strata(c) : run_strata(c.substr(semi + 2), c.substr(0, semi));
    });
  for (auto& t : threads) t.join();
  return results;
}

// The largest entry-wise difference of two equally shaped vectors or matrices.
double max_difference(const nlohmann::json& a, const nlohmann::json& b) {
  if (a.is_number() && b.is_number()) return std::abs(a.get<double>() - b.get<double>());
  double m = 0;
  EXPECT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, max_difference(a[i], b[i]));
  return m;
}

TEST(DistCli, TwoWorkersGiveOneWorkersAccuracyMatrix) {
  strata::testing::TempDir dir;
  // lora and olora with their default adapter dropout (0.1): every worker draws the global batch's
  // masks. "pretrained": --pretrain is sharded like a task, then lora trains on it.
  const std::vector<std::pair<std::string, std::string>> methods{
      {"naive", "naive"}, {"gpm", "gpm"}, {"coso", "coso"}, {"osft", "osft"}, {"lora", "lora"}, {"olora", "olora"},
      {"pretrained", "lora --pretrain task:1 --pretrain-epochs 2"}};
  std::vector<std::string> commands;
  for (const auto& [name, method] : methods) {
    commands.push_back(args(method, dir.path.string(), name + "1"));
    commands.push_back(args(method, dir.path.string(), name + "2") + " --nproc 2");
  }
  const auto results = run_all(commands);
  for (size_t m = 0; m < methods.size(); ++m) {
    const auto& [name, method] = methods[m];
    ASSERT_EQ(results[2 * m].code, 0) << method << ": " << results[2 * m].output;
    ASSERT_EQ(results[2 * m + 1].code, 0) << method << ": " << results[2 * m + 1].output;
    const auto a = report(dir / (name + "1")), b = report(dir / (name + "2"));
    EXPECT_EQ(b["run"]["workers"], 2);
    EXPECT_LE(max_difference(a["accuracy_matrix"], b["accuracy_matrix"]), 0.001)
        << method << ": " << a["accuracy_matrix"] << " vs " << b["accuracy_matrix"];
    // The starting model (pre-trained or not) too.
    EXPECT_LE(max_difference(a["initial_accuracy"], b["initial_accuracy"]), 0.001)
        << method << ": " << a["initial_accuracy"] << " vs " << b["initial_accuracy"];
    // One writer: metrics.csv has each (task, epoch) row once.
    std::istringstream csv(slurp(dir / (name + "2") + "/metrics.csv"));
    int rows = -1;
    for (std::string line; std::getline(csv, line);) ++rows;
    EXPECT_EQ(rows, 2 * 2) << method;
  }
  EXPECT_GT(report(dir / "naive2")["accuracy_matrix"][0][0].get<double>(), 0.4) << "naive should learn task 1";
  // The pre-training took: before any task the model knows task 2 (it was pre-trained on it).
  const auto pre = report(dir / "pretrained2")["initial_accuracy"], plain = report(dir / "lora2")["initial_accuracy"];
  EXPECT_GT(pre[1].get<double>(), plain[1].get<double>() + 0.2) << pre << " vs " << plain;
}

TEST(DistCli, KilledWorkerIsACleanErrorAndResumeIsBitIdentical) {
  strata::testing::TempDir dir;
  const std::string out = dir.path.string();
  {
    // The uninterrupted run, and one whose rank 1 dies as task 2 starts.
    const auto runs = run_all({args("gpm", out, "ref", 3) + " --nproc 2",
                               "STRATA_FAULT=kill:task=2:rank=1; " + args("gpm", out, "killed", 3) + " --nproc 2"});
    const auto& killed = runs[1];
    ASSERT_EQ(runs[0].code, 0) << runs[0].output;
    EXPECT_NE(killed.code, 0);
    EXPECT_NE(killed.output.find("worker rank 1 of 2"), std::string::npos) << killed.output;
    EXPECT_NE(killed.output.find("killed by signal 9"), std::string::npos) << killed.output;
  }
  // Version 0 only, complete; nothing half-written beside it.
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir / "killed/versions")) files.push_back(e.path().filename().string());
  EXPECT_EQ(files, std::vector<std::string>{"v000.h5"});
  fs::copy(dir / "killed", dir / "killed1", fs::copy_options::recursive);

  // Resumed with two workers, and (a copy) with one.
  const auto resumes = run_all({"train --resume " + (dir / "killed") + " --nproc 2 --quiet",
                                "train --resume " + (dir / "killed1") + " --quiet"});
  ASSERT_EQ(resumes[0].code, 0) << resumes[0].output;
  ASSERT_EQ(resumes[1].code, 0) << resumes[1].output;
  const auto a = report(dir / "ref"), b = report(dir / "killed");
  EXPECT_EQ(a["accuracy_matrix"], b["accuracy_matrix"]);
  using strata::checkpoints::read_version;
  const auto va = read_version(dir / "ref/versions/v002.h5"), vb = read_version(dir / "killed/versions/v002.h5");
  ASSERT_EQ(va.parameters.size(), vb.parameters.size());
  for (size_t i = 0; i < va.parameters.size(); ++i)
    EXPECT_TRUE(torch::equal(va.parameters[i].second, vb.parameters[i].second)) << va.parameters[i].first;
  ASSERT_EQ(va.method_tensors.size(), vb.method_tensors.size());
  for (const auto& [k, t] : va.method_tensors) EXPECT_TRUE(torch::equal(t, vb.method_tensors.at(k))) << k;
  EXPECT_TRUE(torch::equal(va.rng_cpu, vb.rng_cpu));

  // Another number of workers resumes too (same result up to float round-off).
  EXPECT_LE(max_difference(a["accuracy_matrix"], report(dir / "killed1")["accuracy_matrix"]), 0.001);
}

TEST(DistCli, HungWorkerStopsTheOthersWithinTheTimeout) {
  strata::testing::TempDir dir;
  // Rank 1 hangs (SIGSTOP) as task 2 starts.
  const auto r = run_strata(args("naive", dir.path.string(), "hung") + " --nproc 2 --dist-timeout 2",
                            "STRATA_FAULT=stop:task=2:rank=1");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("rank 0 of 2: gradient all-reduce failed"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("at most 2 s, --dist-timeout"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("rank(s) 1 had been stopped"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(dir / "hung/versions/v000.h5"));
  EXPECT_FALSE(fs::exists(dir / "hung/versions/v001.h5"));
}

TEST(DistCli, BadDistributedOptionsAreOneLine) {
  strata::testing::TempDir dir;
  const auto r = run_all({args("naive", dir.path.string(), "x") + " --nproc two",
                          args("naive", dir.path.string(), "x") + " --nproc 2 --dist-backend mpi",
                          args("naive", dir.path.string(), "x") + " --nproc 2 --momentum 2"});
  for (const auto& x : r) EXPECT_EQ(x.code, 1) << x.output;
  EXPECT_NE(r[0].output.find("option --nproc: 'two' is not a number"), std::string::npos) << r[0].output;
  EXPECT_NE(r[1].output.find("--dist-backend: 'mpi' (valid: gloo, nccl)"), std::string::npos) << r[1].output;
  // A run option every worker would reject is reported once, by the launcher, before any starts.
  EXPECT_NE(r[2].output.find("momentum must be in [0,1)"), std::string::npos) << r[2].output;
  EXPECT_EQ(r[2].output.find("rank"), std::string::npos) << r[2].output;
  EXPECT_FALSE(fs::exists(dir / "x"));
}

}  // namespace
#endif  // STRATA_CLI_PATH
