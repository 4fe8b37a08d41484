#include "adapters/lora.h"

#include "adapters/inject.h"
#include "core/batch_dropout.h"

#include <cmath>

namespace strata::adapters {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// y = base + s·(x Aᵀ) Bᵀ [+ s·(x A_oldᵀ) B_oldᵀ] as one autograd node. The forward runs the kernels
// the composed form runs (mm, then addmm folding the scale and the sum), so its output is the same;
// the backward writes the four products out from the saved factors, which replaces the eight nodes
// autograd records per layer and step (two transposes, three reshapes, mm, addmm, and the bank's).
struct LoRAUpdate : public torch::autograd::Function<LoRAUpdate> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x2, const torch::Tensor& base2,
                               const torch::Tensor& A, const torch::Tensor& B, const torch::Tensor& A_old,
                               const torch::Tensor& B_old, double s) {
    const torch::Tensor h = x2.mm(A.t());  // [N, r]
    torch::Tensor y = torch::addmm(base2, h, B.t(), 1.0, s);
    const bool bank = A_old.size(0) > 0;
    if (bank) y = torch::addmm(y, x2.mm(A_old.t()), B_old.t(), 1.0, s);
    ctx->save_for_backward({x2, A, B, A_old, B_old});
    ctx->saved_data["h"] = h;
    ctx->saved_data["s"] = s;
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &x2 = saved[0], &A = saved[1], &B = saved[2], &A_old = saved[3], &B_old = saved[4];
    const double s = ctx->saved_data["s"].toDouble();
    const torch::Tensor& g = grad_out[0];  // [N, m]
    variable_list out(7);
    if (ctx->needs_input_grad(1)) out[1] = g;
    if (ctx->needs_input_grad(3)) out[3] = g.t().mm(ctx->saved_data["h"].toTensor()).mul_(s);  // s·gᵀ h
    const bool need_x = ctx->needs_input_grad(0), need_A = ctx->needs_input_grad(2);
    if (!need_x && !need_A) return out;
    const torch::Tensor gh = g.mm(B).mul_(s);  // [N, r]
    if (need_A) out[2] = gh.t().mm(x2);
    if (need_x) {
      torch::Tensor gx = gh.mm(A);
      if (A_old.size(0) > 0) gx.addmm_(g.mm(B_old), A_old, 1.0, s);
      out[0] = gx;
    }
    return out;
  }
};

}  // namespace

LoRAImpl::LoRAImpl(int64_t in_features, int64_t out_features, LoRAOptions options)
    : options_(std::move(options)), in_(in_features), out_(out_features) {
  TORCH_CHECK(in_ > 0 && out_ > 0, "strata::adapters::LoRA(): bad shape in=", in_, " out=", out_);
  TORCH_CHECK(options_.rank() > 0, "strata::adapters::LoRA(): rank must be positive, got ", options_.rank());
  TORCH_CHECK(options_.dropout() >= 0.0 && options_.dropout() < 1.0, "strata::adapters::LoRA(): bad dropout ",
              options_.dropout());
  A = register_parameter("A", torch::empty({options_.rank(), in_}));
  B = register_parameter("B", torch::empty({out_, options_.rank()}));
  A_old = register_buffer("A_old", torch::zeros({0, in_}));
  B_old = register_buffer("B_old", torch::zeros({out_, 0}));
  reset_parameters();
}

void LoRAImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(A, std::sqrt(5.0));
  B.zero_();
}

torch::Tensor LoRAImpl::forward(const torch::Tensor& x, const torch::Tensor& base_out) {
  // The mask is a function of the global batch (core/batch_dropout.h): N workers draw what one does.
  const torch::Tensor xd = is_training() ? core::batch_dropout(x, options_.dropout()) : x;
  // Factored: never form ΔW in the forward pass. addmm folds the scale and the sum into the second
  // product; the whole update is one autograd node (LoRAUpdate).
  const torch::Tensor x2 = xd.reshape({-1, xd.size(-1)});
  return LoRAUpdate::apply(x2, base_out.reshape({-1, base_out.size(-1)}), A, B, A_old, B_old, scaling())
      .view(base_out.sizes());
}

torch::Tensor LoRAImpl::delta_weight() const {
  torch::Tensor d = torch::matmul(B, A);
  if (bank_rank() > 0) d = d + torch::matmul(B_old, A_old);
  return scaling() * d;
}

void LoRAImpl::bank_current() {
  torch::NoGradGuard no_grad;
  detail::assign_(A_old, torch::cat({A_old, A.detach()}, 0));
  detail::assign_(B_old, torch::cat({B_old, B.detach()}, 1));
  reset_parameters();
  if (A.grad().defined()) A.mutable_grad().reset();
  if (B.grad().defined()) B.mutable_grad().reset();
}

torch::Tensor LoRAImpl::orthogonality_penalty() const {
  if (bank_rank() == 0) return torch::zeros({}, A.options().requires_grad(false));
  return torch::matmul(A_old, A.t()).abs().sum();
}

torch::Tensor LoRAImpl::l2_penalty() const { return A.norm() + B.norm(); }

TensorMap LoRAImpl::state() const {
  return {{"A", A.detach().clone()}, {"B", B.detach().clone()}, {"A_old", A_old.clone()}, {"B_old", B_old.clone()}};
}

void LoRAImpl::load_state(const TensorMap& s) {
  const auto& a = detail::require(s, "A", "LoRA");
  const auto& b = detail::require(s, "B", "LoRA");
  const auto& ao = detail::require(s, "A_old", "LoRA");
  const auto& bo = detail::require(s, "B_old", "LoRA");
  TORCH_CHECK(a.sizes() == A.sizes() && b.sizes() == B.sizes(), "strata::adapters::LoRA::load_state(): shape ",
              a.sizes(), "/", b.sizes(), " does not match A ", A.sizes(), " B ", B.sizes());
  TORCH_CHECK(ao.dim() == 2 && bo.dim() == 2 && ao.size(1) == in_ && bo.size(0) == out_ && ao.size(0) == bo.size(1),
              "strata::adapters::LoRA::load_state(): bad bank shapes A_old ", ao.sizes(), " B_old ", bo.sizes());
  detail::assign_(A, a);
  detail::assign_(B, b);
  detail::assign_(A_old, ao);
  detail::assign_(B_old, bo);
}

torch::Tensor olora_penalty(const torch::nn::Module& model, double lambda1, double lambda2) {
  std::vector<std::shared_ptr<LoRAImpl>> list;
  for (auto& [name, a] : adapters_of<LoRAImpl>(model)) list.push_back(std::move(a));
  const torch::Tensor total = olora_penalty(list, lambda1, lambda2);
  return total.defined() ? total : torch::zeros({});
}

torch::Tensor olora_penalty(const std::vector<std::shared_ptr<LoRAImpl>>& adapters, double lambda1, double lambda2) {
  torch::Tensor total;
  for (const auto& a : adapters) {
    // An empty bank's term is exactly 0 (no gradient): skipping it adds no operators to the step.
    const bool ortho = lambda1 != 0.0 && a->bank_rank() > 0;
    if (!ortho && lambda2 == 0.0) continue;
    torch::Tensor t = ortho ? lambda1 * torch::matmul(a->A_old, a->A.t()).abs().sum() : torch::Tensor();
    if (lambda2 != 0.0) t = t.defined() ? t + lambda2 * a->l2_penalty() : lambda2 * a->l2_penalty();
    total = total.defined() ? total + t : t;
  }
  return total;
}

int64_t olora_end_task(const torch::nn::Module& model) {
  int64_t n = 0;
  for (auto& [name, a] : adapters_of<LoRAImpl>(model)) {
    a->bank_current();
    ++n;
  }
  return n;
}

std::vector<std::pair<std::string, double>> lora_merge_and_reset(const torch::nn::Module& model) {
  std::vector<std::pair<std::string, double>> out;
  torch::NoGradGuard no_grad;
  for (auto& l : adapted_layers(model)) {
    auto a = std::dynamic_pointer_cast<LoRAImpl>(l.layer->adapter());
    if (!a) continue;
    const torch::Tensor d = a->delta_weight().to(l.layer->weight.scalar_type());
    l.layer->weight.add_(d);
    detail::assign_(a->A_old, a->A_old.new_zeros({0, a->A_old.size(1)}));
    detail::assign_(a->B_old, a->B_old.new_zeros({a->B_old.size(0), 0}));
    a->reset_parameters();
    out.emplace_back(l.name, d.norm().item<double>());
  }
  return out;
}

}  // namespace strata::adapters
