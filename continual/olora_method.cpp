#include "continual/olora_method.h"

#include "continual/lora_method.h"

#include <cmath>

namespace strata::continual {

const OptionTable<OLoRAMethodOptions>& olora_table() {
  using O = OLoRAMethodOptions;
  static const auto table =
      OptionTable<O>()
          .add("rank", "LoRA rank r of each task's adapter", [](O& o) -> auto& { return o.rank(); })
          .add("alpha", "LoRA alpha; scale s = alpha / rank (bank included)", [](O& o) -> auto& { return o.alpha(); })
          .add("dropout", "dropout on the adapter input (training only)", [](O& o) -> auto& { return o.dropout(); })
          .add("lambda1", "weight of the orthogonality term sum |A_old A^T| (element-wise L1)",
               [](O& o) -> auto& { return o.lambda1(); })
          .add("lambda2", "weight of the norm term ||A|| + ||B|| (plain, not squared)",
               [](O& o) -> auto& { return o.lambda2(); })
          .include(adapter_common_table(), [](O& o) -> auto& { return o.common(); });
  return table;
}

OLoRAMethod::OLoRAMethod(const OLoRAMethodOptions& o)
    : AdapterMethod("olora", o.common()),
      options_(lora_adapter_options("olora", o.rank(), o.alpha(), o.dropout())),
      lambda1_(o.lambda1()),
      lambda2_(o.lambda2()) {
  TORCH_CHECK(std::isfinite(lambda1_) && lambda1_ >= 0, "strata: option olora.lambda1 must be >= 0, got ", lambda1_);
  TORCH_CHECK(std::isfinite(lambda2_) && lambda2_ >= 0, "strata: option olora.lambda2 must be >= 0, got ", lambda2_);
}

std::optional<OptimizerRecipe> OLoRAMethod::recipe() const {
  OptimizerRecipe r;
  r.optimizer = "adamw";
  r.lr = 1e-3;
  r.schedule = "constant";
  return r;
}

std::shared_ptr<adapters::Adapter> OLoRAMethod::make_adapter(const std::string&, const adapters::AdaptableLinearImpl& l) {
  return std::make_shared<adapters::LoRAImpl>(l.in_features(), l.out_features(), options_);
}

torch::Tensor OLoRAMethod::extra_loss(StepContext&) {
  if (lambda1_ == 0 && lambda2_ == 0) return {};
  // Undefined while no term applies (task 0 with lambda2 = 0: every bank is empty): the penalty is
  // exactly 0 then, and the trainer adds nothing to the loss.
  return penalty_(lora_adapters_.get(*model_), lambda1_, lambda2_);
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
