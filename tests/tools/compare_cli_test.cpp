// `strata compare` end to end: which items are scored in every input mode, every gate rule's exit code,
// CSV / JSONL ledgers, and bad input (exit 2, one clear line).
#include "tests/tools/cli_support.h"
#include <gtest/gtest.h>

#include "compat/predictions.h"

#include <nlohmann/json.hpp>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

namespace fs = std::filesystem;
using namespace strata::compat;

namespace {

using Result = strata::testing::CliResult;
Result run(const std::string& args) { return strata::testing::run_strata(args); }

Result compare(const std::string& args) { return run("compare " + args); }

bool has(const Result& r, const std::string& s) { return r.output.find(s) != std::string::npos; }

struct CompareCli : ::testing::Test {
  fs::path dir;
  void SetUp() override {
    dir = fs::temp_directory_path() / ("strata_compare_cli_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  void TearDown() override { fs::remove_all(dir); }
  std::string path(const std::string& name) const { return (dir / name).string(); }
  std::string write(const std::string& name, const std::string& text) const {
    std::ofstream(dir / name) << text;
    return path(name);
  }
};


// 1000 items, label = id % 5. OLD is right except on ids 900..999; NEW gets ids 0..29 wrong (NF 30,
// 6 per class), ids 900..949 right (PF 50) and repeats OLD's wrong answer on 950..999 (n00s 50).
// NFR 3 % (Wilson upper 4.02 %), NFI 30/80, acc_old − acc_new = −2 %.
void ledger_pair(std::vector<int64_t>& y, std::vector<int64_t>& a, std::vector<int64_t>& b) {
  for (int64_t id = 0; id < 1000; ++id) {
    y.push_back(id % 5);
    a.push_back(id < 900 ? id % 5 : (id + 1) % 5);
    b.push_back(id < 30 ? (id + 1) % 5 : (id < 950 ? id % 5 : (id + 1) % 5));
  }
}

std::string csv_of(const std::vector<int64_t>& y, const std::vector<int64_t>& p) {
  std::string s = "id,label,pred,prob\n";
  for (size_t i = 0; i < y.size(); ++i)
    s += std::to_string(i) + "," + std::to_string(y[i]) + "," + std::to_string(p[i]) + ",0.75\n";
  return s;
}

// A 3-task run's predictions.h5 as the bug report describes it: v1 was trained on tasks 0 and 1 and
// guesses on task 2; v2 learns task 2 (900 PF) and regresses 60 items of each of tasks 0 and 1.
// All items: NF 120 / 3000 = 4 % (Wilson upper 4.65 %); tasks 0..1: 120 / 2000 = 6 %.
void write_stream_predictions(const std::string& file) {
  PredictionVersions versions;
  const int64_t n = 1000;
  for (int64_t v = 0; v < 3; ++v) {
    std::vector<PredictionTable> parts;
    for (int64_t t = 0; t < 3; ++t) {
      const torch::Tensor ids = torch::arange(n, torch::kLong);  // the same examples in every task
      const torch::Tensor y = ids.remainder(10);
      torch::Tensor pred = y.clone();
      if (t > v) pred = torch::where(ids.remainder(10).lt(1), y, (y + 1).remainder(10));  // 10 % right
      if (v == 2 && t < 2) pred.slice(0, 0, 60) = (y.slice(0, 0, 60) + 1).remainder(10);
      parts.push_back({ids, y, pred, torch::full({n}, 0.5f), torch::full({n}, t, torch::kLong)});
    }
    versions[v] = concat_tables(parts);
  }
  write_predictions(file, versions);
}

}  // namespace

TEST_F(CompareCli, DefaultScoresTheTasksTheOlderVersionWasTrainedOn) {
  const std::string h5 = path("predictions.h5");
  write_stream_predictions(h5);
  // The bug: over every task of the stream the gate passed (4 %, upper 4.65 % <= 5 %).
  Result r = compare(h5 + ":v1 " + h5 + ":v2 --max-nfr 0.05 --allow-regressions");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(has(r, "scored: 2000 items, tasks 0,1 (the tasks the older version (v001) was trained on); "
                     "not scored: tasks 2 (1000 items)"))
      << r.output;
  EXPECT_TRUE(has(r, "gate nfr: FAIL: NFR upper bound")) << r.output;
  EXPECT_TRUE(has(r, "NF 120 of 2000 items")) << r.output;
  // The same with --old-version/--new-version, and in reverse order (older = min).
  Result same = compare(h5 + " --old-version 1 --new-version 2 --max-nfr 0.05 --allow-regressions");
  EXPECT_EQ(same.code, 1);
  EXPECT_TRUE(has(same, "scored: 2000 items, tasks 0,1")) << same.output;
  // Regression alarms on tasks 0 and 1 fail the gate on their own.
  r = compare(h5 + ":v1 " + h5 + ":v2");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(has(r, "significant regressions: task 0 (NF 60, PF 0")) << r.output;
  EXPECT_TRUE(has(r, "gate regressions: FAIL")) << r.output;
  // --tasks all reproduces the old answer, and says what it scored.
  r = compare(h5 + ":v1 " + h5 + ":v2 --tasks all --max-nfr 0.05 --allow-regressions");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(has(r, "scored: 3000 items, tasks 0,1,2 (every task in both files (--tasks all))")) << r.output;
  r = compare(h5 + ":v1 " + h5 + ":v2 --tasks 0-2 --allow-regressions");
  EXPECT_TRUE(has(r, "note: task 2 is beyond what v001 was trained on")) << r.output;
  // --tasks chooses; the JSON report records the scope and every rule.
  r = compare(h5 + ":v1 " + h5 + ":v2 --tasks 1 --max-nfr 0.1 --json " + path("r.json"));
  EXPECT_EQ(r.code, 1) << r.output;  // task 1 regresses (alarm); NFR 6 %, upper 7.4 % is within 10 %
  std::ifstream jf(path("r.json"));
  const nlohmann::json j = nlohmann::json::parse(jf);
  EXPECT_EQ(j["scored"]["tasks"], nlohmann::json({1}));
  EXPECT_EQ(j["scored"]["items"], 1000);
  EXPECT_EQ(j["n"], 1000);
  EXPECT_EQ(j["gate"]["passed"], false);
  EXPECT_EQ(j["gate"]["failed"], nlohmann::json({"regressions"}));
  // Protected tasks: task 1 NFR 6 % of 1000 is over a 5 % budget; a task that was not scored is bad input.
  r = compare(h5 + ":v1 " + h5 + ":v2 --allow-regressions --protect-tasks 1 --protected-max-nfr 0.05");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(has(r, "gate protected_task_1: FAIL")) << r.output;
  r = compare(h5 + ":v1 " + h5 + ":v2 --allow-regressions --protect-tasks 1 --protected-max-nfr 0.08");
  EXPECT_EQ(r.code, 0) << r.output;
  r = compare(h5 + ":v1 " + h5 + ":v2 --protect-tasks 2 --protected-max-nfr 0.05");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_TRUE(has(r, "protected task 2 has no scored items (scored tasks: 0,1)")) << r.output;
  // The heatmap and the chart come out.
  r = compare(h5 + ":v1 " + h5 + ":v2 --allow-regressions --heatmap " + path("h.svg") + " --task-svg " + path("t.svg") +
          " --csv " + path("f.csv"));
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(fs::exists(path("h.svg")) && fs::exists(path("t.svg")) && fs::exists(path("f.csv")));
}

TEST_F(CompareCli, EveryGateRuleOnCsvAndJsonlLedgers) {
  std::vector<int64_t> y, a, b;
  ledger_pair(y, a, b);
  const std::string old_csv = write("old.csv", csv_of(y, a)), new_csv = write("new.csv", csv_of(y, b));
  const std::string pair = old_csv + " " + new_csv;
  Result r = compare(pair);
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(has(r, "scored: 1000 items (every item in both files)")) << r.output;
  EXPECT_TRUE(has(r, "gate regressions: PASS")) << r.output;
  EXPECT_TRUE(has(r, "gate: PASS")) << r.output;
  struct Case {
    std::string args;
    int code;
    std::string expect;
  } cases[] = {
      {"--max-nfr 0.05", 0, "gate nfr: PASS: NFR upper bound 4.02% <= 5.00%"},
      {"--max-nfr 0.035", 1, "gate nfr: FAIL: NFR upper bound 4.02% > 3.50%"},
      {"--max-nfi 0.6", 0, "gate nfi: PASS"},
      {"--max-nfi 0.3", 1, "gate nfi: FAIL"},
      {"--max-acc-drop 0", 0, "gate acc_drop: PASS"},
      {"--protect-classes 0 --protected-max-nfr 0.1", 0, "gate protected_class_0: PASS"},
      {"--protect-classes 0,1 --protected-max-nfr 0.04", 1, "gate protected_class_0: FAIL"},
      {"--max-nfr 0.05 --max-nfi 0.3", 1, "gate: FAIL (failed: nfi)"},
  };
  for (const auto& c : cases) {
    r = compare(pair + " " + c.args);
    EXPECT_EQ(r.code, c.code) << c.args << "\n" << r.output;
    EXPECT_TRUE(has(r, c.expect)) << c.args << "\n" << r.output;
  }
  // Reversed, the update loses 2 points: the accuracy margin decides, with the paired upper bound.
  r = compare(new_csv + " " + old_csv + " --allow-regressions --max-acc-drop 0.01");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(has(r, "gate acc_drop: FAIL: accuracy drop upper bound")) << r.output;
  EXPECT_EQ(compare(new_csv + " " + old_csv + " --allow-regressions --max-acc-drop 0.05").code, 0);

  // JSON lines give the same comparison.
  std::string jl;
  for (size_t i = 0; i < y.size(); ++i)
    jl += "{\"id\": " + std::to_string(i) + ", \"label\": " + std::to_string(y[i]) + ", \"pred\": " +
          std::to_string(b[i]) + "}\n";
  const Result j = compare(old_csv + " " + write("new.jsonl", jl) + " --max-nfr 0.05");
  EXPECT_EQ(j.code, 0) << j.output;
  EXPECT_TRUE(has(j, "NF 30 of 1000 items")) << j.output;
}

TEST_F(CompareCli, BadInputIsExitTwoWithOneClearLine) {
  std::vector<int64_t> y, a, b;
  ledger_pair(y, a, b);
  const std::string old_csv = write("old.csv", csv_of(y, a));
  std::string text = csv_of(y, b);
  const std::string missing = write("missing.csv", text.substr(0, text.rfind("999,")));
  const std::string dup = write("dup.csv", text + "5,0,0,0.5\n");
  std::string relabelled = text;
  relabelled.replace(relabelled.find("\n7,2,"), 5, "\n7,4,");
  const std::string relabel = write("relabel.csv", relabelled);
  const std::string broken = write("broken.csv", "id,label,pred\n1,0,0\n2,zero,0\n");
  write_stream_predictions(path("p.h5"));
  struct Case {
    std::string args, expect;
  } cases[] = {
      {old_csv + " " + missing, "1 only in OLD '" + old_csv + "' (first id 999)"},
      {old_csv + " " + dup, "dup.csv:1002: duplicate item id 5 (first at line 7)"},
      {old_csv + " " + relabel, "id 7 has label 2 in OLD '" + old_csv + "' and 4 in NEW"},
      {old_csv + " " + broken, "broken.csv:3: column 'label' must be an integer, got 'zero'"},
      {old_csv + " " + old_csv + " --tasks 0", "has no task column, so tasks 0 cannot be selected"},
      {old_csv + " " + old_csv + " --protect-classes 1", "--protect-tasks/--protect-classes need --protected-max-nfr"},
      {old_csv + " " + old_csv + " --protected-max-nfr 0.1", "--protected-max-nfr needs --protect-tasks"},
      {old_csv + " " + old_csv + " --max-nfr 2", "--max-nfr must be a fraction in [0, 1]"},
      {old_csv + " " + old_csv + " --max-nfr abc", "max-nfr"},
      {old_csv + " " + old_csv + " --no-such-option", "no-such-option"},
      {old_csv + " " + old_csv + " --tasks 1-x", "--tasks expects a list"},
      {old_csv + " " + path("p.h5") + ":v1", "has no task column, so tasks 0,1 cannot be selected"},
      {old_csv + ":v1 " + old_csv, "takes no version"},
      {path("p.h5") + ":v1 " + path("p.h5") + ":v7", "no group /v007 (versions present: v000 v001 v002)"},
      {path("p.h5") + ":v1 " + path("p.h5") + ":v2 --tasks 5", "has no predictions for task 5 (tasks present: 0,1,2)"},
      {path("p.h5"), "no version for OLD"},
      {"", "expected OLD and NEW"},
  };
  for (const auto& c : cases) {
    const Result r = run("compare " + c.args);
    EXPECT_EQ(r.code, 2) << c.args << "\n" << r.output;
    EXPECT_TRUE(has(r, c.expect)) << c.args << " -> " << r.output;
    EXPECT_FALSE(has(r, "Exception raised from")) << r.output;
    EXPECT_LE(std::count(r.output.begin(), r.output.end(), '\n'), 1) << c.args << " -> " << r.output;
  }
}

TEST_F(CompareCli, HelpPrintsDefaultsAsTyped) {
  const Result r = run("compare --help");
  EXPECT_EQ(r.code, 0);
  EXPECT_TRUE(has(r, "(=0.05)")) << r.output;
  EXPECT_FALSE(has(r, "0.050000")) << r.output;
  for (const char* flag : {"--max-nfr", "--allow-regressions", "--max-acc-drop", "--max-nfi", "--protect-tasks",
                           "--protect-classes", "--protected-max-nfr", "--tasks", "--json", "--csv", "--task-svg",
                           "--heatmap", "--old-version", "--new-version"})
    EXPECT_TRUE(has(r, flag)) << flag;
}

// All three input modes and report.json score the same items of a real (synthetic) run.
TEST_F(CompareCli, PredictionsVersionFilesAndReportAgree) {
  const Result t = run("train --method naive --stream synthetic --tasks 3 --epochs 2 --threads 1 --seed 3 --quiet --out " +
                       dir.string() + " --name run");
  ASSERT_EQ(t.code, 0) << t.output;
  const std::string run_dir = path("run");
  std::ifstream rf(run_dir + "/report.json");
  const nlohmann::json rep = nlohmann::json::parse(rf);
  const auto& seen = rep["compat"]["pairs"][1]["seen_tasks"]["overall"];
  const int64_t nf = seen["counts"]["n10"].get<int64_t>(), n = seen["n"].get<int64_t>();
  auto json_of = [&](const std::string& args, const std::string& name) {
    const Result r = run("compare " + args + " --allow-regressions --json " + path(name));
    EXPECT_EQ(r.code, 0) << args << "\n" << r.output;
    std::ifstream f(path(name));
    return nlohmann::json::parse(f);
  };
  const nlohmann::json a = json_of(run_dir + "/predictions.h5:v1 " + run_dir + "/predictions.h5:v2", "a.json");
  const nlohmann::json b = json_of(run_dir + "/versions/v001.h5 " + run_dir + "/versions/v002.h5", "b.json");
  for (const auto* j : {&a, &b}) {
    EXPECT_EQ((*j)["n"].get<int64_t>(), n);
    EXPECT_EQ((*j)["counts"]["n10"].get<int64_t>(), nf);
    EXPECT_EQ((*j)["counts"], seen["counts"]);
    EXPECT_EQ((*j)["scored"]["tasks"], nlohmann::json({0, 1}));
  }
}
