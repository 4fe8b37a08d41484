// strata eval: evaluates a stored model version (runs/NAME/versions/vNNN.h5) on a task stream.
// The model, method and stream come from the config stored in the file; stream options (and
// --threads, --eval-batch-size) can be overridden on the command line.
// Any other FILE is a weight file (safetensors, HDF5 state_dict; models/weights.h): the model
// comes from the command line's model options, and its weights from the file.
// --predictions OUT.csv writes one row per test item: id,label,pred,prob[,task].
#include "core/threads.h"
#include "checkpoints/version_store.h"
#include "core/h5.h"
#include "models/weights.h"
#include "run/runner.h"
#include "tools/commands.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <set>
#include <sstream>

namespace po = boost::program_options;
namespace fs = std::filesystem;
using namespace strata;

namespace {

const std::set<std::string> kOverridable = {"stream",      "tasks",     "scenario", "val-fraction",
                                            "train-limit", "test-limit", "rotation-step", "data-dir",
                                            "dataset",     "classes-per-task", "first-task-classes",
                                            "class-order", "class-order-seed",
                                            "threads",     "eval-batch-size", "quiet"};

void usage(std::ostream& o) {
  o << "usage: strata eval VERSION.h5 [--stream S] [--tasks N] [--scenario S] [--test-limit N] [--train-limit N]\n"
       "                  [--val-fraction F] [--rotation-step D] [--data-dir DIR] [--dataset fmnist|PATH.h5]\n"
       "                  [--classes-per-task N] [--first-task-classes N] [--class-order A,B,..] [--class-order-seed N]\n"
       "                  [--threads N] [--eval-batch-size N] [--predictions OUT.csv]\n"
       "       strata eval WEIGHTS.safetensors|WEIGHTS.h5 --model M [model options] [stream options]\n"
       "                  [--weights-names auto|strata|torchvision|timm] [--init-head strict|reset] [--predictions OUT.csv]\n\n"
       "Rebuilds the model from the configuration stored in a version file (runs/NAME/versions/vNNN.h5),\n"
       "loads its weights (checksum verified), and prints its accuracy on every task's test set of the\n"
       "stream (the stored stream unless overridden).\n"
       "A weight file (safetensors or an HDF5 state_dict, e.g. from `strata export` or PyTorch) is loaded\n"
       "strictly into the model the command line describes (`strata train --help` lists the options) and\n"
       "evaluated on the stream after its last task.\n"
       "--predictions writes one CSV row per test item: id,label,pred,prob (and task, when the stream has\n"
       "more than one): the example's stable id, its label, the predicted class and its probability.\n";
}

// True for a Strata version file (an HDF5 file whose root says format = strata-version).
bool is_version_file(const std::string& path) {
  // By the user block alone when it has one: read_version checks such a file before HDF5 sees it.
  if (checkpoints::has_version_user_block(path)) return true;
  core::quiet_hdf5();
  try {
    if (!fs::is_regular_file(path) || !H5::H5File::isHdf5(path)) return false;
    auto f = core::open_file(path, core::FileMode::kRead);
    return core::has_attr(f, "format") && core::get_attr_string(f, "format") == checkpoints::kFormatName;
  } catch (const std::exception&) {
    return false;
  }
}

void write_predictions_csv(const std::string& path, const tasks::TaskStream& stream,
                           const std::vector<continual::EvalResult>& evals) {
  const bool with_task = stream.size() > 1;
  std::ostringstream o;
  o << "id,label,pred,prob" << (with_task ? ",task" : "") << "\n";
  char prob[32];
  for (int64_t t = 0; t < stream.size(); ++t) {
    const auto& split = stream.tasks[t].test;
    const auto ids = split.ids.to(torch::kInt64).contiguous(), y = split.y.to(torch::kInt64).contiguous();
    const auto pred = evals[t].pred.to(torch::kInt64).contiguous();
    const auto p = evals[t].prob.to(torch::kFloat32).contiguous();
    const int64_t* id_ = ids.data_ptr<int64_t>();
    const int64_t* y_ = y.data_ptr<int64_t>();
    const int64_t* pr_ = pred.data_ptr<int64_t>();
    const float* p_ = p.data_ptr<float>();
    for (int64_t i = 0; i < split.size(); ++i) {
      std::snprintf(prob, sizeof prob, "%.6g", static_cast<double>(p_[i]));
      o << id_[i] << "," << y_[i] << "," << pr_[i] << "," << prob;
      if (with_task) o << "," << t;
      o << "\n";
    }
  }
  core::AtomicFile af(path);
  {
    std::ofstream f(af.tmp_path(), std::ios::binary | std::ios::trunc);
    TORCH_CHECK(f, "option --predictions: cannot write '", path, "'");
    f << o.str();
    f.close();
    TORCH_CHECK(f, "option --predictions: write to '", path, "' failed (disk full?)");
  }
  af.commit();
}

// strata eval WEIGHTS ...: the model from the command line, the weights from the file.
int eval_weight_file(const std::string& file, const std::vector<std::string>& rest, const std::string& predictions) {
  for (const auto& a : rest)
    TORCH_CHECK(a != "--init" && a.rfind("--init=", 0) != 0 && a != "--resume" && a.rfind("--resume=", 0) != 0,
                "option ", a.substr(0, a.find('=')), " does not apply to strata eval (the weight file is '", file, "')");
  std::vector<std::string> args = {"eval"};
  args.insert(args.end(), rest.begin(), rest.end());
  std::vector<const char*> cargs;
  for (const auto& a : args) cargs.push_back(a.c_str());
  run::RunConfig config = run::parse_run_config(static_cast<int>(cargs.size()), cargs.data());
  core::set_num_threads(static_cast<int>(config.threads));
  auto stream = tasks::make_stream(config.stream);
  config.model.input_shape(stream.input_shape).num_classes(stream.num_classes);
  torch::manual_seed(config.train.seed());
  models::Model model = models::make_model(config.model);
  const auto report = models::load_weights(
      *model, file,
      models::LoadOptions().names(config.weights_names == "auto" ? "" : config.weights_names).init_head(config.init_head));
  const int64_t stage = stream.size() - 1;
  const auto evals = run::evaluate_stream(*model, stream, stage, config.train.eval_batch_size());
  std::cout << "weights " << file << " (" << report.format << ", " << models::to_string(report.names) << " names, "
            << report.tensors << " tensors" << (report.head_kept ? "; head kept fresh: " + report.head_reason : "")
            << "), model " << config.model.arch() << "\n"
            << "stream " << stream.name << " (" << tasks::to_string(stream.scenario) << "-incremental), "
            << stream.size() << " tasks\n"
            << std::fixed << std::setprecision(2) << "task  name                      test   accuracy\n";
  double sum = 0;
  for (int64_t t = 0; t < stream.size(); ++t) {
    const double acc = evals[t].accuracy();
    sum += acc;
    std::cout << std::setw(4) << t + 1 << "  " << std::left << std::setw(24) << stream.tasks[t].name << std::right
              << std::setw(6) << stream.tasks[t].test.size() << std::setw(10) << 100 * acc << "%\n";
  }
  std::cout << "mean accuracy on all tasks: " << 100 * sum / std::max<int64_t>(stream.size(), 1) << "%\n";
  if (!predictions.empty()) {
    write_predictions_csv(predictions, stream, evals);
    std::cout << "predictions: " << predictions << "\n";
  }
  return 0;
}

}  // namespace

int strata_cmd_eval(int argc, char** argv) {
  try {
    std::string version_file, predictions;
    std::vector<std::string> rest;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        usage(std::cout);
        return 0;
      }
      if (a == "--predictions" || a.rfind("--predictions=", 0) == 0) {
        if (a == "--predictions") {
          TORCH_CHECK(i + 1 < argc, "option --predictions: missing OUT.csv");
          predictions = argv[++i];
        } else {
          predictions = a.substr(std::string("--predictions=").size());
        }
        TORCH_CHECK(!predictions.empty(), "option --predictions: empty path");
        continue;
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
    if (!is_version_file(version_file)) return eval_weight_file(version_file, rest, predictions);
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
    core::set_num_threads(static_cast<int>(config.threads));
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
    if (!predictions.empty()) {
      write_predictions_csv(predictions, stream, evals);
      std::cout << "predictions: " << predictions << "\n";
    }
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
