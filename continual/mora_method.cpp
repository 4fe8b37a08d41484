#include "continual/mora_method.h"

#include "continual/codyra_method.h"
#include "continual/trainer.h"

#include <cmath>

namespace strata::continual {

const OptionTable<MoRAMethodOptions>& mora_table() {
  using O = MoRAMethodOptions;
  static const auto table =
      OptionTable<O>()
          .add("rank", "new rank-1 atoms per task and layer (r)", [](O& o) -> auto& { return o.rank(); })
          .add("top_k", "activation budget k per token; 0 = rank (effective k = min(max(k,2), atoms))",
               [](O& o) -> auto& { return o.top_k(); })
          .add("temperature", "softmax temperature tau of the routing", [](O& o) -> auto& { return o.temperature(); })
          .add("threshold", "inference-only pruning threshold delta on the normalised scores (0 = off)",
               [](O& o) -> auto& { return o.threshold(); })
          .add("report_samples",
               "test images per seen task routed at each task end for the activation report (0 = none)",
               [](O& o) -> auto& { return o.report_samples(); })
          .add("mask_seen", "class-incremental: mask earlier tasks' classes out of the training loss (official code)",
               [](O& o) -> auto& { return o.mask_seen(); })
          .include(adapter_common_table(), [](O& o) -> auto& { return o.common(); });
  return table;
}

std::optional<OptimizerRecipe> MoRAMethod::recipe() const { return codyra_recipe(); }

MoRAMethod::MoRAMethod(const MoRAMethodOptions& o)
    : AdapterMethod("mora", o.common()),
      options_(o.rank()),
      report_samples_(o.report_samples()),
      mask_seen_(o.mask_seen()) {
  TORCH_CHECK(options_.rank() > 0, "strata: option mora.rank must be > 0, got ", options_.rank());
  options_.top_k(o.top_k()).temperature(o.temperature()).threshold(o.threshold()).scaling(1.0);
  TORCH_CHECK(options_.top_k() >= 0, "strata: option mora.top_k must be >= 0, got ", options_.top_k());
  TORCH_CHECK(std::isfinite(options_.temperature()) && options_.temperature() > 0,
              "strata: option mora.temperature must be > 0, got ", options_.temperature());
  TORCH_CHECK(std::isfinite(options_.threshold()), "strata: option mora.threshold must be finite, got ",
              options_.threshold());
  TORCH_CHECK(report_samples_ >= 0, "strata: option mora.report_samples must be >= 0, got ", report_samples_);
}

std::shared_ptr<adapters::Adapter> MoRAMethod::make_adapter(const std::string&, const adapters::AdaptableLinearImpl& l) {
  return std::make_shared<adapters::MoRAImpl>(l.in_features(), l.out_features(), options_);
}

void MoRAMethod::on_task_start(TaskContext& ctx) {
  adapters::mora_start_task(*model_, options_.rank());
  AdapterMethod::on_task_start(ctx);
}

void MoRAMethod::on_task_end(TaskContext& ctx) {
  std::vector<std::pair<std::string, std::pair<torch::Tensor, torch::Tensor>>> factors;
  for (auto& [layer, a] : adapters::adapters_of<adapters::MoRAImpl>(*model_))
    factors.push_back({layer, {a->A_new.detach().clone(), a->B_new.detach() * a->options().scaling()}});
  store_task_factors(ctx, factors, /*delta_basis=*/false);  // this task's atoms (keys A, values B)
  // Freeze this task's atoms now, so a version holds only the bank (the next task appends new ones).
  for (auto& [layer, a] : adapters::adapters_of<adapters::MoRAImpl>(*model_)) a->freeze_old_atoms();

  nlohmann::json layers = nlohmann::json::object();
  for (auto& [layer, a] : adapters::adapters_of<adapters::MoRAImpl>(*model_))
    layers[layer] = {{"atoms", a->total_atoms()}, {"k", a->effective_k()}};

  nlohmann::json seen = nlohmann::json::array();
  if (report_samples_ > 0) {
    const int64_t r = options_.rank();
    for (int64_t i = 0; i <= ctx.task_index; ++i) {
      const auto& test = ctx.stream->tasks.at(i).test;
      const int64_t n = std::min<int64_t>(report_samples_, test.size());
      if (n == 0) continue;
      adapters::mora_record(*model_, true, true);
      {
        torch::NoGradGuard no_grad;
        const bool was_training = model_->is_training();
        model_->eval();  // δ applies in eval mode, as at evaluation
        const int64_t bs = ctx.train ? ctx.train->eval_batch_size() : 1000;
        torch::Tensor buffer;
        for (int64_t s = 0; s < n; s += bs) model_->forward(test.slice(s, std::min(n, s + bs), buffer));
        if (was_training) model_->train();
      }
      adapters::mora_record(*model_, false, false);
      nlohmann::json per_layer = nlohmann::json::object();
      for (const auto& [layer, act] : adapters::mora_activation_report(*model_)) {
        // Share of activations on each task's group of r atoms (atoms are appended task by task).
        const int64_t groups = act.total_atoms / r;
        std::vector<double> share(groups, 0.0);
        if (act.frequency.defined() && act.frequency.numel() == act.total_atoms && groups > 0) {
          auto g = act.frequency.slice(0, 0, groups * r).view({groups, r}).sum(1);
          const double total = g.sum().item<double>();
          for (int64_t j = 0; j < groups; ++j) share[j] = total > 0 ? g[j].item<double>() / total : 0.0;
        }
        per_layer[layer] = {{"mean_active_per_token", act.mean_active_per_token}, {"task_share", share}};
      }
      seen.push_back({{"test_task", i}, {"images", n}, {"layers", per_layer}});
    }
  }
  record_task(ctx.task_index, {{"layers", layers}, {"activation", seen}});
}

}  // namespace strata::continual
