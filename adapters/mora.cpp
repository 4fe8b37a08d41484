#include "adapters/mora.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "adapters/inject.h"

namespace strata::adapters {

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

torch::Tensor MoRAImpl::forward(const torch::Tensor& x, const torch::Tensor& base_out) {
  if (total_atoms() == 0) return base_out;
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
