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


// Aligned inputs of versions a (old) and b (new) on the test splits of `tasks`.
FlipInputs pair_inputs(const PredictionVersions& table, int64_t a, int64_t b, const std::vector<int64_t>& tasks) {
  for (int64_t v : {a, b}) {
    const auto present = table_tasks(table.at(v));
    for (int64_t t : tasks)
      TORCH_CHECK(std::binary_search(present.begin(), present.end(), t), "strata::compat::compat_section(): version ",
                  v, " has no predictions for task ", t);
  }
  return align_by_id(select_tasks(table.at(a), tasks), select_tasks(table.at(b), tasks),
                             "version " + std::to_string(a), "version " + std::to_string(b));
}

void add_upper(nlohmann::json& entry, double alpha) {
  const int64_t nf = entry["counts"]["n10"].get<int64_t>(), n = entry["n"].get<int64_t>();
  entry["nfr_wilson_upper"] = wilson_upper(nf, n, alpha);
}

std::vector<int64_t> consecutive_versions(const PredictionVersions& table) {
  std::vector<int64_t> v;
  for (const auto& [k, rows] : table) v.push_back(k);
  return v;
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

}  // namespace

nlohmann::json compat_section(const PredictionVersions& table, double alpha) {
  nlohmann::json s;
  s["alpha"] = alpha;
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
  const auto vs = consecutive_versions(table);
  nlohmann::json missing = nlohmann::json::array();
  if (!vs.empty())
    for (int64_t v = 0; v < vs.back(); ++v)
      if (!table.count(v)) missing.push_back(v);
  s["missing_versions"] = missing;
  nlohmann::json pairs = nlohmann::json::array();
  for (int64_t v : vs) {
    if (v == 0 || !table.count(v - 1)) continue;
    nlohmann::json p;
    p["old"] = v - 1;
    p["new"] = v;
    const std::vector<int64_t> seen_tasks = default_compare_tasks(v - 1, v);
    const auto seen = compare_predictions(pair_inputs(table, v - 1, v, seen_tasks));
    nlohmann::json sj = seen.to_json(alpha);
    sj.erase("per_class");  // per class: `strata compare runs/X/predictions.h5 --old-version A --new-version B`
    sj["tasks"] = {seen_tasks.front(), seen_tasks.back()};
    add_upper(sj["overall"], alpha);
    for (auto& e : sj["per_task"]) add_upper(e, alpha);
    p["seen_tasks"] = sj;
    const auto cur_in = pair_inputs(table, v - 1, v, {v});
    nlohmann::json cj = count_flips(cur_in.labels, cur_in.old_pred, cur_in.new_pred).to_json(alpha);
    cj["task"] = v;
    add_upper(cj, alpha);
    p["current_task"] = cj;
    pairs.push_back(p);
  }
  s["pairs"] = pairs;
  const StreamMatrix m = stream_nfr_matrix(table);
  s["nfr_matrix"] = {{"versions", m.versions}, {"matrix", to_json(m.nfr)}, {"n", to_json(m.n)}};
  return s;
}

std::vector<std::string> write_compat_plots(const std::string& run_dir, const PredictionVersions& table) {
  std::vector<std::string> written;
  if (table.empty()) return written;
  fs::create_directories(fs::path(run_dir) / "plots");
  const auto vs = consecutive_versions(table);
  std::vector<std::string> labels;
  for (int64_t v : vs) labels.push_back(vname(v));
  write_nfr_heatmap_svg(run_dir + "/plots/nfr_heatmap.svg", stream_nfr_matrix(table).nfr, labels);
  written.push_back("plots/nfr_heatmap.svg");
  const int64_t v = vs.back();
  if (v >= 1 && table.count(v - 1)) {
    const std::string rel = "plots/flips_per_task_" + vname(v) + ".svg";
    write_task_flips_svg(run_dir + "/" + rel, compare_predictions(pair_inputs(table, v - 1, v, tasks_trained_by(v))));
    written.push_back(rel);
  }
  return written;
}

}  // namespace strata::compat
