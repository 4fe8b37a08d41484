#pragma once
// Finding AdaptableLinear layers in a module tree and attaching / merging / removing adapters.
//
// Layer names are the module paths of Module::named_modules() (e.g. "blocks.0.attn.q", "fc1"); the
// root module itself is never matched.
//
// Name patterns are globs (one syntax everywhere, config files included), matched against the WHOLE
// path:
//   alternatives   "a|b"      either glob
//   *              any run of characters without '.', i.e. inside one path segment
//   **             any run of characters, dots included (spans segments)
//   ?              exactly one character other than '.'
//   anything else  literal (a '.' is a literal dot)
// Examples: "blocks.*.attn.q|blocks.*.attn.v" selects q and v of every block; "fc1" only the top-level
// fc1; "**" every AdaptableLinear. An overload takes a std::regex (ECMAScript, whole-path match) for
// anything globs cannot say.
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include "adapters/adaptable_linear.h"
#include "adapters/stateful_adapter.h"

namespace strata::adapters {

struct NamedLayer {
  std::string name;
  std::shared_ptr<AdaptableLinearImpl> layer;
};

/// Translate a glob (syntax above) into an ECMAScript regex matching whole paths.
std::regex glob_to_regex(const std::string& pattern);
bool glob_match(const std::string& pattern, const std::string& name);

/// Every AdaptableLinear below `model`, in named_modules() order.
std::vector<NamedLayer> all_layers(const torch::nn::Module& model);
std::vector<NamedLayer> find_layers(const torch::nn::Module& model, const std::string& pattern);
std::vector<NamedLayer> find_layers(const torch::nn::Module& model, const std::regex& re);
/// Layers that currently route through an adapter.
std::vector<NamedLayer> adapted_layers(const torch::nn::Module& model);

/// Makes the adapter for one layer. It is moved to the layer's device and dtype after creation.
using AdapterFactory =
    std::function<std::shared_ptr<Adapter>(const std::string& name, const AdaptableLinearImpl& layer)>;

/// Attach factory(name, layer) to every matching layer (replacing any adapter it had). Returns the
/// layers adapted. Fails if the pattern matches nothing (a typo would otherwise train nothing).
std::vector<NamedLayer> inject(torch::nn::Module& model, const std::string& pattern, const AdapterFactory& factory);
std::vector<NamedLayer> inject(torch::nn::Module& model, const std::regex& re, const AdapterFactory& factory);

/// Every adapter of type A, with its layer's name.
template <class A>
std::vector<std::pair<std::string, std::shared_ptr<A>>> adapters_of(const torch::nn::Module& model) {
  std::vector<std::pair<std::string, std::shared_ptr<A>>> out;
  for (auto& l : adapted_layers(model))
    if (auto a = std::dynamic_pointer_cast<A>(l.layer->adapter())) out.emplace_back(l.name, std::move(a));
  return out;
}

/// The adapters of type A in one model, found by one walk of the module tree and then kept, so that
/// per-step hooks (O-LoRA's penalty, CoDyRA's shrinkage) do not walk the tree at every step. get()
/// walks again only when the model is another one, when a cached layer no longer routes through its
/// cached adapter (one pointer comparison per layer: after a merge, an unwrap, a re-attachment or a
/// load), when the last walk found none, or after reset() (call it when adapters may have been
/// attached to layers that had none).
template <class A>
class AdapterCache {
 public:
  const std::vector<std::shared_ptr<A>>& get(const torch::nn::Module& model) {
    if (!valid(model)) {
      layers_.clear();
      adapters_.clear();
      for (auto& l : adapted_layers(model))
        if (auto a = std::dynamic_pointer_cast<A>(l.layer->adapter())) {
          layers_.push_back(l.layer);
          adapters_.push_back(std::move(a));
        }
      model_ = adapters_.empty() ? nullptr : &model;
    }
    return adapters_;
  }
  void reset() { model_ = nullptr; }

 private:
  bool valid(const torch::nn::Module& model) const {
    if (model_ != &model) return false;
    for (size_t i = 0; i < layers_.size(); ++i)
      if (layers_[i]->adapter().get() != adapters_[i].get()) return false;
    return true;
  }
  const torch::nn::Module* model_ = nullptr;
  std::vector<std::shared_ptr<AdaptableLinearImpl>> layers_;
  std::vector<std::shared_ptr<A>> adapters_;
};

/// requires_grad=false on every parameter of `model` that is not a parameter of an attached adapter
/// (base weights, biases, norms, embeddings, heads). Adapters keep their frozen parts in buffers, so
/// after this the trainable parameters are exactly the adapters' current trainable factors. Call it
/// again after attaching new adapters only if the model gained new non-adapter parameters.
void freeze_base(torch::nn::Module& model);
/// Parameters of the attached adapters (non-empty tensors only; trainable_only: requires_grad ones).
/// Hand these to the optimizer.
std::vector<torch::Tensor> adapter_parameters(const torch::nn::Module& model, bool trainable_only = true);
/// Remove every adapter without merging; returns them in layer order.
std::vector<std::shared_ptr<Adapter>> unwrap(torch::nn::Module& model);
/// Fold every adapter's ΔW into its base weight and remove it. Returns the number of layers merged.
/// Adapters whose update depends on the input (MoRA) refuse with an error from delta_weight().
int64_t merge_all(torch::nn::Module& model);
/// Number of scalar parameters (trainable_only: with requires_grad).
int64_t count_parameters(const torch::nn::Module& model, bool trainable_only = true);

/// State of every StatefulAdapter, keys "<layer name>/<adapter key>" (e.g. "blocks.0.attn.q/A").
TensorMap adapters_state(const torch::nn::Module& model);
/// Inverse of adapters_state(); the same adapters must already be attached (fails otherwise).
void load_adapters_state(torch::nn::Module& model, const TensorMap& state);

}  // namespace strata::adapters
