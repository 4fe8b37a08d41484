#include "compat/stream_report.h"

#include "compat/report.h"
#include "compat/stats.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;

namespace strata::compat {

namespace {

// Aligned inputs of two versions' tables (old, new) on the test splits of `tasks`.
FlipInputs pair_inputs(const PredictionTable& old_table, int64_t a, const PredictionTable& new_table, int64_t b,
                       const std::vector<int64_t>& tasks) {
  for (const auto& [v, table] : {std::pair<int64_t, const PredictionTable*>{a, &old_table}, {b, &new_table}}) {
    const auto present = table_tasks(*table);
    for (int64_t t : tasks)
      TORCH_CHECK(std::binary_search(present.begin(), present.end(), t), "strata::compat::compat_section(): version ",
                  v, " has no predictions for task ", t);
  }
  return align_by_id(select_tasks(old_table, tasks), select_tasks(new_table, tasks), "version " + std::to_string(a),
                     "version " + std::to_string(b));
}

void add_upper(nlohmann::json& entry, double alpha) {
  const int64_t nf = entry["counts"]["n10"].get<int64_t>(), n = entry["n"].get<int64_t>();
  entry["nfr_wilson_upper"] = wilson_upper(nf, n, alpha);
}

std::string vname(int64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "v%03lld", static_cast<long long>(v));
  return buf;
}

nlohmann::json to_json(const torch::Tensor& t) {
  nlohmann::json rows = nlohmann::json::array();
  for (int64_t i = 0; i < t.size(0); ++i) {
    nlohmann::json row = nlohmann::json::array();
    for (int64_t j = 0; j < t.size(1); ++j) {
      if (t.scalar_type() == torch::kInt64) {
        row.push_back(t[i][j].item<int64_t>());
      } else {
        const double v = t[i][j].item<double>();
        row.push_back(std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr));
      }
    }
    rows.push_back(row);
  }
  return rows;
}

// [N] bool -> [ceil(N / 8)] uint8, bit k of byte i = item 8i + k (padding bits 0).
torch::Tensor pack_bits(const torch::Tensor& correct) {
  const int64_t n = correct.size(0), bytes = (n + 7) / 8;
  const torch::Tensor padded = torch::zeros({bytes * 8}, torch::kUInt8);
  padded.slice(0, 0, n).copy_(correct);
  static const torch::Tensor weights = torch::tensor({1, 2, 4, 8, 16, 32, 64, 128}, torch::kUInt8);
  return padded.view({bytes, 8}).mul(weights).sum(1, /*keepdim=*/false, torch::kUInt8);
}

// Number of items right in `a` and wrong in `b` (both packed over the same items).
int64_t count_a_not_b(const torch::Tensor& a, const torch::Tensor& b) {
  static const torch::Tensor popcount = [] {
    std::vector<int64_t> c(256);
    for (int i = 0; i < 256; ++i) c[static_cast<size_t>(i)] = __builtin_popcount(static_cast<unsigned>(i));
    return torch::tensor(c, torch::kLong);
  }();
  return popcount.index_select(0, torch::bitwise_and(a, torch::bitwise_not(b)).to(torch::kLong)).sum().item<int64_t>();
}

}  // namespace

void StreamCompat::add(int64_t version, const PredictionTable& table) {
  torch::NoGradGuard no_grad;
  const std::string name = "version " + std::to_string(version);
  TORCH_CHECK(versions_.empty() || version > versions_.back(), "strata::compat::StreamCompat::add(): ", name,
              " after version ", versions_.empty() ? 0 : versions_.back(), " (versions must increase)");
  check_table(table, name);
  TORCH_CHECK(table.tasks.defined(), "strata::compat::StreamCompat::add(): ", name, " has no task column");

  // Everything is computed before anything is kept, so a bad table leaves the state as it was.
  std::vector<torch::Tensor> bits;
  std::map<int64_t, PredictionTable> new_refs;
  const auto present = table_tasks(table);
  for (int64_t t = 0; t <= version; ++t) {
    TORCH_CHECK(std::binary_search(present.begin(), present.end(), t), "strata::compat::StreamCompat::add(): ", name,
                " has no predictions for task ", t);
    const PredictionTable part = select_tasks(table, {t});
    const auto ref = reference_.find(t);
    // The reference is only ever the "old" side of align_by_id, which needs a preds column: labels stand in.
    if (ref == reference_.end()) new_refs[t] = {part.ids, part.labels, part.labels, {}, part.tasks};
    const PredictionTable& reference = ref != reference_.end() ? ref->second : new_refs.at(t);
    const std::string ref_name =
        "version " + std::to_string(ref != reference_.end() ? reference_version_.at(t) : version);
    const FlipInputs in = align_by_id(reference, part, ref_name, name);
    bits.push_back(pack_bits(in.new_pred.eq(in.labels)));
  }
  const size_t idx = versions_.size();
  std::vector<int64_t> nf_row(idx + 1, 0), nf_col(idx + 1, 0), n_row(idx + 1, 0);
  for (size_t i = 0; i < idx; ++i) {  // earlier version a = versions_[i] < version: cells over tasks 0..a
    for (int64_t t = 0; t <= versions_[i]; ++t) {
      const torch::Tensor& old_bits = correct_[i][static_cast<size_t>(t)];
      nf_col[i] += count_a_not_b(old_bits, bits[static_cast<size_t>(t)]);  // NF(a -> version)
      nf_row[i] += count_a_not_b(bits[static_cast<size_t>(t)], old_bits);  // NF(version -> a)
      n_row[i] += reference_.at(t).ids.size(0);
    }
  }
  for (int64_t t = 0; t <= version; ++t)
    n_row[idx] += (reference_.count(t) ? reference_.at(t) : new_refs.at(t)).ids.size(0);

  std::optional<nlohmann::json> pair;
  std::optional<FlipReport> flips;
  if (!versions_.empty() && versions_.back() == version - 1) {
    const int64_t old_v = version - 1;
    nlohmann::json p;
    p["old"] = old_v;
    p["new"] = version;
    const std::vector<int64_t> seen_tasks = default_compare_tasks(old_v, version);
    const auto seen = compare_predictions(pair_inputs(newest_, old_v, table, version, seen_tasks));
    nlohmann::json sj = seen.to_json(alpha_);
    sj.erase("per_class");  // per class: `strata compare runs/X/predictions.h5 --old-version A --new-version B`
    sj["tasks"] = {seen_tasks.front(), seen_tasks.back()};
    add_upper(sj["overall"], alpha_);
    for (auto& e : sj["per_task"]) add_upper(e, alpha_);
    p["seen_tasks"] = sj;
    const auto cur_in = pair_inputs(newest_, old_v, table, version, {version});
    nlohmann::json cj = count_flips(cur_in.labels, cur_in.old_pred, cur_in.new_pred).to_json(alpha_);
    cj["task"] = version;
    add_upper(cj, alpha_);
    p["current_task"] = cj;
    pair = p;
    flips = compare_predictions(pair_inputs(newest_, old_v, table, version, tasks_trained_by(version)));
  }
  std::vector<int64_t> keep;  // the next pair needs tasks 0..version+1
  for (int64_t t : present)
    if (t <= version + 1) keep.push_back(t);

  // Commit.
  for (auto& [t, r] : new_refs) {
    reference_[t] = std::move(r);
    reference_version_[t] = version;
  }
  versions_.push_back(version);
  correct_.push_back(std::move(bits));
  for (size_t i = 0; i < idx; ++i) {
    nf_[i].push_back(nf_col[i]);
    n_[i].push_back(n_row[i]);
  }
  nf_row[idx] = 0;
  nf_.push_back(nf_row);
  n_.push_back(n_row);
  if (pair) pairs_.push_back(pair->dump());
  newest_flips_ = flips;
  newest_ = select_tasks(table, keep);
}

StreamMatrix StreamCompat::matrix() const {
  StreamMatrix out;
  out.versions = versions_;
  const int64_t V = static_cast<int64_t>(versions_.size());
  out.nfr = torch::zeros({V, V}, torch::kFloat64);
  out.n = torch::zeros({V, V}, torch::kInt64);
  auto nfr = out.nfr.accessor<double, 2>();
  auto n = out.n.accessor<int64_t, 2>();
  for (int64_t i = 0; i < V; ++i)
    for (int64_t j = 0; j < V; ++j) {
      n[i][j] = n_[static_cast<size_t>(i)][static_cast<size_t>(j)];
      const int64_t nf = nf_[static_cast<size_t>(i)][static_cast<size_t>(j)];
      // 0/0 = NaN where a cell has no items, as FlipCounts::nfr(); the diagonal is 0.
      nfr[i][j] = i == j ? 0.0 : (n[i][j] == 0 ? std::nan("") : static_cast<double>(nf) / n[i][j]);
    }
  return out;
}

std::vector<std::string_view> StreamCompat::pairs_parts() const {
  std::vector<std::string_view> out{"["};
  for (size_t i = 0; i < pairs_.size(); ++i) {
    if (i) out.emplace_back(",");
    out.emplace_back(pairs_[i]);
  }
  out.emplace_back("]");
  return out;
}

std::string StreamCompat::pairs_text() const {
  std::string out;
  for (const auto& part : pairs_parts()) out += part;
  return out;
}

nlohmann::json StreamCompat::section(bool with_pairs) const {
  nlohmann::json s;
  s["alpha"] = alpha_;
  s["conventions"] = {
      {"version", "v = the model after training task v (0-based)"},
      {"pairs", "consecutive versions old = v-1, new = v; counts from count_flips (n11 both right, n10 = NF, "
                "n01 = PF, n00s/n00d both wrong with the same/different answer)"},
      {"seen_tasks", "flips on the test splits of tasks 0..v-1 (where the old version was trained), overall and "
                     "per task; per-task Holm-Bonferroni over one-sided McNemar p-values"},
      {"current_task", "flips on the test split of task v alone (not included in seen_tasks)"},
      {"nfr_wilson_upper", "one-sided (1 - alpha) Wilson upper bound of NF/N"},
      {"nfr_matrix", "M[a][b] = NF(a -> b)/N over the test splits of tasks 0..min(a, b); row = old, column = new; "
                     "M[b][a] = PFR(a -> b) on the same items; n[a][b] = N of that cell (diagonal: tasks 0..a)"}};
  nlohmann::json missing = nlohmann::json::array();
  if (!versions_.empty())
    for (int64_t v = 0; v < versions_.back(); ++v)
      if (!std::binary_search(versions_.begin(), versions_.end(), v)) missing.push_back(v);
  s["missing_versions"] = missing;
  s["pairs"] = with_pairs ? nlohmann::json::parse(pairs_text()) : nlohmann::json(kPairsPlaceholder);
  const StreamMatrix m = matrix();
  s["nfr_matrix"] = {{"versions", m.versions}, {"matrix", to_json(m.nfr)}, {"n", to_json(m.n)}};
  return s;
}

std::vector<std::string> StreamCompat::write_plots(const std::string& run_dir) const {
  std::vector<std::string> written;
  if (versions_.empty()) return written;
  fs::create_directories(fs::path(run_dir) / "plots");
  std::vector<std::string> labels;
  for (int64_t v : versions_) labels.push_back(vname(v));
  write_nfr_heatmap_svg(run_dir + "/plots/nfr_heatmap.svg", matrix().nfr, labels);
  written.push_back("plots/nfr_heatmap.svg");
  if (newest_flips_) {
    const std::string rel = "plots/flips_per_task_" + vname(versions_.back()) + ".svg";
    write_task_flips_svg(run_dir + "/" + rel, *newest_flips_);
    written.push_back(rel);
  }
  return written;
}

StreamMatrix stream_nfr_matrix(const PredictionVersions& versions) {
  StreamCompat s;
  for (const auto& [v, t] : versions) s.add(v, t);
  return s.matrix();
}

nlohmann::json compat_section(const PredictionVersions& table, double alpha) {
  StreamCompat s(alpha);
  for (const auto& [v, t] : table) s.add(v, t);
  return s.section();
}

std::vector<std::string> write_compat_plots(const std::string& run_dir, const PredictionVersions& table) {
  StreamCompat s;
  for (const auto& [v, t] : table) s.add(v, t);
  return s.write_plots(run_dir);
}

}  // namespace strata::compat
