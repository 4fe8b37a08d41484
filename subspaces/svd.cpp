#include "subspaces/svd.h"

#include <algorithm>

namespace strata::subspaces {

#ifdef STRATA_HAVE_CUDA
// Defined in svd_cuda.cpp.
SvdResult cusolver_svd(const torch::Tensor& A, int64_t rank);
#endif

namespace {

torch::ScalarType compute_dtype(const torch::Tensor& A) {
  return A.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
}

SvdResult truncate(SvdResult r, int64_t k) {
  if (k > 0 && k < r.S.size(-1)) {
    r.U = r.U.narrow(-1, 0, k).contiguous();
    r.S = r.S.narrow(-1, 0, k).contiguous();
    r.Vh = r.Vh.narrow(-2, 0, k).contiguous();
  }
  return r;
}

SvdResult exact_svd(const torch::Tensor& A, int64_t rank) {
  auto [U, S, Vh] = torch::linalg_svd(A, /*full_matrices=*/false);
  return truncate({U, S, Vh, "exact"}, rank);
}

torch::Tensor orthonormal_range(const torch::Tensor& Y) {
  return std::get<0>(torch::linalg_qr(Y, "reduced"));
}

SvdResult randomized_svd(const torch::Tensor& A, const SvdOptions& o) {
  const int64_t m = A.size(-2), n = A.size(-1);
  const int64_t l = std::min(o.rank() + std::max<int64_t>(o.oversample(), 0), std::min(m, n));
  auto gen = at::detail::createCPUGenerator(o.seed());
  std::vector<int64_t> shape(A.sizes().begin(), A.sizes().end() - 2);
  shape.push_back(n);
  shape.push_back(l);
  torch::Tensor omega = torch::randn(shape, gen, torch::TensorOptions().dtype(A.scalar_type())).to(A.device());
  auto At = A.transpose(-2, -1);
  torch::Tensor Q = orthonormal_range(torch::matmul(A, omega));
  for (int64_t i = 0; i < o.power_iters(); ++i) {
    torch::Tensor Z = orthonormal_range(torch::matmul(At, Q));
    Q = orthonormal_range(torch::matmul(A, Z));
  }
  torch::Tensor B = torch::matmul(Q.transpose(-2, -1), A);  // [.., l, n]
  auto [Ub, S, Vh] = torch::linalg_svd(B, /*full_matrices=*/false);
  return truncate({torch::matmul(Q, Ub), S, Vh, "randomized"}, o.rank());
}

}  // namespace

bool cusolver_compiled() {
#ifdef STRATA_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

std::vector<std::string> svd_methods() {
  std::vector<std::string> out = {"auto", "exact", "randomized"};
  if (cusolver_compiled()) out.push_back("cusolver");
  return out;
}

void check_finite(const torch::Tensor& A, const char* who) {
  TORCH_CHECK(torch::isfinite(A).all().item<bool>(), "strata::subspaces::", who,
              "(): input has NaN or Inf entries (shape ", A.sizes(), ")");
}

namespace {

torch::Tensor positive_qr(const torch::Tensor& Y) {
  auto [Q, R] = torch::linalg_qr(Y, "reduced");
  // sign(0) = 0 would zero a column; such columns (rank-deficient Y) keep Householder's sign.
  auto d = R.diagonal();
  return Q.mul_(d.sign().add_(d.eq(0)));
}

// The iteration on an operator given by its products: G_mm(Z) = G Z for Z [n, r], Gt_mm(P) = Gᵀ P
// for P [m, r]; `like` carries G's dtype and device.
template <class GMm, class GtMm>
torch::Tensor iterate_subspace(int64_t m, int64_t n, const torch::TensorOptions& like, int64_t r,
                               const torch::Tensor& warm, int64_t iters, uint64_t seed,
                               const std::function<torch::Tensor(const torch::Tensor&)>& project, GMm G_mm,
                               GtMm Gt_mm) {
  torch::Tensor P = warm;
  if (!P.defined() || P.size(0) != m || P.size(1) != r) {
    auto gen = at::detail::createCPUGenerator(seed);
    auto Y = G_mm(torch::randn({n, r}, gen, like.device(torch::kCPU)).to(like.device()));
    P = positive_qr(project ? project(Y) : Y);
    ++iters;
  }
  for (int64_t i = 0; i < iters; ++i) {
    auto Y = G_mm(Gt_mm(P));
    P = positive_qr(project ? project(Y) : Y);
  }
  return P;
}

}  // namespace

torch::Tensor subspace_iteration(const torch::Tensor& G, int64_t r, const torch::Tensor& warm, int64_t iters,
                                 uint64_t seed, const std::function<torch::Tensor(const torch::Tensor&)>& project) {
  torch::NoGradGuard no_grad;
  TORCH_CHECK(G.dim() == 2 && r > 0 && r <= std::min(G.size(0), G.size(1)),
              "strata::subspaces::subspace_iteration(): need G [m, n] and 0 < r <= min(m, n), got ", G.sizes(),
              " and r = ", r);
  TORCH_CHECK(iters >= 1, "strata::subspaces::subspace_iteration(): iters must be >= 1, got ", iters);
  return iterate_subspace(
      G.size(0), G.size(1), G.options(), r, warm, iters, seed, project,
      [&G](const torch::Tensor& Z) { return G.mm(Z); }, [&G](const torch::Tensor& P) { return G.t().mm(P); });
}

torch::Tensor subspace_iteration_outer(const torch::Tensor& delta, const torch::Tensor& X, int64_t r,
                                       const torch::Tensor& warm, int64_t iters, uint64_t seed,
                                       const std::function<torch::Tensor(const torch::Tensor&)>& project) {
  torch::NoGradGuard no_grad;
  TORCH_CHECK(delta.dim() == 2 && X.dim() == 2 && delta.size(0) == X.size(0),
              "strata::subspaces::subspace_iteration_outer(): need delta [b, m] and X [b, n], got ", delta.sizes(),
              " and ", X.sizes());
  const int64_t m = delta.size(1), n = X.size(1);
  TORCH_CHECK(r > 0 && r <= std::min(m, n), "strata::subspaces::subspace_iteration_outer(): need 0 < r <= min(m, n) = ",
              std::min(m, n), ", got r = ", r);
  TORCH_CHECK(iters >= 1, "strata::subspaces::subspace_iteration_outer(): iters must be >= 1, got ", iters);
  return iterate_subspace(
      m, n, delta.options(), r, warm, iters, seed, project,
      [&](const torch::Tensor& Z) { return delta.t().mm(X.mm(Z)); },
      [&](const torch::Tensor& P) { return X.t().mm(delta.mm(P)); });
}

std::string resolve_svd_method(const torch::Tensor& A, const SvdOptions& o) {
  if (o.method() != "auto") return o.method();
  if (A.is_cuda() && cusolver_compiled()) return "cusolver";
  const int64_t mn = std::min(A.size(-2), A.size(-1));
  if (o.rank() > 0 && (o.rank() + o.oversample()) * 4 <= mn) return "randomized";
  return "exact";
}

SvdResult svd(const torch::Tensor& A_in, const SvdOptions& o) {
  torch::NoGradGuard no_grad;
  TORCH_CHECK(A_in.defined(), "strata::subspaces::svd(): undefined input");
  TORCH_CHECK(A_in.dim() == 2 || A_in.dim() == 3, "strata::subspaces::svd(): expected a 2-D matrix or a 3-D batch, got shape ",
              A_in.sizes());
  TORCH_CHECK(A_in.is_floating_point(), "strata::subspaces::svd(): expected a floating-point tensor, got ",
              A_in.scalar_type());
  const int64_t m = A_in.size(-2), n = A_in.size(-1);
  TORCH_CHECK(m > 0 && n > 0, "strata::subspaces::svd(): empty matrix of shape ", A_in.sizes());
  TORCH_CHECK(o.rank() <= std::min(m, n), "strata::subspaces::svd(): rank ", o.rank(), " exceeds min(m, n) = ",
              std::min(m, n), " for shape ", A_in.sizes());
  check_finite(A_in, "svd");
  torch::Tensor A = A_in.to(compute_dtype(A_in)).contiguous();
  const std::string method = resolve_svd_method(A, o);
  if (method == "exact") return exact_svd(A, o.rank());
  if (method == "randomized") {
    TORCH_CHECK(o.rank() > 0, "strata::subspaces::svd(): method 'randomized' needs rank > 0, got ", o.rank());
    return randomized_svd(A, o);
  }
  if (method == "cusolver") {
#ifdef STRATA_HAVE_CUDA
    TORCH_CHECK(A.is_cuda(), "strata::subspaces::svd(): method 'cusolver' needs a CUDA tensor, got device ",
                A.device());
    return cusolver_svd(A, o.rank());
#else
    TORCH_CHECK(false, "strata::subspaces::svd(): method 'cusolver' is not compiled in (it needs the CUDA toolkit and a "
                "CUDA LibTorch at build time)");
#endif
  }
  TORCH_CHECK(false, "strata::subspaces::svd(): unknown method '", method,
              "' (expected auto, exact, randomized or cusolver)");
}

}  // namespace strata::subspaces
