#include "continual/lora_method.h"

#include <cmath>

namespace strata::continual {

std::vector<MethodOption> lora_options() {
  std::vector<MethodOption> o = {
      {"rank", "8", "LoRA rank r per adapted layer"},
      {"alpha", "32", "LoRA alpha; scale s = alpha / rank"},
      {"dropout", "0.1", "dropout on the adapter input (training only)"},
  };
  for (auto& c : adapter_common_options()) o.push_back(c);
  return o;
}

adapters::LoRAOptions parse_lora_options(const MethodConfig& config) {
  const int64_t rank = config.get_int("rank");
  const double alpha = config.get_double("alpha"), dropout = config.get_double("dropout");
  TORCH_CHECK(rank > 0, "strata: option ", config.method(), ".rank must be > 0, got ", rank);
  TORCH_CHECK(std::isfinite(alpha) && alpha > 0, "strata: option ", config.method(), ".alpha must be > 0, got ", alpha);
  TORCH_CHECK(dropout >= 0 && dropout < 1, "strata: option ", config.method(), ".dropout must be in [0,1), got ",
              dropout);
  return adapters::LoRAOptions(rank).alpha(alpha).dropout(dropout);
}

LoRAMethod::LoRAMethod(const MethodConfig& config) : AdapterMethod(config), options_(parse_lora_options(config)) {}

std::shared_ptr<adapters::Adapter> LoRAMethod::make_adapter(const std::string&, const adapters::AdaptableLinearImpl& l) {
  return std::make_shared<adapters::LoRAImpl>(l.in_features(), l.out_features(), options_);
}

void LoRAMethod::on_task_end(TaskContext& ctx) {
  std::vector<std::pair<std::string, std::pair<torch::Tensor, torch::Tensor>>> factors;
  for (auto& [layer, a] : adapters::adapters_of<adapters::LoRAImpl>(*model_))
    factors.push_back({layer, {a->A.detach().clone(), a->B.detach() * a->scaling()}});
  store_task_factors(ctx, factors, /*delta_basis=*/true);
  nlohmann::json delta = nlohmann::json::object();
  for (const auto& [layer, norm] : adapters::lora_merge_and_reset(*model_)) delta[layer] = norm;
  record_task(ctx.task_index, {{"delta_norm", delta}});
}

}  // namespace strata::continual
