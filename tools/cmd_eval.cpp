// strata eval: evaluates a stored model version (runs/NAME/versions/vNNN.h5) on a task stream.
// The model, method and stream come from the config stored in the file; stream options (and
// --threads, --eval-batch-size) can be overridden on the command line.
#include "checkpoints/version_store.h"
#include "run/runner.h"
#include "tools/commands.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <set>

namespace po = boost::program_options;
namespace fs = std::filesystem;
using namespace strata;

namespace {

const std::set<std::string> kOverridable = {"stream",      "tasks",     "scenario", "val-fraction",
                                            "train-limit", "test-limit", "rotation-step", "data-dir",
                                            "threads",     "eval-batch-size", "quiet"};

void usage(std::ostream& o) {
  o << "usage: strata eval VERSION.h5 [--stream S] [--tasks N] [--scenario S] [--test-limit N] [--train-limit N]\n"
       "                  [--val-fraction F] [--rotation-step D] [--data-dir DIR] [--threads N] [--eval-batch-size N]\n\n"
       "Rebuilds the model from the configuration stored in a version file (runs/NAME/versions/vNNN.h5),\n"
       "loads its weights (checksum verified), and prints its accuracy on every task's test set of the\n"
       "stream (the stored stream unless overridden).\n";
}

}  // namespace

int strata_cmd_eval(int argc, char** argv) {
  try {
    std::string version_file;
    std::vector<std::string> rest;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        usage(std::cout);
        return 0;
      }
      if (a.rfind("-", 0) != 0) {
        TORCH_CHECK(version_file.empty(), "unexpected argument '", a, "' (one VERSION file expected)");
        version_file = a;
        continue;
      }
      rest.push_back(a);
      // "--key value": the value travels with its option.
      const bool has_value = a.find('=') == std::string::npos && a != "--quiet" && a != "-q";
      if (has_value && i + 1 < argc) rest.push_back(argv[++i]);
    }
    if (version_file.empty()) {
      std::cerr << "strata eval: missing VERSION (a versions/vNNN.h5 file)\n";
      usage(std::cerr);
      return 2;
    }
    for (const auto& a : rest)
      if (a.rfind("--", 0) == 0) {
        std::string key = a.substr(2, a.find('=') == std::string::npos ? std::string::npos : a.find('=') - 2);
        TORCH_CHECK(kOverridable.count(key), "option --", key,
                    " cannot be overridden (the model, method and training options come from the version file; "
                    "stream options, --threads and --eval-batch-size can)");
      }

    {
      const fs::path dir = fs::path(version_file).parent_path();
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(dir.empty() ? fs::path(".") : dir, ec))
        if (e.path().filename().string().find(".tmp-") != std::string::npos)
          std::cerr << "strata eval: ignoring partial file '" << e.path().string()
                    << "' (left by an interrupted write)\n";
    }
    // The stored config, with the command line winning.
    run::LoadVersionOptions lo;
    lo.overrides = rest;
    const run::LoadedVersion lv = run::load_version(version_file, lo);
    const checkpoints::Version& v = lv.version;
    const run::RunConfig& config = lv.config;
    const tasks::TaskStream& stream = lv.stream;
    torch::set_num_threads(static_cast<int>(config.threads));
    auto& model = lv.model;
    const int64_t stage = std::min<int64_t>(v.version, stream.size() - 1);
    const auto evals = run::evaluate_stream(*model, stream, stage, config.train.eval_batch_size());

    const bool same_stream = stream.size() == v.position.num_tasks && rest.empty();
    std::cout << "version " << v.version << " (" << version_file << "): method " << v.method << ", model "
              << config.model.arch() << ", trained on tasks 1.." << v.version + 1 << "\n"
              << "stream " << stream.name << " (" << tasks::to_string(stream.scenario) << "-incremental), "
              << stream.size() << " tasks\n"
              << std::fixed << std::setprecision(2) << "task  name                      test   accuracy"
              << (same_stream ? "   stored" : "") << "\n";
    double seen_sum = 0, all_sum = 0;
    int64_t seen = 0;
    for (int64_t t = 0; t < stream.size(); ++t) {
      const double acc = evals[t].accuracy();
      all_sum += acc;
      if (t <= v.version) {
        seen_sum += acc;
        ++seen;
      }
      std::cout << std::setw(4) << t + 1 << "  " << std::left << std::setw(24) << stream.tasks[t].name << std::right
                << std::setw(6) << stream.tasks[t].test.size() << std::setw(10) << 100 * acc << "%";
      if (same_stream) std::cout << std::setw(8) << 100 * v.position.accuracy_matrix[v.version][t].item<double>() << "%";
      std::cout << (t <= v.version ? "" : "  (not trained yet)") << "\n";
    }
    std::cout << "mean accuracy on tasks trained so far: " << 100 * seen_sum / std::max<int64_t>(seen, 1)
              << "%;  on all tasks: " << 100 * all_sum / std::max<int64_t>(stream.size(), 1) << "%\n";
    return 0;
  } catch (const c10::Error& e) {
    std::cerr << "strata eval: " << e.msg() << "\n";
  } catch (const po::error& e) {
    std::cerr << "strata eval: " << e.what() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "strata eval: " << e.what() << "\n";
  }
  return 1;
}
