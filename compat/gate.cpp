#include "compat/gate.h"

#include "compat/stats.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <limits>
#include <sstream>

namespace strata::compat {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string pct(double v) {
  if (!std::isfinite(v)) return "-";
  std::ostringstream s;
  s << std::fixed << std::setprecision(2) << 100.0 * v << "%";
  return s.str();
}

std::string level(double alpha) {
  std::ostringstream s;
  s << std::setprecision(4) << 100.0 * (1.0 - alpha) << "%";
  return s.str();
}

void check_budget(const std::optional<double>& v, const char* name) {
  if (v)
    TORCH_CHECK(std::isfinite(*v) && *v >= 0.0, "strata::compat::evaluate_gate(): ", name,
                " must be a finite number >= 0, got ", *v);
}

// Wilson-bounded budget on k of n.
GateRule budget_rule(const std::string& name, int64_t k, int64_t n, double budget, double alpha,
                     const std::string& what, const std::string& counts) {
  GateRule r;
  r.name = name;
  r.threshold = budget;
  r.observed = wilson_upper(k, n, alpha);
  r.point = n > 0 ? static_cast<double>(k) / static_cast<double>(n) : kNaN;
  r.method = "one-sided Wilson upper bound";
  r.passed = r.observed <= budget;
  r.reason = what + " upper bound " + pct(r.observed) + (r.passed ? " <= " : " > ") + pct(budget) + " (" + counts +
             ", point " + pct(r.point) + ", one-sided " + level(alpha) + " Wilson)";
  return r;
}

const SliceCounts* find_slice(const std::vector<SliceCounts>& slices, int64_t key) {
  for (const auto& s : slices)
    if (s.key == key) return &s;
  return nullptr;
}

std::string keys_of(const std::vector<SliceCounts>& slices) {
  std::string out;
  for (const auto& s : slices) out += (out.empty() ? "" : ",") + std::to_string(s.key);
  return out.empty() ? "none" : out;
}

}  // namespace

std::vector<std::string> GateResult::failed() const {
  std::vector<std::string> out;
  for (const auto& r : rules)
    if (!r.passed) out.push_back(r.name);
  return out;
}

nlohmann::json GateResult::to_json() const {
  auto num = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); };
  nlohmann::json rs = nlohmann::json::array();
  for (const auto& r : rules)
    rs.push_back({{"name", r.name},
                  {"passed", r.passed},
                  {"threshold", num(r.threshold)},
                  {"observed", num(r.observed)},
                  {"point", num(r.point)},
                  {"method", r.method},
                  {"reason", r.reason}});
  return {{"passed", passed}, {"alpha", alpha}, {"failed", failed()}, {"rules", rs}};
}

GateResult evaluate_gate(const FlipReport& report, const GateOptions& o) {
  const double alpha = o.alpha();
  TORCH_CHECK(alpha > 0.0 && alpha < 1.0, "strata::compat::evaluate_gate(): alpha must be in (0, 1), got ", alpha);
  check_budget(o.max_nfr(), "max_nfr");
  check_budget(o.max_acc_drop(), "max_acc_drop");
  check_budget(o.max_nfi(), "max_nfi");
  check_budget(o.protected_max_nfr(), "protected_max_nfr");
  const bool any_protected = !o.protect_tasks().empty() || !o.protect_classes().empty();
  TORCH_CHECK(!any_protected || o.protected_max_nfr(),
              "strata::compat::evaluate_gate(): protected tasks/classes need a protected_max_nfr budget");
  TORCH_CHECK(any_protected || !o.protected_max_nfr(),
              "strata::compat::evaluate_gate(): protected_max_nfr is set but no task or class is protected");
  const FlipCounts& c = report.overall;
  TORCH_CHECK(c.n() > 0, "strata::compat::evaluate_gate(): no items were scored");

  GateResult g;
  g.alpha = alpha;
  if (o.max_nfr())
    g.rules.push_back(budget_rule("nfr", c.n10, c.n(), *o.max_nfr(), alpha, "NFR",
                                  "NF " + std::to_string(c.n10) + " of " + std::to_string(c.n()) + " items"));

  {
    GateRule r;
    r.name = "regressions";
    r.method = "one-sided exact McNemar, Holm-Bonferroni per family (tasks, classes)";
    std::string alarms;
    int64_t count = 0;
    auto scan = [&](const std::vector<SliceCounts>& slices, const char* what) {
      const auto a = regression_alarms(slices, alpha);
      for (size_t i = 0; i < a.size(); ++i) {
        if (!a[i].alarm) continue;
        ++count;
        std::ostringstream s;
        s << what << " " << a[i].key << " (NF " << slices[i].counts.n10 << ", PF " << slices[i].counts.n01
          << ", Holm p " << std::setprecision(3) << a[i].holm_p << ")";
        alarms += (alarms.empty() ? "" : ", ") + s.str();
      }
    };
    scan(report.per_group, "task");
    scan(report.per_class, "class");
    r.threshold = 0;
    r.observed = static_cast<double>(count);
    r.point = static_cast<double>(count);
    r.passed = count == 0 || o.allow_regressions();
    std::ostringstream s;
    if (count == 0)
      s << "no task or class regresses significantly (" << report.per_group.size() << " tasks, "
        << report.per_class.size() << " classes, Holm at alpha " << alpha << ")";
    else
      s << count << " significant regression" << (count > 1 ? "s" : "") << ": " << alarms
        << (o.allow_regressions() ? " (allowed by allow_regressions)" : "");
    r.reason = s.str();
    g.rules.push_back(r);
  }

  if (o.max_acc_drop()) {
    GateRule r;
    r.name = "acc_drop";
    r.threshold = *o.max_acc_drop();
    r.observed = tango_upper(c.n10, c.n01, c.n(), alpha);
    r.point = -c.delta_acc();
    r.method = "one-sided Tango score bound of the paired difference acc_old - acc_new";
    r.passed = r.observed <= r.threshold;
    r.reason = "accuracy drop upper bound " + pct(r.observed) + (r.passed ? " <= " : " > ") + pct(r.threshold) +
               " (acc_old " + pct(c.acc_old()) + ", acc_new " + pct(c.acc_new()) + ", NF " + std::to_string(c.n10) +
               ", PF " + std::to_string(c.n01) + ", one-sided " + level(alpha) + " Tango)";
    g.rules.push_back(r);
  }

  if (o.max_nfi()) {
    const int64_t new_errors = c.n10 + c.n00();
    if (new_errors == 0) {
      GateRule r;
      r.name = "nfi";
      r.threshold = *o.max_nfi();
      r.observed = 0;
      r.point = kNaN;
      r.method = "one-sided Wilson upper bound";
      r.passed = true;
      r.reason = "the new model makes no errors, so none of them is a regression";
      g.rules.push_back(r);
    } else {
      g.rules.push_back(budget_rule("nfi", c.n10, new_errors, *o.max_nfi(), alpha, "NFI",
                                    "NF " + std::to_string(c.n10) + " of " + std::to_string(new_errors) +
                                        " new-model errors"));
    }
  }

  auto protect = [&](const std::vector<int64_t>& keys, const std::vector<SliceCounts>& slices, const char* what) {
    for (int64_t k : keys) {
      const SliceCounts* s = find_slice(slices, k);
      TORCH_CHECK(s != nullptr, "strata::compat::evaluate_gate(): protected ", what, " ", k,
                  " has no scored items (scored ", what, "s: ", keys_of(slices), ")");
      g.rules.push_back(budget_rule(std::string("protected_") + what + "_" + std::to_string(k), s->counts.n10,
                                    s->counts.n(), *o.protected_max_nfr(), alpha,
                                    std::string(what) + " " + std::to_string(k) + " NFR",
                                    "NF " + std::to_string(s->counts.n10) + " of " + std::to_string(s->counts.n()) +
                                        " items"));
    }
  };
  protect(o.protect_tasks(), report.per_group, "task");
  protect(o.protect_classes(), report.per_class, "class");

  g.passed = std::all_of(g.rules.begin(), g.rules.end(), [](const GateRule& r) { return r.passed; });
  return g;
}

}  // namespace strata::compat
