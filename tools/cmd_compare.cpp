// strata compare: paired flip analysis of two model versions from predictions.h5 files, with an
// optional NFR release gate (exit 1 when the one-sided Wilson upper bound of NFR exceeds --max-nfr).
#include "compat/flips.h"
#include "compat/predictions_io.h"
#include "compat/report.h"
#include "compat/stats.h"
#include "run/compat_metrics.h"
#include "tools/commands.h"

#include <cmath>
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>

using namespace strata::compat;

namespace {

void usage(std::ostream& o) {
  o << "usage: strata compare OLD NEW [options]\n"
       "       strata compare PREDICTIONS.h5 --old-version N --new-version M [options]\n"
       "       strata compare runs/X/versions/vNNN.h5 runs/X/versions/vMMM.h5 [options]\n\n"
       "Compares two model versions on the same labelled items, read from predictions.h5 files\n"
       "(groups /vNNN/taskTT with datasets id, label, pred, prob). Items are joined by id; missing,\n"
       "duplicate or relabelled ids are errors. Prints NF/PF and the flip metrics per task and overall.\n\n"
       "OLD, NEW    PATH:vNNN (e.g. runs/a/predictions.h5:v003; 'PATH:3' also works), or PATH with\n"
       "            --old-version / --new-version (NEW defaults to OLD's file when only one path is given)\n"
       "VERSION FILES  two versions/vNNN.h5 files: both are restored and re-evaluated on the stream of the\n"
       "            config stored in them, on the test splits of tasks 0..min(N, M) (the tasks the older one\n"
       "            was trained on); item ids are task*2^32 + example id\n"
       "options:\n"
       "  --old-version N, --new-version M   version numbers when OLD/NEW have no ':vNNN' suffix\n"
       "  --json PATH        write compat_report.json (schema strata-compat-report/1)\n"
       "  --csv PATH         write the flipped items (NF, PF, wrong->other wrong), confident NF first\n"
       "  --task-svg PATH    write a per-task PF/NF bar chart (SVG)\n"
       "  --heatmap PATH     write the version x version NFR heatmap of every version in OLD's file (SVG)\n"
       "  --max-nfr X        gate: exit 1 if the one-sided (1-alpha) Wilson upper bound of overall NFR > X\n"
       "  --alpha A          significance level for intervals, McNemar/Holm alarms and the gate (default 0.05)\n"
       "exit status: 0 compared (and gate passed), 1 gate failed, 2 bad input.\n";
}

struct Source {
  std::string path;
  std::optional<int64_t> version;
};

// "123", "v123" -> 123; nullopt otherwise.
std::optional<int64_t> parse_version(const std::string& s) {
  size_t i = (!s.empty() && (s[0] == 'v' || s[0] == 'V')) ? 1 : 0;
  if (i >= s.size() || s.size() - i > 9) return std::nullopt;
  int64_t v = 0;
  for (; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return std::nullopt;
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

Source parse_source(const std::string& arg) {
  const size_t colon = arg.rfind(':');
  if (colon != std::string::npos) {
    if (auto v = parse_version(arg.substr(colon + 1))) return {arg.substr(0, colon), v};
  }
  return {arg, std::nullopt};
}

double parse_double(const std::string& flag, const std::string& value) {
  try {
    size_t used = 0;
    const double d = std::stod(value, &used);
    if (used == value.size() && std::isfinite(d)) return d;
  } catch (const std::exception&) {
  }
  throw std::invalid_argument(flag + " expects a number, got '" + value + "'");
}

std::string pct(double v) {
  if (!std::isfinite(v)) return "-";
  std::ostringstream s;
  s << std::fixed << std::setprecision(2) << 100.0 * v;
  return s.str();
}

std::string pval(double p) {
  std::ostringstream s;
  if (p < 1e-4)
    s << std::scientific << std::setprecision(1) << p;
  else
    s << std::fixed << std::setprecision(4) << p;
  return s.str();
}

void print_row(const std::string& name, const FlipCounts& c) {
  std::cout << std::left << std::setw(8) << name << std::right << std::setw(8) << c.n() << std::setw(9)
            << pct(c.acc_old()) << std::setw(9) << pct(c.acc_new()) << std::setw(7) << c.n10 << std::setw(7) << c.n01
            << std::setw(8) << pct(c.nfr()) << std::setw(8) << pct(c.pfr()) << std::setw(8) << pct(c.nfi())
            << std::setw(8) << pct(c.btc()) << std::setw(11) << pval(mcnemar_exact(c.n10, c.n01).p_one_sided)
            << "\n";
}

// versions/vNNN.h5 (a stored model version, not a predictions.h5).
bool is_version_file(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  return base.size() > 4 && base.compare(base.size() - 3, 3, ".h5") == 0 && base != "predictions.h5" &&
         parse_version(base.substr(0, base.size() - 3)).has_value();
}

std::string describe(const Source& s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, ":v%03lld", static_cast<long long>(*s.version));
  return s.path + buf;
}

}  // namespace

int strata_cmd_compare(int argc, char** argv) {
  try {
    std::vector<std::string> positional;
    std::optional<int64_t> old_version, new_version;
    std::string json_path, csv_path, task_svg, heatmap;
    std::optional<double> max_nfr;
    double alpha = 0.05;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
        return argv[++i];
      };
      if (a == "--help" || a == "-h") {
        usage(std::cout);
        return 0;
      } else if (a == "--old-version" || a == "--new-version") {
        const std::string v = value();
        const auto parsed = parse_version(v);
        if (!parsed) throw std::invalid_argument(a + " expects a version number, got '" + v + "'");
        (a == "--old-version" ? old_version : new_version) = parsed;
      } else if (a == "--json") {
        json_path = value();
      } else if (a == "--csv") {
        csv_path = value();
      } else if (a == "--task-svg") {
        task_svg = value();
      } else if (a == "--heatmap") {
        heatmap = value();
      } else if (a == "--max-nfr") {
        max_nfr = parse_double(a, value());
        if (*max_nfr < 0.0 || *max_nfr > 1.0)
          throw std::invalid_argument("--max-nfr must be a fraction in [0, 1], got " + std::to_string(*max_nfr));
      } else if (a == "--alpha") {
        alpha = parse_double(a, value());
        if (!(alpha > 0.0 && alpha < 1.0))
          throw std::invalid_argument("--alpha must be in (0, 1), got " + std::to_string(alpha));
      } else if (a.size() > 1 && a[0] == '-') {
        throw std::invalid_argument("unknown option " + a + " (see strata compare --help)");
      } else {
        positional.push_back(a);
      }
    }
    if (positional.empty() || positional.size() > 2)
      throw std::invalid_argument("expected OLD and NEW (or one predictions.h5 with --old-version/--new-version), got " +
                                  std::to_string(positional.size()) + " paths");
    Source old_src = parse_source(positional[0]);
    Source new_src = positional.size() == 2 ? parse_source(positional[1]) : Source{old_src.path, std::nullopt};
    if (old_version) {
      if (old_src.version && *old_src.version != *old_version)
        throw std::invalid_argument("OLD names version " + std::to_string(*old_src.version) + " but --old-version is " +
                                    std::to_string(*old_version));
      old_src.version = old_version;
    }
    if (new_version) {
      if (new_src.version && *new_src.version != *new_version)
        throw std::invalid_argument("NEW names version " + std::to_string(*new_src.version) + " but --new-version is " +
                                    std::to_string(*new_version));
      new_src.version = new_version;
    }
    // Two stored model versions: re-evaluate both on their stream (tasks 0..min of the two versions).
    const bool version_files = positional.size() == 2 && !old_src.version && !new_src.version &&
                               is_version_file(old_src.path) && is_version_file(new_src.path);
    PredictionTable old_table, new_table;
    std::string eval_set = "test splits in predictions.h5";
    if (version_files) {
      if (!heatmap.empty()) throw std::invalid_argument("--heatmap needs a predictions.h5, not version files");
      const int64_t a = strata::run::version_file_number(old_src.path);
      const int64_t b = strata::run::version_file_number(new_src.path);
      old_src.version = a;
      new_src.version = b;
      const int64_t last = std::min(a, b);
      old_table = strata::run::evaluate_version_file(old_src.path, last);
      new_table = strata::run::evaluate_version_file(new_src.path, last);
      eval_set = "test splits of tasks 0.." + std::to_string(last) + " (re-evaluated from the version files)";
    }
    if (!old_src.version) throw std::invalid_argument("no version for OLD: use PATH:vNNN or --old-version N");
    if (!new_src.version) throw std::invalid_argument("no version for NEW: use PATH:vNNN or --new-version M");

    if (!version_files) {
      old_table = read_prediction_table(old_src.path, *old_src.version);
      new_table = read_prediction_table(new_src.path, *new_src.version);
    }
    const FlipInputs in = align_by_id(old_table, new_table);
    const FlipReport report = compare_predictions(in);

    std::cout << "old: " << describe(old_src) << "\nnew: " << describe(new_src) << "\n\n";
    std::cout << std::left << std::setw(8) << "task" << std::right << std::setw(8) << "N" << std::setw(9) << "acc_old%"
              << std::setw(9) << "acc_new%" << std::setw(7) << "NF" << std::setw(7) << "PF" << std::setw(8) << "NFR%"
              << std::setw(8) << "PFR%" << std::setw(8) << "NFI%" << std::setw(8) << "BTC%" << std::setw(11)
              << "p(worse)" << "\n";
    for (const auto& s : report.per_group) print_row(std::to_string(s.key), s.counts);
    print_row("all", report.overall);
    const FlipCounts& c = report.overall;
    const Interval nfr_ci = wilson_interval_alpha(c.n10, c.n(), alpha);
    const McNemarResult mc = mcnemar_exact(c.n10, c.n01);
    const int level = static_cast<int>(std::lround(100.0 * (1.0 - alpha)));
    std::cout << "\nNFR " << pct(c.nfr()) << "% (" << level << "% Wilson CI " << pct(nfr_ci.low) << "-"
              << pct(nfr_ci.high) << "%), NFR_mc " << pct(c.nfr_mc()) << "%, churn " << pct(c.churn())
              << "%, relative NFR " << (std::isfinite(c.relative_nfr()) ? std::to_string(c.relative_nfr()) : "-")
              << "\nBEC_new (P(old wrong | new wrong)) " << pct(c.bec_new()) << "%, BEC_old (P(new wrong | old wrong)) "
              << pct(c.bec_old()) << "%\nexact McNemar: p(new worse) " << pval(mc.p_one_sided) << ", two-sided "
              << pval(mc.p_two_sided) << "\n";
    const nlohmann::json body = report.to_json(alpha);
    for (const char* family : {"per_task", "per_class"})
      for (const auto& e : body[family])
        if (e["regression_alarm"].get<bool>())
          std::cout << "regression alarm (Holm, alpha " << alpha << "): "
                    << (std::string(family) == "per_task" ? "task " + std::to_string(e["task"].get<int64_t>())
                                                          : "class " + std::to_string(e["class"].get<int64_t>()))
                    << ", NF " << e["counts"]["n10"].get<int64_t>() << ", PF " << e["counts"]["n01"].get<int64_t>()
                    << ", adjusted p " << pval(e["holm_p_one_sided"].get<double>()) << "\n";
    for (const auto& w : report.warnings()) std::cout << "warning: " << w << "\n";

    std::optional<GateResult> g;
    if (max_nfr) {
      g = gate_check(report, *max_nfr, alpha);
      std::cout << "gate: NFR upper bound " << pct(g->nfr_upper) << "% " << (g->passed ? "<=" : ">") << " max "
                << pct(*max_nfr) << "%: " << (g->passed ? "PASS" : "FAIL") << "\n";
    }

    ReportHeader header{describe(old_src), describe(new_src), eval_set, {}};
    if (!csv_path.empty()) {
      const int64_t rows = write_flips_csv(csv_path, in);
      header.artifacts["flips_csv"] = csv_path;
      std::cout << "wrote " << csv_path << " (" << rows << " flipped items)\n";
    }
    if (!task_svg.empty()) {
      write_task_flips_svg(task_svg, report);
      header.artifacts["task_flips_svg"] = task_svg;
      std::cout << "wrote " << task_svg << "\n";
    }
    if (!heatmap.empty()) {
      const std::vector<int64_t> versions = list_prediction_versions(old_src.path);
      std::vector<torch::Tensor> preds;
      std::vector<std::string> names;
      PredictionTable first;
      for (size_t k = 0; k < versions.size(); ++k) {
        const PredictionTable t = read_prediction_table(old_src.path, versions[k]);
        if (k == 0) first = t;
        preds.push_back(align_by_id(first, t).new_pred);  // every version in version 0's id order
        char buf[16];
        std::snprintf(buf, sizeof buf, "v%03lld", static_cast<long long>(versions[k]));
        names.push_back(buf);
      }
      write_nfr_heatmap_svg(heatmap, nfr_matrix(preds, align_by_id(first, first).labels), names);
      header.artifacts["nfr_heatmap_svg"] = heatmap;
      std::cout << "wrote " << heatmap << " (" << versions.size() << " versions)\n";
    }
    if (!json_path.empty()) {
      write_json(json_path, make_report_json(report, header, alpha, g ? &*g : nullptr));
      std::cout << "wrote " << json_path << "\n";
    }
    return (g && !g->passed) ? 1 : 0;
  } catch (const c10::Error& e) {
    std::cerr << "strata compare: " << e.msg() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "strata compare: " << e.what() << "\n";
    return 2;
  }
}
