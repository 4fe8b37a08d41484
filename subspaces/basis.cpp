#include "subspaces/basis.h"

#include <algorithm>
#include <cmath>

namespace strata::subspaces {
namespace {

bool empty_basis(const torch::Tensor& B) { return !B.defined() || B.dim() < 2 || B.size(1) == 0; }

void check_basis(const torch::Tensor& B, int64_t dim, const char* who, const char* what) {
  TORCH_CHECK(B.dim() == 2, "strata::subspaces::", who, "(): ", what, " must be 2-D [", dim, ", k], got shape ",
              B.sizes());
  TORCH_CHECK(B.size(0) == dim, "strata::subspaces::", who, "(): ", what, " has ", B.size(0),
              " rows but the gradient side has dimension ", dim);
}

torch::Tensor as_compute(const torch::Tensor& t) {
  return t.scalar_type() == torch::kFloat64 ? t : t.to(torch::kFloat32);
}

}  // namespace

torch::Tensor project_out_input(const torch::Tensor& G, const torch::Tensor& U) {
  if (empty_basis(U)) return G;
  check_basis(U, G.size(-1), "project_out_input", "U");
  auto Uc = U.to(G.dtype());
  return G - torch::matmul(torch::matmul(G, Uc), Uc.t());
}

torch::Tensor project_out_output(const torch::Tensor& G, const torch::Tensor& M) {
  if (empty_basis(M)) return G;
  check_basis(M, G.size(-2), "project_out_output", "M");
  auto Mc = M.to(G.dtype());
  return G - torch::matmul(Mc, torch::matmul(Mc.t(), G));
}

torch::Tensor project_out_both(const torch::Tensor& G, const torch::Tensor& M, const torch::Tensor& U) {
  return project_out_input(project_out_output(G, M), U);
}

torch::Tensor& project_out_input_(torch::Tensor& G, const torch::Tensor& U) {
  if (empty_basis(U)) return G;
  TORCH_CHECK(G.dim() == 2, "strata::subspaces::project_out_input_(): G must be 2-D, got shape ", G.sizes());
  check_basis(U, G.size(1), "project_out_input_", "U");
  auto Uc = U.to(G.dtype());
  G.addmm_(G.mm(Uc), Uc.t(), /*beta=*/1, /*alpha=*/-1);
  return G;
}

torch::Tensor& project_out_output_(torch::Tensor& G, const torch::Tensor& M) {
  if (empty_basis(M)) return G;
  TORCH_CHECK(G.dim() == 2, "strata::subspaces::project_out_output_(): G must be 2-D, got shape ", G.sizes());
  check_basis(M, G.size(0), "project_out_output_", "M");
  auto Mc = M.to(G.dtype());
  G.addmm_(Mc, Mc.t().mm(G), /*beta=*/1, /*alpha=*/-1);
  return G;
}

OuterProjection choose_outer_projection(int64_t rows, int64_t out, int64_t k, int64_t k_perp) {
  // Input side: 2·r·in·kb for the projection; gradient side: 2·out·in·kb. δᵀ(·) is common.
  const bool complement = k_perp >= 0 && k_perp < k;
  if (rows < out) return complement ? OuterProjection::kInputComplement : OuterProjection::kInput;
  return complement ? OuterProjection::kGradientComplement : OuterProjection::kGradient;
}

torch::Tensor complement_basis(const torch::Tensor& U) {
  torch::NoGradGuard no_grad;
  TORCH_CHECK(U.defined() && U.dim() == 2 && U.size(1) <= U.size(0),
              "strata::subspaces::complement_basis(): U must be 2-D [n, k] with k <= n, got ",
              U.defined() ? U.sizes() : torch::IntArrayRef{});
  const int64_t n = U.size(0), k = U.size(1);
  if (k == 0) return torch::eye(n, U.options());
  auto Q = std::get<0>(torch::linalg_qr(U.to(torch::kFloat64), "complete"));  // [n, n]
  return Q.narrow(1, k, n - k).to(U.scalar_type()).contiguous();
}

torch::Tensor project_out_input_outer(const torch::Tensor& delta, const torch::Tensor& X, const torch::Tensor& U,
                                      const torch::Tensor& U_perp, OuterProjection form) {
  TORCH_CHECK(delta.dim() == 2 && X.dim() == 2 && delta.size(0) == X.size(0),
              "strata::subspaces::project_out_input_outer(): expected delta [r, out] and X [r, in], got ",
              delta.sizes(), " and ", X.sizes());
  const auto dt = delta.t();
  if (empty_basis(U)) return dt.mm(X);
  check_basis(U, X.size(1), "project_out_input_outer", "U");
  const int64_t k = U.size(1);
  if (U_perp.defined()) check_basis(U_perp, X.size(1), "project_out_input_outer", "U_perp");
  if (form == OuterProjection::kAuto)
    form = choose_outer_projection(X.size(0), delta.size(1), k, U_perp.defined() ? U_perp.size(1) : -1);
  const bool complement = form == OuterProjection::kInputComplement || form == OuterProjection::kGradientComplement;
  TORCH_CHECK(!complement || U_perp.defined(),
              "strata::subspaces::project_out_input_outer(): a complement form needs U_perp");
  if (complement && U_perp.size(1) == 0) return torch::zeros({delta.size(1), X.size(1)}, X.options());
  switch (form) {
    case OuterProjection::kInput: {
      auto Xp = X.addmm(X.mm(U), U.t(), /*beta=*/1, /*alpha=*/-1);
      return dt.mm(Xp);
    }
    case OuterProjection::kInputComplement:
      return dt.mm(X.mm(U_perp).mm(U_perp.t()));
    case OuterProjection::kGradient: {
      auto G = dt.mm(X);
      G.addmm_(G.mm(U), U.t(), /*beta=*/1, /*alpha=*/-1);
      return G;
    }
    case OuterProjection::kGradientComplement:
      return dt.mm(X).mm(U_perp).mm(U_perp.t());
    case OuterProjection::kAuto:
      break;
  }
  TORCH_INTERNAL_ASSERT(false, "unreachable projection form");
}

torch::Tensor& project_out_both_(torch::Tensor& G, const torch::Tensor& M, const torch::Tensor& U,
                                 const torch::Tensor& M_perp, const torch::Tensor& U_perp) {
  TORCH_CHECK(G.dim() == 2, "strata::subspaces::project_out_both_(): G must be 2-D, got shape ", G.sizes());
  auto right = [&](torch::Tensor& T) -> torch::Tensor& {
    if (U_perp.defined()) {
      check_basis(U_perp, T.size(1), "project_out_both_", "U_perp");
      if (U_perp.size(1) == 0) return T.zero_();
      auto TU = T.mm(U_perp);
      return torch::mm_out(T, TU, U_perp.t());
    }
    return project_out_input_(T, U);
  };
  if (M_perp.defined()) {
    check_basis(M_perp, G.size(0), "project_out_both_", "M_perp");
    if (M_perp.size(1) == 0) return G.zero_();
    auto T = M_perp.t().mm(G);  // [m − k, n]
    right(T);
    return torch::mm_out(G, M_perp, T);
  }
  project_out_output_(G, M);
  return right(G);
}

int64_t energy_rank(const torch::Tensor& sigma, double threshold) {
  TORCH_CHECK(sigma.dim() == 1, "strata::subspaces::energy_rank(): sigma must be 1-D, got shape ", sigma.sizes());
  auto e = sigma.to(torch::kFloat64).square();
  double total = e.sum().item<double>();
  if (!(total > 0)) return 0;
  auto ratio = e.cumsum(0) / total;
  return ratio.lt(threshold).sum().item<int64_t>();
}

int64_t energy_rank_incremental(const torch::Tensor& sigma_residual, double total_energy, double threshold) {
  TORCH_CHECK(sigma_residual.dim() == 1, "strata::subspaces::energy_rank_incremental(): sigma must be 1-D, got shape ",
              sigma_residual.sizes());
  if (!(total_energy > 0)) return 0;
  auto e = sigma_residual.to(torch::kFloat64).square().contiguous();
  const double* p = e.data_ptr<double>();
  const int64_t len = e.numel();
  double residual = 0;
  for (int64_t i = 0; i < len; ++i) residual += p[i];
  double acc = (total_energy - residual) / total_energy;
  int64_t k = 0;
  while (k < len && acc < threshold) {
    acc += p[k] / total_energy;
    ++k;
  }
  return k;
}

torch::Tensor extend_basis(const torch::Tensor& U_old, const torch::Tensor& V) {
  TORCH_CHECK(V.defined() && V.dim() == 2, "strata::subspaces::extend_basis(): V must be 2-D, got ",
              V.defined() ? V.sizes() : torch::IntArrayRef{});
  torch::NoGradGuard no_grad;
  const int64_t n = V.size(0);
  torch::Tensor Vc = as_compute(V);
  torch::Tensor Uo;
  if (!empty_basis(U_old)) {
    check_basis(U_old, n, "extend_basis", "U_old");
    Uo = U_old.to(Vc.dtype());
    if (Uo.size(1) >= n) return Uo.narrow(1, 0, n).contiguous();
    Vc = Vc - Uo.mm(Uo.t().mm(Vc));
  }
  if (Vc.size(1) == 0) return Uo.defined() ? Uo.contiguous() : Vc;
  const double scale = std::max(V.to(Vc.dtype()).square().sum(0).sqrt().max().item<double>(), 1e-30);
  auto [Q, R] = torch::linalg_qr(Vc, "reduced");
  // Keep directions with a significant component outside span(U_old).
  auto keep = R.diagonal().abs().gt(1e-6 * scale).nonzero().squeeze(1);
  torch::Tensor Qn = Q.index_select(1, keep);
  if (Uo.defined() && Qn.size(1) > 0) {
    // Second pass (twice is enough): clears the round-off that QR of a projected block leaves.
    Qn = Qn - Uo.mm(Uo.t().mm(Qn));
    Qn = std::get<0>(torch::linalg_qr(Qn, "reduced"));
  }
  torch::Tensor out = Uo.defined() ? torch::cat({Uo, Qn}, 1) : Qn;
  if (out.size(1) > n) out = out.narrow(1, 0, n);
  return out.contiguous();
}

namespace {

// Leading singular triplets of A, enough of them to decide the energy rule: the exact method
// returns the full spectrum; a truncated method (randomized, or what "auto" picks for the rank
// asked) starts at `rank` or min(m, n)/8 and doubles until the captured energy reaches
// `needed` (a fraction of ‖A‖_F² = `total`) before the last returned value, or the rank reaches
// min(m, n) (then the exact SVD runs). `needed` > 1 can never be met: full spectrum.
SvdResult energy_svd(const torch::Tensor& A, double total, double needed, const SvdOptions& o) {
  const int64_t mn = std::min(A.size(0), A.size(1));
  if (o.method() == "exact" || o.rank() >= mn) return svd(A, SvdOptions(o).method("exact").rank(-1));
  int64_t r = o.rank() > 0 ? o.rank() : std::max<int64_t>(8, mn / 8);
  for (;;) {
    r = std::min(r, mn);
    if (r >= mn) return svd(A, SvdOptions(o).method("exact").rank(-1));
    SvdResult res = svd(A, SvdOptions(o).rank(r));
    if (res.method == "exact") return svd(A, SvdOptions(o).method("exact").rank(-1));
    auto e = res.S.to(torch::kFloat64).square();
    // The rule is decided when the first r - 1 values already reach the needed energy.
    const double head = r > 1 ? e.narrow(0, 0, r - 1).sum().item<double>() : 0.0;
    if (!(total > 0) || head >= needed * total) return res;
    r *= 2;
  }
}

}  // namespace

BasisUpdate gpm_update_basis(const torch::Tensor& U_old, const torch::Tensor& R, double threshold,
                             const SvdOptions& svd_options) {
  torch::NoGradGuard no_grad;
  TORCH_CHECK(R.defined() && R.dim() == 2, "strata::subspaces::gpm_update_basis(): R must be 2-D [n, samples], got ",
              R.defined() ? R.sizes() : torch::IntArrayRef{});
  TORCH_CHECK(threshold > 0 && threshold <= 1, "strata::subspaces::gpm_update_basis(): threshold must be in (0, 1], got ",
              threshold);
  check_finite(R, "gpm_update_basis");
  torch::Tensor Rc = as_compute(R);
  const int64_t n = Rc.size(0);
  BasisUpdate out;
  out.total_energy = Rc.square().sum().item<double>();
  if (empty_basis(U_old)) {
    auto s = energy_svd(Rc, out.total_energy, threshold, svd_options);
    out.svd_method = s.method;
    // With a truncated spectrum the ratios are taken against ‖R‖_F² (= the full spectrum's total).
    auto e = s.S.to(torch::kFloat64).square();
    const double total = s.S.size(0) < std::min(Rc.size(0), Rc.size(1)) ? out.total_energy : e.sum().item<double>();
    int64_t k = total > 0 ? (e.cumsum(0) / total).lt(threshold).sum().item<int64_t>() : 0;
    out.spectrum = s.S;
    out.basis = s.U.narrow(1, 0, k).contiguous();
    out.added = k;
    out.captured_energy = out.total_energy > 0 ? e.narrow(0, 0, k).sum().item<double>() / out.total_energy : 0.0;
  } else {
    check_basis(U_old, n, "gpm_update_basis", "U_old");
    torch::Tensor Uo = U_old.to(Rc.dtype());
    torch::Tensor Rhat = Rc - Uo.mm(Uo.t().mm(Rc));
    // Residual energy from ‖R̂‖_F², not from the (possibly truncated) spectrum.
    const double residual = Rhat.square().sum().item<double>();
    const double kept = out.total_energy > 0 ? (out.total_energy - residual) / out.total_energy : 1.0;
    const double needed = residual > 0 ? (threshold - kept) * out.total_energy / residual : 0.0;
    auto s = energy_svd(Rhat, residual, std::max(needed, 0.0), svd_options);
    out.svd_method = s.method;
    auto e = s.S.to(torch::kFloat64).square().contiguous();
    int64_t k = 0;
    if (s.S.size(0) == std::min(Rhat.size(0), Rhat.size(1))) {  // full spectrum: the rule as stated
      k = energy_rank_incremental(s.S, out.total_energy, threshold);
      const double full = e.sum().item<double>();
      out.captured_energy = out.total_energy > 0
                                ? (out.total_energy - full + e.narrow(0, 0, k).sum().item<double>()) / out.total_energy
                                : 0.0;
    } else {
      double acc = kept;
      const double* p = e.data_ptr<double>();
      while (k < e.numel() && acc < threshold) acc += p[k++] / out.total_energy;
      out.captured_energy = kept + e.narrow(0, 0, k).sum().item<double>() / out.total_energy;
    }
    out.spectrum = s.S;
    out.basis = k > 0 ? extend_basis(Uo, s.U.narrow(1, 0, k)) : Uo.contiguous();
    out.added = out.basis.size(1) - Uo.size(1);
  }
  out.rank = out.basis.size(1);
  return out;
}

torch::Tensor principal_angles(const torch::Tensor& A, const torch::Tensor& B) {
  torch::NoGradGuard no_grad;
  TORCH_CHECK(A.dim() == 2 && B.dim() == 2 && A.size(0) == B.size(0),
              "strata::subspaces::principal_angles(): expected A [n, p] and B [n, q], got ", A.sizes(), " and ",
              B.sizes());
  if (A.size(1) == 0 || B.size(1) == 0) return torch::empty({0}, torch::kFloat64);
  torch::Tensor Qa = std::get<0>(torch::linalg_qr(A.to(torch::kFloat64), "reduced"));
  torch::Tensor Qb = std::get<0>(torch::linalg_qr(B.to(torch::kFloat64), "reduced"));
  if (Qb.size(1) > Qa.size(1)) std::swap(Qa, Qb);  // now q <= p: q angles
  torch::Tensor cos = torch::linalg_svdvals(Qa.t().mm(Qb)).clamp(0, 1);  // descending -> ascending angles
  torch::Tensor sin = torch::linalg_svdvals(Qb - Qa.mm(Qa.t().mm(Qb))).clamp(0, 1).flip(0);  // ascending
  torch::Tensor small = torch::asin(sin);
  torch::Tensor large = torch::acos(cos);
  return torch::where(cos.square() > 0.5, small, large);
}

double projector_distance(const torch::Tensor& A, const torch::Tensor& B) {
  TORCH_CHECK(A.dim() == 2 && B.dim() == 2 && A.size(0) == B.size(0),
              "strata::subspaces::projector_distance(): expected A [n, p] and B [n, q], got ", A.sizes(), " and ",
              B.sizes());
  // p + q - 2‖AᵀB‖_F² computed as the two residuals ‖B - A AᵀB‖_F² + ‖A - B BᵀA‖_F² (equal for
  // orthonormal A, B): no cancellation, so nearby float32 subspaces do not show a sqrt(eps) floor.
  auto a = A.to(torch::kFloat64), b = B.to(torch::kFloat64);
  double d2 = (b - a.mm(a.t().mm(b))).square().sum().item<double>() + (a - b.mm(b.t().mm(a))).square().sum().item<double>();
  return std::sqrt(std::max(d2, 0.0));
}

torch::Tensor added_directions(const torch::Tensor& previous, const torch::Tensor& current, double tol) {
  torch::NoGradGuard no_grad;
  TORCH_CHECK(current.dim() == 2, "strata::subspaces::added_directions(): expected current [n, q], got ",
              current.sizes());
  const int64_t n = current.size(0);
  if (current.size(1) == 0) return torch::empty({n, 0}, torch::kFloat64);
  torch::Tensor C = std::get<0>(torch::linalg_qr(current.to(torch::kFloat64), "reduced"));
  if (previous.defined() && previous.numel() > 0) {
    TORCH_CHECK(previous.dim() == 2 && previous.size(0) == n, "strata::subspaces::added_directions(): expected previous [",
                n, ", p], got ", previous.sizes());
    torch::Tensor P = std::get<0>(torch::linalg_qr(previous.to(torch::kFloat64), "reduced"));
    C = C - P.mm(P.t().mm(C));
  }
  auto [U, S, Vh] = torch::linalg_svd(C, /*full_matrices=*/false);
  const int64_t a = (S > tol).sum().item<int64_t>();
  return U.slice(1, 0, a).contiguous();
}

}  // namespace strata::subspaces
