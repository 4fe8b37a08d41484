#include <gtest/gtest.h>

#include "compat/predictions.h"
#include "compat/report.h"
#include "compat/stats.h"
#include "core/h5.h"
#include "tests/support.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

using namespace strata::compat;
namespace fs = std::filesystem;

namespace {

torch::Tensor L(std::vector<int64_t> v) { return torch::tensor(v, torch::kLong); }

fs::path temp_dir() { return strata::testing::fresh_dir("compat_test"); }

std::vector<std::string> read_lines(const fs::path& p) {
  std::ifstream f(p);
  std::vector<std::string> out;
  for (std::string line; std::getline(f, line);) out.push_back(line);
  return out;
}

}  // namespace

TEST(CompatReport, FlipsCsvRowsOrderAndColumns) {
  FlipInputs in;
  in.ids = L({100, 101, 102, 103, 104, 105, 106, 107});
  in.labels = L({0, 0, 1, 1, 2, 2, 0, 1});
  in.old_pred = L({0, 0, 1, 0, 1, 2, 1, 1});
  in.new_pred = L({0, 1, 2, 1, 0, 0, 1, 1});
  // types:        CC NF NF PF WWc NF WWs CC
  in.old_conf = torch::tensor({0.9, 0.5, 0.8, 0.4, 0.6, 0.7, 0.3, 0.2});
  in.new_conf = torch::tensor({0.9f, 0.6f, 0.55f, 0.7f, 0.5f, 0.4f, 0.8f, 0.9f});
  in.groups = L({0, 0, 0, 1, 1, 1, 1, 1});
  const fs::path p = temp_dir() / "flips.csv";
  const int64_t rows = write_flips_csv(p.string(), in);
  const FlipCounts c = count_flips(in.labels, in.old_pred, in.new_pred);
  EXPECT_EQ(rows, c.n10 + c.n01 + c.n00d);  // + CC_changed, which cannot occur for classification
  const auto lines = read_lines(p);
  ASSERT_EQ(lines.size(), 1u + rows);
  EXPECT_EQ(lines[0], "item_id,task_id,label,old_pred,new_pred,old_correct,new_correct,flip_type,old_conf,new_conf");
  // NF by old confidence descending (102: 0.8, 105: 0.7, 101: 0.5), then PF, then WW_changed.
  EXPECT_EQ(lines[1], "102,0,1,1,2,1,0,NF,0.8,0.55");
  EXPECT_EQ(lines[2].substr(0, 4), "105,");
  EXPECT_EQ(lines[3].substr(0, 4), "101,");
  EXPECT_EQ(lines[4], "103,1,1,0,1,0,1,PF,0.4,0.7");
  EXPECT_EQ(lines[5].substr(0, 4), "104,");
  EXPECT_NE(lines[5].find("WW_changed"), std::string::npos);

  // Without ids, groups and confidences: row index as id, empty fields.
  const fs::path q = temp_dir() / "flips_min.csv";
  EXPECT_EQ(write_flips_csv(q.string(), {in.labels, in.old_pred, in.new_pred}), rows);
  EXPECT_EQ(read_lines(q)[1], "1,,0,0,1,1,0,NF,,");
  EXPECT_THROW(write_flips_csv("/nonexistent_dir/x.csv", in), c10::Error);
}

TEST(CompatReport, JsonReportRoundTrip) {
  FlipInputs in;
  in.labels = L({0, 1, 2, 0, 1, 2, 0, 1, 2, 0});
  in.old_pred = L({0, 1, 2, 0, 1, 0, 1, 2, 0, 0});
  in.new_pred = L({0, 1, 2, 1, 0, 2, 2, 1, 0, 0});
  in.groups = L({0, 0, 0, 0, 0, 1, 1, 1, 1, 1});
  const FlipReport r = compare_predictions(in);
  const GateResult g = evaluate_gate(r, GateOptions().max_nfr(0.5));
  ReportHeader h{"a.h5:v000", "a.h5:v001", "unit", {{"flips_csv", "flips.csv"}}, {{"tasks", {0, 1}}, {"items", 10}}};
  const fs::path p = temp_dir() / "compat_report.json";
  write_json(p.string(), make_report_json(r, h, 0.05, &g));
  std::ifstream f(p);
  const nlohmann::json j = nlohmann::json::parse(f);
  EXPECT_EQ(j["schema_version"], kReportSchema);
  for (const char* key : {"created_at", "old", "new", "eval_set", "counts", "metrics", "tests", "per_task", "per_class",
                          "multiplicity", "warnings", "scored", "gate", "artifacts"})
    EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_EQ(j["old"], "a.h5:v000");
  EXPECT_EQ(j["counts"]["n10"].get<int64_t>(), r.overall.n10);
  EXPECT_EQ(j["n"].get<int64_t>(), 10);
  for (const char* m : {"acc_old", "acc_new", "delta_acc", "nfr", "pfr", "nfi", "pfi", "btc", "conditional_nfr",
                        "bec_new", "bec_old", "relative_nfr", "nfr_mc", "churn", "pf_nf_ratio"}) {
    ASSERT_TRUE(j["metrics"].contains(m)) << m;
    for (const char* field : {"value", "ci_low", "ci_high", "n", "method"})
      EXPECT_TRUE(j["metrics"][m].contains(field)) << m << "." << field;
  }
  EXPECT_NEAR(j["metrics"]["bec_new"]["value"].get<double>(), r.overall.bec_new(), 1e-15);
  EXPECT_EQ(j["tests"]["mcnemar"]["method"], "exact");
  EXPECT_EQ(j["per_task"].size(), 2u);
  EXPECT_EQ(j["gate"]["passed"].get<bool>(), g.passed);
  EXPECT_EQ(j["gate"]["rules"][0]["name"], "nfr");
  EXPECT_EQ(j["scored"]["tasks"], nlohmann::json({0, 1}));
  EXPECT_EQ(j["artifacts"]["flips_csv"], "flips.csv");
}

TEST(CompatReport, SvgPlots) {
  const torch::Tensor y = L({0, 1, 2, 3});
  const torch::Tensor m = nfr_matrix({L({0, 1, 2, 0}), L({0, 0, 2, 3}), L({1, 1, 2, 3})}, y);
  const fs::path p = temp_dir() / "nfr.svg";
  write_nfr_heatmap_svg(p.string(), m, {"v000", "v001", "v<2>"});
  std::stringstream s;
  s << std::ifstream(p).rdbuf();
  const std::string svg = s.str();
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_NE(svg.find("v&lt;2&gt;"), std::string::npos);  // escaped
  EXPECT_NE(svg.find(">25.0<"), std::string::npos);      // NFR(v0 -> v1) = 1/4
  EXPECT_THROW(write_nfr_heatmap_svg(p.string(), m, {"only one"}), c10::Error);

  FlipInputs in{L({0, 1, 2, 0}), L({0, 1, 0, 0}), L({1, 1, 2, 0})};
  in.groups = L({4, 4, 5, 5});
  const fs::path q = temp_dir() / "tasks.svg";
  write_task_flips_svg(q.string(), compare_predictions(in));
  std::stringstream t;
  t << std::ifstream(q).rdbuf();
  EXPECT_NE(t.str().find(">t4<"), std::string::npos);
  EXPECT_NE(t.str().find("<title>NF 1</title>"), std::string::npos);
  EXPECT_NE(t.str().find("<title>PF 1</title>"), std::string::npos);

  // A new task's 1000 PF next to an old task's 10 NF: separate scales, so the NF bar spans its whole
  // half (150 px) instead of 1.5 px, and the lower axis label is negative.
  FlipReport big;
  FlipCounts old_task, new_task;
  old_task.n11 = 90;
  old_task.n10 = 10;
  new_task.n01 = 1000;
  big.per_group = {{0, old_task}, {1, new_task}};
  const fs::path b = temp_dir() / "big.svg";
  write_task_flips_svg(b.string(), big);
  std::stringstream u;
  u << std::ifstream(b).rdbuf();
  EXPECT_NE(u.str().find("height=\"150\" fill=\"#c62828\"><title>NF 10</title>"), std::string::npos) << u.str();
  EXPECT_NE(u.str().find(">&#8722;10</text>"), std::string::npos);
  EXPECT_NE(u.str().find(">1000</text>"), std::string::npos);
}

