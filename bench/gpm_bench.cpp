// The GPM protocol end to end, Strata's Runner against the plain PyTorch loop in
// bench/gpm_bench.py (same stream, seeds, thread count and batch), alternating C++ and Python
// rounds in one run so both see the same background load; each side keeps its best time.
// Reports seconds, ACC and the time ratio. Defaults are the full protocol (10 tasks x 5 epochs,
// 270 000 steps); --tasks / --train-limit give a shorter one.
#include "bench/bench_common.h"
#include "run/config.h"
#include "run/runner.h"

#include <boost/program_options.hpp>

#include <chrono>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <limits>

namespace po = boost::program_options;
namespace fs = std::filesystem;
using namespace strata;

int main(int argc, char** argv) {
  po::options_description desc("gpm_bench options");
  desc.add_options()("help,h", "this help")
      ("threads", po::value<int>()->default_value(1), "threads (both sides)")
      ("tasks", po::value<int>()->default_value(10), "tasks")
      ("epochs", po::value<int>()->default_value(5), "epochs per task")
      ("train-limit", po::value<int>()->default_value(0), "training examples per task (0 = all)")
      ("repeats", po::value<int>()->default_value(1), "alternating rounds; each side keeps its best")
      ("python", po::value<std::string>()->default_value("/usr/bin/python3"), "python with torch ('' = skip)")
      ("script", po::value<std::string>()->default_value(STRATA_BENCH_DIR "/gpm_bench.py"), "reference loop")
      ("data-dir", po::value<std::string>()->default_value("/usr/share/datasets/fashion-mnist"), "Fashion-MNIST folder");
  po::variables_map vm;
  if (const int rc = bench::parse_options(argc, argv, desc, "gpm_bench", vm); rc >= 0) return rc;
  const int threads = vm["threads"].as<int>();
  bench::set_blas_threads(threads);
  const std::string common = " --tasks " + std::to_string(vm["tasks"].as<int>()) + " --epochs " +
                             std::to_string(vm["epochs"].as<int>()) + " --train-limit " +
                             std::to_string(vm["train-limit"].as<int>()) + " --batch-size 10 --lr 0.01 --seed 2";
  const fs::path out = fs::temp_directory_path() / ("strata_gpm_bench_" + std::to_string(::getpid()));
  double cpp_best = std::numeric_limits<double>::infinity(), py_best = cpp_best, cpp_acc = 0, py_acc = 0;
  for (int rep = 0; rep < vm["repeats"].as<int>(); ++rep) {
    {
      // The same options `strata train` parses (the run folder goes to a temporary directory).
      std::istringstream ss("train" + common + " --stream permuted-fmnist --method gpm --quiet --threads " +
                            std::to_string(threads) + " --data-dir " + vm["data-dir"].as<std::string>() + " --out " +
                            out.string() + " --name round" + std::to_string(rep));
      std::vector<std::string> args;
      for (std::string a; ss >> a;) args.push_back(a);
      std::vector<const char*> argv2;
      for (const auto& a : args) argv2.push_back(a.c_str());
      try {
        const auto t0 = std::chrono::steady_clock::now();
        run::Runner runner(run::parse_run_config(static_cast<int>(argv2.size()), argv2.data()));
        const auto m = runner.run();
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        cpp_best = std::min(cpp_best, s);
        cpp_acc = 100 * m.acc;
        std::cout << "strata gpm seconds=" << std::fixed << std::setprecision(3) << s << " acc=" << std::setprecision(2)
                  << cpp_acc << std::endl;
      } catch (const std::exception& e) {
        std::cerr << "gpm_bench: strata run failed: " << e.what() << "\n";
        return 1;
      }
      fs::remove_all(out);
    }
    if (vm["python"].as<std::string>().empty()) continue;
    bench::run_reference(vm["python"].as<std::string>() + " " + vm["script"].as<std::string>() + common +
                             " --threads " + std::to_string(threads) + " --data-dir " + vm["data-dir"].as<std::string>(),
                         threads, [&](const std::map<std::string, double>& f) {
                           if (!f.count("seconds")) return;
                           py_best = std::min(py_best, f.at("seconds"));
                           py_acc = f.count("acc") ? f.at("acc") : 0;
                         });
  }
  std::cout << "\nGPM protocol" << common << ", threads " << threads << " (best of " << vm["repeats"].as<int>()
            << "; strata times the whole Runner: stream, training, evaluation, run folder)\n"
            << std::fixed << std::setprecision(1) << "strata " << cpp_best << " s  ACC " << std::setprecision(2)
            << cpp_acc << " %\n";
  if (py_best < std::numeric_limits<double>::infinity())
    std::cout << std::setprecision(1) << "python " << py_best << " s  ACC " << std::setprecision(2) << py_acc
              << " %\nratio python/strata " << py_best / cpp_best << "x\n";
  return 0;
}
