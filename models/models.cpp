#include "models/models.h"

#include "adapters/inject.h"

#include <regex>

namespace strata::models {

namespace F = torch::nn::functional;
using adapters::AdaptableLinear;

void ModelOptions::validate() const {
  TORCH_CHECK(arch_ == "mlp" || arch_ == "cnn" || arch_ == "vit",
              "strata::continual::ModelOptions: unknown arch '", arch_, "' (valid: mlp, cnn, vit)");
  TORCH_CHECK(input_shape_.size() == 3 && input_shape_[0] > 0 && input_shape_[1] > 0 && input_shape_[2] > 0,
              "strata::continual::ModelOptions: input_shape must be {C,H,W} with positive sizes");
  TORCH_CHECK(num_classes_ >= 2, "strata::continual::ModelOptions: num_classes must be >= 2, got ", num_classes_);
  for (auto h : hidden_) TORCH_CHECK(h > 0, "strata::continual::ModelOptions: hidden width must be > 0, got ", h);
  for (auto c : channels_) TORCH_CHECK(c > 0, "strata::continual::ModelOptions: channels must be > 0, got ", c);
  if (arch_ == "cnn")
    TORCH_CHECK(channels_.size() == 2, "strata::continual::ModelOptions: cnn needs 2 channel counts, got ",
                channels_.size());
  if (arch_ == "vit") {
    TORCH_CHECK(patch_ > 0 && input_shape_[1] % patch_ == 0 && input_shape_[2] % patch_ == 0,
                "strata::continual::ModelOptions: vit patch ", patch_, " must divide the image size ",
                input_shape_[1], "x", input_shape_[2]);
    TORCH_CHECK(dim_ > 0 && heads_ > 0 && dim_ % heads_ == 0, "strata::continual::ModelOptions: vit dim ", dim_,
                " must be a positive multiple of heads ", heads_);
    TORCH_CHECK(depth_ >= 1 && mlp_ratio_ >= 1, "strata::continual::ModelOptions: vit depth and mlp_ratio must be >= 1");
    TORCH_CHECK(mlp_dim_ >= 0, "strata::models::ModelOptions: vit mlp_dim must be >= 0 (0 = dim * mlp_ratio), got ",
                mlp_dim_);
  }
}

const std::vector<std::string>& vit_preset_names() {
  static const std::vector<std::string> names = {"vit-ti16", "vit-s16", "vit-b16"};
  return names;
}

void apply_vit_preset(ModelOptions& o, const std::string& preset) {
  struct Preset {
    const char* name;
    int64_t dim, heads, mlp;
  };
  static const Preset presets[] = {{"vit-ti16", 192, 3, 768}, {"vit-s16", 384, 6, 1536}, {"vit-b16", 768, 12, 3072}};
  for (const auto& p : presets)
    if (preset == p.name) {
      o.arch("vit").patch(16).dim(p.dim).depth(12).heads(p.heads).mlp_dim(p.mlp);
      return;
    }
  TORCH_CHECK(false, "option --vit-preset: unknown preset '", preset, "' (valid: vit-ti16, vit-s16, vit-b16)");
}

std::vector<std::pair<std::string, AdaptableLinear>> ModelImpl::linear_layers() { return linear_layers("**"); }

std::vector<std::pair<std::string, AdaptableLinear>> ModelImpl::linear_layers(const std::string& pattern) {
  std::vector<std::pair<std::string, AdaptableLinear>> out;
  const std::regex re = adapters::glob_to_regex(pattern);
  for (const auto& item : named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
    auto lin = std::dynamic_pointer_cast<adapters::AdaptableLinearImpl>(item.value());
    if (!lin) continue;
    if (!std::regex_match(item.key(), re)) continue;
    out.emplace_back(item.key(), AdaptableLinear(lin));
  }
  return out;
}

std::string ModelImpl::default_targets(TargetRole role) const {
  if (role == TargetRole::kAll) return "**";
  const auto& arch = options_.arch();
  if (arch == "vit") {
    switch (role) {
      case TargetRole::kAttentionQV: return "blocks.*.attn.q|blocks.*.attn.v";
      case TargetRole::kAttentionAndMlp: return "blocks.*.attn.*|blocks.*.mlp.*";
      case TargetRole::kAttentionOutput: return "blocks.*.attn.o";
      case TargetRole::kBlocks: return "blocks.**";
      case TargetRole::kAll: break;
    }
  }
  // MLP: the hidden layers fc1, fc2, ...; CNN: its one hidden Linear fc1. The head is never a default
  // target: methods train it (or not) by their own rule.
  return arch == "cnn" ? "fc1" : "fc*";
}

std::string ModelImpl::resolve_targets(const std::string& selection, TargetRole role, const std::string& option) {
  TORCH_CHECK(!selection.empty(), "option ", option, ": empty layer selection (use 'auto' or a layer glob)");
  const std::string glob = selection == "auto" ? default_targets(role) : selection;
  TORCH_CHECK(!linear_layers(glob).empty(), "option ", option, ": '", selection, "' matches no Linear layer of the ",
              options_.arch(), " model");
  return glob;
}

void ModelImpl::set_recording(bool on) {
  for (auto& [name, layer] : linear_layers()) layer->set_recording(on);
  recording_ = on;
  conv_inputs_.clear();
}

std::vector<std::pair<std::string, torch::nn::Conv2d>> ModelImpl::conv_layers() {
  std::vector<std::pair<std::string, torch::nn::Conv2d>> out;
  for (const auto& item : named_modules(/*name_prefix=*/"", /*include_self=*/false))
    if (auto conv = std::dynamic_pointer_cast<torch::nn::Conv2dImpl>(item.value()))
      out.emplace_back(item.key(), torch::nn::Conv2d(conv));
  return out;
}

const torch::Tensor& ModelImpl::conv_input(const std::string& path) const {
  static const torch::Tensor none;
  auto it = conv_inputs_.find(path);
  return it == conv_inputs_.end() ? none : it->second;
}

torch::Tensor ModelImpl::conv_forward(torch::nn::Conv2d& conv, const std::string& path, const torch::Tensor& x) {
  if (recording_) conv_inputs_[path] = x.detach();
  return conv->forward(x);
}

namespace {

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  return n;
}

// Multi-layer perceptron: flatten -> [Linear, ReLU]* -> Linear. Layers fc1..fcK, head "head".
// The GPM protocol is 784-100-100-10 without bias.
class MlpImpl : public ModelImpl {
 public:
  explicit MlpImpl(const ModelOptions& o) : ModelImpl(o) {
    int64_t in = numel(o.input_shape());
    for (size_t i = 0; i < o.hidden().size(); ++i) {
      layers_.push_back(register_module("fc" + std::to_string(i + 1), AdaptableLinear(in, o.hidden()[i], o.bias())));
      in = o.hidden()[i];
    }
    head_ = register_module("head", AdaptableLinear(in, o.num_classes(), o.bias()));
  }
  torch::Tensor forward(const torch::Tensor& x) override {
    auto h = x.flatten(1);
    for (auto& l : layers_) h = torch::relu(l->forward(h));
    return head_->forward(h);
  }

 private:
  std::vector<AdaptableLinear> layers_;
  AdaptableLinear head_{nullptr};
};

// Small CNN: two 3x3 conv blocks (conv, ReLU, 2x2 max-pool), then fc1 (128) and head.
class CnnImpl : public ModelImpl {
 public:
  explicit CnnImpl(const ModelOptions& o) : ModelImpl(o) {
    const auto& s = o.input_shape();
    conv1_ = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(s[0], o.channels()[0], 3).padding(1)));
    conv2_ = register_module("conv2", torch::nn::Conv2d(
                                          torch::nn::Conv2dOptions(o.channels()[0], o.channels()[1], 3).padding(1)));
    const int64_t flat = o.channels()[1] * (s[1] / 4) * (s[2] / 4);
    fc1_ = register_module("fc1", AdaptableLinear(flat, 128, o.bias()));
    head_ = register_module("head", AdaptableLinear(128, o.num_classes(), o.bias()));
  }
  torch::Tensor forward(const torch::Tensor& x) override {
    auto h = F::max_pool2d(torch::relu(conv_forward(conv1_, "conv1", x)), F::MaxPool2dFuncOptions(2));
    h = F::max_pool2d(torch::relu(conv_forward(conv2_, "conv2", h)), F::MaxPool2dFuncOptions(2));
    return head_->forward(torch::relu(fc1_->forward(h.flatten(1))));
  }

 private:
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  AdaptableLinear fc1_{nullptr}, head_{nullptr};
};

// Pre-norm transformer block; every projection is an AdaptableLinear: attn.{q,k,v,o}, mlp.{fc1,fc2}.
class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(int64_t dim, int64_t heads) : heads_(heads) {
    q = register_module("q", AdaptableLinear(dim, dim, true));
    k = register_module("k", AdaptableLinear(dim, dim, true));
    v = register_module("v", AdaptableLinear(dim, dim, true));
    o = register_module("o", AdaptableLinear(dim, dim, true));
  }
  torch::Tensor forward(const torch::Tensor& x) {  // x [B, T, D]
    const auto B = x.size(0), T = x.size(1), D = x.size(2), hd = D / heads_;
    auto split = [&](const torch::Tensor& t) { return t.view({B, T, heads_, hd}).transpose(1, 2); };
    auto qh = split(q->forward(x)), kh = split(k->forward(x)), vh = split(v->forward(x));
    auto att = torch::softmax(torch::matmul(qh, kh.transpose(-2, -1)) / std::sqrt(static_cast<double>(hd)), -1);
    auto y = torch::matmul(att, vh).transpose(1, 2).reshape({B, T, D});
    return o->forward(y);
  }
  AdaptableLinear q{nullptr}, k{nullptr}, v{nullptr}, o{nullptr};

 private:
  int64_t heads_;
};
TORCH_MODULE(Attention);

class MlpBlockImpl : public torch::nn::Module {
 public:
  MlpBlockImpl(int64_t dim, int64_t hidden) {
    fc1 = register_module("fc1", AdaptableLinear(dim, hidden, true));
    fc2 = register_module("fc2", AdaptableLinear(hidden, dim, true));
  }
  torch::Tensor forward(const torch::Tensor& x) { return fc2->forward(torch::gelu(fc1->forward(x))); }
  AdaptableLinear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(MlpBlock);

// torchvision's and timm's ViT LayerNorm epsilon (LibTorch's default is 1e-5).
constexpr double kVitLayerNormEps = 1e-6;

class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(int64_t dim, int64_t heads, int64_t mlp_dim) {
    norm1 = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(kVitLayerNormEps)));
    attn = register_module("attn", Attention(dim, heads));
    norm2 = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(kVitLayerNormEps)));
    mlp = register_module("mlp", MlpBlock(dim, mlp_dim));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = x + attn->forward(norm1->forward(x));
    return x + mlp->forward(norm2->forward(x));
  }
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  Attention attn{nullptr};
  MlpBlock mlp{nullptr};
};
TORCH_MODULE(Block);

// ViT, computing what torchvision.models.VisionTransformer computes in eval mode:
// non-overlapping p x p patches -> Linear "patch_embed" on the flattened (C, p, p) patch (the same
// function as torchvision's Conv2d(kernel = stride = p), weight [D, C*p*p] = the conv weight
// reshaped) -> [cls] prepended -> + learned positions (over cls and patches) -> blocks.N (pre-norm:
// x + attn(LN(x)), then x + MLP(LN(x)) with exact GELU; LayerNorm eps 1e-6) -> LayerNorm -> "head"
// on the cls token. No dropout (torchvision's defaults are 0; keeps runs deterministic).
class VitImpl : public ModelImpl {
 public:
  explicit VitImpl(const ModelOptions& o) : ModelImpl(o) {
    const auto& s = o.input_shape();
    const int64_t p = o.patch(), n = (s[1] / p) * (s[2] / p);
    patch_embed_ = register_module("patch_embed", AdaptableLinear(s[0] * p * p, o.dim(), true));
    cls_ = register_parameter("cls_token", torch::zeros({1, 1, o.dim()}));
    pos_ = register_parameter("pos_embed", torch::randn({1, n + 1, o.dim()}) * 0.02);
    // A ModuleList gives the stable paths "blocks.0", "blocks.1", ... (names cannot hold dots).
    auto list = register_module("blocks", torch::nn::ModuleList());
    for (int64_t i = 0; i < o.depth(); ++i) {
      blocks_.push_back(Block(o.dim(), o.heads(), o.vit_mlp_dim()));
      list->push_back(blocks_.back());
    }
    norm_ = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.dim()}).eps(kVitLayerNormEps)));
    head_ = register_module("head", AdaptableLinear(o.dim(), o.num_classes(), true));
  }
  torch::Tensor forward(const torch::Tensor& x) override {
    const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), p = options_.patch();
    // [B,C,H,W] -> [B, (H/p)(W/p), C p p]
    auto patches = x.reshape({B, C, H / p, p, W / p, p}).permute({0, 2, 4, 1, 3, 5}).reshape({B, (H / p) * (W / p), C * p * p});
    auto h = torch::cat({cls_.expand({B, 1, cls_.size(2)}), patch_embed_->forward(patches)}, 1) + pos_;
    for (auto& b : blocks_) h = b->forward(h);
    return head_->forward(norm_->forward(h.select(1, 0)));
  }

 private:
  AdaptableLinear patch_embed_{nullptr}, head_{nullptr};
  torch::Tensor cls_, pos_;
  std::vector<Block> blocks_;
  torch::nn::LayerNorm norm_{nullptr};
};

}  // namespace

Model make_model(const ModelOptions& options) {
  options.validate();
  if (options.arch() == "mlp") return std::make_shared<MlpImpl>(options);
  if (options.arch() == "cnn") return std::make_shared<CnnImpl>(options);
  return std::make_shared<VitImpl>(options);
}

}  // namespace strata::models
