// Benchmark: randomized vs exact SVD (time ratio, captured-energy ratio) at the layer shapes the
// methods use, and factored vs dense complement projection per training step.
//
//   svd_bench [--threads 1] [--reps 20] [--rank-frac 0.1] [--seed 0]
//
// With the cuSOLVER backend compiled in and a CUDA device present, a third table times cuSOLVER on
// the device (synchronised; one matrix and a batch of 64) against the exact CPU SVD, and checks that
// both give the same top-r subspace (projector distance).
//
// Energy ratio = ‖U_rᵀ A‖_F² (randomized U_r) / ‖U_rᵀ A‖_F² (exact U_r): the fraction of the best
// rank-r energy the randomized basis captures (1.0 = optimal).
#include "core/threads.h"

#include <boost/program_options.hpp>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <iostream>

#include "subspaces/basis.h"
#include "subspaces/svd.h"

namespace po = boost::program_options;
namespace ss = strata::subspaces;

namespace {

template <class F>
double time_ms(int reps, F&& f) {
  f();  // warm-up
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) f();
  auto t1 = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::milli>(t1 - t0).count() / reps;
}

// Representation-like matrix: decaying spectrum (activations / gradients are far from white).
torch::Tensor test_matrix(int64_t m, int64_t n, uint64_t seed) {
  auto g = at::detail::createCPUGenerator(seed);
  const int64_t k = std::min(m, n);
  auto U = std::get<0>(torch::linalg_qr(torch::randn({m, k}, g)));
  auto V = std::get<0>(torch::linalg_qr(torch::randn({n, k}, g)));
  auto s = torch::pow(0.9, torch::arange(k, torch::kFloat32)) + 0.01;
  return (U * s.unsqueeze(0)).mm(V.t()).contiguous();
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 1, reps = 20;
  double rank_frac = 0.1;
  uint64_t seed = 0;
  po::options_description opts("svd_bench options");
  opts.add_options()("help,h", "show help")("threads", po::value(&threads)->default_value(1), "torch threads")(
      "reps", po::value(&reps)->default_value(20), "repetitions per measurement")(
      "rank-frac", po::value(&rank_frac)->default_value(0.1), "r = max(1, rank_frac * min(m, n))")(
      "seed", po::value(&seed)->default_value(0), "seed");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, opts), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::cerr << "svd_bench: " << e.what() << "\n" << opts;
    return 2;
  }
  if (vm.count("help")) {
    std::cout << opts;
    return 0;
  }
  strata::core::set_num_threads(threads);
  torch::NoGradGuard no_grad;
  std::printf("svd_bench: threads=%d reps=%d rank_frac=%.3f seed=%llu\n\n", threads, reps, rank_frac,
              static_cast<unsigned long long>(seed));

  const std::vector<std::pair<int64_t, int64_t>> shapes = {{100, 784}, {100, 100}, {10, 100}, {64, 64},
                                                           {64, 256},  {256, 64},  {512, 256}, {784, 300}};
  std::printf("SVD: randomized (oversample 10, 2 power iterations) vs exact thin SVD, top r\n");
  std::printf("%-10s %5s %12s %12s %12s %14s %10s\n", "shape", "r", "exact_ms", "random_ms", "time_ratio",
              "energy_ratio", "auto");
  for (auto [m, n] : shapes) {
    auto A = test_matrix(m, n, seed + static_cast<uint64_t>(m * 1000 + n));
    const int64_t r = std::max<int64_t>(1, static_cast<int64_t>(rank_frac * static_cast<double>(std::min(m, n))));
    auto ex_opt = ss::SvdOptions().method("exact").rank(r);
    auto rd_opt = ss::SvdOptions().method("randomized").rank(r).seed(seed);
    double t_ex = time_ms(reps, [&] { ss::svd(A, ex_opt); });
    double t_rd = time_ms(reps, [&] { ss::svd(A, rd_opt); });
    auto Ue = ss::svd(A, ex_opt).U, Ur = ss::svd(A, rd_opt).U;
    double e_ex = Ue.t().mm(A).square().sum().item<double>();
    double e_rd = Ur.t().mm(A).square().sum().item<double>();
    std::printf("%4ldx%-5ld %5ld %12.4f %12.4f %12.3f %14.6f %10s\n", static_cast<long>(m), static_cast<long>(n),
                static_cast<long>(r), t_ex, t_rd, t_rd / t_ex, e_rd / e_ex,
                ss::resolve_svd_method(A, ss::SvdOptions().rank(r)).c_str());
  }

  std::printf("\nProjection per step: factored G - (G U) U^T vs dense G (I - U U^T) with P precomputed\n");
  std::printf("(input side, G [out, in], U [in, k]); dense time excludes building P.\n");
  std::printf("%-10s %5s %14s %12s %12s %10s\n", "G shape", "k", "factored_ms", "dense_ms", "dense/fact", "max_diff");
  const std::vector<std::tuple<int64_t, int64_t, int64_t>> proj = {
      {100, 784, 20}, {100, 784, 200}, {100, 100, 30}, {10, 100, 30}, {64, 256, 32}, {256, 64, 16}, {300, 784, 50}};
  for (auto [m, n, k] : proj) {
    auto G = torch::randn({m, n});
    auto U = std::get<0>(torch::linalg_qr(torch::randn({n, k})));
    auto P = torch::eye(n) - U.mm(U.t());
    double t_f = time_ms(reps * 5, [&] { ss::project_out_input(G, U); });
    double t_d = time_ms(reps * 5, [&] { G.mm(P); });
    double diff = (ss::project_out_input(G, U) - G.mm(P)).abs().max().item<double>();
    std::printf("%4ldx%-5ld %5ld %14.5f %12.5f %12.3f %10.2e\n", static_cast<long>(m), static_cast<long>(n),
                static_cast<long>(k), t_f, t_d, t_d / t_f, diff);
  }

  if (!ss::cusolver_compiled() || !torch::cuda::is_available()) {
    std::printf("\ncuSOLVER: %s\n", ss::cusolver_compiled() ? "compiled in, but no CUDA device" : "not compiled in");
    return 0;
  }
  std::printf("\ncuSOLVER on CUDA vs exact CPU SVD, top r (device time synchronised)\n");
  std::printf("%-10s %5s %12s %12s %10s %14s %12s %12s\n", "shape", "r", "cpu_ms", "cuda_ms", "cpu/cuda",
              "proj_distance", "batch64_ms", "per_matrix");
  for (auto [m, n] : shapes) {
    auto A = test_matrix(m, n, seed + static_cast<uint64_t>(m * 1000 + n));
    const int64_t r = std::max<int64_t>(1, static_cast<int64_t>(rank_frac * static_cast<double>(std::min(m, n))));
    auto ex_opt = ss::SvdOptions().method("exact").rank(r);
    auto cu_opt = ss::SvdOptions().method("cusolver").rank(r);
    const torch::Tensor Ad = A.cuda(), batch = A.unsqueeze(0).repeat({64, 1, 1}).cuda();
    double t_cpu = time_ms(reps, [&] { ss::svd(A, ex_opt); });
    double t_cu = time_ms(reps, [&] {
      ss::svd(Ad, cu_opt);
      torch::cuda::synchronize();
    });
    double t_batch = time_ms(reps, [&] {
      ss::svd(batch, ss::SvdOptions().method("cusolver"));
      torch::cuda::synchronize();
    });
    const double dist = ss::projector_distance(ss::svd(A, ex_opt).U, ss::svd(Ad, cu_opt).U.cpu());
    std::printf("%4ldx%-5ld %5ld %12.4f %12.4f %10.2f %14.2e %12.4f %12.4f\n", static_cast<long>(m),
                static_cast<long>(n), static_cast<long>(r), t_cpu, t_cu, t_cpu / t_cu, dist, t_batch, t_batch / 64);
  }
  return 0;
}
