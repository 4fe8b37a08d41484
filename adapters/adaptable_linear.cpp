#include "adapters/adaptable_linear.h"

#include "subspaces/basis.h"

#include <cmath>

namespace strata::adapters {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// y = x Wᵀ (+ b) whose backward writes the input-side projected weight gradient. x and W are
// saved exactly as autograd's own linear saves them, so this costs no extra memory; the bases
// ride in saved_data (they never need a gradient, and an undefined tensor cannot be an input).
struct Bases {
  const torch::Tensor *U, *U_perp, *M, *M_perp;
};

torch::Tensor projected_forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight,
                                const torch::Tensor& bias, const Bases* b) {
  ctx->save_for_backward({x, weight});
  ctx->saved_data["U"] = *b->U;
  ctx->saved_data["U_perp"] = *b->U_perp;
  ctx->saved_data["M"] = *b->M;
  ctx->saved_data["M_perp"] = *b->M_perp;
  auto x2 = x.reshape({-1, x.size(-1)});
  auto y = bias.defined() ? torch::addmm(bias, x2, weight.t()) : x2.mm(weight.t());
  if (x.dim() == 2) return y;
  auto shape = x.sizes().vec();
  shape.back() = weight.size(0);
  return y.view(shape);
}

variable_list projected_backward(AutogradContext* ctx, const variable_list& grad_out, bool with_bias) {
  auto saved = ctx->get_saved_variables();
  const auto &x = saved[0], &weight = saved[1];
  auto d2 = grad_out[0].reshape({-1, weight.size(0)});
  variable_list out(with_bias ? 4 : 3);  // one per forward argument, the bases pointer included
  if (ctx->needs_input_grad(0)) out[0] = d2.mm(weight).view(x.sizes());
  if (ctx->needs_input_grad(1)) {
    // (I − MMᵀ) δᵀ = (δ − (δM)Mᵀ)ᵀ: the output side acts on the r rows of δ.
    torch::Tensor d = d2;
    const auto M = ctx->saved_data["M"].toTensor(), M_perp = ctx->saved_data["M_perp"].toTensor();
    if (M_perp.defined())
      d = d2.mm(M_perp).mm(M_perp.t());
    else if (M.defined())
      d = d2.addmm(d2.mm(M), M.t(), /*beta=*/1, /*alpha=*/-1);
    out[1] = subspaces::project_out_input_outer(d, x.reshape({-1, x.size(-1)}), ctx->saved_data["U"].toTensor(),
                                                ctx->saved_data["U_perp"].toTensor());
  }
  if (with_bias && ctx->needs_input_grad(2)) out[2] = d2.sum(0);
  return out;
}

struct ProjectedLinear : public torch::autograd::Function<ProjectedLinear> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias, const Bases* b) {
    return projected_forward(ctx, x, weight, bias, b);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    return projected_backward(ctx, grad_out, true);
  }
};

struct ProjectedLinearNoBias : public torch::autograd::Function<ProjectedLinearNoBias> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight,
                               const Bases* b) {
    return projected_forward(ctx, x, weight, torch::Tensor(), b);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    return projected_backward(ctx, grad_out, false);
  }
};

// y = x Wᵀ (+ b) whose backward hands the weight gradient's factors (δ, X) to a GradientFactors
// instead of forming δᵀX. x and W are saved as autograd's linear saves them; the sink rides in
// saved_data as a capsule, so it outlives a layer that drops it between forward and backward.
torch::Tensor factored_forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias, const c10::intrusive_ptr<GradientFactors>& sink) {
  ctx->save_for_backward({x, weight});
  ctx->saved_data["sink"] = c10::IValue::make_capsule(sink);
  auto x2 = x.reshape({-1, x.size(-1)});
  auto y = bias.defined() ? torch::addmm(bias, x2, weight.t()) : x2.mm(weight.t());
  if (x.dim() == 2) return y;
  auto shape = x.sizes().vec();
  shape.back() = weight.size(0);
  return y.view(shape);
}

variable_list factored_backward(AutogradContext* ctx, const variable_list& grad_out, bool with_bias) {
  auto saved = ctx->get_saved_variables();
  const auto &x = saved[0], &weight = saved[1];
  auto d2 = grad_out[0].reshape({-1, weight.size(0)});
  variable_list out(with_bias ? 4 : 3);  // one per forward argument, the sink included
  if (ctx->needs_input_grad(0)) out[0] = d2.mm(weight).view(x.sizes());
  if (ctx->needs_input_grad(1)) {  // no weight gradient: its factors
    auto sink = c10::static_intrusive_pointer_cast<GradientFactors>(ctx->saved_data["sink"].toCapsule());
    sink->delta.push_back(d2.detach());
    sink->input.push_back(x.reshape({-1, x.size(-1)}).detach());
  }
  if (with_bias && ctx->needs_input_grad(2)) out[2] = d2.sum(0);
  return out;
}

struct FactoredLinear : public torch::autograd::Function<FactoredLinear> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias, const c10::intrusive_ptr<GradientFactors>* sink) {
    return factored_forward(ctx, x, weight, bias, *sink);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    return factored_backward(ctx, grad_out, true);
  }
};

struct FactoredLinearNoBias : public torch::autograd::Function<FactoredLinearNoBias> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight,
                               const c10::intrusive_ptr<GradientFactors>* sink) {
    return factored_forward(ctx, x, weight, torch::Tensor(), *sink);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    return factored_backward(ctx, grad_out, false);
  }
};

}  // namespace

torch::Tensor GradientFactors::dense() const {
  torch::Tensor G;
  for (size_t i = 0; i < delta.size(); ++i) {
    auto d = delta[i].to(torch::kFloat32), x = input[i].to(torch::kFloat32);
    G = G.defined() ? G.addmm_(d.t(), x) : d.t().mm(x);
  }
  return G;
}

AdaptableLinearImpl::AdaptableLinearImpl(int64_t in_features, int64_t out_features, bool with_bias) {
  TORCH_CHECK(in_features > 0 && out_features > 0, "strata::adapters::AdaptableLinear(): bad shape in=",
              in_features, " out=", out_features);
  // Same initialisation as torch::nn::Linear (Kaiming-uniform with a = sqrt(5)).
  weight = register_parameter("weight", torch::empty({out_features, in_features}));
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (with_bias) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
    bias = register_parameter("bias", torch::empty({out_features}));
    torch::nn::init::uniform_(bias, -bound, bound);
  }
}

torch::Tensor AdaptableLinearImpl::forward(const torch::Tensor& x) {
  if (recording_) last_input_ = x.detach();
  torch::Tensor y;
  const bool grad = weight.requires_grad() && torch::GradMode::is_enabled();
  if (factors_ && grad && factors_->max_rows >= 0 && x.numel() / x.size(-1) <= factors_->max_rows) {
    y = bias.defined() ? FactoredLinear::apply(x, weight, bias, &factors_)
                       : FactoredLinearNoBias::apply(x, weight, &factors_);
  } else if ((proj_U_.defined() || proj_M_.defined()) && grad) {
    const Bases b{&proj_U_, &proj_U_perp_, &proj_M_, &proj_M_perp_};
    y = bias.defined() ? ProjectedLinear::apply(x, weight, bias, &b) : ProjectedLinearNoBias::apply(x, weight, &b);
  }
  else
    y = torch::nn::functional::linear(x, weight, bias);
  if (adapter_) y = adapter_->forward(x, y);
  return y;
}

void AdaptableLinearImpl::set_gradient_factors(c10::intrusive_ptr<GradientFactors> factors) {
  TORCH_CHECK(!factors || (!proj_U_.defined() && !proj_M_.defined()),
              "strata::adapters::AdaptableLinear::set_gradient_factors(): the layer has a gradient projection; "
              "factored gradients and projections do not combine");
  factors_ = std::move(factors);
}

void AdaptableLinearImpl::set_input_projection(torch::Tensor U, torch::Tensor U_perp) {
  if (!U.defined() || U.dim() != 2 || U.size(1) == 0) {
    proj_U_ = proj_U_perp_ = torch::Tensor();
    return;
  }
  TORCH_CHECK(!factors_, "strata::adapters::AdaptableLinear::set_input_projection(): the layer collects "
              "factored gradients (set_gradient_factors); projections and factored gradients do not combine");
  TORCH_CHECK(U.size(0) == in_features(), "strata::adapters::AdaptableLinear::set_input_projection(): basis has ",
              U.size(0), " rows, the layer has ", in_features(), " inputs");
  TORCH_CHECK(!U_perp.defined() || (U_perp.dim() == 2 && U_perp.size(0) == in_features() &&
                                    U_perp.size(1) == in_features() - U.size(1)),
              "strata::adapters::AdaptableLinear::set_input_projection(): complement of shape ",
              U_perp.defined() ? U_perp.sizes() : torch::IntArrayRef{}, " does not match basis ", U.sizes());
  proj_U_ = U.detach().to(weight.dtype()).contiguous();
  proj_U_perp_ = U_perp.defined() ? U_perp.detach().to(weight.dtype()).contiguous() : torch::Tensor();
}

void AdaptableLinearImpl::set_output_projection(torch::Tensor M, torch::Tensor M_perp) {
  if (!M.defined() || M.dim() != 2 || M.size(1) == 0) {
    proj_M_ = proj_M_perp_ = torch::Tensor();
    return;
  }
  TORCH_CHECK(!factors_, "strata::adapters::AdaptableLinear::set_output_projection(): the layer collects "
              "factored gradients (set_gradient_factors); projections and factored gradients do not combine");
  TORCH_CHECK(M.size(0) == out_features(), "strata::adapters::AdaptableLinear::set_output_projection(): basis has ",
              M.size(0), " rows, the layer has ", out_features(), " outputs");
  TORCH_CHECK(!M_perp.defined() || (M_perp.dim() == 2 && M_perp.size(0) == out_features() &&
                                    M_perp.size(1) == out_features() - M.size(1)),
              "strata::adapters::AdaptableLinear::set_output_projection(): complement of shape ",
              M_perp.defined() ? M_perp.sizes() : torch::IntArrayRef{}, " does not match basis ", M.sizes());
  proj_M_ = M.detach().to(weight.dtype()).contiguous();
  proj_M_perp_ = M_perp.defined() ? M_perp.detach().to(weight.dtype()).contiguous() : torch::Tensor();
}

void AdaptableLinearImpl::set_adapter(std::shared_ptr<Adapter> adapter) {
  TORCH_CHECK(adapter != nullptr, "strata::adapters::AdaptableLinear::set_adapter(): null adapter");
  if (adapter_) remove_adapter();
  adapter_ = register_module("adapter", std::move(adapter));
}

std::shared_ptr<Adapter> AdaptableLinearImpl::remove_adapter() {
  auto old = adapter_;
  if (adapter_) {
    unregister_module("adapter");
    adapter_ = nullptr;
  }
  return old;
}

void AdaptableLinearImpl::merge_adapter() {
  if (!adapter_) return;
  {
    torch::NoGradGuard no_grad;
    weight.add_(adapter_->delta_weight().to(weight.dtype()));
  }
  remove_adapter();
}

}  // namespace strata::adapters
