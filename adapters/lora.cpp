#include "adapters/lora.h"

#include "adapters/inject.h"
#include "core/batch_dropout.h"

#include <cmath>

namespace strata::adapters {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// s·(a b) as one GEMM: addmm with β = 0 never reads its input (a 0-d zero broadcast), and α = s
// scales in the GEMM's store, where mm(a, b).mul_(s) would run a second operator over the result.
torch::Tensor scaled_mm(const torch::Tensor& a, const torch::Tensor& b, double s) {
  return torch::addmm(torch::zeros({}, a.options()), a, b, /*beta=*/0.0, /*alpha=*/s);
}

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
    if (ctx->needs_input_grad(3)) out[3] = scaled_mm(g.t(), ctx->saved_data["h"].toTensor(), s);  // s·gᵀ h
    const bool need_x = ctx->needs_input_grad(0), need_A = ctx->needs_input_grad(2);
    if (!need_x && !need_A) return out;
    const torch::Tensor gh = scaled_mm(g, B, s);  // [N, r]
    if (need_A) out[2] = gh.t().mm(x2);
    if (need_x) {
      torch::Tensor gx = gh.mm(A);
      if (A_old.size(0) > 0) gx.addmm_(g.mm(B_old), A_old, 1.0, s);
      out[0] = gx;
    }
    return out;
  }
};

// λ Σ_l Σ_ij |(A_l A_old,lᵀ)_ij| over the banked layers as one autograd node (OLoRAPenalty). The
// forward pass keeps, per layer, S_l = λ·sign(A_l A_old,lᵀ) [r, R] (written over the product by the
// loop that sums its absolute values), so the backward pass is one product S_l A_old,l per layer.
struct OrthogonalityTerm : public torch::autograd::Function<OrthogonalityTerm> {
  static torch::Tensor forward(AutogradContext* ctx, at::TensorList A,
                               const std::vector<const OLoRAPenalty::Bank*>* banks, double lambda) {
    TORCH_INTERNAL_ASSERT(!A.empty() && A.size() == banks->size(), "OrthogonalityTerm: ", A.size(), " factors for ",
                          banks->size(), " banks");
    variable_list saved;
    saved.reserve(2 * A.size());
    double cpu_sum = 0;
    torch::Tensor device_sum;  // the same sum, by operators, for factors off the CPU
    for (size_t l = 0; l < A.size(); ++l) {
      const OLoRAPenalty::Bank& bank = *(*banks)[l];
      torch::Tensor p = A[l].mm(bank.A_old_t);  // (A_old Aᵀ)ᵀ [r, R]
      if (p.is_cpu() && p.is_contiguous()) {
        AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "olora_orthogonality", [&] {
          scalar_t* v = p.data_ptr<scalar_t>();
          const scalar_t plus = static_cast<scalar_t>(lambda), minus = static_cast<scalar_t>(-lambda);
          double sum = 0;
          for (int64_t i = 0, n = p.numel(); i < n; ++i) {
            const double x = static_cast<double>(v[i]);
            sum += std::abs(x);
            // sign(NaN) = 0, as torch::sign (a NaN sum stops the trainer anyway).
            v[i] = x > 0 ? plus : (x < 0 ? minus : scalar_t(0));
          }
          cpu_sum += sum;
        });
      } else {
        const torch::Tensor a = p.abs().sum();
        device_sum = device_sum.defined() ? device_sum + a : a;
        p = p.sign().mul_(lambda);
      }
      saved.push_back(p);
      saved.push_back(bank.A_old);
    }
    ctx->save_for_backward(saved);
    if (device_sum.defined()) return device_sum.mul_(lambda).add_(lambda * cpu_sum);
    return torch::scalar_tensor(lambda * cpu_sum, A[0].options());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const size_t layers = saved.size() / 2;
    variable_list out(layers + 2);  // one per forward argument: the factors, the banks, λ
    const torch::Tensor& g = grad_out[0];  // 0-d; 1 when the penalty is added to the loss
    // On the CPU the factor g is read directly (no operator); elsewhere it multiplies as a tensor.
    double factor = 1;
    const bool on_cpu = g.is_cpu();
    if (on_cpu)
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "olora_orthogonality_backward",
                                      [&] { factor = static_cast<double>(*g.data_ptr<scalar_t>()); });
    for (size_t l = 0; l < layers; ++l) {
      if (!ctx->needs_input_grad(l)) continue;
      torch::Tensor d = saved[2 * l].mm(saved[2 * l + 1]);  // λ sign(A_old Aᵀ)ᵀ A_old [r, n]
      if (!on_cpu)
        d.mul_(g);
      else if (factor != 1.0)
        d.mul_(factor);
      out[l] = d;
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
  // A 2-D input (an MLP's) goes in as it is: a reshape or view to the same shape is still one operator
  // and, on a tracked tensor, one autograd node each.
  if (xd.dim() == 2 && base_out.dim() == 2) return LoRAUpdate::apply(xd, base_out, A, B, A_old, B_old, scaling());
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

bool OLoRAPenalty::valid(const std::vector<std::shared_ptr<LoRAImpl>>& adapters) const {
  if (adapters.size() != banks_.size()) return false;
  for (size_t i = 0; i < adapters.size(); ++i) {
    const LoRAImpl& a = *adapters[i];
    const Bank& b = banks_[i];
    if (b.adapter != &a) return false;
    if (!b.A_old.defined()) {
      if (a.bank_rank() != 0) return false;
      continue;
    }
    // The alias keeps the storage it read alive, so a bank replaced by banking or load_state() (which
    // swap the buffer's storage) has another address; one modified in place has another version.
    if (a.A_old.sizes() != b.A_old.sizes() || a.A_old.data_ptr() != b.A_old.data_ptr() ||
        a.A_old._version() != b.version)
      return false;
  }
  return true;
}

void OLoRAPenalty::refresh(const std::vector<std::shared_ptr<LoRAImpl>>& adapters) {
  banks_.assign(adapters.size(), Bank());
  params_.clear();
  banked_.clear();
  for (size_t i = 0; i < adapters.size(); ++i) {
    const auto& a = adapters[i];
    Bank& b = banks_[i];
    b.adapter = a.get();
    if (a->bank_rank() == 0) continue;
    b.A_old = a->A_old.detach();
    b.A_old_t = b.A_old.t();
    b.version = a->A_old._version();
    params_.push_back(a->A);
    banked_.push_back(&b);
  }
}

torch::Tensor OLoRAPenalty::operator()(const std::vector<std::shared_ptr<LoRAImpl>>& adapters, double lambda1,
                                       double lambda2) {
  if (!valid(adapters)) refresh(adapters);
  torch::Tensor total;
  // An empty bank's term is exactly 0 (no gradient): its layer is not in the node.
  if (lambda1 != 0.0 && !params_.empty()) total = OrthogonalityTerm::apply(at::TensorList(params_), &banked_, lambda1);
  if (lambda2 != 0.0)
    for (const auto& a : adapters) {
      const torch::Tensor t = lambda2 * a->l2_penalty();
      total = total.defined() ? total + t : t;
    }
  return total;
}

torch::Tensor olora_penalty(const std::vector<std::shared_ptr<LoRAImpl>>& adapters, double lambda1, double lambda2) {
  return OLoRAPenalty()(adapters, lambda1, lambda2);
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
