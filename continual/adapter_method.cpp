#include "continual/adapter_method.h"

#include "subspaces/store.h"

#include <filesystem>

namespace strata::continual {

const OptionTable<AdapterCommonOptions>& adapter_common_table() {
  static const auto table =
      OptionTable<AdapterCommonOptions>()
          .add("target",
               "layers to adapt: an inject glob over module paths ('blocks.*.attn.q|blocks.*.attn.v', 'fc*', '**'); "
               "auto = the method's per-architecture default",
               [](AdapterCommonOptions& o) -> auto& { return o.target(); })
          .add("train_head", "keep the classification head 'head' trainable (base weights stay frozen)",
               [](AdapterCommonOptions& o) -> auto& { return o.train_head(); });
  return table;
}

AdapterMethod::AdapterMethod(const std::string& method, const AdapterCommonOptions& options)
    : target_option_(options.target()), train_head_(options.train_head()) {
  TORCH_CHECK(!target_option_.empty(), "strata::continual::AdapterMethod: option ", method,
              ".target is empty (use 'auto' or a glob)");
}

void AdapterMethod::attach(models::Model& model) {
  TORCH_CHECK(model, "strata::continual::AdapterMethod::attach(): null model");
  model_ = model;
  target_ = model->resolve_targets(target_option_, target_role(), name() + ".target");
  inject_adapters();
  adapters::freeze_base(*model);
  if (train_head_) {
    auto heads = adapters::find_layers(*model, "head");
    TORCH_CHECK(!heads.empty(), "strata::continual::AdapterMethod::attach(): train_head is on but the model has no "
                "layer named 'head'");
    for (auto& h : heads) {
      h.layer->weight.requires_grad_(true);
      if (h.layer->bias.defined()) h.layer->bias.requires_grad_(true);
    }
  }
}

void AdapterMethod::inject_adapters() {
  auto adapted = adapters::inject(*model_, target_, [this](const std::string& name, const adapters::AdaptableLinearImpl& l) {
    return make_adapter(name, l);
  });
  layers_.clear();
  for (const auto& l : adapted) layers_.push_back(l.name);
}

void AdapterMethod::reattach_adapters() {
  TORCH_CHECK(model_, "strata::continual::AdapterMethod: attach() was not called");
  // Fresh adapters train (requires_grad) while the base stays as freeze_base() left it.
  if (adapters::adapted_layers(*model_).empty()) inject_adapters();
}

std::vector<torch::Tensor> AdapterMethod::parameters(TaskContext& ctx) {
  TORCH_CHECK(model_, "strata::continual::AdapterMethod::parameters(): attach() was not called");
  auto out = adapters::adapter_parameters(*model_, /*trainable_only=*/true);
  if (train_head_)
    for (auto& h : adapters::find_layers(*model_, "head")) {
      out.push_back(h.layer->weight);
      if (h.layer->bias.defined()) out.push_back(h.layer->bias);
    }
  return out;
}

int64_t AdapterMethod::trainable_adapter_parameters() const {
  int64_t n = 0;
  for (const auto& p : adapters::adapter_parameters(*model_, true)) n += p.numel();
  return n;
}

int64_t AdapterMethod::trainable_head_parameters() const {
  if (!train_head_) return 0;
  int64_t n = 0;
  for (auto& h : adapters::find_layers(*model_, "head"))
    n += h.layer->weight.numel() + (h.layer->bias.defined() ? h.layer->bias.numel() : 0);
  return n;
}

void AdapterMethod::on_task_start(TaskContext& ctx) {
  start_adapter_params_ = trainable_adapter_parameters();
  start_head_params_ = trainable_head_parameters();
}

void AdapterMethod::record_task(int64_t task, nlohmann::json entry) {
  entry["task"] = task;
  entry["trainable_adapter_parameters"] = start_adapter_params_;
  entry["trainable_head_parameters"] = start_head_params_;
  tasks_.push_back(std::move(entry));
}

void AdapterMethod::store_task_factors(
    const TaskContext& ctx, const std::vector<std::pair<std::string, std::pair<torch::Tensor, torch::Tensor>>>& factors,
    bool delta_basis) const {
  if (!ctx.recorder) return;
  torch::NoGradGuard no_grad;
  std::map<std::string, subspaces::SubspaceRecord> records;
  for (const auto& [layer, ab] : factors) {
    const auto A = ab.first.detach().to(torch::kFloat32).contiguous();   // [k, n]
    const auto B = ab.second.detach().to(torch::kFloat32).contiguous();  // [m, k]
    if (A.size(0) == 0) continue;
    // Aᵀ = Q R  =>  B·A = (B Rᵀ) Qᵀ; SVD of the small C = B Rᵀ [m, k'] gives B·A = U S (Q V)ᵀ.
    auto [Q, R] = torch::linalg_qr(A.t());
    const auto C = delta_basis ? B.matmul(R.t()) : R.t();
    auto [U, S, Vh] = torch::linalg_svd(C, /*full_matrices=*/false);
    subspaces::SubspaceRecord rec;
    rec.basis = Q.matmul(Vh.t()).contiguous();  // [n, k'] orthonormal
    rec.singular_values = S.contiguous();
    rec.captured_energy = 1.0;
    rec.threshold = 0.0;
    rec.side = "input";
    rec.method = name();
    rec.extra["A"] = A;
    rec.extra["B"] = B;
    records[layer] = std::move(rec);
  }
  ctx.recorder->record(ctx.task_index, records);
}

MethodState AdapterMethod::save() const {
  MethodState s;
  TORCH_CHECK(model_, "strata::continual::AdapterMethod::save(): attach() was not called");
  for (auto& [k, v] : adapters::adapters_state(*model_)) s.tensors["adapters/" + k] = v;
  s.meta["target"] = target_;
  s.meta["tasks"] = tasks_;
  return s;
}

void AdapterMethod::load(const MethodState& state, models::Model& model) {
  if (model_ != model || adapters::adapted_layers(*model).empty()) attach(model);
  if (state.meta.contains("target"))
    TORCH_CHECK(state.meta["target"].get<std::string>() == target_, "strata::continual::", name(),
                "::load(): the state was saved with target '", state.meta["target"].get<std::string>(),
                "' but the method now adapts '", target_, "'");
  adapters::TensorMap mine;
  const std::string prefix = "adapters/";
  for (const auto& [k, v] : state.tensors)
    if (k.compare(0, prefix.size(), prefix) == 0) mine[k.substr(prefix.size())] = v;
  if (mine.empty())
    adapters::unwrap(*model);  // saved merged (lora, codyra): the plain base; the next task attaches fresh ones
  else
    adapters::load_adapters_state(*model, mine);
  tasks_ = state.meta.contains("tasks") ? state.meta["tasks"] : nlohmann::json::array();
}

nlohmann::json AdapterMethod::report() const {
  nlohmann::json r;
  r["target"] = target_;
  r["layers"] = layers_;
  r["train_head"] = train_head_;
  r["tasks"] = tasks_;
  return r;
}

}  // namespace strata::continual
