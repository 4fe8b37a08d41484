#pragma once
// Release gate: pure decisions over the flip counts of one comparison (old = deployed, new = candidate).
// A candidate passes iff every enabled rule holds; each rule records its threshold, what was observed
// and a one-line reason. Budgets are checked against confidence bounds, never point estimates, so that
// a small or lucky evaluation set cannot pass a budget it has no evidence for.
//
// Rules (all at level alpha):
//   nfr           one-sided (1 − alpha) Wilson upper bound of NF/N ≤ max_nfr
//   regressions   no per-task and no per-class regression alarm: one-sided exact McNemar (new worse),
//                 Holm–Bonferroni within each family; always on, alarms pass only with allow_regressions
//   acc_drop      one-sided (1 − alpha) upper bound of acc_old − acc_new ≤ max_acc_drop, by Tango's score
//                 interval for a paired difference (compat/stats.h): the paired design uses that both
//                 models saw the same items, and unlike the paired Wald interval it neither collapses to
//                 zero width when NF = PF = 0 nor undercovers at small discordant counts
//   nfi           one-sided Wilson upper bound of NF/(NF + n00) (the share of the new model's errors that
//                 are regressions) ≤ max_nfi; passes when the new model makes no errors at all
//   protected_task_T / protected_class_C
//                 per protected slice, one-sided Wilson upper bound of the slice's NF/N ≤ protected_max_nfr
#include "compat/flips.h"

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

namespace strata::compat {

struct GateOptions {
  TORCH_ARG(double, alpha) = 0.05;
  TORCH_ARG(std::optional<double>, max_nfr);
  TORCH_ARG(bool, allow_regressions) = false;
  TORCH_ARG(std::optional<double>, max_acc_drop);
  TORCH_ARG(std::optional<double>, max_nfi);
  TORCH_ARG(std::vector<int64_t>, protect_tasks);
  TORCH_ARG(std::vector<int64_t>, protect_classes);
  TORCH_ARG(std::optional<double>, protected_max_nfr);
};

struct GateRule {
  std::string name;      ///< "nfr", "regressions", "acc_drop", "nfi", "protected_task_2", ...
  bool passed = false;
  double threshold = 0;  ///< the budget (regressions: 0 alarms)
  double observed = 0;   ///< the bound compared with it (regressions: number of alarms)
  double point = 0;      ///< the point estimate (NaN when undefined)
  std::string method;
  std::string reason;    ///< one line: what was compared, with the counts
};

struct GateResult {
  bool passed = true;
  double alpha = 0.05;
  std::vector<GateRule> rules;
  /// Names of the rules that failed, in rule order.
  std::vector<std::string> failed() const;
  /// {"passed", "alpha", "failed": [names], "rules": [{name, passed, threshold, observed, point, method, reason}]}
  nlohmann::json to_json() const;
};

/// Applies every enabled rule. Throws (bad input, not a failed gate) on alpha outside (0, 1), a negative
/// or non-finite budget, no scored items, protected slices without protected_max_nfr (or the reverse),
/// or a protected task/class that is not among the scored items (it would pass without evidence).
GateResult evaluate_gate(const FlipReport& report, const GateOptions& options);

}  // namespace strata::compat
