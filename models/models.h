#pragma once
// Models for continual-learning runs: MLP, small CNN, tiny ViT.
//
// Every Linear layer is an adapters::AdaptableLinear with a stable, dotted module path
// ("fc1", "head", "blocks.0.attn.q", ...) so subspace methods find weights and adapter methods
// wrap them by name. Inputs are images [B, C, H, W]; outputs are logits [B, num_classes].
#include "adapters/adaptable_linear.h"

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

namespace strata::models {

struct ModelOptions {
  /// "mlp" | "cnn" | "vit"
  TORCH_ARG(std::string, arch) = "mlp";
  /// Input shape {C, H, W}; filled from the stream.
  TORCH_ARG(std::vector<int64_t>, input_shape) = std::vector<int64_t>{1, 28, 28};
  TORCH_ARG(int64_t, num_classes) = 10;
  /// MLP hidden widths (GPM protocol: 100,100).
  TORCH_ARG(std::vector<int64_t>, hidden) = std::vector<int64_t>{100, 100};
  /// Bias in Linear layers (the GPM protocol MLP has none).
  TORCH_ARG(bool, bias) = false;
  /// CNN: channels of the two conv layers.
  TORCH_ARG(std::vector<int64_t>, channels) = std::vector<int64_t>{16, 32};
  /// ViT: patch size (must divide H and W), width, depth, heads, MLP ratio.
  TORCH_ARG(int64_t, patch) = 7;
  TORCH_ARG(int64_t, dim) = 64;
  TORCH_ARG(int64_t, depth) = 2;
  TORCH_ARG(int64_t, heads) = 4;
  TORCH_ARG(int64_t, mlp_ratio) = 2;


 public:
  void validate() const;
};

/// Base of every Strata model.
class ModelImpl : public torch::nn::Module {
 public:
  explicit ModelImpl(const ModelOptions& options) : options_(options) {}
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;

  const ModelOptions& options() const { return options_; }
  /// Every AdaptableLinear with its module path, in registration (forward) order.
  std::vector<std::pair<std::string, adapters::AdaptableLinear>> linear_layers();
  /// Layers whose path matches `pattern` (std::regex, full match); empty pattern = all.
  std::vector<std::pair<std::string, adapters::AdaptableLinear>> linear_layers(const std::string& pattern);
  /// Turn input recording on/off for every AdaptableLinear (GPM representation matrices).
  void set_recording(bool on);

 protected:
  ModelOptions options_;
};

using Model = std::shared_ptr<ModelImpl>;

/// Builds the model named by options.arch(); weights come from the global torch RNG
/// (the runner seeds it). Throws naming the bad option.
Model make_model(const ModelOptions& options);

}  // namespace strata::models
