#include "continual/gpm.h"

#include "continual/trainer.h"
#include "subspaces/basis.h"
#include "subspaces/store.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cstdio>
#include <torch/version.h>

#include <filesystem>
#include <set>
#include <variant>

namespace strata::continual {

namespace {
// LibTorch's option variants are c10::variant before 2.0 and std::variant from 2.0 on.
#if TORCH_VERSION_MAJOR >= 2
namespace variants = std;
#else
namespace variants = c10;
#endif
}  // namespace

void GpmOptions::validate() const {
  TORCH_CHECK(!thresholds_.empty(), "strata::continual::Gpm: gpm.thresholds is empty");
  for (double t : thresholds_)
    TORCH_CHECK(t > 0 && t <= 1, "strata::continual::Gpm: gpm.thresholds must be in (0, 1], got ", t);
  TORCH_CHECK(threshold_increment_ >= 0 && threshold_increment_ < 1,
              "strata::continual::Gpm: gpm.threshold_increment must be in [0, 1), got ", threshold_increment_);
  TORCH_CHECK(samples_ > 0, "strata::continual::Gpm: gpm.samples must be > 0, got ", samples_);
  TORCH_CHECK(svd_ == "exact" || svd_ == "randomized" || svd_ == "auto",
              "strata::continual::Gpm: gpm.svd must be exact, randomized or auto, got '", svd_, "'");
  TORCH_CHECK(conv_samples_ > 0, "strata::continual::Gpm: gpm.conv_samples must be > 0, got ", conv_samples_);
  TORCH_CHECK(inputs_cache_mb_ >= 0 && inputs_cache_mb_ <= (int64_t{1} << 40),
              "strata::continual::Gpm: gpm.inputs_cache_mb must be in [0, 2^40], got ", inputs_cache_mb_);
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
               [](GpmOptions& o) -> auto& { return o.svd(); })
          .add("conv", "project every Conv2d weight (bases of unfolded input patches)",
               [](GpmOptions& o) -> auto& { return o.conv(); })
          .add("conv_samples", "samples (of gpm.samples) whose patches form a convolution's representation",
               [](GpmOptions& o) -> auto& { return o.conv_samples(); })
          .add("factored_sgd",
               "under plain SGD without weight decay, keep each layer's task update factored (same steps, "
               "fewer FLOPs); false = project every step's input",
               [](GpmOptions& o) -> auto& { return o.factored_sgd(); })
          .add("inputs_ahead",
               "with factored_sgd, a layer fed the step's input itself computes its input products for chunks "
               "of the epoch's coming steps at once (same values, faster); false = one product per step",
               [](GpmOptions& o) -> auto& { return o.inputs_ahead(); })
          .add("inputs_cache_mb",
               "with inputs_ahead, a layer whose input products over all the task's rows fit in this many MiB "
               "computes them once per task, not once per epoch (same values, faster); 0 = once per epoch",
               [](GpmOptions& o) -> auto& { return o.inputs_cache_mb(); })
          .add("freeze_1d",
               "freeze every 1-D parameter (biases, norms) and the ViT's class token and position embedding from "
               "the second task on",
               [](GpmOptions& o) -> auto& { return o.freeze_1d(); });
  return table;
}

namespace {
// Plain SGD without weight decay: the applied update is a multiple of the (projected) gradient.
bool plain_sgd(const TrainOptions* train) {
  return train && train->optimizer() == "sgd" && train->weight_decay() == 0;
}
}  // namespace

std::unique_ptr<Method> make_gpm(const MethodConfig& c) { return std::make_unique<Gpm>(gpm_table().parse(c)); }

Gpm::Gpm(GpmOptions options) : options_(std::move(options)) { options_.validate(); }

Gpm::~Gpm() {
  // Leave the layers as attach() found them, unless another method has installed its own since.
  fold_factored();
  for (auto& [name, layer] : layers_) {
    auto it = bases_.find(name);
    const auto& P = layer->input_projection();
    if (it != bases_.end() && P.defined() && P.data_ptr() == it->second.data_ptr()) layer->set_input_projection({});
  }
  for (auto& p : frozen_) p.requires_grad_(true);
}

void Gpm::attach(models::Model& model) {
  model_ = model;
  layers_ = model->linear_layers(model->resolve_targets(options_.target(), models::TargetRole::kAll, "gpm.target"));
  convs_.clear();
  if (!options_.conv()) return;
  for (auto& [name, conv] : model->conv_layers()) {
    const auto& o = conv->options;
    TORCH_CHECK(o.groups() == 1 && variants::holds_alternative<torch::enumtype::kZeros>(o.padding_mode()) &&
                    variants::holds_alternative<torch::ExpandingArray<2>>(o.padding()),
                "strata::continual::Gpm::attach(): convolution '", name,
                "' has groups, a non-zero padding mode or a named padding, which GPM's patch projection does not "
                "handle; pass --gpm.conv false");
    convs_.emplace_back(name, conv);
  }
}

std::vector<torch::Tensor> Gpm::parameters(TaskContext& ctx) {
  const bool own_heads =
      ctx.stream && ctx.stream->scenario == tasks::Scenario::kTaskIncremental && options_.target() == "auto";
  if (own_heads) release_head();
  if (options_.freeze_1d() && ctx.task_index > 0) {
    // Frozen: every parameter that is not a Linear or Conv2d weight, i.e. the 1-D ones (biases,
    // norms) and, on the ViT, the class token and the position embedding ([1, 1, D], [1, N, D]).
    // None of them is in a representation matrix: the position embedding is added to every token of
    // every old input, so training it moves old tasks' outputs as a bias does.
    std::set<const void*> weights;
    for (auto& [name, layer] : ctx.model->linear_layers()) weights.insert(layer->weight.data_ptr());
    for (auto& [name, conv] : ctx.model->conv_layers()) weights.insert(conv->weight.data_ptr());
    for (auto& item : ctx.model->named_parameters()) {
      auto& p = item.value();
      if (weights.count(p.data_ptr()) || !p.requires_grad()) continue;
      if (own_heads && item.key().rfind("head.", 0) == 0) continue;  // per-task heads stay free
      p.requires_grad_(false);
      frozen_.push_back(p);
      frozen_names_.push_back(item.key());
    }
  }
  fold_factored();  // a previous stage's update
  auto params = Method::parameters(ctx);
  const TrainOptions* train = ctx.train;
  if (!options_.factored_sgd() || !plain_sgd(train)) return params;
  for (auto& [name, layer] : layers_) {
    auto it = bases_.find(name);
    if (it == bases_.end() || !layer->weight.requires_grad() || layer->adapter() ||
        layer->output_projection().defined())
      continue;
    // The narrower of U and its complement, as install_projections() chose it.
    const auto& U_perp = layer->input_projection_complement();
    const bool free = U_perp.defined();
    const auto& F = free ? U_perp : layer->input_projection();
    if (!F.defined() || F.size(1) == 0) continue;  // nothing to project, or nothing left to train
    auto C = torch::zeros({layer->out_features(), F.size(1)}, layer->weight.options()).requires_grad_(true);
    // Judged at the global batch: every data-parallel worker must pick the same form.
    layer->set_deferred_projection(F, C, free, train->batch_size(),
                                   options_.inputs_ahead() ? adapters::AdaptableLinearImpl::kAheadBytes : 0,
                                   options_.inputs_ahead() ? options_.inputs_cache_mb() << 20 : 0);
    params.push_back(C);
  }
  return params;
}

void Gpm::fold_factored() {
  for (auto& [name, layer] : layers_) layer->fold_deferred_projection();
}

std::vector<std::pair<torch::Tensor, torch::Tensor>> Gpm::projected_weights() {
  std::vector<std::pair<torch::Tensor, torch::Tensor>> out;
  for (auto& [name, layer] : layers_)
    if (auto it = bases_.find(name); it != bases_.end()) out.emplace_back(layer->weight, it->second);
  for (auto& [name, conv] : convs_)
    if (auto it = bases_.find(name); it != bases_.end())
      out.emplace_back(conv->weight.view({conv->weight.size(0), -1}), it->second);
  return out;
}

void Gpm::after_backward(StepContext& step) {
  torch::NoGradGuard no_grad;
  before_.clear();
  if (bases_.empty()) return;
  for (auto& [name, conv] : convs_) {
    auto it = bases_.find(name);
    if (it == bases_.end() || !conv->weight.grad().defined()) continue;
    auto G = conv->weight.mutable_grad().view({conv->weight.size(0), -1});
    subspaces::project_out_input_(G, it->second);
  }
  // Adam's per-coordinate scaling and weight decay move W off the projected gradient's span.
  const TrainOptions* train = step.task ? step.task->train : nullptr;
  if (train && !plain_sgd(train))
    for (auto& [W, U] : projected_weights()) before_.push_back(W.detach().clone());
}

void Gpm::after_step(StepContext&) {
  if (before_.empty()) return;
  torch::NoGradGuard no_grad;
  auto weights = projected_weights();
  TORCH_INTERNAL_ASSERT(weights.size() == before_.size(), "Gpm::after_step(): projected weights changed mid-step");
  for (size_t i = 0; i < weights.size(); ++i) {
    auto& [W, U] = weights[i];
    auto dW = W - before_[i];
    W.sub_(dW.mm(U).mm(U.t()));  // W_before + ΔW − (ΔW U) Uᵀ
  }
  before_.clear();
}

const torch::Tensor& Gpm::basis(const std::string& layer) const {
  static const torch::Tensor none;
  auto it = bases_.find(layer);
  return it == bases_.end() ? none : it->second;
}

void Gpm::release_head() {
  // Task-IL trains each task's classes through its own rows of the shared head (the others are
  // masked, so they get no gradient): the official code's separate, unprojected per-task heads.
  // Projecting the head there only slows the new rows down; with every layer projected and a
  // small task the run does not learn the new task at all.
  for (auto it = layers_.begin(); it != layers_.end();) {
    if (it->first != "head") {
      ++it;
      continue;
    }
    it->second->set_input_projection({});
    bases_.erase(it->first);
    it = layers_.erase(it);
  }
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
  fold_factored();
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
  // Representation matrices in forward order: the convolutions (patches), then the Linear layers.
  std::vector<std::pair<std::string, torch::Tensor>> reps;
  for (auto& [name, conv] : convs_) {
    const auto& in = model.conv_input(name);
    TORCH_CHECK(in.defined(), "strata::continual::Gpm: convolution '", name, "' saw no input in the forward pass");
    const auto& o = conv->options;
    auto x = in.narrow(0, 0, std::min(options_.conv_samples(), in.size(0)));
    auto patches = torch::nn::functional::unfold(
        x, torch::nn::functional::UnfoldFuncOptions(o.kernel_size())
               .dilation(o.dilation())
               .padding(variants::get<torch::ExpandingArray<2>>(o.padding()))
               .stride(o.stride()));                                      // [b, C·kh·kw, L]
    reps.emplace_back(name, patches.transpose(0, 1).reshape({patches.size(1), -1}));  // [C·kh·kw, b·L]
  }
  for (auto& [name, layer] : layers_) {
    const auto& in = layer->last_input();
    TORCH_CHECK(in.defined(), "strata::continual::Gpm: layer '", name, "' saw no input in the forward pass");
    reps.emplace_back(name, in.reshape({-1, in.size(-1)}).t());  // [n, S·tokens]
  }
  for (size_t i = 0; i < reps.size(); ++i) {
    const auto& [name, R] = reps[i];
    const double eps = std::min(
        1.0, options_.thresholds()[std::min(i, options_.thresholds().size() - 1)] +
                 options_.threshold_increment() * ctx.task_index);
    auto up = subspaces::gpm_update_basis(basis(name), R, eps, svd);
    bases_[name] = up.basis.to(torch::kFloat32).contiguous();
    row[name] = {{"rank", up.rank}, {"added", up.added}, {"captured_energy", up.captured_energy},
                 {"threshold", eps}, {"dim", R.size(0)}, {"svd", up.svd_method}};
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
    int64_t dim = -1;
    for (auto& [name, l] : layers_)
      if (name == layer) dim = l->in_features();
    for (auto& [name, conv] : convs_)
      if (name == layer) dim = conv->weight[0].numel();
    TORCH_CHECK(dim >= 0, "strata::continual::Gpm::load(): basis for unknown layer '", layer, "'");
    TORCH_CHECK(t.dim() == 2 && t.size(0) == dim, "strata::continual::Gpm::load(): basis of '", layer,
                "' has shape ", t.sizes(), ", expected [", dim, ", k]");
    bases_[layer] = t.to(torch::kFloat32).contiguous();
  }
  history_ = state.meta.value("history", nlohmann::json::array());
  install_projections();
}

nlohmann::json Gpm::report() const { return {{"ranks_per_task", history_}}; }

}  // namespace strata::continual
