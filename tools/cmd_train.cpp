// strata train: runs a method over a task stream and writes a run folder.
#include "run/runner.h"
#include "tools/commands.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <iomanip>
#include <iostream>

namespace po = boost::program_options;
using namespace strata::run;
using strata::continual::builtin_methods;

namespace {

// `--resume DIR`: the configuration is DIR/config.ini (same seed, threads, everything); only
// --quiet may be added. The run folder is DIR wherever it now lives.
RunConfig resume_config(const po::variables_map& vm) {
  namespace fs = std::filesystem;
  std::string dir = vm["resume"].as<std::string>();
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  for (const auto& [key, value] : vm)
    TORCH_CHECK(key == "resume" || key == "quiet" || value.defaulted(), "--resume takes every option from '", dir,
                "/config.ini'; --", key, " cannot be combined with it");
  TORCH_CHECK(fs::is_directory(dir), "--resume: no run folder '", dir, "'");
  TORCH_CHECK(fs::is_regular_file(dir + "/config.ini"), "--resume: '", dir, "' has no config.ini (not a run folder)");
  RunConfig c = read_run_config(dir + "/config.ini");
  const fs::path p(dir);
  c.name = p.filename().string();
  c.out = p.has_parent_path() ? p.parent_path().string() : ".";
  c.quiet = c.quiet || (vm.count("quiet") && vm["quiet"].as<bool>());
  return c;
}

}  // namespace

int strata_cmd_train(int argc, char** argv) {
  try {
    po::variables_map vm;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        std::cout << "usage: strata train [options]\n\nTrains a model over a task stream with a continual-learning"
                     " method and writes runs/NAME/ (config.ini, report.json, metrics.csv,\n"
                     "versions/vNNN.h5, predictions.h5). --resume runs/NAME continues an interrupted run.\n"
                  << run_options() << "\n";
        return 0;
      }
    }
    RunConfig config = parse_run_config(argc, argv, builtin_methods(), &vm);
    const bool resume = vm.count("resume") > 0;
    if (resume) config = resume_config(vm);
    torch::set_num_threads(static_cast<int>(config.threads));
    Runner runner(config);
    // Log lines on stderr; on a terminal, a progress line redrawn at most five times a second.
    const bool tty = ::isatty(2) != 0;
    if (!config.quiet) {
      runner.on_log = [tty](const std::string& line) { std::cerr << (tty ? "\r\033[K" : "") << line << "\n"; };
      if (tty) {
        auto last = std::chrono::steady_clock::now();
        runner.on_progress = [last](const Progress& p) mutable {
          const auto now = std::chrono::steady_clock::now();
          if (std::chrono::duration<double>(now - last).count() < 0.2 && p.step != p.steps) return;
          last = now;
          std::cerr << "\r\033[Ktask " << p.task + 1 << "/" << p.num_tasks;
          if (p.stage > 0) std::cerr << " stage " << p.stage + 1;
          std::cerr << " epoch " << p.epoch + 1 << "/" << p.epochs << "  step " << p.step << "/" << p.steps
                    << "  loss " << std::fixed << std::setprecision(4) << p.loss << std::flush;
        };
      }
    }
    const auto metrics = resume ? runner.resume() : runner.run();
    std::cout << runner.summary();
    std::cout << "run folder: " << runner.config().run_dir() << "\n";
    (void)metrics;
    return 0;
  } catch (const c10::Error& e) {
    std::cerr << "strata train: " << e.msg() << "\n";
  } catch (const po::error& e) {
    std::cerr << "strata train: " << e.what() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "strata train: " << e.what() << "\n";
  }
  return 1;
}

int strata_cmd_methods(int argc, char** argv) {
  const auto& reg = builtin_methods();
  for (const auto& name : reg.names()) {
    const auto& info = reg.get(name);
    std::cout << name << "  " << info.summary << "\n";
    for (const auto& o : info.options)
      std::cout << "    --" << name << "." << o.key << " (default " << o.default_value << ")  " << o.help << "\n";
  }
  return 0;
}
