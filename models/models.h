#pragma once
// Models for continual-learning runs: MLP, small CNN, tiny ViT.
//
// Every Linear layer is an adapters::AdaptableLinear with a stable, dotted module path
// ("fc1", "head", "blocks.0.attn.q", ...) so subspace methods find weights and adapter methods
// wrap them by name. Inputs are images [B, C, H, W]; outputs are logits [B, num_classes].
#include "adapters/adaptable_linear.h"

#include <torch/torch.h>

#include <map>
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
  /// ViT MLP hidden width; 0 = dim * mlp_ratio.
  TORCH_ARG(int64_t, mlp_dim) = 0;

 public:
  void validate() const;
  /// The ViT's MLP hidden width (mlp_dim, or dim * mlp_ratio when mlp_dim is 0).
  int64_t vit_mlp_dim() const { return mlp_dim_ > 0 ? mlp_dim_ : dim_ * mlp_ratio_; }
};

/// The jobs methods choose layers for; each model names its layers for each (default_targets).
///   role                 vit                               mlp                  cnn
///   kAttentionQV         attention q and v of every block  fc1, fc2, ...        fc1   (LoRA, O-LoRA)
///   kAttentionAndMlp     attention and MLP of every block  fc1, fc2, ...        fc1   (CoDyRA, MoRA)
///   kAttentionOutput     attention output projections      fc1, fc2, ...        fc1   (CoSO)
///   kBlocks              every Linear inside the blocks    fc1, fc2, ...        fc1   (OSFT)
///   kAll                 every Linear layer (head included)                           (GPM)
enum class TargetRole { kAttentionQV, kAttentionAndMlp, kAttentionOutput, kBlocks, kAll };

/// The standard ViT sizes (Dosovitskiy et al. / DeiT), patch 16 and depth 12:
///   "vit-ti16"  dim 192, 3 heads, MLP 768      "vit-s16"  dim 384, 6 heads, MLP 1536
///   "vit-b16"   dim 768, 12 heads, MLP 3072
/// Sets arch "vit" and patch, dim, depth, heads, mlp_dim; throws naming an unknown preset.
void apply_vit_preset(ModelOptions& options, const std::string& preset);
/// The preset names, for help texts and validation.
const std::vector<std::string>& vit_preset_names();

/// Base of every Strata model.
class ModelImpl : public torch::nn::Module {
 public:
  explicit ModelImpl(const ModelOptions& options) : options_(options) {}
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;

  const ModelOptions& options() const { return options_; }
  /// Every AdaptableLinear with its module path, in registration (forward) order.
  std::vector<std::pair<std::string, adapters::AdaptableLinear>> linear_layers();
  /// Layers whose path matches `pattern`, a layer glob (adapters/inject.h: "blocks.*.attn.q|fc*", "**").
  std::vector<std::pair<std::string, adapters::AdaptableLinear>> linear_layers(const std::string& pattern);
  /// The layers a method in `role` works on by default, as a layer glob.
  std::string default_targets(TargetRole role) const;
  /// A method's layer option: "auto" = default_targets(role), anything else is a layer glob. Throws
  /// naming `option` when the glob matches no Linear layer (a typo would otherwise train nothing).
  std::string resolve_targets(const std::string& selection, TargetRole role, const std::string& option);
  /// Turn input recording on/off for every AdaptableLinear and Conv2d (GPM representation matrices).
  void set_recording(bool on);
  /// Every torch::nn::Conv2d with its module path, in registration (forward) order.
  std::vector<std::pair<std::string, torch::nn::Conv2d>> conv_layers();
  /// The last input [B, C, H, W] of the Conv2d at `path` seen while recording; undefined otherwise.
  const torch::Tensor& conv_input(const std::string& path) const;

 protected:
  /// conv(x), recording x under `path` while recording is on (models call their convs through it).
  torch::Tensor conv_forward(torch::nn::Conv2d& conv, const std::string& path, const torch::Tensor& x);

  ModelOptions options_;
  bool recording_ = false;
  std::map<std::string, torch::Tensor> conv_inputs_;
};

using Model = std::shared_ptr<ModelImpl>;

/// Builds the model named by options.arch(); weights come from the global torch RNG
/// (the runner seeds it). Throws naming the bad option.
Model make_model(const ModelOptions& options);

}  // namespace strata::models
