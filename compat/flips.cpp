#include "compat/flips.h"

#include "compat/stats.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace strata::compat {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double ratio(int64_t k, int64_t n) { return n == 0 ? kNaN : static_cast<double>(k) / static_cast<double>(n); }

nlohmann::json num(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

// {value, ci_low, ci_high, n, method} for the proportion k/n with a two-sided Wilson interval.
nlohmann::json proportion(int64_t k, int64_t n, double alpha) {
  nlohmann::json j;
  j["value"] = num(ratio(k, n));
  j["k"] = k;
  j["n"] = n;
  if (n > 0) {
    const Interval ci = wilson_interval_alpha(k, n, alpha);
    j["ci_low"] = ci.low;
    j["ci_high"] = ci.high;
  } else {
    j["ci_low"] = nullptr;
    j["ci_high"] = nullptr;
  }
  j["method"] = "wilson";
  return j;
}

nlohmann::json point(double v, int64_t n) {
  return {{"value", num(v)}, {"ci_low", nullptr}, {"ci_high", nullptr}, {"n", n}, {"method", "none"}};
}

void check_1d(const torch::Tensor& t, const char* name, int64_t n, bool integral) {
  TORCH_CHECK(t.dim() == 1, "strata::compat::check_inputs(): ", name, " must be 1-D [N], got shape ", t.sizes());
  TORCH_CHECK(t.size(0) == n, "strata::compat::check_inputs(): length mismatch: labels has ", n, " items but ",
              name, " has ", t.size(0));
  if (integral) {
    TORCH_CHECK(!c10::isFloatingType(t.scalar_type()) && t.scalar_type() != torch::kBool,
                "strata::compat::check_inputs(): ", name, " must be an integer tensor, got ", t.scalar_type());
  } else {
    TORCH_CHECK(c10::isFloatingType(t.scalar_type()), "strata::compat::check_inputs(): ", name,
                " must be a floating tensor, got ", t.scalar_type());
  }
}

FlipCounts from_row(const int64_t* c) {
  FlipCounts f;
  f.n11 = c[static_cast<int64_t>(FlipType::kCorrect)];
  f.n10 = c[static_cast<int64_t>(FlipType::kNegative)];
  f.n01 = c[static_cast<int64_t>(FlipType::kPositive)];
  f.n00s = c[static_cast<int64_t>(FlipType::kWrongSame)];
  f.n00d = c[static_cast<int64_t>(FlipType::kWrongChanged)];
  return f;
}

// Counts per distinct key: unique + one bincount over key_index·5 + flip type.
std::vector<SliceCounts> counts_by(const torch::Tensor& keys, const torch::Tensor& types) {
  auto [values, inverse] = torch::_unique(keys.to(torch::kLong), /*sorted=*/true, /*return_inverse=*/true);
  const int64_t g = values.size(0);
  torch::Tensor table =
      torch::bincount(inverse.reshape({-1}) * kNumFlipTypes + types, {}, g * kNumFlipTypes).view({g, kNumFlipTypes});
  table = table.to(torch::kLong).contiguous();
  values = values.contiguous();
  std::vector<SliceCounts> out(static_cast<size_t>(g));
  const int64_t* t = table.data_ptr<int64_t>();
  const int64_t* v = values.data_ptr<int64_t>();
  for (int64_t i = 0; i < g; ++i) out[static_cast<size_t>(i)] = {v[i], from_row(t + i * kNumFlipTypes)};
  return out;
}

// The first id (in sorted order) where mask is true, as a string for error messages.
int64_t first_where(const torch::Tensor& values, const torch::Tensor& mask) {
  return values.masked_select(mask).index({0}).item<int64_t>();
}

void check_unique_ids(const torch::Tensor& sorted_ids, const char* which) {
  if (sorted_ids.size(0) < 2) return;
  const torch::Tensor dup = sorted_ids.slice(0, 1).eq(sorted_ids.slice(0, 0, -1));
  const int64_t n_dup = dup.sum().item<int64_t>();
  TORCH_CHECK(n_dup == 0, "strata::compat::align_by_id(): ", which, " table has ", n_dup,
              " duplicate item ids, first duplicate id ", first_where(sorted_ids.slice(0, 1), dup));
}

}  // namespace

std::string to_string(FlipType t) {
  switch (t) {
    case FlipType::kCorrect: return "CC";
    case FlipType::kNegative: return "NF";
    case FlipType::kPositive: return "PF";
    case FlipType::kWrongSame: return "WW_same";
    case FlipType::kWrongChanged: return "WW_changed";
  }
  TORCH_CHECK(false, "strata::compat::to_string(): bad FlipType ", static_cast<int64_t>(t));
}

void check_inputs(const FlipInputs& in) {
  TORCH_CHECK(in.labels.defined() && in.old_pred.defined() && in.new_pred.defined(),
              "strata::compat::check_inputs(): labels, old_pred and new_pred are required");
  TORCH_CHECK(in.labels.dim() == 1, "strata::compat::check_inputs(): labels must be 1-D [N], got shape ",
              in.labels.sizes());
  const int64_t n = in.labels.size(0);
  check_1d(in.labels, "labels", n, true);
  check_1d(in.old_pred, "old_pred", n, true);
  check_1d(in.new_pred, "new_pred", n, true);
  if (in.old_conf.defined()) check_1d(in.old_conf, "old_conf", n, false);
  if (in.new_conf.defined()) check_1d(in.new_conf, "new_conf", n, false);
  if (in.groups.defined()) check_1d(in.groups, "groups", n, true);
  if (in.ids.defined()) check_1d(in.ids, "ids", n, true);
}

torch::Tensor flip_types(const torch::Tensor& labels, const torch::Tensor& old_pred, const torch::Tensor& new_pred) {
  check_inputs({labels, old_pred, new_pred});
  torch::NoGradGuard no_grad;
  const torch::Tensor y = labels.to(torch::kLong), a = old_pred.to(torch::kLong), b = new_pred.to(torch::kLong);
  const torch::Tensor ca = a.eq(y), cb = b.eq(y), same = a.eq(b);
  // Both wrong: 3 when the answers agree, 4 when they differ; otherwise 0/1/2 from the correctness bits.
  torch::Tensor t = torch::where(ca, torch::where(cb, 0, 1), torch::where(cb, 2, torch::where(same, 3, 4)));
  return t.to(torch::kLong);
}

double FlipCounts::acc_old() const { return ratio(n11 + n10, n()); }
double FlipCounts::acc_new() const { return ratio(n11 + n01, n()); }
double FlipCounts::delta_acc() const { return ratio(n01 - n10, n()); }
double FlipCounts::nfr() const { return ratio(n10, n()); }
double FlipCounts::pfr() const { return ratio(n01, n()); }
double FlipCounts::nfi() const { return ratio(n10, n10 + n00()); }
double FlipCounts::pfi() const { return ratio(n01, n11 + n01); }
double FlipCounts::btc() const { return ratio(n11, n11 + n10); }
double FlipCounts::conditional_nfr() const { return ratio(n10, n11 + n10); }
double FlipCounts::bec_new() const { return ratio(n00(), n00() + n10); }
double FlipCounts::bec_old() const { return ratio(n00(), n00() + n01); }
double FlipCounts::relative_nfr() const {
  const double denom = acc_old() * (1.0 - acc_new());
  return (n() == 0 || denom == 0.0) ? kNaN : nfr() / denom;
}
double FlipCounts::nfr_mc() const { return ratio(n10 + n00d, n()); }
double FlipCounts::churn() const { return ratio(n10 + n01 + n00d, n()); }
double FlipCounts::pf_nf_ratio() const { return ratio(n01, n10); }

FlipCounts& FlipCounts::operator+=(const FlipCounts& o) {
  n11 += o.n11;
  n10 += o.n10;
  n01 += o.n01;
  n00s += o.n00s;
  n00d += o.n00d;
  return *this;
}

nlohmann::json FlipCounts::to_json(double alpha) const {
  TORCH_CHECK(alpha > 0.0 && alpha < 1.0, "strata::compat::FlipCounts::to_json(): alpha must be in (0, 1), got ",
              alpha);
  const int64_t N = n();
  nlohmann::json j;
  j["n"] = N;
  j["counts"] = {{"n11", n11}, {"n10", n10}, {"n01", n01}, {"n00", n00()}, {"n00s", n00s}, {"n00d", n00d}};
  nlohmann::json m;
  m["acc_old"] = proportion(n11 + n10, N, alpha);
  m["acc_new"] = proportion(n11 + n01, N, alpha);
  {
    nlohmann::json d = point(delta_acc(), N);
    if (N > 0) {
      const Interval ci = delta_acc_wald(n10, n01, N, normal_quantile(1.0 - alpha / 2.0));
      d["ci_low"] = ci.low;
      d["ci_high"] = ci.high;
      d["method"] = "wald_paired";
    }
    m["delta_acc"] = d;
  }
  m["nfr"] = proportion(n10, N, alpha);
  m["pfr"] = proportion(n01, N, alpha);
  m["nfi"] = proportion(n10, n10 + n00(), alpha);
  m["pfi"] = proportion(n01, n11 + n01, alpha);
  m["btc"] = proportion(n11, n11 + n10, alpha);
  m["conditional_nfr"] = proportion(n10, n11 + n10, alpha);
  m["bec_new"] = proportion(n00(), n00() + n10, alpha);
  m["bec_old"] = proportion(n00(), n00() + n01, alpha);
  m["relative_nfr"] = point(relative_nfr(), N);
  m["nfr_mc"] = proportion(n10 + n00d, N, alpha);
  m["churn"] = proportion(n10 + n01 + n00d, N, alpha);
  m["pf_nf_ratio"] = point(pf_nf_ratio(), n10 + n01);
  j["metrics"] = m;
  const McNemarResult mc = mcnemar_exact(n10, n01);
  j["mcnemar"] = {{"b", mc.b},
                  {"c", mc.c},
                  {"p_one_sided", mc.p_one_sided},
                  {"p_two_sided", mc.p_two_sided},
                  {"chi2_cc", mc.chi2_cc},
                  {"method", "exact"}};
  return j;
}

FlipCounts count_flips(const torch::Tensor& labels, const torch::Tensor& old_pred, const torch::Tensor& new_pred) {
  torch::NoGradGuard no_grad;
  const torch::Tensor counts =
      torch::bincount(flip_types(labels, old_pred, new_pred), {}, kNumFlipTypes).to(torch::kLong).contiguous();
  return from_row(counts.data_ptr<int64_t>());
}

std::vector<std::string> FlipReport::warnings() const {
  std::vector<std::string> w;
  const int64_t discordant = overall.n10 + overall.n01;
  if (discordant < 25)
    w.push_back("low power: only " + std::to_string(discordant) +
                " discordant items (NF + PF < 25); McNemar has little power");
  for (const auto& c : per_class) {
    const int64_t old_correct = c.counts.n11 + c.counts.n10;
    if (old_correct < 30)
      w.push_back("low power: class " + std::to_string(c.key) + " has only " + std::to_string(old_correct) +
                  " old-correct items (< 30); its conditional NFR is imprecise");
  }
  return w;
}

nlohmann::json FlipReport::to_json(double alpha) const {
  nlohmann::json j;
  j["overall"] = overall.to_json(alpha);
  auto family = [&](const std::vector<SliceCounts>& slices, const char* key_name) {
    std::vector<double> p;
    p.reserve(slices.size());
    for (const auto& s : slices) p.push_back(mcnemar_exact(s.counts.n10, s.counts.n01).p_one_sided);
    const HolmResult holm = holm_bonferroni(p, alpha);
    nlohmann::json arr = nlohmann::json::array();
    for (size_t i = 0; i < slices.size(); ++i) {
      nlohmann::json e = slices[i].counts.to_json(alpha);
      e[key_name] = slices[i].key;
      e["holm_p_one_sided"] = holm.adjusted[i];
      e["regression_alarm"] = static_cast<bool>(holm.reject[i]);
      arr.push_back(std::move(e));
    }
    return arr;
  };
  j["per_task"] = family(per_group, "task");
  j["per_class"] = family(per_class, "class");
  j["multiplicity"] = {{"method", "holm"},
                       {"alpha", alpha},
                       {"test", "one-sided exact McNemar (new worse), within each family (per_task, per_class)"}};
  j["warnings"] = warnings();
  return j;
}

FlipReport compare_predictions(const FlipInputs& in) {
  check_inputs(in);
  torch::NoGradGuard no_grad;
  const torch::Tensor types = flip_types(in.labels, in.old_pred, in.new_pred);
  FlipReport r;
  const torch::Tensor all = torch::bincount(types, {}, kNumFlipTypes).to(torch::kLong).contiguous();
  r.overall = from_row(all.data_ptr<int64_t>());
  if (in.labels.size(0) == 0) return r;
  if (in.groups.defined()) r.per_group = counts_by(in.groups, types);
  r.per_class = counts_by(in.labels, types);
  return r;
}

FlipInputs align_by_id(const PredictionTable& old_table, const PredictionTable& new_table) {
  torch::NoGradGuard no_grad;
  auto check_table = [](const PredictionTable& t, const char* which) {
    TORCH_CHECK(t.ids.defined() && t.labels.defined() && t.preds.defined(), "strata::compat::align_by_id(): ", which,
                " table needs ids, labels and preds");
    TORCH_CHECK(t.ids.dim() == 1, "strata::compat::align_by_id(): ", which, " ids must be 1-D, got shape ",
                t.ids.sizes());
    FlipInputs probe{t.labels, t.preds, t.preds, t.conf, t.conf, t.groups, t.ids};
    try {
      check_inputs(probe);
    } catch (const c10::Error& e) {
      TORCH_CHECK(false, "strata::compat::align_by_id(): ", which, " table: ", e.msg());
    }
  };
  check_table(old_table, "old");
  check_table(new_table, "new");

  auto [old_ids, old_order] = torch::sort(old_table.ids.to(torch::kLong));
  auto [new_ids, new_order] = torch::sort(new_table.ids.to(torch::kLong));
  check_unique_ids(old_ids, "old");
  check_unique_ids(new_ids, "new");

  // Ids in only one table: membership by searchsorted into the other (sorted, unique) id list.
  auto missing_from = [](const torch::Tensor& ids, const torch::Tensor& other) {
    if (other.size(0) == 0) return torch::ones_like(ids, torch::kBool);
    const torch::Tensor pos = torch::searchsorted(other, ids).clamp_max(other.size(0) - 1);
    return other.index_select(0, pos).ne(ids);
  };
  // Fast path: identical id sets (the normal case) need no membership search.
  const bool same_ids = old_ids.size(0) == new_ids.size(0) && old_ids.equal(new_ids);
  if (!same_ids) {
    const torch::Tensor only_old = missing_from(old_ids, new_ids);
    const torch::Tensor only_new = missing_from(new_ids, old_ids);
    const int64_t n_only_old = only_old.sum().item<int64_t>(), n_only_new = only_new.sum().item<int64_t>();
    std::string detail;
    if (n_only_old > 0)
      detail += std::to_string(n_only_old) + " ids only in OLD (first " +
                std::to_string(first_where(old_ids, only_old)) + ")";
    if (n_only_new > 0)
      detail += std::string(detail.empty() ? "" : ", ") + std::to_string(n_only_new) + " ids only in NEW (first " +
                std::to_string(first_where(new_ids, only_new)) + ")";
    TORCH_CHECK(false, "strata::compat::align_by_id(): item ids differ between OLD (", old_ids.size(0),
                " items) and NEW (", new_ids.size(0), " items): ", detail);
  }

  const torch::Tensor old_labels = old_table.labels.to(torch::kLong).index_select(0, old_order);
  const torch::Tensor new_labels = new_table.labels.to(torch::kLong).index_select(0, new_order);
  const torch::Tensor label_diff = old_labels.ne(new_labels);
  const int64_t n_label_diff = label_diff.sum().item<int64_t>();
  if (n_label_diff > 0) {
    const int64_t first = label_diff.nonzero().index({0, 0}).item<int64_t>();
    TORCH_CHECK(false, "strata::compat::align_by_id(): gold labels differ between OLD and NEW for ", n_label_diff,
                " items; first: id ", old_ids[first].item<int64_t>(), " has label ",
                old_labels[first].item<int64_t>(), " in OLD and ", new_labels[first].item<int64_t>(), " in NEW");
  }

  FlipInputs out;
  out.ids = old_ids;
  out.labels = old_labels;
  out.old_pred = old_table.preds.to(torch::kLong).index_select(0, old_order);
  out.new_pred = new_table.preds.to(torch::kLong).index_select(0, new_order);
  if (old_table.conf.defined()) out.old_conf = old_table.conf.index_select(0, old_order);
  if (new_table.conf.defined()) out.new_conf = new_table.conf.index_select(0, new_order);
  torch::Tensor og, ng;
  if (old_table.groups.defined()) og = old_table.groups.to(torch::kLong).index_select(0, old_order);
  if (new_table.groups.defined()) ng = new_table.groups.to(torch::kLong).index_select(0, new_order);
  if (og.defined() && ng.defined()) {
    const torch::Tensor gdiff = og.ne(ng);
    const int64_t n_gdiff = gdiff.sum().item<int64_t>();
    if (n_gdiff > 0) {
      const int64_t first = gdiff.nonzero().index({0, 0}).item<int64_t>();
      TORCH_CHECK(false, "strata::compat::align_by_id(): group (task) ids differ between OLD and NEW for ", n_gdiff,
                  " items; first: id ", old_ids[first].item<int64_t>(), " is in group ", og[first].item<int64_t>(),
                  " in OLD and ", ng[first].item<int64_t>(), " in NEW");
    }
  }
  out.groups = og.defined() ? og : ng;
  return out;
}

torch::Tensor nfr_matrix(const std::vector<torch::Tensor>& preds, const torch::Tensor& labels) {
  torch::NoGradGuard no_grad;
  TORCH_CHECK(labels.defined() && labels.dim() == 1, "strata::compat::nfr_matrix(): labels must be 1-D [N]");
  const int64_t n = labels.size(0);
  TORCH_CHECK(n > 0, "strata::compat::nfr_matrix(): no items");
  TORCH_CHECK(!preds.empty(), "strata::compat::nfr_matrix(): no versions given");
  std::vector<torch::Tensor> rows;
  rows.reserve(preds.size());
  for (size_t v = 0; v < preds.size(); ++v) {
    TORCH_CHECK(preds[v].defined() && preds[v].dim() == 1 && preds[v].size(0) == n,
                "strata::compat::nfr_matrix(): version ", v, " has ",
                preds[v].defined() ? preds[v].numel() : 0, " predictions but labels has ", n, " items");
    rows.push_back(preds[v].to(torch::kLong).eq(labels.to(torch::kLong)));
  }
  const torch::Tensor c = torch::stack(rows).to(torch::kDouble);  // [V, N] correctness
  return c.matmul((1.0 - c).t()) / static_cast<double>(n);
}

}  // namespace strata::compat
