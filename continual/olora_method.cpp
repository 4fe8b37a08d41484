#include "continual/olora_method.h"

#include "continual/lora_method.h"

#include <cmath>

namespace strata::continual {

std::vector<MethodOption> olora_options() {
  std::vector<MethodOption> o = {
      {"rank", "8", "LoRA rank r of each task's adapter"},
      {"alpha", "32", "LoRA alpha; scale s = alpha / rank (bank included)"},
      {"dropout", "0.1", "dropout on the adapter input (training only)"},
      {"lambda1", "0.5", "weight of the orthogonality term sum |A_old A^T| (element-wise L1)"},
      {"lambda2", "0", "weight of the norm term ||A|| + ||B|| (plain, not squared)"},
  };
  for (auto& c : adapter_common_options()) o.push_back(c);
  return o;
}

OLoRAMethod::OLoRAMethod(const MethodConfig& config)
    : AdapterMethod(config),
      options_(parse_lora_options(config)),
      lambda1_(config.get_double("lambda1")),
      lambda2_(config.get_double("lambda2")) {
  TORCH_CHECK(std::isfinite(lambda1_) && lambda1_ >= 0, "strata: option olora.lambda1 must be >= 0, got ", lambda1_);
  TORCH_CHECK(std::isfinite(lambda2_) && lambda2_ >= 0, "strata: option olora.lambda2 must be >= 0, got ", lambda2_);
}

std::shared_ptr<adapters::Adapter> OLoRAMethod::make_adapter(const std::string&, const adapters::AdaptableLinearImpl& l) {
  return std::make_shared<adapters::LoRAImpl>(l.in_features(), l.out_features(), options_);
}

torch::Tensor OLoRAMethod::extra_loss(StepContext&) {
  if (lambda1_ == 0 && lambda2_ == 0) return {};
  return adapters::olora_penalty(*model_, lambda1_, lambda2_);
}

void OLoRAMethod::on_task_end(TaskContext& ctx) {
  nlohmann::json ortho = nlohmann::json::object(), bank = nlohmann::json::object();
  std::vector<std::pair<std::string, std::pair<torch::Tensor, torch::Tensor>>> factors;
  {
    torch::NoGradGuard no_grad;
    for (auto& [layer, a] : adapters::adapters_of<adapters::LoRAImpl>(*model_)) {
      ortho[layer] = a->orthogonality_penalty().item<double>();
      factors.push_back({layer, {a->A.detach().clone(), a->B.detach() * a->scaling()}});
    }
  }
  store_task_factors(ctx, factors, /*delta_basis=*/true);
  adapters::olora_end_task(*model_);
  int64_t total = 0;
  for (auto& [layer, a] : adapters::adapters_of<adapters::LoRAImpl>(*model_)) {
    bank[layer] = a->bank_rank();
    total += a->bank_rank();
  }
  record_task(ctx.task_index, {{"orthogonality_l1", ortho}, {"bank_rank", bank}, {"bank_rank_total", total}});
}

}  // namespace strata::continual
