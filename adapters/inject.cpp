#include "adapters/inject.h"

#include <unordered_set>

namespace strata::adapters {

std::regex glob_to_regex(const std::string& pattern) {
  TORCH_CHECK(!pattern.empty(), "strata::adapters::glob_to_regex(): empty pattern");
  std::string re = "^(?:";
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '|') {
      TORCH_CHECK(i > 0 && i + 1 < pattern.size() && pattern[i + 1] != '|' && pattern[i - 1] != '|',
                  "strata::adapters::glob_to_regex(): empty alternative in ", pattern);
      re += "|";
    } else if (c == '*') {
      if (i + 1 < pattern.size() && pattern[i + 1] == '*') {
        re += ".*";
        ++i;
      } else {
        re += "[^.]*";
      }
    } else if (c == '?') {
      re += "[^.]";
    } else if (std::isalnum(static_cast<unsigned char>(c)) || c == '_') {
      re += c;
    } else {
      re += '\\';
      re += c;
    }
  }
  re += ")$";
  return std::regex(re, std::regex::ECMAScript);
}

bool glob_match(const std::string& pattern, const std::string& name) {
  return std::regex_match(name, glob_to_regex(pattern));
}

std::vector<NamedLayer> all_layers(const torch::nn::Module& model) {
  std::vector<NamedLayer> out;
  for (const auto& item : model.named_modules(/*name_prefix=*/"", /*include_self=*/false))
    if (auto l = std::dynamic_pointer_cast<AdaptableLinearImpl>(item.value())) out.push_back({item.key(), l});
  return out;
}

std::vector<NamedLayer> find_layers(const torch::nn::Module& model, const std::regex& re) {
  std::vector<NamedLayer> out;
  for (auto& l : all_layers(model))
    if (std::regex_match(l.name, re)) out.push_back(std::move(l));
  return out;
}

std::vector<NamedLayer> find_layers(const torch::nn::Module& model, const std::string& pattern) {
  return find_layers(model, glob_to_regex(pattern));
}

std::vector<NamedLayer> adapted_layers(const torch::nn::Module& model) {
  std::vector<NamedLayer> out;
  for (auto& l : all_layers(model))
    if (l.layer->adapter()) out.push_back(std::move(l));
  return out;
}

namespace {
std::vector<NamedLayer> attach(std::vector<NamedLayer> layers, const AdapterFactory& factory, const std::string& what) {
  TORCH_CHECK(!layers.empty(), "strata::adapters::inject(): no AdaptableLinear matches ", what);
  for (auto& l : layers) {
    auto adapter = factory(l.name, *l.layer);
    TORCH_CHECK(adapter != nullptr, "strata::adapters::inject(): factory returned null for ", l.name);
    adapter->to(l.layer->weight.device(), l.layer->weight.scalar_type());
    l.layer->set_adapter(std::move(adapter));
  }
  return layers;
}
}  // namespace

std::vector<NamedLayer> inject(torch::nn::Module& model, const std::string& pattern, const AdapterFactory& factory) {
  return attach(find_layers(model, pattern), factory, "pattern '" + pattern + "'");
}

std::vector<NamedLayer> inject(torch::nn::Module& model, const std::regex& re, const AdapterFactory& factory) {
  return attach(find_layers(model, re), factory, "the given regex");
}

void freeze_base(torch::nn::Module& model) {
  std::unordered_set<const void*> keep;
  for (auto& l : adapted_layers(model))
    for (auto& p : l.layer->adapter()->parameters()) keep.insert(p.unsafeGetTensorImpl());
  for (auto& p : model.parameters())
    if (!keep.count(p.unsafeGetTensorImpl())) p.requires_grad_(false);
}

std::vector<torch::Tensor> adapter_parameters(const torch::nn::Module& model, bool trainable_only) {
  std::vector<torch::Tensor> out;
  for (auto& l : adapted_layers(model))
    for (auto& p : l.layer->adapter()->parameters())
      if (p.numel() > 0 && (!trainable_only || p.requires_grad())) out.push_back(p);
  return out;
}

std::vector<std::shared_ptr<Adapter>> unwrap(torch::nn::Module& model) {
  std::vector<std::shared_ptr<Adapter>> out;
  for (auto& l : adapted_layers(model)) out.push_back(l.layer->remove_adapter());
  return out;
}

int64_t merge_all(torch::nn::Module& model) {
  int64_t n = 0;
  for (auto& l : adapted_layers(model)) {
    l.layer->merge_adapter();
    ++n;
  }
  return n;
}

int64_t count_parameters(const torch::nn::Module& model, bool trainable_only) {
  int64_t n = 0;
  for (const auto& p : model.parameters())
    if (!trainable_only || p.requires_grad()) n += p.numel();
  return n;
}

TensorMap adapters_state(const torch::nn::Module& model) {
  TensorMap out;
  for (auto& l : adapted_layers(model)) {
    auto a = std::dynamic_pointer_cast<StatefulAdapter>(l.layer->adapter());
    if (!a) continue;
    for (auto& kv : a->state()) out[l.name + "/" + kv.first] = kv.second;
  }
  return out;
}

void load_adapters_state(torch::nn::Module& model, const TensorMap& state) {
  size_t used = 0;
  for (auto& l : adapted_layers(model)) {
    auto a = std::dynamic_pointer_cast<StatefulAdapter>(l.layer->adapter());
    if (!a) continue;
    const std::string prefix = l.name + "/";
    TensorMap mine;
    for (auto it = state.lower_bound(prefix); it != state.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it)
      mine[it->first.substr(prefix.size())] = it->second;
    TORCH_CHECK(!mine.empty(), "strata::adapters::load_adapters_state(): no state for layer ", l.name);
    a->load_state(mine);
    used += mine.size();
  }
  TORCH_CHECK(used == state.size(), "strata::adapters::load_adapters_state(): ", state.size() - used,
              " tensors belong to no attached adapter");
}

}  // namespace strata::adapters
