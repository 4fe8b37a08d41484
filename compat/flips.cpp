#include "compat/flips.h"

#include "compat/stats.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>

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
    const std::vector<SliceAlarm> alarms = regression_alarms(slices, alpha);
    nlohmann::json arr = nlohmann::json::array();
    for (size_t i = 0; i < slices.size(); ++i) {
      nlohmann::json e = slices[i].counts.to_json(alpha);
      e[key_name] = slices[i].key;
      e["holm_p_one_sided"] = alarms[i].holm_p;
      e["regression_alarm"] = alarms[i].alarm;
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

std::vector<SliceAlarm> regression_alarms(const std::vector<SliceCounts>& slices, double alpha) {
  std::vector<double> p;
  p.reserve(slices.size());
  for (const auto& s : slices) p.push_back(mcnemar_exact(s.counts.n10, s.counts.n01).p_one_sided);
  const HolmResult holm = holm_bonferroni(p, alpha);
  std::vector<SliceAlarm> out(slices.size());
  for (size_t i = 0; i < slices.size(); ++i)
    out[i] = {slices[i].key, p[i], holm.adjusted[i], static_cast<bool>(holm.reject[i])};
  return out;
}

namespace {

// Dense item keys shared by both tables, so that (task, id) pairs and plain ids are handled alike:
// key k of either table is row k of `items` ([K, 2] (task, id), or [K, 1] id), sorted lexicographically.
struct ItemKeys {
  torch::Tensor old_key, new_key;  // [N_old], [N_new] int64 in [0, K)
  torch::Tensor items;             // [K, 1 or 2] int64
  std::string describe(int64_t key) const {
    const torch::Tensor row = items[key];
    if (items.size(1) == 1) return "id " + std::to_string(row[0].item<int64_t>());
    return "(task " + std::to_string(row[0].item<int64_t>()) + ", id " + std::to_string(row[1].item<int64_t>()) +
           ")";
  }
};

ItemKeys item_keys(const PredictionTable& o, const PredictionTable& n) {
  auto rows = [](const PredictionTable& t) {
    const torch::Tensor id = t.ids.to(torch::kLong).reshape({-1, 1});
    return t.tasks.defined() ? torch::cat({t.tasks.to(torch::kLong).reshape({-1, 1}), id}, 1) : id;
  };
  const int64_t n_old = o.ids.size(0);
  ItemKeys k;
  const torch::Tensor all = torch::cat({rows(o), rows(n)});
  if (all.size(0) == 0) {
    k.items = all;
    k.old_key = k.new_key = torch::zeros({0}, torch::kLong);
    return k;
  }
  // (task, id) rows map to one int64 (task - t0) * span + (id - i0), monotone in the lexicographic order,
  // so a 1-D sort-based unique does the work: unique_dim compares rows one by one through tensor views,
  // which made aligning two 100 000-row tables take seconds. When the ranges are too wide for one
  // int64 the row-wise unique remains.
  const torch::Tensor lo = std::get<0>(all.min(0)), hi = std::get<0>(all.max(0));
  const auto lo_a = lo.accessor<int64_t, 1>(), hi_a = hi.accessor<int64_t, 1>();
  const int64_t cols = all.size(1);
  long double span_product = 1;
  std::vector<int64_t> spans(static_cast<size_t>(cols));
  bool fits = true;
  for (int64_t c = 0; c < cols; ++c) {
    const long double span = static_cast<long double>(hi_a[c]) - static_cast<long double>(lo_a[c]) + 1;
    span_product *= span;
    if (span_product > static_cast<long double>(int64_t{1} << 62)) fits = false;
    if (fits) spans[static_cast<size_t>(c)] = static_cast<int64_t>(span);
  }
  torch::Tensor items, inverse;
  if (fits) {
    torch::Tensor key = all.select(1, 0) - lo_a[0];
    if (cols == 2) key = key * spans[1] + (all.select(1, 1) - lo_a[1]);
    torch::Tensor unique_keys;
    std::tie(unique_keys, inverse, std::ignore) = torch::_unique2(key, /*sorted=*/true, /*return_inverse=*/true);
    items = cols == 2 ? torch::stack({unique_keys.div(spans[1], "floor") + lo_a[0],
                                      unique_keys.remainder(spans[1]) + lo_a[1]},
                                     1)
                      : (unique_keys + lo_a[0]).reshape({-1, 1});
  } else {
    std::tie(items, inverse, std::ignore) = torch::unique_dim(all, 0, /*sorted=*/true, /*return_inverse=*/true);
  }
  k.items = items;
  k.old_key = inverse.slice(0, 0, n_old).to(torch::kLong);
  k.new_key = inverse.slice(0, n_old).to(torch::kLong);
  return k;
}

}  // namespace

FlipInputs align_by_id(const PredictionTable& old_table, const PredictionTable& new_table,
                       const std::string& old_name, const std::string& new_name) {
  torch::NoGradGuard no_grad;
  check_table(old_table, old_name);
  check_table(new_table, new_name);
  TORCH_CHECK(old_table.tasks.defined() == new_table.tasks.defined(), "strata::compat::align_by_id(): ",
              old_table.tasks.defined() ? old_name : new_name, " has a task column but ",
              old_table.tasks.defined() ? new_name : old_name,
              " has none: items cannot be matched (give both or neither a task column)");
  const ItemKeys keys = item_keys(old_table, new_table);
  auto [old_sorted, old_order] = torch::sort(keys.old_key);
  auto [new_sorted, new_order] = torch::sort(keys.new_key);
  auto check_unique = [&](const torch::Tensor& sorted, const std::string& which) {
    if (sorted.size(0) < 2) return;
    const torch::Tensor dup = sorted.slice(0, 1).eq(sorted.slice(0, 0, -1));
    const int64_t n_dup = dup.sum().item<int64_t>();
    if (n_dup > 0)
      TORCH_CHECK(false, "strata::compat::align_by_id(): ", which, " has ", n_dup, " duplicate items, first duplicate ",
                  keys.describe(sorted.slice(0, 1).masked_select(dup)[0].item<int64_t>()));
  };
  check_unique(old_sorted, old_name);
  check_unique(new_sorted, new_name);

  if (!(old_sorted.size(0) == new_sorted.size(0) && old_sorted.equal(new_sorted))) {
    // Both key lists are unique subsets of [0, K): membership by a mask over K.
    const int64_t K = keys.items.size(0);
    const torch::Tensor in_old = torch::zeros({K}, torch::kBool).index_fill_(0, old_sorted, true);
    const torch::Tensor in_new = torch::zeros({K}, torch::kBool).index_fill_(0, new_sorted, true);
    const torch::Tensor only_old = (in_old & ~in_new).nonzero().reshape({-1});
    const torch::Tensor only_new = (in_new & ~in_old).nonzero().reshape({-1});
    std::string detail;
    if (only_old.numel() > 0)
      detail += std::to_string(only_old.numel()) + " only in " + old_name + " (first " +
                keys.describe(only_old[0].item<int64_t>()) + ")";
    if (only_new.numel() > 0)
      detail += std::string(detail.empty() ? "" : ", ") + std::to_string(only_new.numel()) + " only in " + new_name +
                " (first " + keys.describe(only_new[0].item<int64_t>()) + ")";
    TORCH_CHECK(false, "strata::compat::align_by_id(): the items differ between ", old_name, " (",
                old_sorted.size(0), " items) and ", new_name, " (", new_sorted.size(0), " items): ", detail);
  }

  const torch::Tensor old_labels = old_table.labels.to(torch::kLong).index_select(0, old_order);
  const torch::Tensor new_labels = new_table.labels.to(torch::kLong).index_select(0, new_order);
  const torch::Tensor label_diff = old_labels.ne(new_labels);
  const int64_t n_label_diff = label_diff.sum().item<int64_t>();
  if (n_label_diff > 0) {
    const int64_t first = label_diff.nonzero().index({0, 0}).item<int64_t>();
    TORCH_CHECK(false, "strata::compat::align_by_id(): gold labels differ between ", old_name, " and ", new_name,
                " for ", n_label_diff, " items; first: ", keys.describe(old_sorted[first].item<int64_t>()),
                " has label ", old_labels[first].item<int64_t>(), " in ", old_name, " and ",
                new_labels[first].item<int64_t>(), " in ", new_name);
  }

  FlipInputs out;
  out.ids = old_table.ids.to(torch::kLong).index_select(0, old_order);
  out.labels = old_labels;
  out.old_pred = old_table.preds.to(torch::kLong).index_select(0, old_order);
  out.new_pred = new_table.preds.to(torch::kLong).index_select(0, new_order);
  if (old_table.conf.defined()) out.old_conf = old_table.conf.index_select(0, old_order);
  if (new_table.conf.defined()) out.new_conf = new_table.conf.index_select(0, new_order);
  if (old_table.tasks.defined()) out.groups = old_table.tasks.to(torch::kLong).index_select(0, old_order);
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
