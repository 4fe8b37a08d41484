// Training throughput of Strata's `naive` loop (the real Trainer) with the GPM-protocol MLP
// (784-100-100-10, no bias, SGD) at batch 10 and 256, side by side with the plain PyTorch loop
// in bench/train_bench.py on the same data, threads and batch. Reports ratios measured in one run.
#include "bench/bench_common.h"
#include "continual/method.h"
#include "continual/naive.h"
#include "continual/trainer.h"
#include "tasks/streams.h"

#include <boost/program_options.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>

namespace po = boost::program_options;
using namespace strata;

int main(int argc, char** argv) {
  po::options_description desc("train_bench options");
  desc.add_options()("help,h", "this help")
      ("threads", po::value<int>()->default_value(1), "torch threads (both loops)")
      ("examples", po::value<int64_t>()->default_value(20000), "training examples per timed epoch")
      ("batches", po::value<std::string>()->default_value("10,256"), "batch sizes")
      ("repeats", po::value<int>()->default_value(3), "alternating rounds; each side keeps its best")
      ("python", po::value<std::string>()->default_value("/usr/bin/python3"), "python with torch ('' = skip)")
      ("script", po::value<std::string>()->default_value(STRATA_BENCH_DIR "/train_bench.py"), "reference loop")
      ("data-dir", po::value<std::string>()->default_value("/usr/share/datasets/fashion-mnist"), "Fashion-MNIST folder");
  po::variables_map vm;
  if (const int rc = bench::parse_options(argc, argv, desc, "train_bench", vm); rc >= 0) return rc;
  const int threads = vm["threads"].as<int>();
  const int64_t examples = vm["examples"].as<int64_t>();
  bench::set_blas_threads(threads);
  std::vector<int64_t> batches;
  {
    std::stringstream ss(vm["batches"].as<std::string>());
    for (std::string b; std::getline(ss, b, ',');) batches.push_back(std::stoll(b));
  }

  // Task 0 of permuted-fmnist is the unpermuted data: the same images the Python loop reads.
  tasks::StreamOptions so;
  so.name("permuted-fmnist").num_tasks(1).val_fraction(0).data_dir(vm["data-dir"].as<std::string>());
  tasks::TaskStream stream = tasks::make_stream(so);
  auto& train = stream.tasks[0].train;
  // Keep `examples` rows in file order, like the Python loop.
  auto order = torch::argsort(train.ids).slice(0, 0, examples);
  train.x = train.x.index_select(0, order).contiguous();
  train.y = train.y.index_select(0, order).contiguous();
  train.ids = train.ids.index_select(0, order).contiguous();
  train.task = train.task.index_select(0, order).contiguous();
  stream.tasks[0].val = tasks::Split();

  // These machines are noisy: C++ and Python runs alternate, `repeats` rounds, and each side keeps
  // its best rate, so both see the same background load.
  std::map<int64_t, double> cpp_rate, py_rate;
  const std::string python = vm["python"].as<std::string>();
  for (int rep = 0; rep < vm["repeats"].as<int>(); ++rep) {
    for (int64_t bs : batches) {
      torch::manual_seed(0);
      auto model = strata::models::make_model(strata::models::ModelOptions().hidden({100, 100}).bias(false));
      continual::Naive naive;
      continual::TaskContext ctx;
      ctx.model = model;
      ctx.stream = &stream;
      continual::TrainOptions opt;
      opt.lr(0.01).batch_size(bs).epochs(2);  // epoch 0 warms up; epoch 1 is timed
      ctx.train = &opt;
      double seconds = 0;
      continual::train_task(ctx, naive, opt, [&](const continual::EpochStats& s) {
        if (s.epoch == 1) seconds = s.seconds;
      });
      const double rate = train.size() / seconds;
      cpp_rate[bs] = std::max(cpp_rate[bs], rate);
      std::cout << "strata batch=" << bs << " examples=" << train.size() << " seconds=" << std::fixed
                << std::setprecision(4) << seconds << " examples_per_s=" << std::setprecision(1) << rate << std::endl;
      if (python.empty()) continue;
      std::ostringstream cmd;
      cmd << python << " " << vm["script"].as<std::string>() << " --threads " << threads << " --examples " << examples
          << " --batches " << bs << " --data-dir " << vm["data-dir"].as<std::string>();
      bench::run_reference(cmd.str(), threads, [&](const std::map<std::string, double>& f) {
        if (f.count("examples_per_s")) py_rate[bs] = std::max(py_rate[bs], f.at("examples_per_s"));
      });
    }
  }
  std::cout << "\nthreads=" << threads << "  (best of each side over alternating rounds; ratio = strata / python examples/s)\n";
  for (int64_t bs : batches) {
    std::cout << "batch " << std::setw(4) << bs << ": strata " << std::setw(9) << std::setprecision(0) << cpp_rate[bs]
              << " ex/s";
    if (py_rate.count(bs))
      std::cout << "  python " << std::setw(9) << py_rate[bs] << " ex/s  ratio " << std::setprecision(2)
                << cpp_rate[bs] / py_rate[bs] << "x";
    std::cout << "\n";
  }
  return 0;
}
