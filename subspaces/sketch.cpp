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

void FrequentDirections::push(const torch::Tensor& Z) {
  torch::NoGradGuard no_grad;
  TORCH_CHECK(Z.dim() == 2 && Z.size(0) == dim_, "strata::subspaces::FrequentDirections::push(): expected [", dim_,
              ", p], got ", Z.sizes());
  const int64_t cap = std::max(options_.buffer() > 0 ? options_.buffer() : options_.rank(), Z.size(1));
  if (!buffer_.defined() || buffer_.size(1) < cap) {
    auto grown = torch::zeros({dim_, cap}, Z.options().dtype(torch::kFloat32));
    if (used_ > 0) grown.narrow(1, 0, used_).copy_(buffer_.narrow(1, 0, used_));
    buffer_ = grown;
  }
  if (used_ + Z.size(1) > buffer_.size(1)) flush();
  if (options_.decay() != 1.0) {
    if (used_ > 0) buffer_.narrow(1, 0, used_).mul_(options_.decay());
    pending_decay_ *= options_.decay();
  }
  buffer_.narrow(1, used_, Z.size(1)).copy_(Z);
  used_ += Z.size(1);
  if (used_ >= buffer_.size(1)) flush();
}

void FrequentDirections::flush() {
  torch::NoGradGuard no_grad;
  if (used_ == 0) return;
  const int64_t r = options_.rank();
  torch::Tensor P = buffer_.narrow(1, 0, used_);
  torch::Tensor C = sketch_.defined() ? torch::cat({sketch_ * pending_decay_, P}, 1) : P.clone();
  used_ = 0;
  pending_decay_ = 1.0;
  const int64_t want = std::min(r + 1, std::min(C.size(0), C.size(1)));
  auto d = svd(C, SvdOptions(options_.svd()).rank(want));
  auto [Ub, sb] = shrink(d.U, d.S, r);
  basis_ = Ub;
  sigma_ = sb;
  sketch_ = Ub * sb.unsqueeze(0);
}

torch::Tensor FrequentDirections::pending() const {
  if (used_ == 0) return torch::zeros({dim_, 0});
  return buffer_.narrow(1, 0, used_).clone();
}

void FrequentDirections::set_pending(const torch::Tensor& Z, double pending_decay) {
  TORCH_CHECK(Z.dim() == 2 && Z.size(0) == dim_, "strata::subspaces::FrequentDirections::set_pending(): expected [",
              dim_, ", p], got ", Z.sizes());
  used_ = 0;
  pending_decay_ = 1.0;
  if (Z.size(1) == 0) return;
  const int64_t cap = std::max(options_.buffer() > 0 ? options_.buffer() : options_.rank(), Z.size(1));
  buffer_ = torch::zeros({dim_, cap}, torch::kFloat32);
  buffer_.narrow(1, 0, Z.size(1)).copy_(Z);
  used_ = Z.size(1);
  pending_decay_ = pending_decay;
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
  used_ = 0;
  pending_decay_ = 1.0;
  sketch_ = torch::Tensor();
  basis_ = torch::Tensor();
  sigma_ = torch::Tensor();
}

}  // namespace strata::subspaces
