// strata compare: paired flip analysis of two model versions, and the release gate a CI job runs
// (exit 0 pass, 1 gate failed, 2 bad input).
#include "compat/flips.h"
#include "compat/gate.h"
#include "compat/predictions.h"
#include "compat/report.h"
#include "compat/stats.h"
#include "run/config.h"
#include "run/runner.h"
#include "tools/commands.h"

#include <boost/program_options.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>

namespace po = boost::program_options;
using namespace strata::compat;

namespace {

const char* kUsage =
    "usage: strata compare OLD NEW [options]\n"
    "       strata compare PREDICTIONS.h5 --old-version N --new-version M [options]\n"
    "       strata compare runs/X/versions/vNNN.h5 runs/X/versions/vMMM.h5 [options]\n"
    "       strata compare old.csv new.csv [options]      (or .jsonl: predictions of any model)\n\n"
    "Compares two model versions on the same labelled items and gates the release of the new one.\n"
    "Items are joined by id, or by (task, id) when there is a task column; missing, duplicate or\n"
    "relabelled items are errors. Prints NF/PF and the flip metrics per task and overall, which tasks and\n"
    "items were scored, and one PASS/FAIL line per gate rule.\n\n"
    "OLD, NEW       PATH:vNNN (e.g. runs/a/predictions.h5:v003; 'PATH:3' also works), a predictions.h5\n"
    "               with --old-version/--new-version (NEW defaults to OLD's file), two versions/vNNN.h5\n"
    "               files (re-evaluated on the stream stored in them), or two CSV/JSONL ledgers with\n"
    "               columns id,label,pred[,prob][,task] (CSV needs a header line)\n"
    "scored items   by default the tasks the OLDER version was trained on (version v = trained on tasks\n"
    "               0..v); ledgers without versions: every item. --tasks chooses.\n\n"
    "exit status: 0 compared and every gate rule passed, 1 a gate rule failed, 2 bad input.\n";

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

// "0,2,5-7" -> {0, 2, 5, 6, 7} (sorted, unique). Throws naming the option.
std::vector<int64_t> parse_list(const std::string& option, const std::string& text) {
  std::vector<int64_t> out;
  std::stringstream ss(text);
  std::string item;
  auto number = [&](const std::string& s) {
    const auto v = parse_version("v" + s);
    if (!v || s.empty()) throw std::invalid_argument("--" + option + " expects a list like 0,1 or 0-2, got '" + text + "'");
    return *v;
  };
  while (std::getline(ss, item, ',')) {
    const size_t dash = item.find('-');
    if (dash == std::string::npos) {
      out.push_back(number(item));
    } else {
      const int64_t a = number(item.substr(0, dash)), b = number(item.substr(dash + 1));
      if (b < a) throw std::invalid_argument("--" + option + ": empty range '" + item + "'");
      for (int64_t k = a; k <= b; ++k) out.push_back(k);
    }
  }
  if (out.empty()) throw std::invalid_argument("--" + option + " expects a list like 0,1 or 0-2, got '" + text + "'");
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::string join(const std::vector<int64_t>& v) {
  std::string s;
  for (int64_t x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
  return s.empty() ? "none" : s;
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
  if (!s.version) return s.path;
  char buf[32];
  std::snprintf(buf, sizeof buf, ":v%03lld", static_cast<long long>(*s.version));
  return s.path + buf;
}

std::string vname(int64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "v%03lld", static_cast<long long>(v));
  return buf;
}

std::optional<double> fraction(const po::variables_map& vm, const std::string& name) {
  if (!vm.count(name)) return std::nullopt;
  const double v = vm[name].as<double>();
  if (!(std::isfinite(v) && v >= 0.0 && v <= 1.0))
    throw std::invalid_argument("--" + name + " must be a fraction in [0, 1], got " + std::to_string(v));
  return v;
}

int64_t count_rows(const PredictionTable& t) { return t.ids.defined() ? t.ids.size(0) : 0; }

}  // namespace

int strata_cmd_compare(int argc, char** argv) {
  try {
    po::options_description opts("options");
    // clang-format off
    opts.add_options()
      ("help,h", "print this help")
      ("old-version", po::value<std::string>()->value_name("N"), "version of OLD when it has no ':vNNN' suffix")
      ("new-version", po::value<std::string>()->value_name("M"), "version of NEW when it has no ':vNNN' suffix")
      ("tasks", po::value<std::string>()->value_name("LIST"), "tasks to score, e.g. 0,1 or 0-2, or 'all' (default: the tasks the older version was trained on)")
      ("alpha", po::value<double>()->default_value(0.05, "0.05")->value_name("A"), "level of every interval, bound and test, and the gate's error rate")
      ("max-nfr", po::value<double>()->value_name("X"), "gate: fail if the one-sided (1-alpha) Wilson upper bound of NF/N exceeds this")
      ("allow-regressions", po::bool_switch(), "gate: do not fail on per-task/per-class regression alarms (Holm-adjusted one-sided exact McNemar); they fail the gate by default")
      ("max-acc-drop", po::value<double>()->value_name("X"), "gate: fail if the one-sided (1-alpha) upper bound of acc_old - acc_new (Tango's paired score interval) exceeds this")
      ("max-nfi", po::value<double>()->value_name("X"), "gate: fail if the one-sided Wilson upper bound of NF/(new model's errors) exceeds this")
      ("protect-tasks", po::value<std::string>()->value_name("LIST"), "gate: tasks with their own NFR budget (--protected-max-nfr), e.g. 0,1")
      ("protect-classes", po::value<std::string>()->value_name("LIST"), "gate: classes with their own NFR budget (--protected-max-nfr)")
      ("protected-max-nfr", po::value<double>()->value_name("X"), "gate: NFR budget (Wilson upper bound of NF/N within the slice) of each protected task/class")
      ("json", po::value<std::string>()->value_name("PATH"), "write compat_report.json (schema strata-compat-report/1)")
      ("csv", po::value<std::string>()->value_name("PATH"), "write the flipped items (NF, PF, wrong->other wrong), confident NF first")
      ("task-svg", po::value<std::string>()->value_name("PATH"), "write a per-task PF/NF bar chart (SVG)")
      ("heatmap", po::value<std::string>()->value_name("PATH"), "write the version x version NFR heatmap of every version in OLD's predictions.h5 (SVG)");
    // clang-format on
    po::options_description all;
    all.add(opts).add_options()("inputs", po::value<std::vector<std::string>>(), "OLD NEW");
    po::positional_options_description pos;
    pos.add("inputs", 2);
    po::variables_map vm;
    try {
      for (int i = 1; i < argc; ++i) strata::run::reject_option_placeholders(argv[i], "command line");
      po::store(po::command_line_parser(argc, argv).options(all).positional(pos).run(), vm);
      po::notify(vm);
    } catch (const po::error& e) {
      std::cerr << "strata compare: " << e.what() << " (see strata compare --help)\n";
      return 2;
    } catch (const c10::Error& e) {
      std::cerr << "strata compare: " << e.what_without_backtrace() << "\n";
      return 2;
    }
    if (vm.count("help")) {
      std::cout << kUsage << "\n" << opts << "\n";
      return 0;
    }

    const std::vector<std::string> positional =
        vm.count("inputs") ? vm["inputs"].as<std::vector<std::string>>() : std::vector<std::string>{};
    if (positional.empty())
      throw std::invalid_argument("expected OLD and NEW (or one predictions.h5 with --old-version/--new-version)");
    const double alpha = vm["alpha"].as<double>();
    if (!(alpha > 0.0 && alpha < 1.0))
      throw std::invalid_argument("--alpha must be in (0, 1), got " + std::to_string(alpha));
    GateOptions gate_options;
    gate_options.alpha(alpha)
        .max_nfr(fraction(vm, "max-nfr"))
        .allow_regressions(vm["allow-regressions"].as<bool>())
        .max_acc_drop(fraction(vm, "max-acc-drop"))
        .max_nfi(fraction(vm, "max-nfi"))
        .protected_max_nfr(fraction(vm, "protected-max-nfr"));
    if (vm.count("protect-tasks")) gate_options.protect_tasks(parse_list("protect-tasks", vm["protect-tasks"].as<std::string>()));
    if (vm.count("protect-classes"))
      gate_options.protect_classes(parse_list("protect-classes", vm["protect-classes"].as<std::string>()));
    const bool any_protected = !gate_options.protect_tasks().empty() || !gate_options.protect_classes().empty();
    if (any_protected && !gate_options.protected_max_nfr())
      throw std::invalid_argument("--protect-tasks/--protect-classes need --protected-max-nfr");
    if (!any_protected && gate_options.protected_max_nfr())
      throw std::invalid_argument("--protected-max-nfr needs --protect-tasks or --protect-classes");
    auto str = [&](const char* name) { return vm.count(name) ? vm[name].as<std::string>() : std::string(); };
    const std::string json_path = str("json"), csv_path = str("csv"), task_svg = str("task-svg"), heatmap = str("heatmap");
    std::optional<std::vector<int64_t>> requested_tasks;
    if (vm.count("tasks") && str("tasks") != "all") requested_tasks = parse_list("tasks", str("tasks"));
    const bool all_tasks = str("tasks") == "all";

    Source old_src = parse_source(positional[0]);
    Source new_src = positional.size() == 2 ? parse_source(positional[1]) : Source{old_src.path, std::nullopt};
    for (auto [flag, src, name] : {std::make_tuple("old-version", &old_src, "OLD"),
                                   std::make_tuple("new-version", &new_src, "NEW")}) {
      if (!vm.count(flag)) continue;
      const auto v = parse_version(vm[flag].as<std::string>());
      if (!v) throw std::invalid_argument(std::string("--") + flag + " expects a version number, got '" +
                                          vm[flag].as<std::string>() + "'");
      if (src->version && *src->version != *v)
        throw std::invalid_argument(std::string(name) + " names version " + std::to_string(*src->version) + " but --" +
                                    flag + " is " + std::to_string(*v));
      src->version = v;
    }
    const bool old_ledger = is_ledger_file(old_src.path), new_ledger = is_ledger_file(new_src.path);
    for (const Source* s : {&old_src, &new_src})
      if (is_ledger_file(s->path) && s->version)
        throw std::invalid_argument("'" + s->path + "' is a CSV/JSONL ledger of one model: it takes no version");
    const bool version_files = positional.size() == 2 && !old_src.version && !new_src.version &&
                               is_version_file(old_src.path) && is_version_file(new_src.path);

    // ---- what to score ----
    PredictionTable old_table, new_table;
    std::vector<int64_t> tasks;  // empty: every item (ledgers without a task column)
    std::string rule;
    std::optional<int64_t> older;
    if (version_files) {
      if (!heatmap.empty()) throw std::invalid_argument("--heatmap needs a predictions.h5, not version files");
      old_src.version = strata::run::version_file_number(old_src.path);
      new_src.version = strata::run::version_file_number(new_src.path);
      if (all_tasks) throw std::invalid_argument("--tasks all needs prediction files; give the task list for version files");
    }
    if (!old_ledger && !old_src.version) throw std::invalid_argument("no version for OLD: use PATH:vNNN or --old-version N");
    if (!new_ledger && !new_src.version) throw std::invalid_argument("no version for NEW: use PATH:vNNN or --new-version M");
    for (const Source* s : {&old_src, &new_src})
      if (s->version) older = older ? std::min(*older, *s->version) : *s->version;

    if (requested_tasks) {
      tasks = *requested_tasks;
      rule = "chosen with --tasks";
    } else if (all_tasks) {
      rule = "every task in both files (--tasks all)";
    } else if (older) {
      tasks = tasks_trained_by(*older);
      rule = "the tasks the older version (" + vname(*older) + ") was trained on";
    } else {
      rule = "every item in both files";
    }

    if (version_files) {
      const int64_t last = *std::max_element(tasks.begin(), tasks.end());
      old_table = select_tasks(strata::run::evaluate_version_file(old_src.path, last), tasks);
      new_table = select_tasks(strata::run::evaluate_version_file(new_src.path, last), tasks);
      rule += "; re-evaluated from the version files";
    } else {
      old_table = old_ledger ? read_ledger_file(old_src.path) : read_predictions(old_src.path, *old_src.version);
      new_table = new_ledger ? read_ledger_file(new_src.path) : read_predictions(new_src.path, *new_src.version);
    }
    std::vector<int64_t> excluded_tasks;
    int64_t excluded_items = 0;
    if (!tasks.empty() && !version_files) {
      const std::pair<const PredictionTable*, std::string> sides[] = {{&old_table, describe(old_src)},
                                                                      {&new_table, describe(new_src)}};
      for (const auto& [t, name] : sides) {
        if (!t->tasks.defined())
          throw std::invalid_argument("'" + name + "' has no task column, so tasks " + join(tasks) +
                                      " cannot be selected" + (requested_tasks ? "" : " (drop --tasks or add a task column)"));
        const auto present = table_tasks(*t);
        for (int64_t k : tasks)
          if (!std::binary_search(present.begin(), present.end(), k))
            throw std::invalid_argument("'" + name + "' has no predictions for task " + std::to_string(k) +
                                        " (tasks present: " + join(present) + ")");
      }
      for (int64_t k : table_tasks(old_table))
        if (!std::binary_search(tasks.begin(), tasks.end(), k)) excluded_tasks.push_back(k);
      const int64_t before = count_rows(old_table);
      old_table = select_tasks(old_table, tasks);
      new_table = select_tasks(new_table, tasks);
      excluded_items = before - count_rows(old_table);
    }
    const FlipInputs in = align_by_id(old_table, new_table, "OLD '" + describe(old_src) + "'", "NEW '" + describe(new_src) + "'");
    if (in.labels.size(0) == 0) throw std::invalid_argument("no items to score");
    const FlipReport report = compare_predictions(in);
    const GateResult gate = evaluate_gate(report, gate_options);  // before any output: bad gate input is exit 2
    const FlipCounts& c = report.overall;
    const std::vector<int64_t> scored_tasks = in.groups.defined() ? table_tasks({in.ids, in.labels, in.old_pred, {}, in.groups})
                                                                  : std::vector<int64_t>{};

    // ---- text report ----
    std::cout << "old: " << describe(old_src) << "\nnew: " << describe(new_src) << "\n";
    std::cout << "scored: " << c.n() << " items"
              << (scored_tasks.empty() ? std::string() : ", tasks " + join(scored_tasks)) << " (" << rule << ")";
    if (!excluded_tasks.empty())
      std::cout << "; not scored: tasks " << join(excluded_tasks) << " (" << excluded_items << " items)";
    std::cout << "\n";
    if (older && requested_tasks)
      for (int64_t k : tasks)
        if (k > *older) {
          std::cout << "note: task " << k << " is beyond what " << vname(*older)
                    << " was trained on (tasks 0.." << *older << "): its positive flips are not compatibility\n";
          break;
        }
    std::cout << "\n" << std::left << std::setw(8) << "task" << std::right << std::setw(8) << "N" << std::setw(9)
              << "acc_old%" << std::setw(9) << "acc_new%" << std::setw(7) << "NF" << std::setw(7) << "PF"
              << std::setw(8) << "NFR%" << std::setw(8) << "PFR%" << std::setw(8) << "NFI%" << std::setw(8) << "BTC%"
              << std::setw(11) << "p(worse)" << "\n";
    for (const auto& s : report.per_group) print_row(std::to_string(s.key), s.counts);
    print_row("all", c);
    const Interval nfr_ci = wilson_interval_alpha(c.n10, c.n(), alpha);
    const McNemarResult mc = mcnemar_exact(c.n10, c.n01);
    const int level = static_cast<int>(std::lround(100.0 * (1.0 - alpha)));
    std::cout << "\nNFR " << pct(c.nfr()) << "% (" << level << "% Wilson CI " << pct(nfr_ci.low) << "-"
              << pct(nfr_ci.high) << "%), NFR_mc " << pct(c.nfr_mc()) << "%, churn " << pct(c.churn())
              << "%, relative NFR " << (std::isfinite(c.relative_nfr()) ? std::to_string(c.relative_nfr()) : "-")
              << "\nBEC_new (P(old wrong | new wrong)) " << pct(c.bec_new()) << "%, BEC_old (P(new wrong | old wrong)) "
              << pct(c.bec_old()) << "%\nexact McNemar: p(new worse) " << pval(mc.p_one_sided) << ", two-sided "
              << pval(mc.p_two_sided) << "\n";
    for (const auto& w : report.warnings()) std::cout << "warning: " << w << "\n";

    std::cout << "\n";
    for (const auto& r : gate.rules)
      std::cout << "gate " << r.name << ": " << (r.passed ? "PASS" : "FAIL") << ": " << r.reason << "\n";
    const auto failed = gate.failed();
    std::cout << "gate: " << (gate.passed ? "PASS" : "FAIL");
    if (!failed.empty()) {
      std::cout << " (failed:";
      for (const auto& f : failed) std::cout << " " << f;
      std::cout << ")";
    }
    std::cout << "\n";

    ReportHeader header{describe(old_src), describe(new_src), {}, {}};
    header.eval_set = (scored_tasks.empty() ? std::string("all items") : "tasks " + join(scored_tasks)) + ": " + rule;
    header.scored = {{"tasks", scored_tasks}, {"items", c.n()}, {"rule", rule},
                     {"excluded_tasks", excluded_tasks}, {"excluded_items", excluded_items}};
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
      if (old_ledger) throw std::invalid_argument("--heatmap needs OLD to be a predictions.h5 (it plots every version in it)");
      const StreamMatrix m = stream_nfr_matrix(read_predictions(old_src.path));
      std::vector<std::string> names;
      for (int64_t v : m.versions) names.push_back(vname(v));
      write_nfr_heatmap_svg(heatmap, m.nfr, names);
      header.artifacts["nfr_heatmap_svg"] = heatmap;
      std::cout << "wrote " << heatmap << " (" << m.versions.size()
                << " versions; each cell on the tasks the older of its two versions was trained on)\n";
    }
    if (!json_path.empty()) {
      write_json(json_path, make_report_json(report, header, alpha, &gate));
      std::cout << "wrote " << json_path << "\n";
    }
    return gate.passed ? 0 : 1;
  } catch (const c10::Error& e) {
    std::cerr << "strata compare: " << e.msg() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "strata compare: " << e.what() << "\n";
    return 2;
  }
}
