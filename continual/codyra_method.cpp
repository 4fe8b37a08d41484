#include "continual/codyra_method.h"

#include <algorithm>

#include "continual/trainer.h"

#include <cmath>

namespace strata::continual {

const OptionTable<CoDyRAMethodOptions>& codyra_table() {
  using O = CoDyRAMethodOptions;
  static const auto table =
      OptionTable<O>()
          .add("rank", "initial LoRA rank r per layer (pruned by the gates)", [](O& o) -> auto& { return o.rank(); })
          .add("kappa_max", "final soft-threshold kappa of the ramp (not scaled by the learning rate)",
               [](O& o) -> auto& { return o.kappa_max(); })
          .add("dense_fraction", "fraction of the task's steps trained densely before shrinkage starts",
               [](O& o) -> auto& { return o.dense_fraction(); })
          .add("num_kappas", "number of kappa values of the linear ramp 0..kappa_max",
               [](O& o) -> auto& { return o.num_kappas(); })
          .add("shrink", "soft-threshold operator: paper (prox of kappa*|w|_1) | code-compat (zeroes |w| < 2 kappa)",
               [](O& o) -> auto& { return o.shrink(); })
          .add("dropout", "dropout on the adapter input (training only)", [](O& o) -> auto& { return o.dropout(); })
          .add("mask_seen", "class-incremental: mask earlier tasks' classes out of the training loss (official code)",
               [](O& o) -> auto& { return o.mask_seen(); })
          .include(adapter_common_table(), [](O& o) -> auto& { return o.common(); });
  return table;
}

OptimizerRecipe codyra_recipe() {
  OptimizerRecipe r;
  r.optimizer = "adamw";
  r.lr = 5e-4;
  r.beta1 = 0.9;
  r.beta2 = 0.9999;
  r.weight_decay = 0;
  r.schedule = "cosine";
  return r;
}

CoDyRAMethod::CoDyRAMethod(const CoDyRAMethodOptions& o)
    : AdapterMethod("codyra", o.common()), options_(o.rank()), mask_seen_(o.mask_seen()) {
  TORCH_CHECK(options_.rank() > 0, "strata: option codyra.rank must be > 0, got ", options_.rank());
  TORCH_CHECK(o.dropout() >= 0 && o.dropout() < 1, "strata: option codyra.dropout must be in [0,1), got ", o.dropout());
  options_.dropout(o.dropout());
  schedule_.kappa_max(o.kappa_max()).dense_fraction(o.dense_fraction()).num_kappas(o.num_kappas());
  TORCH_CHECK(std::isfinite(schedule_.kappa_max()) && schedule_.kappa_max() >= 0,
              "strata: option codyra.kappa_max must be >= 0, got ", schedule_.kappa_max());
  TORCH_CHECK(schedule_.dense_fraction() >= 0 && schedule_.dense_fraction() <= 1,
              "strata: option codyra.dense_fraction must be in [0,1], got ", schedule_.dense_fraction());
  TORCH_CHECK(schedule_.num_kappas() >= 1, "strata: option codyra.num_kappas must be >= 1, got ",
              schedule_.num_kappas());
  if (o.shrink() == "paper")
    mode_ = adapters::ShrinkMode::Paper;
  else if (o.shrink() == "code-compat")
    mode_ = adapters::ShrinkMode::CodeCompat;
  else
    TORCH_CHECK(false, "strata: option codyra.shrink: '", o.shrink(), "' is not one of paper, code-compat");
}

std::shared_ptr<adapters::Adapter> CoDyRAMethod::make_adapter(const std::string&, const adapters::AdaptableLinearImpl& l) {
  return std::make_shared<adapters::CoDyRAImpl>(l.in_features(), l.out_features(), options_);
}

void CoDyRAMethod::on_task_start(TaskContext& ctx) {
  // N as train_task() will run it: epochs × ⌈n / batch⌉ over this method's training split.
  TORCH_CHECK(ctx.train, "strata::continual::CoDyRAMethod::on_task_start(): the task context has no TrainOptions");
  const int64_t n = training_data(ctx).size(), bs = ctx.train->batch_size();
  schedule_.total_steps(ctx.train->epochs() * ((n + bs - 1) / bs));
  last_kappa_ = 0;
  reattach_adapters();
  AdapterMethod::on_task_start(ctx);
}

void CoDyRAMethod::after_step(StepContext& step) {
  // The schedule (dense warm-up, then κ growing to κ_max) spans the task's own training (stage 0).
  // An extra stage (MUSCLE's stage 2) restarts the step count at 0: it continues at the schedule's
  // end instead of replaying the dense phase, whatever its own length.
  const int64_t at = step.task && step.task->stage > 0 ? std::max<int64_t>(schedule_.total_steps() - 1, 0) : step.step;
  last_kappa_ = adapters::kappa_at(at, schedule_);
  if (last_kappa_ > 0) adapters::codyra_after_step(codyra_adapters_.get(*model_), at, schedule_, mode_);
}

void CoDyRAMethod::on_task_end(TaskContext& ctx) {
  nlohmann::json kept = nlohmann::json::object(), delta = nlohmann::json::object();
  int64_t total_rank = 0, total_kept = 0;
  std::vector<std::pair<std::string, std::pair<torch::Tensor, torch::Tensor>>> factors;
  for (const auto& s : adapters::codyra_end_task(*model_)) {
    if (s.A_gated.defined() && s.B.defined()) factors.push_back({s.name, {s.A_gated, s.B}});
    kept[s.name] = s.kept;
    delta[s.name] = s.delta_norm;
    total_rank += s.rank;
    total_kept += s.kept;
  }
  store_task_factors(ctx, factors, /*delta_basis=*/true);  // the kept (merged) ranks only
  // Merged: remove the (re-initialised, B = 0) adapters so the version is the plain base model.
  adapters::unwrap(*model_);
  const int64_t N = schedule_.total_steps();
  record_task(ctx.task_index, {{"ranks_kept", kept},
                               {"delta_norm", delta},
                               {"rank_total", total_rank},
                               {"kept_total", total_kept},
                               {"pruned_fraction", total_rank ? 1.0 - double(total_kept) / double(total_rank) : 0.0},
                               {"steps", N},
                               {"final_kappa", last_kappa_},
                               {"shrinkage", N > 0 && adapters::kappa_at(N - 1, schedule_) > 0}});
}

}  // namespace strata::continual
