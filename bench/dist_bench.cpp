// Data-parallel throughput: the real Trainer (method `naive`) on the small ViT (patch 7, dim 64,
// depth 2) over permuted Fashion-MNIST task 1 at a global batch of 256, with 1 worker (one process,
// no process group) and with N workers (`strata::dist::launch_local`, Gloo over 127.0.0.1). Epoch 0
// warms up; epoch 1 is timed. Prints global examples/s, ms per step, and the gradient all-reduce's
// share of the step (time inside Group::all_reduce_gradients, which includes waiting for the
// slower worker, over the epoch's time) as measured on rank 0, and one all-reduce of the model's
// gradients timed alone after a barrier (the communication without the wait). Rounds alternate between the worker
// counts, `repeats` times; each keeps its best rate.
#include "bench/bench_common.h"
#include "continual/naive.h"
#include "continual/trainer.h"
#include "dist/group.h"
#include "dist/launch.h"
#include "models/models.h"
#include "tasks/streams.h"

#include <boost/program_options.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>

namespace po = boost::program_options;
using namespace strata;

namespace {

struct Result {
  double examples_per_s = 0, ms_per_step = 0, reduce_share = 0;
  double reduce_ms = 0;  ///< one gradient all-reduce alone, the workers lined up by a barrier first
};

// One worker's part (or the whole run with one process): returns rank 0's numbers.
Result train_once(const po::variables_map& vm, dist::Group* group) {
  tasks::StreamOptions so;
  so.name("permuted-fmnist").num_tasks(1).val_fraction(0).train_limit(vm["examples"].as<int64_t>())
      .test_limit(1).data_dir(vm["data-dir"].as<std::string>());
  tasks::TaskStream stream = tasks::make_stream(so);
  torch::manual_seed(0);
  auto model = models::make_model(models::ModelOptions()
                                      .arch("vit")
                                      .input_shape(stream.input_shape)
                                      .num_classes(stream.num_classes));
  continual::TrainOptions opt;
  opt.optimizer("adamw").lr(1e-3).batch_size(vm["batch"].as<int64_t>()).epochs(2);
  continual::TaskContext ctx;
  ctx.model = model;
  ctx.stream = &stream;
  ctx.train = &opt;
  ctx.parallel = group;
  continual::Naive naive;
  Result r;
  double reduce_at_start = 0;
  continual::train_task(ctx, naive, opt, [&](const continual::EpochStats& s) {
    const double reduce = group ? group->reduce_seconds() : 0;
    if (s.epoch == 0) reduce_at_start = reduce;
    if (s.epoch != 1) return;
    r.examples_per_s = s.examples / s.seconds;
    r.ms_per_step = 1000 * s.seconds / s.steps;
    r.reduce_share = (reduce - reduce_at_start) / s.seconds;
  });
  if (group) {
    // The communication alone: the last step's gradients, all-reduced again after a barrier.
    auto params = model->parameters();
    auto stats = torch::zeros({2}, torch::kFloat64);
    const int reps = 10;
    double total = 0;
    for (int i = 0; i < reps; ++i) {
      group->barrier();
      const double before = group->reduce_seconds();
      group->all_reduce_gradients(params, stats);
      total += group->reduce_seconds() - before;
    }
    r.reduce_ms = 1000 * total / reps;
  }
  return r;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

}  // namespace

int main(int argc, char** argv) {
  po::options_description desc("dist_bench options");
  desc.add_options()("help,h", "this help")
      ("workers", po::value<std::string>()->default_value("1,2"), "worker counts to compare")
      ("batch", po::value<int64_t>()->default_value(256), "global batch size")
      ("examples", po::value<int64_t>()->default_value(10240), "training examples per epoch")
      ("threads", po::value<int>()->default_value(1), "torch threads per worker")
      ("repeats", po::value<int>()->default_value(2), "alternating rounds; each worker count keeps its best")
      ("dist-timeout", po::value<double>()->default_value(120), "seconds a worker waits for the others")
      ("data-dir", po::value<std::string>()->default_value("/usr/share/datasets/fashion-mnist"), "Fashion-MNIST folder")
      ("result", po::value<std::string>()->default_value(""), "(internal) file rank 0 writes its numbers to");
  po::variables_map vm;
  if (const int rc = bench::parse_options(argc, argv, desc, "dist_bench", vm); rc >= 0) return rc;
  const int threads = vm["threads"].as<int>();
  bench::set_blas_threads(threads);

  try {
    if (auto env = dist::options_from_env(); env && env->world_size() > 1) {
      // A worker started by the launch below.
      env->timeout(vm["dist-timeout"].as<double>());
      dist::Group group(*env);
      const Result r = train_once(vm, &group);
      if (group.rank() == 0) {
        std::ofstream(vm["result"].as<std::string>())
            << "examples_per_s=" << r.examples_per_s << " ms_per_step=" << r.ms_per_step
            << " reduce_share=" << r.reduce_share << " reduce_ms=" << r.reduce_ms << "\n";
      }
      return 0;
    }
    std::vector<int64_t> counts;
    {
      std::stringstream ss(vm["workers"].as<std::string>());
      for (std::string x; std::getline(ss, x, ',');) counts.push_back(std::stoll(x));
    }
    const std::string result_file =
        (std::filesystem::temp_directory_path() / ("dist_bench_" + std::to_string(::getpid()) + ".txt")).string();
    std::map<int64_t, Result> best;
    std::cout << std::fixed;
    for (int rep = 0; rep < vm["repeats"].as<int>(); ++rep) {
      for (int64_t n : counts) {
        Result r;
        if (n == 1) {
          r = train_once(vm, nullptr);
        } else {
          std::vector<std::string> args;
          for (int i = 1; i < argc; ++i) args.push_back(argv[i]);
          args.insert(args.end(), {"--result", result_file});
          const auto launch = dist::launch_local(dist::self_executable(), args, dist::LaunchOptions().nproc(n));
          if (launch.exit_code != 0) {
            std::cerr << "dist_bench: " << launch.error << "\n";
            return 1;
          }
          const auto f = bench::parse_fields(slurp(result_file));
          r.examples_per_s = f.at("examples_per_s");
          r.ms_per_step = f.at("ms_per_step");
          r.reduce_share = f.at("reduce_share");
          r.reduce_ms = f.at("reduce_ms");
        }
        std::cout << "round=" << rep + 1 << " workers=" << n << " batch=" << vm["batch"].as<int64_t>()
                  << " examples_per_s=" << std::setprecision(1) << r.examples_per_s << " ms_per_step="
                  << std::setprecision(2) << r.ms_per_step << " allreduce_share=" << std::setprecision(3)
                  << r.reduce_share << " allreduce_alone_ms=" << std::setprecision(2) << r.reduce_ms << std::endl;
        if (r.examples_per_s > best[n].examples_per_s) best[n] = r;
      }
    }
    std::filesystem::remove(result_file);
    std::cout << "\nworkers  examples/s  ms/step  all-reduce share  all-reduce alone (ms)  speed-up vs 1\n";
    const double base = best.count(1) ? best[1].examples_per_s : 0;
    for (const auto& [n, r] : best)
      std::cout << std::setw(7) << n << std::setw(12) << std::setprecision(1) << r.examples_per_s << std::setw(9)
                << std::setprecision(2) << r.ms_per_step << std::setw(17) << std::setprecision(1)
                << 100 * r.reduce_share << "%" << std::setw(23) << std::setprecision(2) << r.reduce_ms
                << std::setw(15) << std::setprecision(2)
                << (base > 0 ? r.examples_per_s / base : 0) << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "dist_bench: " << e.what() << "\n";
    return 1;
  }
}
