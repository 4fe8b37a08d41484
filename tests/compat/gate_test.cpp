// Release-gate rules on hand-built flip counts; expected bounds from python3 decimal (50 digits).
#include <gtest/gtest.h>

#include "compat/gate.h"
#include "compat/stats.h"

#include <cmath>

using namespace strata::compat;

namespace {

FlipCounts counts(int64_t n11, int64_t n10, int64_t n01, int64_t n00s, int64_t n00d) {
  FlipCounts c;
  c.n11 = n11;
  c.n10 = n10;
  c.n01 = n01;
  c.n00s = n00s;
  c.n00d = n00d;
  return c;
}

// N = 1000: NF 30, PF 50, new errors 30 + 20. Task 0 regresses (NF 25, PF 0: one-sided McNemar
// p = 2^-25); task 1 gains. Class 7 has NF 2 of 40.
FlipReport hand_report() {
  FlipReport r;
  r.per_group = {{0, counts(400, 25, 0, 0, 0)}, {1, counts(500, 5, 50, 15, 5)}};
  r.per_class = {{3, counts(860, 28, 50, 15, 7)}, {7, counts(38, 2, 0, 0, 0)}};
  r.overall = counts(900, 30, 50, 15, 5);
  return r;
}

const GateRule& rule(const GateResult& g, const std::string& name) {
  for (const auto& r : g.rules)
    if (r.name == name) return r;
  throw std::runtime_error("no rule " + name);
}

}  // namespace

TEST(CompatGate, NfrBudgetUsesTheWilsonUpperBound) {
  const FlipReport r = hand_report();
  // NFR = 3.0 %, one-sided 95 % Wilson upper bound 4.02195509983589 %.
  GateResult g = evaluate_gate(r, GateOptions().max_nfr(0.0403).allow_regressions(true));
  EXPECT_TRUE(g.passed);
  EXPECT_NEAR(rule(g, "nfr").observed, 0.040219550998358899, 1e-12);
  EXPECT_NEAR(rule(g, "nfr").point, 0.03, 1e-15);
  g = evaluate_gate(r, GateOptions().max_nfr(0.035).allow_regressions(true));  // point 3 % is under, the bound not
  EXPECT_FALSE(g.passed);
  EXPECT_FALSE(rule(g, "nfr").passed);
  EXPECT_NE(rule(g, "nfr").reason.find("4.02% > 3.50%"), std::string::npos) << rule(g, "nfr").reason;
  EXPECT_EQ(g.failed(), std::vector<std::string>{"nfr"});
}

TEST(CompatGate, RegressionAlarmsFailUnlessAllowed) {
  const FlipReport r = hand_report();
  GateResult g = evaluate_gate(r, GateOptions());
  EXPECT_FALSE(g.passed);  // task 0: Holm p = 2·2^-25; class 3: NF 28 < PF 50, class 7: p = 1/4
  const GateRule& reg = rule(g, "regressions");
  EXPECT_EQ(reg.observed, 1.0);
  EXPECT_NE(reg.reason.find("task 0 (NF 25, PF 0"), std::string::npos) << reg.reason;
  EXPECT_EQ(reg.reason.find("class"), std::string::npos) << reg.reason;
  g = evaluate_gate(r, GateOptions().allow_regressions(true));
  EXPECT_TRUE(g.passed);
  EXPECT_NE(rule(g, "regressions").reason.find("allowed"), std::string::npos);
  // Without any alarm the rule passes and says so.
  FlipReport clean = r;
  clean.per_group[0].counts = counts(400, 2, 3, 0, 0);
  EXPECT_TRUE(evaluate_gate(clean, GateOptions()).passed);
  // A per-class alarm alone also fails: NF 20, PF 0 in class 7.
  FlipReport cls = clean;
  cls.per_class[1].counts = counts(20, 20, 0, 0, 0);
  g = evaluate_gate(cls, GateOptions());
  EXPECT_FALSE(g.passed);
  EXPECT_NE(rule(g, "regressions").reason.find("class 7"), std::string::npos);
}

TEST(CompatGate, AccuracyDropIsAPairedUpperBound) {
  FlipReport r;
  r.overall = counts(900, 58, 12, 20, 10);  // acc_old 95.8 %, acc_new 91.2 %: drop 4.6 %
  // One-sided 95 % Tango bound of (NF − PF)/N = 0.06041278294417935 (python reference, stats_test).
  GateResult g = evaluate_gate(r, GateOptions().max_acc_drop(0.061));
  EXPECT_TRUE(g.passed);
  EXPECT_NEAR(rule(g, "acc_drop").observed, 0.06041278294417935, 1e-9);
  EXPECT_NEAR(rule(g, "acc_drop").point, 0.046, 1e-12);
  EXPECT_FALSE(evaluate_gate(r, GateOptions().max_acc_drop(0.06)).passed);
  // An improvement is judged by its bound too: N = 200 cannot rule out a drop of 0.6 %.
  FlipReport better;
  better.overall = counts(180, 3, 7, 5, 5);  // N 200: bound 0.68302 %
  EXPECT_TRUE(evaluate_gate(better, GateOptions().max_acc_drop(0.007)).passed);
  EXPECT_FALSE(evaluate_gate(better, GateOptions().max_acc_drop(0.006)).passed);
}

TEST(CompatGate, NfiBudget) {
  const FlipReport r = hand_report();
  // NFI = 30/50 = 60 %, Wilson upper 70.598 %.
  GateResult g = evaluate_gate(r, GateOptions().max_nfi(0.71).allow_regressions(true));
  EXPECT_TRUE(g.passed);
  EXPECT_NEAR(rule(g, "nfi").observed, 0.70598065690751292, 1e-12);
  EXPECT_FALSE(evaluate_gate(r, GateOptions().max_nfi(0.70).allow_regressions(true)).passed);
  // A new model without errors has no regressions among them.
  FlipReport perfect;
  perfect.overall = counts(90, 0, 10, 0, 0);
  g = evaluate_gate(perfect, GateOptions().max_nfi(0.0));
  EXPECT_TRUE(g.passed);
  EXPECT_NE(rule(g, "nfi").reason.find("no errors"), std::string::npos);
}

TEST(CompatGate, ProtectedSlicesHaveTheirOwnBudget) {
  const FlipReport r = hand_report();
  // Task 0: NF 25 of 425, upper 8.0535 %; task 1: 5 of 575, upper 1.7754 %; class 7: 2 of 40, 14.033 %.
  GateResult g = evaluate_gate(r, GateOptions().allow_regressions(true).protect_tasks({1}).protected_max_nfr(0.02));
  EXPECT_TRUE(g.passed);
  EXPECT_NEAR(rule(g, "protected_task_1").observed, 0.017754071903619097, 1e-12);
  g = evaluate_gate(r, GateOptions().allow_regressions(true).protect_tasks({0, 1}).protected_max_nfr(0.02));
  EXPECT_EQ(g.failed(), std::vector<std::string>{"protected_task_0"});
  EXPECT_NEAR(rule(g, "protected_task_0").observed, 0.080535198586458478, 1e-12);
  g = evaluate_gate(r, GateOptions().allow_regressions(true).protect_classes({7}).protected_max_nfr(0.14));
  EXPECT_FALSE(g.passed);
  EXPECT_NEAR(rule(g, "protected_class_7").observed, 0.14033182156597279, 1e-12);
  // Bad input, not a failed gate: a slice that was not scored, a budget without slices and the reverse.
  EXPECT_THROW(evaluate_gate(r, GateOptions().protect_tasks({5}).protected_max_nfr(0.1)), c10::Error);
  EXPECT_THROW(evaluate_gate(r, GateOptions().protect_tasks({0})), c10::Error);
  EXPECT_THROW(evaluate_gate(r, GateOptions().protected_max_nfr(0.1)), c10::Error);
  EXPECT_THROW(evaluate_gate(FlipReport{}, GateOptions()), c10::Error);
  EXPECT_THROW(evaluate_gate(r, GateOptions().max_nfr(-0.1)), c10::Error);
  EXPECT_THROW(evaluate_gate(r, GateOptions().alpha(1.0)), c10::Error);
}

TEST(CompatGate, JsonListsEveryRule) {
  const GateResult g = evaluate_gate(hand_report(), GateOptions().max_nfr(0.05).max_acc_drop(0.01).max_nfi(0.9));
  const nlohmann::json j = g.to_json();
  EXPECT_FALSE(j["passed"].get<bool>());
  ASSERT_EQ(j["rules"].size(), 4u);
  EXPECT_EQ(j["rules"][0]["name"], "nfr");
  EXPECT_EQ(j["rules"][1]["name"], "regressions");
  EXPECT_EQ(j["failed"], nlohmann::json({"regressions"}));
  for (const auto& r : j["rules"])
    for (const char* k : {"passed", "threshold", "observed", "point", "method", "reason"}) EXPECT_TRUE(r.contains(k));
}
