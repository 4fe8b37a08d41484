#include "subspaces/sketch.h"

#include "subspaces/basis.h"

namespace strata::subspaces {
namespace {

// (U[:, :r], sqrt(max(σ_i² - σ_{r+1}², 0))), padded with zero columns to exactly r.
std::pair<torch::Tensor, torch::Tensor> shrink(const torch::Tensor& U, const torch::Tensor& s, int64_t r) {
  const int64_t p = s.size(0);
  double delta = p > r ? s[r].item<double>() : 0.0;
  delta *= delta;
  const int64_t keep = std::min(p, r);
  torch::Tensor q = (s.narrow(0, 0, keep).square() - delta).clamp_min(0).sqrt();
  torch::Tensor Uk = U.narrow(1, 0, keep);
  if (keep < r) {
    Uk = torch::cat({Uk, torch::zeros({U.size(0), r - keep}, U.options())}, 1);
    q = torch::cat({q, torch::zeros({r - keep}, q.options())});
  }
  return {Uk.contiguous(), q.contiguous()};
}

}  // namespace

FrequentDirections::FrequentDirections(int64_t dim, SketchOptions options) : dim_(dim), options_(std::move(options)) {
  TORCH_CHECK(dim_ > 0, "strata::subspaces::FrequentDirections(): dim must be > 0, got ", dim_);
  TORCH_CHECK(options_.rank() > 0, "strata::subspaces::FrequentDirections(): rank must be > 0, got ", options_.rank());
  TORCH_CHECK(options_.decay() >= 0, "strata::subspaces::FrequentDirections(): decay must be >= 0, got ",
              options_.decay());
}

void FrequentDirections::update_columns(const torch::Tensor& G) {
  torch::NoGradGuard no_grad;
  TORCH_CHECK(G.dim() == 2 && G.size(0) == dim_, "strata::subspaces::FrequentDirections::update_columns(): expected [",
              dim_, ", n], got ", G.sizes());
  // Need σ_{r+1}: ask for r+1 triplets when available.
  const int64_t want = std::min(options_.rank() + 1, std::min(G.size(0), G.size(1)));
  auto s = svd(G, SvdOptions(options_.svd()).rank(want));
  merge(s.U, s.S);
}

void FrequentDirections::update_from_svd(const torch::Tensor& U, const torch::Tensor& sigma) {
  torch::NoGradGuard no_grad;
  TORCH_CHECK(U.dim() == 2 && U.size(0) == dim_ && sigma.dim() == 1 && sigma.size(0) == U.size(1),
              "strata::subspaces::FrequentDirections::update_from_svd(): expected U [", dim_, ", p] and sigma [p], got ",
              U.sizes(), " and ", sigma.sizes());
  check_finite(sigma, "FrequentDirections::update_from_svd");
  merge(U.to(torch::kFloat32).contiguous(), sigma.to(torch::kFloat32).contiguous());
}

void FrequentDirections::merge(const torch::Tensor& U, const torch::Tensor& s) {
  const int64_t r = options_.rank();
  auto [Uq, q] = shrink(U, s, r);
  torch::Tensor Q = Uq * q.unsqueeze(0);  // U diag(q)
  if (!sketch_.defined()) {
    sketch_ = Q;
    basis_ = Uq;
    sigma_ = q;
    return;
  }
  torch::Tensor C = torch::cat({sketch_.to(Q.dtype()) * options_.decay(), Q}, 1);  // [m, 2r]
  const int64_t want = std::min(r + 1, std::min(C.size(0), C.size(1)));
  auto d = svd(C, SvdOptions(options_.svd()).rank(want));
  auto [Ub, sb] = shrink(d.U, d.S, r);
  basis_ = Ub;
  sigma_ = sb;
  sketch_ = Ub * sb.unsqueeze(0);
}

torch::Tensor FrequentDirections::top_directions(int64_t k) const {
  TORCH_CHECK(!empty(), "strata::subspaces::FrequentDirections::top_directions(): sketch is empty");
  TORCH_CHECK(k >= 0 && k <= rank(), "strata::subspaces::FrequentDirections::top_directions(): k must be in [0, ",
              rank(), "], got ", k);
  return basis_.narrow(1, 0, k).contiguous();
}

int64_t FrequentDirections::energy_rank(double threshold) const {
  if (empty()) return 0;
  return strata::subspaces::energy_rank(sigma_, threshold);
}

void FrequentDirections::reset() {
  sketch_ = torch::Tensor();
  basis_ = torch::Tensor();
  sigma_ = torch::Tensor();
}

}  // namespace strata::subspaces
