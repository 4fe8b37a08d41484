// strata train: runs a method over a task stream and writes a run folder.
#include "continual/runner.h"
#include "tools/commands.h"

#include <iostream>

namespace po = boost::program_options;
using namespace strata::continual;

int strata_cmd_train(int argc, char** argv) {
  try {
    po::variables_map vm;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        std::cout << "usage: strata train [options]\n\nTrains a model over a task stream with a continual-learning"
                     " method and writes runs/NAME/ (config.ini, report.json, metrics.csv).\n"
                  << run_options() << "\n";
        return 0;
      }
    }
    RunConfig config = parse_run_config(argc, argv, &vm);
    torch::set_num_threads(static_cast<int>(config.threads));
    Runner runner(config);
    const auto metrics = runner.run();
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
