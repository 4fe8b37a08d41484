#include "adapters/codyra.h"

#include <algorithm>
#include <cmath>

#include "adapters/inject.h"
#include "core/batch_dropout.h"

namespace strata::adapters {

double kappa_at(int64_t step, const KappaSchedule& s) {
  TORCH_CHECK(s.total_steps() > 0 && s.num_kappas() > 0 && s.dense_fraction() >= 0.0 && s.dense_fraction() <= 1.0,
              "strata::adapters::kappa_at(): bad schedule total_steps=", s.total_steps(), " num_kappas=",
              s.num_kappas(), " dense_fraction=", s.dense_fraction());
  TORCH_CHECK(step >= 0, "strata::adapters::kappa_at(): negative step ", step);
  const double dense = s.dense_fraction() * static_cast<double>(s.total_steps());
  if (static_cast<double>(step) <= dense) return 0.0;  // shrinkage only after steps s > dense
  const auto hop = static_cast<int64_t>(std::floor((static_cast<double>(s.total_steps()) - dense) /
                                                   static_cast<double>(s.num_kappas())));
  if (hop <= 0) return 0.0;
  // Number of multiples of hop in [dense, step]: each one advanced the κ index by one.
  const auto first = static_cast<int64_t>(std::ceil(dense / static_cast<double>(hop)));
  const int64_t advances = std::max<int64_t>(0, step / hop - first + 1);
  const int64_t idx = std::min<int64_t>(advances, s.num_kappas() - 1);
  if (s.num_kappas() == 1) return 0.0;  // linspace(0, κ_max, 1) = [0]
  return s.kappa_max() * static_cast<double>(idx) / static_cast<double>(s.num_kappas() - 1);
}

void soft_threshold_(torch::Tensor& w, double kappa, ShrinkMode mode) {
  if (kappa <= 0.0) return;
  torch::NoGradGuard no_grad;
  if (mode == ShrinkMode::Paper) {
    // sign(w)·max(|w| − κ, 0): zero exactly when |w| ≤ κ. softshrink is that operator element by
    // element (w ∓ κ beyond ±κ, w·0 inside, so even the zeros' signs agree), in one kernel in place
    // instead of five plus a copy: this runs after every optimizer step on every adapted layer.
    torch::softshrink_out(w, w, kappa);
  } else {
    w.sub_(kappa * (w > kappa).to(w.scalar_type()));
    w.add_(kappa * (w < -kappa).to(w.scalar_type()));
    w.masked_fill_(w.abs() < kappa, 0.0);
  }
}

CoDyRAImpl::CoDyRAImpl(int64_t in_features, int64_t out_features, CoDyRAOptions options)
    : options_(std::move(options)), in_(in_features), out_(out_features) {
  TORCH_CHECK(in_ > 0 && out_ > 0, "strata::adapters::CoDyRA(): bad shape in=", in_, " out=", out_);
  TORCH_CHECK(options_.rank() > 0, "strata::adapters::CoDyRA(): rank must be positive, got ", options_.rank());
  TORCH_CHECK(options_.dropout() >= 0.0 && options_.dropout() < 1.0, "strata::adapters::CoDyRA(): bad dropout ",
              options_.dropout());
  A = register_parameter("A", torch::empty({options_.rank(), in_}));
  B = register_parameter("B", torch::empty({out_, options_.rank()}));
  w = register_parameter("w", torch::empty({options_.rank()}));
  reset_parameters();
}

void CoDyRAImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  const int64_t r = options_.rank();
  if (A.size(0) != r) {
    detail::assign_(A, torch::empty({r, in_}, A.options()));
    detail::assign_(B, torch::empty({out_, r}, B.options()));
    detail::assign_(w, torch::empty({r}, w.options()));
  }
  torch::nn::init::kaiming_uniform_(A, std::sqrt(5.0));
  B.zero_();
  w.normal_();
  for (auto* p : {&A, &B, &w})
    if (p->grad().defined()) p->mutable_grad().reset();
}

torch::Tensor CoDyRAImpl::forward(const torch::Tensor& x, const torch::Tensor& base_out) {
  if (rank() == 0) return base_out;
  // The mask is a function of the global batch (core/batch_dropout.h): N workers draw what one does.
  const torch::Tensor xd = is_training() ? core::batch_dropout(x, options_.dropout()) : x;
  // Factored, with the sum folded into addmm (as LoRA): one kernel and node fewer per layer and step.
  const torch::Tensor x2 = xd.reshape({-1, xd.size(-1)});
  return torch::addmm(base_out.reshape({-1, base_out.size(-1)}), x2.mm(A.t()) * w, B.t()).view(base_out.sizes());
}

torch::Tensor CoDyRAImpl::delta_weight() const {
  if (rank() == 0) return torch::zeros({out_, in_}, A.options());
  return torch::matmul(B * w, A);
}

void CoDyRAImpl::soft_threshold_(double kappa, ShrinkMode mode) { adapters::soft_threshold_(w, kappa, mode); }

int64_t CoDyRAImpl::active_ranks() const { return (w != 0).sum().item<int64_t>(); }

int64_t CoDyRAImpl::prune() {
  torch::NoGradGuard no_grad;
  const torch::Tensor keep = (w.detach() != 0).nonzero().flatten();
  const int64_t kept = keep.numel();
  if (kept == rank()) return kept;
  detail::assign_(A, A.detach().index_select(0, keep));
  detail::assign_(B, B.detach().index_select(1, keep));
  detail::assign_(w, w.detach().index_select(0, keep));
  return kept;
}

TensorMap CoDyRAImpl::state() const {
  return {{"A", A.detach().clone()}, {"B", B.detach().clone()}, {"w", w.detach().clone()}};
}

void CoDyRAImpl::load_state(const TensorMap& s) {
  const auto& a = detail::require(s, "A", "CoDyRA");
  const auto& b = detail::require(s, "B", "CoDyRA");
  const auto& g = detail::require(s, "w", "CoDyRA");
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && g.dim() == 1 && a.size(1) == in_ && b.size(0) == out_ &&
                  a.size(0) == g.size(0) && b.size(1) == g.size(0) && g.size(0) <= options_.rank(),
              "strata::adapters::CoDyRA::load_state(): bad shapes A ", a.sizes(), " B ", b.sizes(), " w ", g.sizes());
  detail::assign_(A, a);
  detail::assign_(B, b);
  detail::assign_(w, g);
}

void codyra_after_step(const torch::nn::Module& model, int64_t step, const KappaSchedule& schedule, ShrinkMode mode) {
  const double kappa = kappa_at(step, schedule);
  if (kappa <= 0.0) return;
  for (auto& [name, a] : adapters_of<CoDyRAImpl>(model)) a->soft_threshold_(kappa, mode);
}

void codyra_after_step(const std::vector<std::shared_ptr<CoDyRAImpl>>& adapters, int64_t step,
                       const KappaSchedule& schedule, ShrinkMode mode) {
  const double kappa = kappa_at(step, schedule);
  if (kappa <= 0.0) return;
  for (const auto& a : adapters) a->soft_threshold_(kappa, mode);
}

std::vector<CoDyRALayerStats> codyra_end_task(const torch::nn::Module& model) {
  std::vector<CoDyRALayerStats> out;
  for (auto& l : adapted_layers(model)) {
    auto a = std::dynamic_pointer_cast<CoDyRAImpl>(l.layer->adapter());
    if (!a) continue;
    CoDyRALayerStats st;
    st.name = l.name;
    st.rank = a->options().rank();
    st.kept = a->prune();
    st.A_gated = (a->w.detach().unsqueeze(1) * a->A.detach()).clone();
    st.B = a->B.detach().clone();
    if (st.kept > 0) {
      torch::NoGradGuard no_grad;
      const torch::Tensor d = a->delta_weight().to(l.layer->weight.scalar_type());
      st.delta_norm = d.norm().item<double>();
      l.layer->weight.add_(d);
    }
    a->reset_parameters();
    out.push_back(std::move(st));
  }
  return out;
}

}  // namespace strata::adapters
