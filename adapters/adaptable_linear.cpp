#include "adapters/adaptable_linear.h"

#include <cmath>

namespace strata::adapters {

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
  torch::Tensor y = torch::nn::functional::linear(x, weight, bias);
  if (adapter_) y = adapter_->forward(x, y);
  return y;
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
