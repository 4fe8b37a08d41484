// Training cost of every registered method against `naive` on the same data in one run: the real
// Trainer and method hooks (attach, on_task_start, train_task, on_task_end) on the first tasks of
// permuted Fashion-MNIST, MLP 784-100-100-10 (or the small ViT), per batch size. Each task runs
// `epochs` epochs; epoch 0 warms up and the later ones are timed (EpochStats::seconds, training
// steps only). Methods run in turn, `repeats` rounds, each keeping its best time per task, so all
// of them see the same background load. Prints ms/step per task and the mean's ratio to naive.
// --compat focal,muscle adds every method wrapped in that compatibility training (CompatMethod, as
// `strata train --compat`); those rows time the task's last stage (MUSCLE: stage 2, the one with
// the compatibility loss), and a second table compares them with the method alone over tasks 2..T
// (task 1 has no previous version, so no compatibility term). --clock cpu times the epochs by the
// thread's CPU time instead of wall time, which on a machine shared with other jobs leaves out the
// waits for a core. --ops runs every row once more and lists the LibTorch operator calls per step
// of its last task's timed epochs (bench::OpCounter), by name.
#include "bench/bench_common.h"
#include "continual/compat_training.h"
#include "continual/method.h"
#include "continual/trainer.h"
#include "models/models.h"
#include "tasks/streams.h"

#include <boost/program_options.hpp>

#include <ctime>

#include <algorithm>
#include <iomanip>
#include <iostream>
#include <limits>
#include <map>
#include <optional>
#include <sstream>

namespace po = boost::program_options;
using namespace strata;

namespace {

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string x; std::getline(ss, x, ',');)
    if (!x.empty()) out.push_back(x);
  return out;
}

// ms/step per task of one method run; empty when the method failed (message in `error`).
// `compat_mode`: none | focal | muscle (the method wrapped by continual::with_compat_training).
// `cpu_clock`: time the epochs by thread CPU time instead of the Trainer's wall time.
// `ops` (optional) counts the operator calls of the last task's timed steps; `ops_steps` their number.
std::vector<double> run_method(const std::string& method_name, const std::string& compat_mode, tasks::TaskStream& stream,
                               const models::ModelOptions& mo, int64_t bs, int64_t epochs, bool cpu_clock,
                               std::string& error, bench::OpCounter* ops = nullptr, int64_t* ops_steps = nullptr) {
  torch::manual_seed(0);
  auto model = models::make_model(mo);
  std::unique_ptr<continual::Method> method;
  try {
    // "coso:refresh=exact:gap=2" = method coso with those options.
    auto parts = method_name;
    std::map<std::string, std::string> values;
    const auto colon = parts.find(':');
    const std::string name = parts.substr(0, colon);
    if (colon != std::string::npos) {
      std::stringstream ss(parts.substr(colon + 1));
      for (std::string kv; std::getline(ss, kv, ':');) {
        const auto eq = kv.find('=');
        values[kv.substr(0, eq)] = eq == std::string::npos ? "" : kv.substr(eq + 1);
      }
    }
    method = continual::builtin_methods().make(continual::MethodConfig(name, values));
    continual::CompatTrainingOptions co;
    co.loss().mode(compat::compat_mode_from_string(compat_mode));
    method = continual::with_compat_training(std::move(method), co);
  } catch (const std::exception& e) {
    error = e.what();
    return {};
  }
  continual::TrainOptions opt;
  opt.lr(0.01).batch_size(bs).epochs(epochs).seed(1);
  std::vector<double> ms;
  try {
    method->attach(model);
    for (int64_t t = 0; t < stream.size(); ++t) {
      continual::TaskContext ctx;
      ctx.model = model;
      ctx.stream = &stream;
      ctx.task_index = t;
      ctx.train = &opt;
      method->on_task_start(ctx);
      double seconds = 0;
      int64_t steps = 0;
      // The stages as the Runner runs them; only the last one is timed.
      std::optional<continual::TrainOptions> stage_options = opt;
      for (int64_t stage = 0; stage_options; stage_options = method->next_stage(ctx, ++stage)) {
        ctx.stage = stage;
        seconds = 0;
        steps = 0;
        double cpu_start = 0;
        continual::train_task(ctx, *method, *stage_options, [&](const continual::EpochStats& s) {
          if (s.epoch == 0) {
            if (ops && t + 1 == stream.size()) {
              ops->reset();
              ops->on();
            }
            cpu_start = bench::thread_cpu_seconds();
            return;
          }
          seconds = cpu_clock ? bench::thread_cpu_seconds() - cpu_start : seconds + s.seconds;
          steps += s.steps;
        });
        if (ops) ops->off();
      }
      if (ops_steps) *ops_steps = steps;
      method->on_task_end(ctx);
      ms.push_back(1e3 * seconds / std::max<int64_t>(1, steps));
    }
  } catch (const std::exception& e) {
    error = e.what();
    error = error.substr(0, error.find('\n'));
    return {};
  }
  return ms;
}

}  // namespace

int main(int argc, char** argv) {
  po::options_description desc("methods_bench options");
  desc.add_options()("help,h", "this help")
      ("threads", po::value<int>()->default_value(1), "torch threads")
      ("arch", po::value<std::string>()->default_value("mlp"), "model: mlp (784-100-100-10, no bias) | vit")
      ("methods", po::value<std::string>()->default_value(""),
       "comma-separated methods ('' = every registered one); name:key=value:... sets options")
      ("batches", po::value<std::string>()->default_value("10,256"), "batch sizes")
      ("tasks", po::value<int64_t>()->default_value(3), "tasks of the stream")
      ("examples", po::value<int64_t>()->default_value(3000), "training examples per task")
      ("epochs", po::value<int64_t>()->default_value(2), "epochs per task (epoch 0 is not timed)")
      ("repeats", po::value<int>()->default_value(1), "rounds over all methods; each keeps its best")
      ("clock", po::value<std::string>()->default_value("wall"),
       "wall (the Trainer's epoch times) | cpu (thread CPU time: steadier on a shared machine)")
      ("compat", po::value<std::string>()->default_value(""),
       "also run every method wrapped in these compatibility trainings (comma-separated: focal, muscle)")
      ("ops", po::bool_switch(), "also list each row's operator calls per step (last task), by name")
      ("data-dir", po::value<std::string>()->default_value("/usr/share/datasets/fashion-mnist"), "Fashion-MNIST folder");
  po::variables_map vm;
  if (const int rc = bench::parse_options(argc, argv, desc, "methods_bench", vm); rc >= 0) return rc;
  const bool list_ops = vm["ops"].as<bool>();
  bench::set_blas_threads(vm["threads"].as<int>());
  const int64_t epochs = vm["epochs"].as<int64_t>();
  if (epochs < 2) {
    std::cerr << "methods_bench: --epochs must be >= 2 (epoch 0 is the warm-up), got " << epochs << "\n";
    return 2;
  }
  std::vector<std::string> methods = split(vm["methods"].as<std::string>());
  if (methods.empty()) methods = continual::builtin_methods().names();
  methods.erase(std::remove(methods.begin(), methods.end(), "naive"), methods.end());
  methods.insert(methods.begin(), "naive");
  const std::string clock = vm["clock"].as<std::string>();
  if (clock != "wall" && clock != "cpu") {
    std::cerr << "methods_bench: --clock must be wall or cpu, got " << clock << "\n";
    return 2;
  }
  // Rows: (label, method, compat mode); a wrapped method follows its plain row.
  struct Row {
    std::string label, method, compat;
  };
  std::vector<Row> rows;
  const std::vector<std::string> compat_modes = split(vm["compat"].as<std::string>());
  for (const auto& m : methods) {
    rows.push_back({m, m, "none"});
    for (const auto& c : compat_modes) rows.push_back({m + " +" + c, m, c});
  }

  tasks::StreamOptions so;
  so.name("permuted-fmnist")
      .num_tasks(vm["tasks"].as<int64_t>())
      .val_fraction(0)
      .train_limit(vm["examples"].as<int64_t>())
      .seed(2)
      .data_dir(vm["data-dir"].as<std::string>());
  tasks::TaskStream stream = tasks::make_stream(so);
  const std::string arch = vm["arch"].as<std::string>();
  models::ModelOptions mo;
  mo.arch(arch).input_shape(stream.input_shape).num_classes(stream.num_classes);
  if (arch == "mlp") mo.hidden({100, 100}).bias(false);

  const int64_t T = stream.size();
  for (int64_t bs : [&] {
         std::vector<int64_t> b;
         for (const auto& s : split(vm["batches"].as<std::string>())) b.push_back(std::stoll(s));
         return b;
       }()) {
    std::map<std::string, std::vector<double>> best;
    std::map<std::string, std::string> errors;
    for (int rep = 0; rep < vm["repeats"].as<int>(); ++rep) {
      for (const auto& row : rows) {
        const std::string& m = row.label;
        std::string error;
        auto ms = run_method(row.method, row.compat, stream, mo, bs, epochs, clock == "cpu", error);
        if (ms.empty()) {
          errors[m] = error;
          continue;
        }
        auto& b = best[m];
        if (b.empty()) b.assign(T, std::numeric_limits<double>::infinity());
        for (int64_t t = 0; t < T; ++t) b[t] = std::min(b[t], ms[t]);
        std::cerr << "methods_bench: " << arch << " batch " << bs << " " << m << " done\n";
      }
    }
    auto mean = [](const std::vector<double>& v) {
      double s = 0;
      for (double x : v) s += x;
      return v.empty() ? 0.0 : s / v.size();
    };
    const double naive = best.count("naive") ? mean(best["naive"]) : 0.0;
    std::cout << "\n" << arch << ", batch " << bs << ", " << so.train_limit() << " examples/task, threads "
              << vm["threads"].as<int>() << " (ms/step, " << clock << " clock; best of " << vm["repeats"].as<int>()
              << ")\n\n";
    std::cout << "| method |";
    for (int64_t t = 0; t < T; ++t) std::cout << " task " << t + 1 << " |";
    std::cout << " mean | x naive |\n|---|";
    for (int64_t t = 0; t <= T + 1; ++t) std::cout << "---:|";
    std::cout << "\n" << std::fixed;
    for (const auto& row : rows) {
      const std::string& m = row.label;
      std::cout << "| " << m << " |";
      if (!best.count(m)) {
        std::cout << " failed: " << errors[m] << " |\n";
        continue;
      }
      for (double v : best[m]) std::cout << " " << std::setprecision(3) << v << " |";
      std::cout << " " << std::setprecision(3) << mean(best[m]) << " | " << std::setprecision(2)
                << (naive > 0 ? mean(best[m]) / naive : 0.0) << " |\n";
    }
    if (list_ops) {
      bench::OpCounter ops(true);  // after the timed rounds: its callback slows every operator
      for (const auto& row : rows) {
        std::string error;
        int64_t steps = 0;
        if (run_method(row.method, row.compat, stream, mo, bs, epochs, false, error, &ops, &steps).empty()) continue;
        std::cout << "\n" << row.label << ", batch " << bs << ", task " << T << ": " << std::setprecision(1)
                  << static_cast<double>(ops.calls()) / std::max<int64_t>(1, steps) << " operator calls per step\n";
        ops.print_by_name(std::cout, static_cast<double>(std::max<int64_t>(1, steps)));
      }
    }
    if (compat_modes.empty() || T < 2) continue;
    // The wrapper's cost: tasks 2..T only (task 1 trains without a previous version).
    auto mean_from_2 = [&](const std::vector<double>& v) {
      return mean(std::vector<double>(v.begin() + 1, v.end()));
    };
    std::cout << "\ncompatibility training against the method alone, tasks 2.." << T << " (ms/step)\n\n| method |";
    for (const auto& c : compat_modes) std::cout << " " << c << " ms | x method |";
    std::cout << "\n|---|";
    for (size_t i = 0; i < compat_modes.size(); ++i) std::cout << "---:|---:|";
    std::cout << "\n";
    for (const auto& m : methods) {
      if (!best.count(m)) continue;
      const double alone = mean_from_2(best[m]);
      std::cout << "| " << m << " (" << std::setprecision(3) << alone << ") |";
      for (const auto& c : compat_modes) {
        const std::string label = m + " +" + c;
        if (!best.count(label)) {
          std::cout << " failed | |";
          continue;
        }
        const double wrapped = mean_from_2(best[label]);
        std::cout << " " << std::setprecision(3) << wrapped << " | " << std::setprecision(2) << wrapped / alone << " |";
      }
      std::cout << "\n";
    }
  }
  return 0;
}
