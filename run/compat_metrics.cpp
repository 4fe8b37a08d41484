#include "run/compat_metrics.h"

#include "compat/report.h"
#include "compat/stats.h"
#include "run/runner.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;

namespace strata::run {

using namespace strata::continual;

namespace {

using checkpoints::PredictionTable;

// Aligned inputs of versions a (old) and b (new) over the test splits of tasks [lo, hi].
compat::FlipInputs pair_inputs(const PredictionTable& table, int64_t a, int64_t b, int64_t lo, int64_t hi) {
  const auto& A = table.at(a);
  const auto& B = table.at(b);
  std::vector<torch::Tensor> labels, pa, pb, ca, cb, groups, ids;
  for (int64_t t = lo; t <= hi; ++t) {
    TORCH_CHECK(t < static_cast<int64_t>(A.size()) && t < static_cast<int64_t>(B.size()),
                "strata::continual::compat_section(): version ", a, " or ", b, " has no predictions for task ", t);
    const auto& x = A[t];
    const auto& y = B[t];
    TORCH_CHECK(x.id.sizes() == y.id.sizes() && torch::equal(x.id, y.id) && torch::equal(x.label, y.label),
                "strata::continual::compat_section(): versions ", a, " and ", b, " were evaluated on different items of task ",
                t, " (", x.id.size(0), " vs ", y.id.size(0), " items; ids or labels differ)");
    labels.push_back(x.label);
    pa.push_back(x.pred);
    pb.push_back(y.pred);
    ca.push_back(x.prob);
    cb.push_back(y.prob);
    ids.push_back(x.id);
    groups.push_back(torch::full({x.label.size(0)}, t, torch::kInt64));
  }
  compat::FlipInputs in;
  in.labels = torch::cat(labels);
  in.old_pred = torch::cat(pa);
  in.new_pred = torch::cat(pb);
  in.old_conf = torch::cat(ca);
  in.new_conf = torch::cat(cb);
  in.groups = torch::cat(groups);
  in.ids = torch::cat(ids);
  return in;
}

void add_upper(nlohmann::json& entry, double alpha) {
  const int64_t nf = entry["counts"]["n10"].get<int64_t>(), n = entry["n"].get<int64_t>();
  entry["nfr_wilson_upper"] = compat::wilson_upper(nf, n, alpha);
}

std::vector<int64_t> consecutive_versions(const PredictionTable& table) {
  std::vector<int64_t> v;
  for (const auto& [k, rows] : table) v.push_back(k);
  return v;
}

std::string vname(int64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "v%03lld", static_cast<long long>(v));
  return buf;
}

// [V, V] matrix over the versions present, cells on tasks 0..min(a, b); also the item counts.
std::pair<torch::Tensor, torch::Tensor> nfr_matrix_of(const PredictionTable& table, const std::vector<int64_t>& vs) {
  const int64_t V = static_cast<int64_t>(vs.size());
  torch::Tensor m = torch::zeros({V, V}, torch::kFloat64), n = torch::zeros({V, V}, torch::kInt64);
  for (int64_t i = 0; i < V; ++i)
    for (int64_t j = 0; j < V; ++j) {
      if (i == j) {
        int64_t items = 0;
        for (int64_t t = 0; t <= vs[i]; ++t) items += table.at(vs[i]).at(t).label.size(0);
        n[i][j] = items;
        continue;
      }
      const auto in = pair_inputs(table, vs[i], vs[j], 0, std::min(vs[i], vs[j]));
      const auto c = compat::count_flips(in.labels, in.old_pred, in.new_pred);
      m[i][j] = c.n() ? static_cast<double>(c.n10) / c.n() : std::nan("");
      n[i][j] = c.n();
    }
  return {m, n};
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

nlohmann::json compat_section(const PredictionTable& table, double alpha) {
  nlohmann::json s;
  s["alpha"] = alpha;
  s["conventions"] = {
      {"version", "v = the model after training task v (0-based)"},
      {"pairs", "consecutive versions old = v-1, new = v; counts from compat::count_flips (n11 both right, n10 = NF, "
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
    const auto seen = compat::compare_predictions(pair_inputs(table, v - 1, v, 0, v - 1));
    nlohmann::json sj = seen.to_json(alpha);
    sj.erase("per_class");  // per class: `strata compare runs/X/predictions.h5 --old-version A --new-version B`
    sj["tasks"] = {0, v - 1};
    add_upper(sj["overall"], alpha);
    for (auto& e : sj["per_task"]) add_upper(e, alpha);
    p["seen_tasks"] = sj;
    const auto cur_in = pair_inputs(table, v - 1, v, v, v);
    nlohmann::json cj = compat::count_flips(cur_in.labels, cur_in.old_pred, cur_in.new_pred).to_json(alpha);
    cj["task"] = v;
    add_upper(cj, alpha);
    p["current_task"] = cj;
    pairs.push_back(p);
  }
  s["pairs"] = pairs;
  const auto [m, n] = nfr_matrix_of(table, vs);
  s["nfr_matrix"] = {{"versions", vs}, {"matrix", to_json(m)}, {"n", to_json(n)}};
  return s;
}

std::vector<std::string> write_compat_plots(const std::string& run_dir, const PredictionTable& table) {
  std::vector<std::string> written;
  if (table.empty()) return written;
  fs::create_directories(fs::path(run_dir) / "plots");
  const auto vs = consecutive_versions(table);
  std::vector<std::string> labels;
  for (int64_t v : vs) labels.push_back(vname(v));
  compat::write_nfr_heatmap_svg(run_dir + "/plots/nfr_heatmap.svg", nfr_matrix_of(table, vs).first, labels);
  written.push_back("plots/nfr_heatmap.svg");
  const int64_t v = vs.back();
  if (v >= 1 && table.count(v - 1)) {
    const std::string rel = "plots/flips_per_task_" + vname(v) + ".svg";
    compat::write_task_flips_svg(run_dir + "/" + rel, compat::compare_predictions(pair_inputs(table, v - 1, v, 0, v)));
    written.push_back(rel);
  }
  return written;
}

int64_t version_file_number(const std::string& path) { return checkpoints::read_version(path).version; }

compat::PredictionTable evaluate_version_file(const std::string& path, int64_t last_task, int64_t* version_out) {
  const LoadedVersion lv = load_version(path);
  const auto& v = lv.version;
  const auto& stream = lv.stream;
  if (version_out) *version_out = v.version;
  TORCH_CHECK(last_task >= 0 && last_task < stream.size(), "strata::run::evaluate_version_file(): '", path,
              "': task ", last_task, " is not in its ", stream.size(), "-task stream");
  const auto evals = evaluate_stream(*lv.model, stream, v.version, lv.config.train.eval_batch_size());
  std::vector<torch::Tensor> ids, labels, preds, conf, groups;
  for (int64_t t = 0; t <= last_task; ++t) {
    const auto& test = stream.tasks[t].test;
    // Permuted/rotated streams reuse the same images in every task: key items by (task, example id).
    ids.push_back(test.ids + t * (int64_t{1} << 32));
    labels.push_back(test.y);
    preds.push_back(evals[t].pred);
    conf.push_back(evals[t].prob);
    groups.push_back(torch::full({test.size()}, t, torch::kInt64));
  }
  compat::PredictionTable out;
  out.ids = torch::cat(ids);
  out.labels = torch::cat(labels);
  out.preds = torch::cat(preds);
  out.conf = torch::cat(conf);
  out.groups = torch::cat(groups);
  return out;
}

}  // namespace strata::run
