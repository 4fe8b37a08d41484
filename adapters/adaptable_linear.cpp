#include "adapters/adaptable_linear.h"

#include "core/step_inputs.h"
#include "subspaces/basis.h"

#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>

#include <algorithm>
#include <cmath>

namespace strata::adapters {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// A projected layer's bases, as AdaptableLinearImpl keeps them (undefined where unset).
struct Bases {
  const torch::Tensor *U, *U_perp, *M, *M_perp;
};

// t [..., n] as rows [R, n]; a 2-D t is itself (at batch 10 even a no-op reshape is a dispatched
// call, two per layer and step).
torch::Tensor as_rows(const torch::Tensor& t) { return t.dim() == 2 ? t : t.reshape({-1, t.size(-1)}); }

// x [..., in] as rows [R, in] times Wᵀ (+ b), and a [R, out] result back in x's leading shape.
torch::Tensor linear_rows(const torch::Tensor& x2, const torch::Tensor& weight, const torch::Tensor& bias) {
  return bias.defined() ? torch::addmm(bias, x2, weight.t()) : x2.mm(weight.t());
}

torch::Tensor like_input(const torch::Tensor& y, const torch::Tensor& x) {
  if (x.dim() == 2) return y;
  auto shape = x.sizes().vec();
  shape.back() = y.size(1);
  return y.view(shape);
}

// y (the 2-D rows of a forward computed below autograd) gets `node` as its grad_fn, with x and
// `inputs` (undefined ones allowed: they get no gradient) as its next edges; returns y in x's
// leading shape. The layer's nodes are hand-written instead of torch::autograd::Functions: no
// AutogradContext, no saved_data map of IValues to fill and read back every step; at batch 10 a
// step is mostly such per-call overhead. Under create_graph a node's products are recorded from
// its saved variables, so double backward works.
template <typename... Inputs>
torch::Tensor with_history(torch::Tensor y, const std::shared_ptr<torch::autograd::Node>& node, const torch::Tensor& x,
                           const Inputs&... inputs) {
  node->set_next_edges(torch::autograd::collect_next_edges(x, inputs...));
  torch::autograd::set_history(y, node);
  return like_input(y, x);
}

// The backward of the plain and the projected layer: dx = δW, db = Σ_rows δ, and dW = δᵀx, or with
// bases set, the projected weight gradient (I − MMᵀ) δᵀx (I − UUᵀ) (either side optional).
// Unprojected, these are the products LibTorch's MmBackward/AddmmBackward make, without their
// TBackward node and, per product, the t/transpose/as_strided and resolve_conj calls of the views
// they take (about 10 calls per layer and step).
struct LinearRowsBackward : torch::autograd::Node {
  torch::autograd::SavedVariable x, weight;
  torch::Tensor U, U_perp, M, M_perp;  // undefined: that side unprojected
  variable_list apply(variable_list&& grads) override {
    variable_list out(3);  // x, weight, bias
    if (!grads[0].defined()) return out;
    const torch::Tensor x_ = x.unpack(), d2 = as_rows(grads[0]);
    if (task_should_compute_output(0)) out[0] = like_input(d2.mm(weight.unpack()), x_);
    if (task_should_compute_output(1)) {
      // (I − MMᵀ) δᵀ = (δ − (δM)Mᵀ)ᵀ: the output side acts on the r rows of δ.
      torch::Tensor d = d2;
      if (M_perp.defined())
        d = d2.mm(M_perp).mm(M_perp.t());
      else if (M.defined())
        d = d2.addmm(d2.mm(M), M.t(), /*beta=*/1, /*alpha=*/-1);
      out[1] = subspaces::project_out_input_outer(d, as_rows(x_), U, U_perp);  // δᵀx when U is unset
    }
    if (task_should_compute_output(2)) out[2] = d2.sum(0);
    return out;
  }
  std::string name() const override { return "strata::adapters::LinearRowsBackward"; }
  void release_variables() override {
    x.reset_data();
    weight.reset_data();
  }
};

// y = x Wᵀ (+ b), x [..., in], with LinearRowsBackward as its grad_fn when autograd needs one;
// `bases` (optional) as AdaptableLinearImpl::set_input/output_projection keep them. x and W are
// saved exactly as autograd's own linear saves them, so a projection costs no extra memory.
torch::Tensor linear_with_node(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                               const Bases* bases = nullptr) {
  if (!torch::autograd::compute_requires_grad(x, weight, bias)) return like_input(linear_rows(as_rows(x), weight, bias), x);
  torch::Tensor y;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;  // the node is the only history
    y = linear_rows(as_rows(x), weight, bias);
  }
  auto node = std::shared_ptr<LinearRowsBackward>(new LinearRowsBackward(), torch::autograd::deleteNode);
  node->x = torch::autograd::SavedVariable(x, /*is_output=*/false);
  node->weight = torch::autograd::SavedVariable(weight, /*is_output=*/false);
  if (bases) node->U = *bases->U, node->U_perp = *bases->U_perp, node->M = *bases->M, node->M_perp = *bases->M_perp;
  return with_history(y, node, x, weight, bias);
}

// y = x Wᵀ + (x F) Cᵀ (+ b) for the deferred projection (see the header): x F is computed once and
// kept for the backward, where it gives C's gradient; the weight and C gradients are GPM's update
// split between the two, signed by `free`. `pre`, when defined, holds this forward's rows of
// [x F | x Wᵀ] ([rows, f], or [rows, f + out] when `free`: the weight is then constant for the task),
// computed ahead from the same inputs (AdaptableLinearImpl::precomputed_rows). Rows [R, out] and
// the XF [R, f] the backward needs.
std::pair<torch::Tensor, torch::Tensor> deferred_rows(const torch::Tensor& x2, const torch::Tensor& weight,
                                                      const torch::Tensor& C, const torch::Tensor& bias,
                                                      const torch::Tensor& F, bool free, const torch::Tensor& pre) {
  const int64_t f = F.size(1);
  torch::Tensor XF, y;
  if (pre.defined() && free) {
    XF = pre.narrow(1, 0, f);
    y = torch::addmm(pre.narrow(1, f, weight.size(0)), XF, C.t());
    if (bias.defined()) y.add_(bias);
  } else {
    XF = pre.defined() ? pre : x2.mm(F);  // [rows, f]
    y = linear_rows(x2, weight, bias);
    y.addmm_(XF, C.t());
  }
  return {y, XF};
}

struct DeferredLinearBackward : torch::autograd::Node {
  torch::autograd::SavedVariable x, weight, C;
  torch::Tensor F, XF;
  bool free = false;
  variable_list apply(variable_list&& grads) override {
    variable_list out(4);  // x, weight, C, bias
    if (!grads[0].defined()) return out;
    const torch::Tensor d2 = as_rows(grads[0]);
    if (task_should_compute_output(0))  // δ(W + C Fᵀ)
      out[0] = like_input(d2.mm(weight.unpack()).addmm_(d2.mm(C.unpack()), F.t()), x.unpack());
    if (!free && task_should_compute_output(1)) out[1] = d2.t().mm(as_rows(x.unpack()));
    if (task_should_compute_output(2)) {
      out[2] = d2.t().mm(XF);
      if (!free) out[2].neg_();
    }
    if (task_should_compute_output(3)) out[3] = d2.sum(0);
    return out;
  }
  std::string name() const override { return "strata::adapters::DeferredLinearBackward"; }
  void release_variables() override {
    x.reset_data();
    weight.reset_data();
    C.reset_data();
    XF.reset();
  }
};

torch::Tensor deferred_linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& C,
                              const torch::Tensor& bias, const torch::Tensor& F, bool free, const torch::Tensor& pre) {
  torch::Tensor y, XF;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;  // the node is the only history
    std::tie(y, XF) = deferred_rows(as_rows(x), weight, C, bias, F, free, pre);
  }
  if (!torch::autograd::compute_requires_grad(x, weight, C, bias)) return like_input(y, x);
  auto node = std::shared_ptr<DeferredLinearBackward>(new DeferredLinearBackward(), torch::autograd::deleteNode);
  node->x = torch::autograd::SavedVariable(x, /*is_output=*/false);
  node->weight = torch::autograd::SavedVariable(weight, /*is_output=*/false);
  node->C = torch::autograd::SavedVariable(C, /*is_output=*/false);
  node->F = F, node->XF = XF, node->free = free;
  return with_history(y, node, x, weight, C, bias);
}

// y = x Wᵀ (+ b) whose backward hands the weight gradient's factors (δ, X) to a GradientFactors
// instead of forming δᵀX. x and W are saved as autograd's linear saves them; the sink rides in
// saved_data as a capsule, so it outlives a layer that drops it between forward and backward.
torch::Tensor factored_forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias, const c10::intrusive_ptr<GradientFactors>& sink) {
  ctx->save_for_backward({x, weight});
  ctx->saved_data["sink"] = c10::IValue::make_capsule(sink);
  auto x2 = as_rows(x);
  auto y = linear_rows(x2, weight, bias);
  return like_input(y, x);
}

variable_list factored_backward(AutogradContext* ctx, const variable_list& grad_out, bool with_bias) {
  auto saved = ctx->get_saved_variables();
  const auto &x = saved[0], &weight = saved[1];
  auto d2 = as_rows(grad_out[0]);
  variable_list out(with_bias ? 4 : 3);  // one per forward argument, the sink included
  if (ctx->needs_input_grad(0)) out[0] = like_input(d2.mm(weight), x);
  if (ctx->needs_input_grad(1)) {  // no weight gradient: its factors
    auto sink = c10::static_intrusive_pointer_cast<GradientFactors>(ctx->saved_data["sink"].toCapsule());
    sink->delta.push_back(d2.detach());
    sink->input.push_back(as_rows(x).detach());
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
  const bool training = weight.requires_grad() && torch::GradMode::is_enabled();
  if (defer_state_ == DeferState::kUndecided && training) {
    // Per input row: the deferred form's extra cost against the input projection's (header).
    const int64_t in = in_features(), out = out_features();
    int64_t rows = x.numel() / std::max<int64_t>(in, 1);
    if (defer_batch_ > 0 && x.dim() >= 2 && x.size(0) > 0) rows = defer_batch_ * (rows / x.size(0));  // × tokens
    const int64_t f = defer_F_.size(1);
    double deferred = 2.0 * rows * f * (in + 2 * out);
    if (x.requires_grad()) deferred += 2.0 * rows * f * (in + out);
    if (defer_free_) deferred -= 2.0 * rows * in * out;
    const double projected = 4.0 * std::min(rows, out) * in * f;
    defer_state_ = deferred < projected ? DeferState::kActive : DeferState::kInactive;
  }
  if (defer_state_ == DeferState::kActive) {
    if (torch::GradMode::is_enabled()) {
      const torch::Tensor pre = precomputed_rows(x);
      y = deferred_linear(x, weight, defer_C_, bias, defer_F_, defer_free_, pre);
    } else {
      y = deferred_linear(x, weight, defer_C_, bias, defer_F_, defer_free_, {});  // no node without grad
    }
  } else if (factors_ && training && factors_->max_rows >= 0 && x.numel() / x.size(-1) <= factors_->max_rows) {
    y = bias.defined() ? FactoredLinear::apply(x, weight, bias, &factors_)
                       : FactoredLinearNoBias::apply(x, weight, &factors_);
  } else if ((proj_U_.defined() || proj_M_.defined()) && training) {
    const Bases b{&proj_U_, &proj_U_perp_, &proj_M_, &proj_M_perp_};
    y = linear_with_node(x, weight, bias, &b);
  } else if (x.dim() >= 2 && x.size(-1) > 0) {
    // F::linear's kernels, without its matmul wrapper's calls; tokens [..., in] as rows.
    y = linear_with_node(x, weight, bias);
  } else {
    y = torch::nn::functional::linear(x, weight, bias);
  }
  if (adapter_) y = adapter_->forward(x, y);
  return y;
}

void AdaptableLinearImpl::set_gradient_factors(c10::intrusive_ptr<GradientFactors> factors) {
  TORCH_CHECK(!factors || (!proj_U_.defined() && !proj_M_.defined() && defer_state_ == DeferState::kNone),
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

void AdaptableLinearImpl::set_deferred_projection(torch::Tensor F, torch::Tensor C, bool free, int64_t batch,
                                                  int64_t ahead_bytes, int64_t cache_bytes) {
  TORCH_CHECK(ahead_bytes >= 0, "strata::adapters::AdaptableLinear::set_deferred_projection(): ahead_bytes must be "
              ">= 0, got ", ahead_bytes);
  TORCH_CHECK(cache_bytes >= 0, "strata::adapters::AdaptableLinear::set_deferred_projection(): cache_bytes must be "
              ">= 0, got ", cache_bytes);
  TORCH_CHECK(F.defined() && F.dim() == 2 && F.size(0) == in_features() && F.size(1) > 0,
              "strata::adapters::AdaptableLinear::set_deferred_projection(): F must be [", in_features(),
              ", f] with f > 0, got ", F.defined() ? F.sizes() : torch::IntArrayRef{});
  TORCH_CHECK(C.defined() && C.dim() == 2 && C.size(0) == out_features() && C.size(1) == F.size(1),
              "strata::adapters::AdaptableLinear::set_deferred_projection(): C must be [", out_features(), ", ",
              F.size(1), "], got ", C.defined() ? C.sizes() : torch::IntArrayRef{});
  TORCH_CHECK(!adapter_ && !proj_M_.defined() && !factors_,
              "strata::adapters::AdaptableLinear::set_deferred_projection(): the layer has an adapter, an output "
              "projection or factored gradients, which the deferred form does not compose with");
  fold_deferred_projection();
  defer_F_ = F.detach().to(weight.dtype()).contiguous();
  defer_C_ = C;
  defer_free_ = free;
  defer_batch_ = batch;
  defer_ahead_bytes_ = ahead_bytes;
  defer_cache_bytes_ = cache_bytes;
  defer_state_ = DeferState::kUndecided;
}

void AdaptableLinearImpl::fold_deferred_projection() {
  if (defer_state_ == DeferState::kActive) {
    torch::NoGradGuard no_grad;
    weight.addmm_(defer_C_.detach(), defer_F_.t());
  }
  defer_state_ = DeferState::kNone;
  defer_F_ = defer_C_ = torch::Tensor();
  ahead_ = AheadRows();
  cached_ = CachedRows();
}

torch::Tensor AdaptableLinearImpl::precomputed_rows(const torch::Tensor& x) {
  const core::StepInputs* si = defer_ahead_bytes_ > 0 ? core::StepInputsGuard::current() : nullptr;
  const int64_t rows = si ? si->end - si->begin : 0;
  // Only for the step's input itself, as rows [B, in] of the CPU's float32 (what the chunk GEMM
  // is for); anything else computes x F from x.
  if (!si || x.dim() != 2 || x.size(0) != rows || rows == 0 || x.scalar_type() != torch::kFloat32 ||
      !x.device().is_cpu() || !si->aliases(x))
    return {};
  const int64_t f = defer_F_.size(1), out = out_features();
  const int64_t width = f + (defer_free_ ? out : 0);
  if (si->rows_id != 0 && defer_cache_bytes_ > 0 &&
      si->num_rows <= defer_cache_bytes_ / (static_cast<int64_t>(sizeof(float)) * width))
    return cached_rows(*si, width);
  const bool hit = ahead_.rows.defined() && ahead_.order_id == si->order_id && si->begin >= ahead_.begin &&
                   si->end <= ahead_.end && (!defer_free_ || ahead_.weight_version == weight._version());
  if (!hit) {
    torch::NoGradGuard no_grad;
    const int64_t chunk = std::max<int64_t>(rows, defer_ahead_bytes_ / (static_cast<int64_t>(sizeof(float)) * width));
    const int64_t end = std::min<int64_t>(si->order.numel(), si->begin + chunk);
    auto X = si->gather(si->order.slice(0, si->begin, end), ahead_.inputs);
    if (X.numel() != (end - si->begin) * in_features() || X.scalar_type() != x.scalar_type()) return {};
    X = X.reshape({end - si->begin, in_features()});
    const torch::Tensor map = ahead_map();
    // The last chunk's rows are reused when no graph holds them any more (the previous step's
    // backward has run): one allocation per task, not one per chunk.
    if (!ahead_.rows.defined() || ahead_.rows.storage().use_count() > 1 || ahead_.rows.size(1) != width ||
        ahead_.rows.size(0) < X.size(0))
      ahead_.rows = torch::empty({chunk, width}, X.options());
    auto filled = ahead_.rows.narrow(0, 0, X.size(0));
    torch::mm_out(filled, X, map);  // [chunk, f (+ out)]
    ahead_.order_id = si->order_id;
    ahead_.begin = si->begin;
    ahead_.end = end;
    ahead_.weight_version = weight._version();
  }
  return ahead_.rows.narrow(0, si->begin - ahead_.begin, rows);
}

torch::Tensor AdaptableLinearImpl::ahead_map() const {
  return defer_free_ ? torch::cat({defer_F_, weight.detach().t()}, 1) : defer_F_;
}

torch::Tensor AdaptableLinearImpl::cached_rows(const core::StepInputs& si, int64_t width) {
  torch::NoGradGuard no_grad;
  const bool valid = cached_.rows.defined() && cached_.rows_id == si.rows_id &&
                     (!defer_free_ || cached_.weight_version == weight._version());
  if (!valid) {
    const int64_t n = si.num_rows, in = in_features();
    const torch::Tensor map = ahead_map();
    if (!cached_.rows.defined() || cached_.rows.size(0) != n || cached_.rows.size(1) != width)
      cached_.rows = torch::empty({n, width}, map.options());
    const int64_t chunk = std::max<int64_t>(1, defer_ahead_bytes_ / (static_cast<int64_t>(sizeof(float)) * in));
    for (int64_t b = 0; b < n; b += chunk) {
      const int64_t e = std::min(n, b + chunk);
      auto X = si.gather(torch::arange(b, e, torch::kInt64), ahead_.inputs);
      if (X.numel() != (e - b) * in || X.scalar_type() != torch::kFloat32) {
        cached_ = CachedRows();
        return {};
      }
      auto dst = cached_.rows.narrow(0, b, e - b);
      torch::mm_out(dst, X.reshape({e - b, in}), map);  // [chunk, f (+ out)], by training row
    }
    cached_.rows_id = si.rows_id;
    cached_.weight_version = weight._version();
  }
  const int64_t rows = si.end - si.begin;
  // Reused once no graph holds the previous step's copy (its backward has run).
  if (!cached_.step.defined() || cached_.step.storage().use_count() > 1 || cached_.step.size(0) != rows)
    cached_.step = torch::empty({rows, width}, cached_.rows.options());
  torch::index_select_out(cached_.step, cached_.rows, 0, si.order.slice(0, si.begin, si.end));
  return cached_.step;
}

void AdaptableLinearImpl::set_output_projection(torch::Tensor M, torch::Tensor M_perp) {
  fold_deferred_projection();  // the deferred form does not compose with an output projection
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
  fold_deferred_projection();  // the adapter adds to the effective weight
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
