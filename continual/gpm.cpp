#include "continual/gpm.h"

#include "continual/trainer.h"
#include "subspaces/basis.h"
#include "subspaces/store.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

namespace strata::continual {

void GpmOptions::validate() const {
  TORCH_CHECK(!thresholds_.empty(), "strata::continual::Gpm: gpm.thresholds is empty");
  for (double t : thresholds_)
    TORCH_CHECK(t > 0 && t <= 1, "strata::continual::Gpm: gpm.thresholds must be in (0, 1], got ", t);
  TORCH_CHECK(threshold_increment_ >= 0 && threshold_increment_ < 1,
              "strata::continual::Gpm: gpm.threshold_increment must be in [0, 1), got ", threshold_increment_);
  TORCH_CHECK(samples_ > 0, "strata::continual::Gpm: gpm.samples must be > 0, got ", samples_);
  TORCH_CHECK(svd_ == "exact" || svd_ == "randomized" || svd_ == "auto",
              "strata::continual::Gpm: gpm.svd must be exact, randomized or auto, got '", svd_, "'");
}

const OptionTable<GpmOptions>& gpm_table() {
  static const auto table =
      OptionTable<GpmOptions>()
          .add("thresholds", "energy threshold per projected layer (last one repeats)",
               [](GpmOptions& o) -> auto& { return o.thresholds(); })
          .add("threshold_increment", "added to every threshold per finished task",
               [](GpmOptions& o) -> auto& { return o.threshold_increment(); })
          .add("samples", "training samples per representation matrix",
               [](GpmOptions& o) -> auto& { return o.samples(); })
          .add("target", "layers to project: a layer glob ('fc1|fc2', '**'); auto = every Linear layer",
               [](GpmOptions& o) -> auto& { return o.target(); })
          .add("svd", "SVD backend for the memory update: exact | randomized | auto",
               [](GpmOptions& o) -> auto& { return o.svd(); });
  return table;
}

std::unique_ptr<Method> make_gpm(const MethodConfig& c) { return std::make_unique<Gpm>(gpm_table().parse(c)); }

Gpm::Gpm(GpmOptions options) : options_(std::move(options)) { options_.validate(); }

Gpm::~Gpm() {
  // Leave the layers as attach() found them, unless another method has installed its own since.
  for (auto& [name, layer] : layers_) {
    auto it = bases_.find(name);
    const auto& P = layer->input_projection();
    if (it != bases_.end() && P.defined() && P.data_ptr() == it->second.data_ptr()) layer->set_input_projection({});
  }
}

void Gpm::attach(models::Model& model) {
  layers_ = model->linear_layers(model->resolve_targets(options_.target(), models::TargetRole::kAll, "gpm.target"));
}

const torch::Tensor& Gpm::basis(const std::string& layer) const {
  static const torch::Tensor none;
  auto it = bases_.find(layer);
  return it == bases_.end() ? none : it->second;
}

void Gpm::install_projections() {
  for (auto& [name, layer] : layers_) {
    auto it = bases_.find(name);
    if (it == bases_.end()) {
      layer->set_input_projection({});
      continue;
    }
    const auto& U = it->second;
    // The complement only pays when it is the narrower factor.
    layer->set_input_projection(U, 2 * U.size(1) > U.size(0) ? subspaces::complement_basis(U) : torch::Tensor());
  }
}

void Gpm::on_task_end(TaskContext& ctx) {
  torch::NoGradGuard no_grad;
  const auto& train = ctx.task().train;
  const int64_t n = train.size();
  const int64_t s = std::min(options_.samples(), n);
  // Seeded draw so a resumed run computes the same memory.
  auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(ctx.train ? ctx.train->seed() : 0) * 1000003ull +
                                            static_cast<uint64_t>(ctx.task_index) + 17);
  auto idx = torch::randperm(n, gen, torch::TensorOptions().dtype(torch::kInt64)).slice(0, 0, s);
  auto& model = *ctx.model;
  const bool was_training = model.is_training();
  model.eval();
  model.set_recording(true);
  model.forward(train.gather(idx));
  const subspaces::SvdOptions svd = subspaces::SvdOptions().method(options_.svd());
  nlohmann::json row = nlohmann::json::object();
  std::map<std::string, subspaces::SubspaceRecord> records;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const auto& [name, layer] = layers_[i];
    const auto& in = layer->last_input();
    TORCH_CHECK(in.defined(), "strata::continual::Gpm: layer '", name, "' saw no input in the forward pass");
    const double eps = std::min(
        1.0, options_.thresholds()[std::min(i, options_.thresholds().size() - 1)] +
                 options_.threshold_increment() * ctx.task_index);
    auto R = in.reshape({-1, in.size(-1)}).t();  // [n, S·tokens]
    auto up = subspaces::gpm_update_basis(basis(name), R, eps, svd);
    bases_[name] = up.basis.to(torch::kFloat32).contiguous();
    row[name] = {{"rank", up.rank}, {"added", up.added}, {"captured_energy", up.captured_energy},
                 {"threshold", eps}, {"dim", layer->in_features()}};
    subspaces::SubspaceRecord rec;
    rec.basis = bases_[name];
    rec.singular_values = up.spectrum;
    rec.captured_energy = up.captured_energy;
    rec.threshold = eps;
    rec.side = "input";
    rec.method = "gpm";
    records[name] = rec;
  }
  model.set_recording(false);
  if (was_training) model.train();
  install_projections();
  history_.push_back(row);
  if (ctx.recorder) ctx.recorder->record(ctx.task_index, records);
}

MethodState Gpm::save() const {
  MethodState s;
  for (const auto& [name, b] : bases_) s.tensors["basis/" + name] = b;
  s.meta["history"] = history_;
  return s;
}

void Gpm::load(const MethodState& state, models::Model& model) {
  attach(model);
  bases_.clear();
  for (const auto& [key, t] : state.tensors) {
    TORCH_CHECK(key.rfind("basis/", 0) == 0, "strata::continual::Gpm::load(): unexpected tensor '", key, "'");
    const std::string layer = key.substr(6);
    auto it = std::find_if(layers_.begin(), layers_.end(), [&](const auto& l) { return l.first == layer; });
    TORCH_CHECK(it != layers_.end(), "strata::continual::Gpm::load(): basis for unknown layer '", layer, "'");
    TORCH_CHECK(t.dim() == 2 && t.size(0) == it->second->in_features(), "strata::continual::Gpm::load(): basis of '",
                layer, "' has shape ", t.sizes(), ", expected [", it->second->in_features(), ", k]");
    bases_[layer] = t.to(torch::kFloat32).contiguous();
  }
  history_ = state.meta.value("history", nlohmann::json::array());
  install_projections();
}

nlohmann::json Gpm::report() const { return {{"ranks_per_task", history_}}; }

}  // namespace strata::continual
