#include "continual/lora_method.h"

#include <cmath>

namespace strata::continual {

const OptionTable<LoRAMethodOptions>& lora_table() {
  static const auto table =
      OptionTable<LoRAMethodOptions>()
          .add("rank", "LoRA rank r per adapted layer", [](LoRAMethodOptions& o) -> auto& { return o.rank(); })
          .add("alpha", "LoRA alpha; scale s = alpha / rank", [](LoRAMethodOptions& o) -> auto& { return o.alpha(); })
          .add("dropout", "dropout on the adapter input (training only)",
               [](LoRAMethodOptions& o) -> auto& { return o.dropout(); })
          .include(adapter_common_table(), [](LoRAMethodOptions& o) -> auto& { return o.common(); });
  return table;
}

adapters::LoRAOptions lora_adapter_options(const std::string& method, int64_t rank, double alpha, double dropout) {
  TORCH_CHECK(rank > 0, "strata: option ", method, ".rank must be > 0, got ", rank);
  TORCH_CHECK(std::isfinite(alpha) && alpha > 0, "strata: option ", method, ".alpha must be > 0, got ", alpha);
  TORCH_CHECK(dropout >= 0 && dropout < 1, "strata: option ", method, ".dropout must be in [0,1), got ", dropout);
  return adapters::LoRAOptions(rank).alpha(alpha).dropout(dropout);
}

LoRAMethod::LoRAMethod(const LoRAMethodOptions& o)
    : AdapterMethod("lora", o.common()), options_(lora_adapter_options("lora", o.rank(), o.alpha(), o.dropout())) {}

std::shared_ptr<adapters::Adapter> LoRAMethod::make_adapter(const std::string&, const adapters::AdaptableLinearImpl& l) {
  return std::make_shared<adapters::LoRAImpl>(l.in_features(), l.out_features(), options_);
}

void LoRAMethod::on_task_start(TaskContext& ctx) {
  reattach_adapters();
  AdapterMethod::on_task_start(ctx);
}

void LoRAMethod::on_task_end(TaskContext& ctx) {
  std::vector<std::pair<std::string, std::pair<torch::Tensor, torch::Tensor>>> factors;
  for (auto& [layer, a] : adapters::adapters_of<adapters::LoRAImpl>(*model_))
    factors.push_back({layer, {a->A.detach().clone(), a->B.detach() * a->scaling()}});
  store_task_factors(ctx, factors, /*delta_basis=*/true);
  nlohmann::json delta = nlohmann::json::object();
  {
    torch::NoGradGuard no_grad;
    for (auto& [layer, a] : adapters::adapters_of<adapters::LoRAImpl>(*model_))
      delta[layer] = a->delta_weight().norm().item<double>();
  }
  // Merged and removed: the version is the plain base model (no adapter left in the forward path).
  adapters::merge_all(*model_);
  record_task(ctx.task_index, {{"delta_norm", delta}});
}

}  // namespace strata::continual
