// End to end through the CLI: a training process killed with SIGKILL during task 2 and resumed
// gives the same accuracy matrix (and the same final weights) as an uninterrupted run; a complete
// run is refused; `strata eval` reproduces a version's stored accuracies.
#ifdef STRATA_CLI_PATH
#include "compat/predictions.h"
#include "checkpoints/version_store.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <iomanip>
#include <thread>

namespace fs = std::filesystem;
using namespace strata::checkpoints;

namespace {

// Starts the CLI with `args`, stdout+stderr to `log`. Returns the pid.
pid_t spawn(const std::vector<std::string>& args, const std::string& log) {
  pid_t pid = ::fork();
  if (pid == 0) {
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    std::vector<char*> argv;
    std::string exe = STRATA_CLI_PATH;
    argv.push_back(exe.data());
    std::vector<std::string> copy = args;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(exe.c_str(), argv.data());
    ::_exit(127);
  }
  return pid;
}

int wait_rc(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

int run_cli(const std::vector<std::string>& args, const std::string& log) { return wait_rc(spawn(args, log)); }

struct CliRuns : ::testing::Test {
  fs::path root;
  void SetUp() override {
    root = fs::temp_directory_path() / ("strata-resume-" + std::to_string(::getpid()));
    fs::remove_all(root);
    fs::create_directories(root);
  }
  void TearDown() override { fs::remove_all(root); }
  std::vector<std::string> train_args(const std::string& name) const {
    // 3 synthetic tasks; 15 epochs x 90 steps per task makes task 2 last long enough to be killed in.
    return {"train",        "--method", "naive",     "--stream", "synthetic", "--tasks", "3", "--epochs", "15",
            "--batch-size", "4",        "--hidden",  "32,32",        "--lr", "0.05",    "--seed",
            "7",            "--threads", "1",        "--quiet",      "--out", root.string(), "--name", name};
  }
};

TEST_F(CliRuns, KilledDuringTask2ThenResumedMatchesUninterrupted) {
  const std::string ref_dir = (root / "ref").string(), run_dir = (root / "killed").string();
  ASSERT_EQ(run_cli(train_args("ref"), (root / "ref.log").string()), 0) << slurp((root / "ref.log").string());

  // Start, wait until version 0 exists (task 2 is running), SIGKILL.
  const pid_t pid = spawn(train_args("killed"), (root / "killed.log").string());
  const auto v0 = fs::path(version_path(run_dir, 0)), v1 = fs::path(version_path(run_dir, 1));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!fs::exists(v0) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_TRUE(fs::exists(v0)) << slurp((root / "killed.log").string());
  std::this_thread::sleep_for(std::chrono::milliseconds(30));  // well inside task 2
  ::kill(pid, SIGKILL);
  EXPECT_EQ(wait_rc(pid), 128 + SIGKILL);
  ASSERT_FALSE(fs::exists(v1)) << "task 2 finished before the kill; make it longer";
  // A stray partial file, as a crash during a write leaves it.
  std::ofstream(version_path(run_dir, 1) + ".tmp-99999") << "half a file";

  const std::string log = (root / "resume.log").string();
  ASSERT_EQ(run_cli({"train", "--resume", run_dir}, log), 0) << slurp(log);
  const std::string out = slurp(log);
  EXPECT_NE(out.find("ignoring partial file"), std::string::npos) << out;

  auto report = [](const std::string& dir) {
    return nlohmann::json::parse(slurp(dir + "/report.json"));
  };
  const auto a = report(ref_dir), b = report(run_dir);
  EXPECT_EQ(b["stages_done"], 3);
  EXPECT_EQ(a["accuracy_matrix"], b["accuracy_matrix"]) << a["accuracy_matrix"] << "\nvs\n" << b["accuracy_matrix"];
  EXPECT_EQ(a["initial_accuracy"], b["initial_accuracy"]);
  EXPECT_GT(a["accuracy_matrix"][2][2].get<double>(), 0.5) << "the model should learn the synthetic tasks";

  // Same final weights, bit for bit, and the same predictions for every version.
  const auto va = read_version(version_path(ref_dir, 2)), vb = read_version(version_path(run_dir, 2));
  ASSERT_EQ(va.parameters.size(), vb.parameters.size());
  for (size_t i = 0; i < va.parameters.size(); ++i) {
    EXPECT_EQ(va.parameters[i].first, vb.parameters[i].first);
    EXPECT_TRUE(torch::equal(va.parameters[i].second, vb.parameters[i].second)) << va.parameters[i].first;
  }
  const auto pa = strata::compat::read_predictions(ref_dir + "/predictions.h5"),
             pb = strata::compat::read_predictions(run_dir + "/predictions.h5");
  ASSERT_EQ(pa.size(), 3u);
  ASSERT_EQ(pb.size(), 3u);
  for (const auto& [v, table] : pa) {
    EXPECT_TRUE(torch::equal(table.preds, pb.at(v).preds)) << "v" << v;
    EXPECT_TRUE(torch::equal(table.ids, pb.at(v).ids)) << "v" << v;
    EXPECT_TRUE(torch::equal(table.tasks, pb.at(v).tasks)) << "v" << v;
  }
  // metrics.csv holds each (task, epoch) once.
  std::istringstream csv(slurp(run_dir + "/metrics.csv"));
  std::string line;
  int rows = 0;
  std::getline(csv, line);
  while (std::getline(csv, line)) ++rows;
  EXPECT_EQ(rows, 3 * 15);

  // A complete run is refused, clearly, and left as it was.
  const std::string before = slurp(run_dir + "/report.json");
  const std::string log2 = (root / "again.log").string();
  EXPECT_EQ(run_cli({"train", "--resume", run_dir}, log2), 1);
  EXPECT_NE(slurp(log2).find("already complete"), std::string::npos) << slurp(log2);
  EXPECT_EQ(slurp(run_dir + "/report.json"), before);
  // --resume takes the config from the folder.
  EXPECT_EQ(run_cli({"train", "--resume", run_dir, "--lr", "0.1"}, log2), 1);
  EXPECT_NE(slurp(log2).find("--lr cannot be combined"), std::string::npos) << slurp(log2);

  // strata eval on version 1 reproduces its stored row.
  const std::string elog = (root / "eval.log").string();
  ASSERT_EQ(run_cli({"eval", version_path(ref_dir, 1)}, elog), 0) << slurp(elog);
  const std::string eout = slurp(elog);
  for (int j = 0; j < 3; ++j) {
    std::ostringstream acc;
    acc << std::fixed << std::setprecision(2) << 100 * a["accuracy_matrix"][1][j].get<double>() << "%";
    EXPECT_NE(eout.find(acc.str()), std::string::npos) << acc.str() << " not in:\n" << eout;
  }
  // Stream options can be overridden; model options cannot; a corrupt file is refused.
  EXPECT_EQ(run_cli({"eval", version_path(ref_dir, 1), "--test-limit", "50"}, elog), 0) << slurp(elog);
  EXPECT_NE(slurp(elog).find("    50"), std::string::npos) << slurp(elog);
  EXPECT_EQ(run_cli({"eval", version_path(ref_dir, 1), "--hidden", "8"}, elog), 1);
  EXPECT_NE(slurp(elog).find("--hidden cannot be overridden"), std::string::npos) << slurp(elog);
  const std::string bad = (root / "bad.h5").string();
  std::ofstream(bad) << "garbage";
  EXPECT_EQ(run_cli({"eval", bad}, elog), 1);
  EXPECT_NE(slurp(elog).find(bad), std::string::npos) << slurp(elog);
}

}  // namespace
#endif  // STRATA_CLI_PATH
