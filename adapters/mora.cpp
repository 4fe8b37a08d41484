#include "adapters/mora.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include <ATen/AccumulateType.h>

#include "adapters/inject.h"

namespace strata::adapters {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The top-k's fast path is compiled per instruction set (GCC's target_clones, picked at load time,
// as in core/batch_dropout.cpp): its R² compares take 8 or 16 lanes instead of SSE's 4. Compares
// and counts are exact, so the atoms selected do not depend on the clone.
#if defined(__x86_64__) && defined(__ELF__) && defined(__has_attribute) && !defined(__clang__)  // GCC's arch= clone syntax
#if __has_attribute(target_clones) && !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define STRATA_MORA_CLONES __attribute__((target_clones("default", "avx2", "arch=x86-64-v4")))
#endif
#endif
#ifndef STRATA_MORA_CLONES
#define STRATA_MORA_CLONES
#endif

// The k largest of s[0..R) into out (in index order) when they are unique: for every atom, the
// number of atoms with a strictly larger score; the atoms with fewer than k form topk's set when
// there are exactly k of them. Returns false on a NaN or a tie across the k-th place (more than
// k such atoms), where the set depends on topk's algorithm. Branch-free (whether an atom is in
// is a coin flip for the predictor): the candidates go to scratch [R] first.
template <typename T>
inline __attribute__((always_inline)) bool unique_top_k_impl(const T* s, int64_t R, int64_t k, int64_t* scratch,
                                                             int64_t* out) {
  int64_t n = 0;
  bool nan = false;
  for (int64_t j = 0; j < R; ++j) {
    const T v = s[j];
    int32_t larger = 0;
    for (int64_t l = 0; l < R; ++l) larger += s[l] > v;
    nan |= v != v;
    scratch[n] = j;
    n += larger < k;
  }
  if (nan || n != k) return false;
  std::copy(scratch, scratch + k, out);
  return true;
}
STRATA_MORA_CLONES bool unique_top_k(const float* s, int64_t R, int64_t k, int64_t* scratch, int64_t* out) {
  return unique_top_k_impl(s, R, k, scratch, out);
}
STRATA_MORA_CLONES bool unique_top_k(const double* s, int64_t R, int64_t k, int64_t* scratch, int64_t* out) {
  return unique_top_k_impl(s, R, k, scratch, out);
}

// What one MoRA forward needs besides its tensors (the routing settings of this call).
struct MoRAStep {
  const torch::Tensor *A_all_t, *B_all_t;  // A_allᵀ [n, R], B_allᵀ [R, m]: cached views, tails refreshed
  double scaling, temperature, threshold, eps;
  int64_t k;
  bool threshold_on;
};

// MoRA's whole update as one autograd node: keys z = x A_allᵀ, routing w(z), values
// y = base + (w ⊙ z) B_allᵀ. The forward is two BLAS products (the second one addmm onto base)
// around one loop per row for ‖z‖, ŝ, the top-k, the softmax over the k selected scores, the
// threshold and w ⊙ z; the backward is one loop per row for the routing and the products written
// out from the saved factors. The loop replaces ATen's norm, clamp_min, div and topk (four
// operators, five allocations and, in topk, a buffer per row); the selection counts branch-free
// (unique_top_k) and, on a tie across the k-th place or a NaN, repeats ATen's CPU topk on the same
// values, so the same atoms are selected, exact ties (e.g. z = 0) included; their order within T
// (index order on the fast path) only changes the softmax's summation order. The gradient is
// formed for the r trainable atoms only (autograd formed it for all R atoms and then narrowed it).
// It reads A_old, A_new, B_old, B_new as saved here, never the caches, so an in-place change of a
// factor before backward fails as in autograd instead of using other values.
//
// Per token (row i), with T = the k selected atoms (all R when k ≥ R), d = max(‖z‖, eps), ŝ = z/d:
//   p_t = softmax_t(ŝ_t / τ), w_t = p_t·[ŝ_t ≥ δ] (δ only when on), u_t = w_t z_t, u = 0 off T
// and for du = dy B_all:
//   dp_t = du_t z_t [ŝ_t ≥ δ],  dŝ_t = p_t (dp_t − Σ_T p dp) / τ,  c = Σ_T dŝ_t ŝ_t
//   dz = du ⊙ w + dŝ / d − [‖z‖ ≥ eps]·ŝ·c / d      (dŝ = 0 off T)
//
// Saved routing state, one buffer `ws` per call: ŝ [N, R], p [N, k], ‖z‖ [N], d [N] (at these
// offsets), and the selected atoms idx [N, k] (int64, undefined when k ≥ R: T is every atom).
struct MoRAUpdate : public torch::autograd::Function<MoRAUpdate> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x2, const torch::Tensor& base2,
                               const torch::Tensor& A_new, const torch::Tensor& B_new, const torch::Tensor& A_old,
                               const torch::Tensor& B_old, const MoRAStep* p) {
    const torch::Tensor z = x2.mm(*p->A_all_t).contiguous();  // [N, R]
    const int64_t N = z.size(0), R = z.size(1);
    const bool full = p->k >= R;
    const int64_t k = full ? R : p->k;
    torch::Tensor ws = torch::empty({N * (R + k + 2)}, z.options());
    torch::Tensor idx = full ? torch::Tensor() : torch::empty({N, k}, z.options().dtype(torch::kLong));
    torch::Tensor u = torch::empty_like(z);  // zeroed row by row below
    AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "MoRAUpdate::forward", [&] {
      using acc_t = at::acc_type<scalar_t, false>;
      const scalar_t tau = static_cast<scalar_t>(p->temperature), delta = static_cast<scalar_t>(p->threshold),
                     eps = static_cast<scalar_t>(p->eps);
      const scalar_t* zp = z.data_ptr<scalar_t>();
      scalar_t* sp = ws.data_ptr<scalar_t>();
      scalar_t *pp = sp + N * R, *np = pp + N * k, *dp = np + N;
      int64_t* ip = full ? nullptr : idx.data_ptr<int64_t>();
      scalar_t* up = u.data_ptr<scalar_t>();
      std::vector<int64_t> order(R);  // T when k ≥ R: every atom
      std::iota(order.begin(), order.end(), int64_t{0});
      using Elem = std::pair<scalar_t, int64_t>;
      std::vector<Elem> queue(full ? 0 : R);
      std::vector<int64_t> pick(full ? 0 : R);  // unique_top_k's scratch
      for (int64_t i = 0; i < N; ++i) {
        const scalar_t* zi = zp + i * R;
        scalar_t *si = sp + i * R, *ui = up + i * R, *prob = pp + i * k;
        acc_t ss = 0;
        for (int64_t j = 0; j < R; ++j) ss += static_cast<acc_t>(zi[j]) * static_cast<acc_t>(zi[j]);
        const scalar_t nrm = static_cast<scalar_t>(std::sqrt(ss));
        const scalar_t di = nrm < eps ? eps : nrm;  // clamp_min (a NaN norm stays NaN)
        np[i] = nrm;
        dp[i] = di;
        for (int64_t j = 0; j < R; ++j) {
          si[j] = zi[j] / di;
          ui[j] = scalar_t(0);
        }
        const int64_t* sel = order.data();
        if (!full) {
          int64_t* ti = ip + i * k;
          if (!unique_top_k(si, R, k, pick.data(), ti)) {
            // ATen's CPU topk (TopKImpl.h) step by step: the same (value, index) queue, comparator
            // (NaN first) and algorithm, so the same atoms win the tie.
            for (int64_t j = 0; j < R; ++j) queue[j] = {si[j], j};
            const auto larger = [](const Elem& x, const Elem& y) {
              return (std::isnan(x.first) && !std::isnan(y.first)) || x.first > y.first;
            };
            if (k * 64 <= R) {
              std::partial_sort(queue.begin(), queue.begin() + k, queue.end(), larger);
            } else {
              std::nth_element(queue.begin(), queue.begin() + k - 1, queue.end(), larger);
              std::sort(queue.begin(), queue.begin() + k - 1, larger);
            }
            for (int64_t t = 0; t < k; ++t) ti[t] = queue[t].second;
          }
          sel = ti;
        }
        scalar_t mx = -std::numeric_limits<scalar_t>::infinity();
        for (int64_t t = 0; t < k; ++t) mx = std::max(mx, static_cast<scalar_t>(si[sel[t]] / tau));
        acc_t sum = 0;
        for (int64_t t = 0; t < k; ++t) {
          prob[t] = std::exp(static_cast<scalar_t>(si[sel[t]] / tau) - mx);
          sum += prob[t];
        }
        for (int64_t t = 0; t < k; ++t) {
          const int64_t j = sel[t];
          prob[t] = static_cast<scalar_t>(prob[t] / sum);
          const scalar_t w = (p->threshold_on && !(si[j] >= delta)) ? scalar_t(0) : prob[t];
          ui[j] = w * zi[j];
        }
      }
    });
    ctx->save_for_backward({x2, A_new, B_new, A_old, B_old});
    ctx->saved_data["z"] = z;
    ctx->saved_data["u"] = u;
    ctx->saved_data["ws"] = ws;
    ctx->saved_data["idx"] = idx;
    ctx->saved_data["scaling"] = p->scaling;
    ctx->saved_data["temperature"] = p->temperature;
    ctx->saved_data["threshold"] = p->threshold_on ? p->threshold : -std::numeric_limits<double>::infinity();
    ctx->saved_data["eps"] = p->eps;
    return torch::addmm(base2, u, *p->B_all_t);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &x2 = saved[0], &A_new = saved[1], &B_new = saved[2], &A_old = saved[3], &B_old = saved[4];
    const torch::Tensor z = ctx->saved_data["z"].toTensor(), u = ctx->saved_data["u"].toTensor(),
                        ws = ctx->saved_data["ws"].toTensor(), idx = ctx->saved_data["idx"].toTensor();
    const double s = ctx->saved_data["scaling"].toDouble(), tau = ctx->saved_data["temperature"].toDouble(),
                 threshold = ctx->saved_data["threshold"].toDouble(), eps = ctx->saved_data["eps"].toDouble();
    const torch::Tensor& g = grad_out[0];  // [N, m]
    const int64_t R_old = A_old.size(0), r = A_new.size(0);
    variable_list out(7);
    if (ctx->needs_input_grad(1)) out[1] = g;
    if (ctx->needs_input_grad(3) && r > 0) {
      // B_all = [B_old, s·B_new]: dB_new = s·gᵀ u_new.
      out[3] = g.t().mm(u.narrow(1, R_old, r));
      if (s != 1.0) out[3].mul_(s);
    }
    if (!ctx->needs_input_grad(0) && !ctx->needs_input_grad(2)) return out;
    // du = g B_all = [g B_old, s·g B_new] and dz, each kept as its bank and trainable blocks (the
    // products read and write whole tensors; the loop applies s).
    const torch::Tensor gu_old = R_old > 0 ? g.mm(B_old).contiguous() : torch::Tensor();
    const torch::Tensor gu_new = r > 0 ? g.mm(B_new).contiguous() : torch::Tensor();
    torch::Tensor gz_old = R_old > 0 ? torch::empty({z.size(0), R_old}, z.options()) : torch::Tensor();
    torch::Tensor gz_new = r > 0 ? torch::empty({z.size(0), r}, z.options()) : torch::Tensor();
    const int64_t N = z.size(0), R = z.size(1);
    const bool full = !idx.defined();
    const int64_t k = full ? R : idx.size(1);
    TORCH_INTERNAL_ASSERT(R == R_old + r && ws.numel() == N * (R + k + 2), "MoRAUpdate::backward: saved state of ",
                          ws.numel(), " values for ", N, " rows, ", R, " atoms, k ", k);
    AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "MoRAUpdate::backward", [&] {
      using acc_t = at::acc_type<scalar_t, false>;
      const scalar_t tau_s = static_cast<scalar_t>(tau), s_s = static_cast<scalar_t>(s);
      const scalar_t delta = threshold == -std::numeric_limits<double>::infinity()
                                 ? -std::numeric_limits<scalar_t>::infinity()
                                 : static_cast<scalar_t>(threshold);
      const scalar_t *zp = z.data_ptr<scalar_t>(), *sp = ws.data_ptr<scalar_t>();
      const scalar_t *pp = sp + N * R, *np = pp + N * k, *dp = np + N;
      const scalar_t* guo = R_old > 0 ? gu_old.data_ptr<scalar_t>() : nullptr;
      const scalar_t* gun = r > 0 ? gu_new.data_ptr<scalar_t>() : nullptr;
      scalar_t* gzo = R_old > 0 ? gz_old.data_ptr<scalar_t>() : nullptr;
      scalar_t* gzn = r > 0 ? gz_new.data_ptr<scalar_t>() : nullptr;
      const int64_t* ip = full ? nullptr : idx.data_ptr<int64_t>();
      std::vector<int64_t> all(R);
      std::iota(all.begin(), all.end(), int64_t{0});
      std::vector<scalar_t> gs(k), gut(k);
      for (int64_t i = 0; i < N; ++i) {
        const scalar_t *zi = zp + i * R, *si = sp + i * R, *pi = pp + i * k;
        const int64_t* sel = full ? all.data() : ip + i * k;
        scalar_t *gzoi = gzo ? gzo + i * R_old : nullptr, *gzni = gzn ? gzn + i * r : nullptr;
        acc_t pdp = 0;  // Σ_T p dp
        for (int64_t t = 0; t < k; ++t) {
          const int64_t j = sel[t];
          gut[t] = j < R_old ? guo[i * R_old + j] : s_s * gun[i * r + (j - R_old)];  // du_t
          gs[t] = si[j] >= delta ? gut[t] * zi[j] : scalar_t(0);                       // dp_t
          pdp += pi[t] * gs[t];
        }
        acc_t c = 0;
        for (int64_t t = 0; t < k; ++t) {
          gs[t] = pi[t] * static_cast<scalar_t>(gs[t] - pdp) / tau_s;  // dŝ_t
          c += gs[t] * si[sel[t]];
        }
        const scalar_t di = dp[i];
        const scalar_t coef = np[i] >= static_cast<scalar_t>(eps) ? static_cast<scalar_t>(c / di) : scalar_t(0);
        for (int64_t j = 0; j < R_old; ++j) gzoi[j] = -si[j] * coef;
        for (int64_t j = 0; j < r; ++j) gzni[j] = -si[R_old + j] * coef;
        for (int64_t t = 0; t < k; ++t) {
          const int64_t j = sel[t];
          const scalar_t w = si[j] >= delta ? pi[t] : scalar_t(0);
          scalar_t& gzj = j < R_old ? gzoi[j] : gzni[j - R_old];
          gzj += gut[t] * w + gs[t] / di;
        }
      }
    });
    if (ctx->needs_input_grad(0)) {
      // z = x [A_old; A_new]ᵀ: dx = dz_new A_new + dz_old A_old.
      torch::Tensor gx = r > 0 ? gz_new.mm(A_new) : gz_old.mm(A_old);
      if (r > 0 && R_old > 0) gx.addmm_(gz_old, A_old);
      out[0] = gx;
    }
    if (ctx->needs_input_grad(2) && r > 0) out[2] = gz_new.t().mm(x2);
    return out;
  }
};

}  // namespace

MoRAImpl::MoRAImpl(int64_t in_features, int64_t out_features, MoRAOptions options)
    : options_(std::move(options)), in_(in_features), out_(out_features) {
  TORCH_CHECK(in_ > 0 && out_ > 0, "strata::adapters::MoRA(): bad shape in=", in_, " out=", out_);
  TORCH_CHECK(options_.rank() > 0, "strata::adapters::MoRA(): rank must be positive, got ", options_.rank());
  TORCH_CHECK(options_.temperature() > 0.0, "strata::adapters::MoRA(): temperature must be positive, got ",
              options_.temperature());
  TORCH_CHECK(options_.top_k() >= 0, "strata::adapters::MoRA(): negative top_k ", options_.top_k());
  A_old = register_buffer("A_old", torch::zeros({0, in_}));
  B_old = register_buffer("B_old", torch::zeros({out_, 0}));
  A_new = register_parameter("A_new", torch::zeros({0, in_}));
  B_new = register_parameter("B_new", torch::zeros({out_, 0}));
  reset_stats();
}

void MoRAImpl::set_temperature(double tau) {
  TORCH_CHECK(tau > 0.0, "strata::adapters::MoRA::set_temperature(): temperature must be positive, got ", tau);
  options_.temperature(tau);
}

void MoRAImpl::set_top_k(int64_t k_cfg) {
  TORCH_CHECK(k_cfg >= 0, "strata::adapters::MoRA::set_top_k(): negative k ", k_cfg);
  options_.top_k(k_cfg);
}

int64_t MoRAImpl::effective_k() const {
  const int64_t k_cfg = options_.top_k() > 0 ? options_.top_k() : options_.rank();
  return std::min<int64_t>(std::max<int64_t>(k_cfg, 2), total_atoms());
}

bool MoRAImpl::threshold_on() const {
  if (options_.threshold() <= 0.0) return false;
  switch (mode_) {
    case RoutingMode::Train: return false;
    case RoutingMode::Inference: return true;
    default: return !is_training();
  }
}

torch::Tensor MoRAImpl::routing_from(const torch::Tensor& z) const {
  const torch::Tensor s_hat = z / z.norm(2, -1, /*keepdim=*/true).clamp_min(options_.eps());
  const int64_t k = effective_k();
  torch::Tensor logits = s_hat;
  if (k < s_hat.size(-1)) {
    auto top = torch::topk(s_hat, k, -1);
    logits = torch::full_like(s_hat, -std::numeric_limits<double>::infinity())
                 .scatter(-1, std::get<1>(top), std::get<0>(top));
  }
  torch::Tensor w = torch::softmax(logits / options_.temperature(), -1);
  if (threshold_on()) w = w * (s_hat >= options_.threshold()).to(w.scalar_type());
  return w;
}

torch::Tensor MoRAImpl::routing_weights(const torch::Tensor& x) const {
  TORCH_CHECK(total_atoms() > 0, "strata::adapters::MoRA::routing_weights(): no atoms (call add_task_atoms)");
  return routing_from(torch::matmul(x, torch::cat({A_old, A_new}, 0).t()));
}

void MoRAImpl::refresh_bank_cache() {
  torch::NoGradGuard no_grad;
  const BankKey key{A_old.data_ptr(), B_old.data_ptr(), A_old._version(), B_old._version(), A_old.size(0),
                    A_new.size(0),    A_new.scalar_type(), A_new.device()};
  const int64_t R_old = key.bank, r = key.fresh;
  if (!A_all_.defined() || !(key == bank_key_)) {
    // The frozen bank changed (task switch, load_state, to(), an in-place write): copy it once.
    A_all_ = torch::empty({R_old + r, in_}, A_new.options());
    B_all_ = torch::empty({out_, R_old + r}, B_new.options());
    A_all_.narrow(0, 0, R_old).copy_(A_old);
    B_all_.narrow(1, 0, R_old).copy_(B_old);
    A_tail_ = A_all_.narrow(0, R_old, r);
    B_tail_ = B_all_.narrow(1, R_old, r);
    A_all_t_ = A_all_.t();
    B_all_t_ = B_all_.t();
    bank_key_ = key;
  }
  // The trainable tails change at every optimizer step: refreshed in place, never reallocated.
  if (r > 0) {
    A_tail_.copy_(A_new);
    B_tail_.copy_(B_new);
    if (options_.scaling() != 1.0) B_tail_.mul_(options_.scaling());
  }
}

torch::Tensor MoRAImpl::forward(const torch::Tensor& x, const torch::Tensor& base_out) {
  if (total_atoms() == 0) return base_out;
  if (!recording_) {
    refresh_bank_cache();
    const MoRAStep p{&A_all_t_,
                     &B_all_t_,
                     options_.scaling(),
                     options_.temperature(),
                     options_.threshold(),
                     options_.eps(),
                     effective_k(),
                     threshold_on()};
    // A [N, n] input (the MLP) goes in as it is: no reshape or view dispatched.
    const bool flat = x.dim() == 2 && base_out.dim() == 2;
    const torch::Tensor y = MoRAUpdate::apply(flat ? x : x.reshape({-1, in_}),
                                              flat ? base_out : base_out.reshape({-1, out_}), A_new, B_new, A_old,
                                              B_old, &p);
    return flat ? y : y.view(base_out.sizes());
  }
  // Recording (the activation report, no gradient needed): the composed operators, which also give w.
  const torch::Tensor z = torch::matmul(x, torch::cat({A_old, A_new}, 0).t());  // [..., R]
  const torch::Tensor w = routing_from(z);
  if (recording_) {
    torch::NoGradGuard no_grad;
    const torch::Tensor active = (w.detach() > 0).reshape({-1, w.size(-1)});
    act_counts_ += active.sum(0).to(torch::kInt64).cpu();
    tokens_ += active.size(0);
    active_total_ += active.sum().item<int64_t>();
  }
  const torch::Tensor B_all = torch::cat({B_old, options_.scaling() * B_new}, 1);  // [m, R]
  return base_out + torch::matmul(w * z, B_all.t());
}

torch::Tensor MoRAImpl::delta_weight() const {
  const bool all_zero = (B_old.numel() == 0 || !B_old.any().item<bool>()) &&
                        (B_new.numel() == 0 || !B_new.any().item<bool>());
  TORCH_CHECK(all_zero,
              "strata::adapters::MoRA::delta_weight(): MoRA's update B_all·(w(x) ⊙ A_all·x) depends on the input "
              "through the routing weights w(x), so it has no dense ΔW and cannot be merged; "
              "atoms in the bank: ", total_atoms());
  return torch::zeros({out_, in_}, A_old.options());
}

void MoRAImpl::freeze_old_atoms() {
  if (new_atoms() == 0) return;
  torch::NoGradGuard no_grad;
  detail::assign_(A_old, torch::cat({A_old, A_new.detach()}, 0));
  detail::assign_(B_old, torch::cat({B_old, options_.scaling() * B_new.detach()}, 1));
  detail::assign_(A_new, torch::zeros({0, in_}, A_new.options()));
  detail::assign_(B_new, torch::zeros({out_, 0}, B_new.options()));
}

void MoRAImpl::add_task_atoms(int64_t r) {
  if (r <= 0) r = options_.rank();
  freeze_old_atoms();
  torch::NoGradGuard no_grad;
  detail::assign_(A_new, torch::empty({r, in_}, A_new.options()));
  detail::assign_(B_new, torch::zeros({out_, r}, B_new.options()));
  torch::nn::init::kaiming_uniform_(A_new, std::sqrt(5.0));
  reset_stats();
}

void MoRAImpl::reset_stats() {
  act_counts_ = torch::zeros({total_atoms()}, torch::kInt64);
  tokens_ = 0;
  active_total_ = 0;
}

MoRAActivation MoRAImpl::active_atoms() const {
  MoRAActivation a;
  a.total_atoms = total_atoms();
  a.tokens = tokens_;
  a.mean_active_per_token = tokens_ > 0 ? static_cast<double>(active_total_) / static_cast<double>(tokens_) : 0.0;
  a.frequency = act_counts_.to(torch::kFloat64) / static_cast<double>(std::max<int64_t>(tokens_, 1));
  return a;
}

TensorMap MoRAImpl::state() const {
  return {{"A_old", A_old.clone()}, {"B_old", B_old.clone()},
          {"A_new", A_new.detach().clone()}, {"B_new", B_new.detach().clone()}};
}

void MoRAImpl::load_state(const TensorMap& s) {
  const auto& ao = detail::require(s, "A_old", "MoRA");
  const auto& bo = detail::require(s, "B_old", "MoRA");
  const auto& an = detail::require(s, "A_new", "MoRA");
  const auto& bn = detail::require(s, "B_new", "MoRA");
  TORCH_CHECK(ao.dim() == 2 && bo.dim() == 2 && an.dim() == 2 && bn.dim() == 2 && ao.size(1) == in_ &&
                  an.size(1) == in_ && bo.size(0) == out_ && bn.size(0) == out_ && ao.size(0) == bo.size(1) &&
                  an.size(0) == bn.size(1),
              "strata::adapters::MoRA::load_state(): bad shapes A_old ", ao.sizes(), " B_old ", bo.sizes(), " A_new ",
              an.sizes(), " B_new ", bn.sizes());
  detail::assign_(A_old, ao);
  detail::assign_(B_old, bo);
  detail::assign_(A_new, an);
  detail::assign_(B_new, bn);
  reset_stats();
}

int64_t mora_start_task(const torch::nn::Module& model, int64_t r) {
  int64_t n = 0;
  for (auto& [name, a] : adapters_of<MoRAImpl>(model)) {
    a->add_task_atoms(r);
    ++n;
  }
  return n;
}

void mora_record(const torch::nn::Module& model, bool on, bool reset) {
  for (auto& [name, a] : adapters_of<MoRAImpl>(model)) {
    if (reset) a->reset_stats();
    a->set_recording(on);
  }
}

std::vector<std::pair<std::string, MoRAActivation>> mora_activation_report(const torch::nn::Module& model) {
  std::vector<std::pair<std::string, MoRAActivation>> out;
  for (auto& [name, a] : adapters_of<MoRAImpl>(model)) out.emplace_back(name, a->active_atoms());
  return out;
}

}  // namespace strata::adapters
