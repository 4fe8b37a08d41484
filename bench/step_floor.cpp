// The cost floor of one plain training step, measured in one run: the naive Trainer's step with the
// GPM-protocol MLP (784-100-100-10, no bias, SGD) against the step's eight GEMMs alone (forward
// x·W₁ᵀ, h₁·W₂ᵀ, h₂·W₃ᵀ; input gradients δ₃W₃, δ₂W₂; weight gradients δᵀh for the three layers) on
// preallocated buffers, and the number of LibTorch operator calls (RecordFunction scopes: ATen
// operators and autograd nodes, nested calls included) the Trainer's step makes. Thread CPU time,
// best of --repeats rounds that alternate the two, so both see the same background load.
//
//   step_floor [--batch 10] [--examples 5000] [--repeats 3] [--threads 1] [--ops]
//
// --ops also lists the counted calls by name, per step, most frequent first.
#include "bench/bench_common.h"
#include "continual/naive.h"
#include "continual/trainer.h"
#include "tasks/streams.h"

#include <boost/program_options.hpp>

#include <algorithm>
#include <iomanip>
#include <iostream>
#include <limits>

namespace po = boost::program_options;
using namespace strata;

namespace {

double thread_cpu_us() { return 1e6 * bench::thread_cpu_seconds(); }

}  // namespace

int main(int argc, char** argv) {
  po::options_description desc("step_floor options");
  desc.add_options()("help,h", "this help")
      ("threads", po::value<int>()->default_value(1), "torch and BLAS threads")
      ("batch", po::value<int64_t>()->default_value(10), "batch size")
      ("examples", po::value<int64_t>()->default_value(5000), "training examples per timed epoch")
      ("repeats", po::value<int>()->default_value(3), "alternating rounds; each side keeps its best")
      ("data-dir", po::value<std::string>()->default_value("/usr/share/datasets/fashion-mnist"), "Fashion-MNIST folder")
      ("ops", po::bool_switch(), "also list the step's operator calls by name");
  po::variables_map vm;
  if (const int rc = bench::parse_options(argc, argv, desc, "step_floor", vm); rc >= 0) return rc;
  bench::set_blas_threads(vm["threads"].as<int>());
  const int64_t B = vm["batch"].as<int64_t>();
  if (B < 1) {
    std::cerr << "step_floor: --batch must be >= 1, got " << B << "\n";
    return 2;
  }

  tasks::StreamOptions so;
  so.name("permuted-fmnist").num_tasks(1).val_fraction(0).train_limit(vm["examples"].as<int64_t>()).seed(2)
      .data_dir(vm["data-dir"].as<std::string>());
  tasks::TaskStream stream = tasks::make_stream(so);
  const int64_t n = stream.tasks[0].train.size();
  const int64_t steps = (n + B - 1) / B;

  // The trainer: epoch 0 warms up, epoch 1 is timed (its validation is off: val_fraction 0).
  // `ops` (optional) counts the timed epoch's operator calls; timed rounds run without one.
  auto trainer_step_us = [&](bench::OpCounter* ops) {
    torch::manual_seed(0);
    auto model = models::make_model(models::ModelOptions().hidden({100, 100}).bias(false));
    continual::Naive naive;
    continual::TaskContext ctx;
    ctx.model = model;
    ctx.stream = &stream;
    continual::TrainOptions opt;
    opt.lr(0.01).batch_size(B).epochs(2);
    ctx.train = &opt;
    double t0 = 0, us = 0;
    continual::train_task(ctx, naive, opt, [&](const continual::EpochStats& s) {
      if (s.epoch == 0) {
        t0 = thread_cpu_us();
        if (ops) {
          ops->reset();
          ops->on();
        }
      } else {
        if (ops) ops->off();
        us = (thread_cpu_us() - t0) / steps;
      }
    });
    return us;
  };

  // The GEMMs alone, on buffers made once.
  auto x = torch::randn({B, 784}), W1 = torch::randn({100, 784}), W2 = torch::randn({100, 100}),
       W3 = torch::randn({10, 100});
  auto h1 = torch::empty({B, 100}), h2 = torch::empty({B, 100}), z = torch::empty({B, 10});
  auto d3 = torch::randn({B, 10}), d2 = torch::empty({B, 100}), d1 = torch::empty({B, 100});
  auto g1 = torch::empty({100, 784}), g2 = torch::empty({100, 100}), g3 = torch::empty({10, 100});
  auto gemm_step_us = [&] {
    torch::NoGradGuard no_grad;
    auto one = [&] {
      at::mm_out(h1, x, W1.t());
      at::mm_out(h2, h1, W2.t());
      at::mm_out(z, h2, W3.t());
      at::mm_out(d2, d3, W3);
      at::mm_out(d1, d2, W2);
      at::mm_out(g3, d3.t(), h2);
      at::mm_out(g2, d2.t(), h1);
      at::mm_out(g1, d1.t(), x);
    };
    for (int64_t i = 0; i < std::min<int64_t>(steps, 200); ++i) one();
    const double t0 = thread_cpu_us();
    for (int64_t i = 0; i < steps; ++i) one();
    return (thread_cpu_us() - t0) / steps;
  };

  double best_trainer = std::numeric_limits<double>::infinity(), best_gemm = best_trainer;
  for (int rep = 0; rep < vm["repeats"].as<int>(); ++rep) {
    const double t = trainer_step_us(nullptr), g = gemm_step_us();
    std::cout << "round " << rep << ": trainer " << std::fixed << std::setprecision(1) << t << " us/step, GEMMs "
              << g << " us/step\n";
    best_trainer = std::min(best_trainer, t);
    best_gemm = std::min(best_gemm, g);
  }
  bench::OpCounter ops(vm["ops"].as<bool>());
  trainer_step_us(&ops);
  const double per_step = static_cast<double>(ops.calls()) / steps;
  std::cout << "\nbatch " << B << ", threads " << vm["threads"].as<int>() << ", thread CPU time, best of "
            << vm["repeats"].as<int>() << "\n"
            << "trainer step   " << std::setprecision(1) << best_trainer << " us\n"
            << "its 8 GEMMs    " << best_gemm << " us  (" << std::setprecision(2) << best_gemm / best_trainer
            << " of the step)\n"
            << "operator calls " << std::setprecision(1) << per_step << " per step\n";
  ops.print_by_name(std::cout, static_cast<double>(steps));
  return 0;
}
