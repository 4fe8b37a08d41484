#include "continual/osft.h"

#include "adapters/inject.h"

#include "continual/trainer.h"

#include "subspaces/basis.h"
#include "subspaces/store.h"
#include "subspaces/svd.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <regex>

namespace strata::continual {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

nlohmann::json number_or_null(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }
double number_or_nan(const nlohmann::json& j) { return j.is_number() ? j.get<double>() : kNaN; }

bool full_match(const std::string& pattern, const std::string& name) {
  return !pattern.empty() && adapters::glob_match(pattern, name);
}

}  // namespace

const OptionTable<OSFTOptions>& osft_table() {
  using O = OSFTOptions;
  static const auto table =
      OptionTable<O>()
          .add("target", "decomposed Linear layers: a layer glob; auto = vit every block layer, mlp fc*, cnn fc1",
               [](O& o) -> auto& { return o.target(); })
          .add("head", "classifier layers (a layer glob): never decomposed, always trained",
               [](O& o) -> auto& { return o.head(); })
          .add("rank_rule", "frozen rank per layer: progressive (k=t/T*R), importance (paper R1), fixed",
               [](O& o) -> auto& { return o.rank_rule(); })
          .add("mrr", "importance rule: minimum retained fraction", [](O& o) -> auto& { return o.mrr(); })
          .add("trr", "importance rule: target retained fraction (of an average-importance layer)",
               [](O& o) -> auto& { return o.trr(); })
          .add("fraction", "fixed rule: frozen fraction of min(m,n) from task 2 on",
               [](O& o) -> auto& { return o.fraction(); })
          .add("importance_data", "data for the importance scores: previous (paper) or current task",
               [](O& o) -> auto& { return o.importance_data(); })
          .add("importance_samples", "examples used for the importance scores (drawn at random, seeded by the run seed)",
               [](O& o) -> auto& { return o.importance_samples(); })
          .add("train_other", "train non-target, non-head parameters after task 1 (T5 script) instead of freezing",
               [](O& o) -> auto& { return o.train_other(); })
          .add("protect_start",
               "protect the starting weights from task 1 on: auto (when the run starts from --init or --pretrain) | "
               "always | never",
               [](O& o) -> auto& { return o.protect_start(); });
  return table;
}

void OSFTOptions::validate() const {
  TORCH_CHECK(rank_rule_ == "importance" || rank_rule_ == "progressive" || rank_rule_ == "fixed",
              "strata: option osft.rank_rule: '", rank_rule_, "' is not one of importance, progressive, fixed");
  TORCH_CHECK(importance_data_ == "previous" || importance_data_ == "current",
              "strata: option osft.importance_data: '", importance_data_, "' is not previous or current");
  TORCH_CHECK(mrr_ >= 0 && mrr_ <= 1, "strata: option osft.mrr must be in [0,1], got ", mrr_);
  TORCH_CHECK(trr_ >= 0 && trr_ <= 1, "strata: option osft.trr must be in [0,1], got ", trr_);
  TORCH_CHECK(fraction_ >= 0 && fraction_ <= 1, "strata: option osft.fraction must be in [0,1], got ", fraction_);
  TORCH_CHECK(importance_samples_ > 0, "strata: option osft.importance_samples must be > 0, got ", importance_samples_);
  TORCH_CHECK(!target_.empty(), "strata: option osft.target is empty (use 'auto' or a layer glob)");
  TORCH_CHECK(protect_start_ == "auto" || protect_start_ == "always" || protect_start_ == "never",
              "strata: option osft.protect_start: '", protect_start_, "' is not one of auto, always, never");
}

double osft_layer_importance(const torch::Tensor& x, const torch::Tensor& W) {
  torch::NoGradGuard no_grad;
  TORCH_CHECK(W.dim() == 2 && x.size(-1) == W.size(1), "strata::continual::osft_layer_importance(): input ",
              x.sizes(), " does not match weight ", W.sizes());
  auto X = x.reshape({-1, W.size(1)}).to(torch::kFloat64);
  auto Wd = W.to(torch::kFloat64);
  auto Y = torch::mm(X, Wd.t());
  if (W.size(0) == W.size(1)) {
    auto cos = torch::nn::functional::cosine_similarity(
        X, Y, torch::nn::functional::CosineSimilarityFuncOptions().dim(1).eps(1e-8));
    return cos.mean().item<double>();
  }
  // Uncentred linear CKA over the sample rows: ‖XᵀY‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F). Feature-space form
  // ([n, m], [n, n], [m, m]) rather than the N×N Gram matrices, N = samples × tokens.
  const double xx = torch::mm(X.t(), X).norm().item<double>();
  const double yy = torch::mm(Y.t(), Y).norm().item<double>();
  if (!(xx > 0) || !(yy > 0)) return 0.0;
  return torch::mm(X.t(), Y).square().sum().item<double>() / (xx * yy);
}

std::vector<int64_t> osft_importance_ranks(const std::vector<double>& importance, const std::vector<int64_t>& full_rank,
                                           double mrr, double trr, const std::vector<int64_t>& group) {
  TORCH_CHECK(importance.size() == full_rank.size(), "strata::continual::osft_importance_ranks(): ",
              importance.size(), " scores for ", full_rank.size(), " layers");
  TORCH_CHECK(group.empty() || group.size() == importance.size(), "strata::continual::osft_importance_ranks(): ",
              group.size(), " group ids for ", importance.size(), " layers");
  auto group_of = [&](size_t l) { return group.empty() ? int64_t{0} : group[l]; };
  std::map<int64_t, std::pair<double, int64_t>> sums;  // group -> (sum, count)
  for (size_t l = 0; l < importance.size(); ++l) {
    auto& g = sums[group_of(l)];
    g.first += importance[l];
    g.second += 1;
  }
  std::vector<int64_t> k(importance.size());
  for (size_t l = 0; l < importance.size(); ++l) {
    const auto& g = sums[group_of(l)];
    const double mean = g.first / static_cast<double>(g.second);
    // Without a usable positive mean the ratio is meaningless: treat every layer as average.
    const double in = mean > 1e-8 ? importance[l] / mean : 1.0;
    const double r = mrr + in * (trr - mrr);
    const int64_t R = full_rank[l];
    const int64_t lo = std::min<int64_t>(1, R - 1), hi = R - 1;
    k[l] = std::clamp<int64_t>(static_cast<int64_t>(std::floor(r * R)), lo, hi);
  }
  return k;
}

OSFTMethod::OSFTMethod(OSFTOptions options)
    : target_(options.target()),
      head_(options.head()),
      rule_(options.rank_rule()),
      importance_data_(options.importance_data()),
      protect_start_(options.protect_start()),
      mrr_(options.mrr()),
      trr_(options.trr()),
      fraction_(options.fraction()),
      importance_samples_(options.importance_samples()),
      train_other_(options.train_other()) {
  options.validate();
}

std::string OSFTMethod::target_pattern(const models::Model& model) const {
  return model->resolve_targets(target_, models::TargetRole::kBlocks, "osft.target");
}

std::vector<double> OSFTMethod::importances(TaskContext& ctx, const std::vector<Layer>& layers) const {
  // Task 0 of a protected start has no previous task in the stream: the new task's data then shows how
  // the pre-trained layers treat the inputs they will see.
  const int64_t src = importance_data_ == "previous" && ctx.task_index > 0 ? ctx.task_index - 1 : ctx.task_index;
  const auto& split = ctx.stream->tasks.at(src).train;
  TORCH_CHECK(split.size() > 0, "strata::continual::OSFTMethod: task ", src, " has no training data for the importance scores");
  // A random subset (a split's order may follow the classes), the same for a resumed run: the
  // generator depends only on (run seed, task).
  const int64_t seed = ctx.train ? ctx.train->seed() : 0;
  uint64_t h = static_cast<uint64_t>(seed) * 0x9E3779B97F4A7C15ull ^ (static_cast<uint64_t>(ctx.task_index) + 1) * 0xD6E8FEB86659FD93ull;
  auto gen = at::detail::createCPUGenerator(h);
  const torch::Tensor rows =
      torch::randperm(split.size(), gen, torch::TensorOptions().dtype(torch::kInt64))
          .slice(0, 0, std::min(importance_samples_, split.size()));
  auto& model = *ctx.model;
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  model.set_recording(true);
  model.forward(split.gather(rows));
  std::vector<double> out;
  for (const auto& l : layers) out.push_back(osft_layer_importance(l.layer->last_input(), l.layer->weight));
  model.set_recording(false);
  if (was_training) model.train();
  return out;
}

bool OSFTMethod::protects_start(const TaskContext& ctx) const {
  return protect_start_ == "always" || (protect_start_ == "auto" && ctx.pretrained);
}

void OSFTMethod::set_trainable(models::Model& model, int64_t task) const {
  // Non-target parameters train only while nothing is protected yet (task 0 from a fresh model).
  const bool other = train_other_ || (task == 0 && !protected_start_);
  for (auto& p : model->parameters()) p.requires_grad_(other);
  for (auto& [name, layer] : model->linear_layers()) {
    if (full_match(head_, name)) {
      layer->weight.requires_grad_(true);
      if (layer->has_bias()) layer->bias.requires_grad_(true);
    }
  }
  for (const auto& l : layers_) l.layer->weight.requires_grad_(true);
}

void OSFTMethod::on_task_start(TaskContext& ctx) {
  TORCH_CHECK(ctx.model && ctx.stream, "strata::continual::OSFTMethod::on_task_start(): no model or stream");
  torch::NoGradGuard no_grad;
  const int64_t t = ctx.task_index, T = ctx.stream->size();
  task_ = t;
  protected_start_ = protects_start(ctx);
  clear_projections();
  layers_.clear();
  const TrainOptions* o = ctx.train;
  factored_ = o && o->optimizer() == "sgd" && o->momentum() == 0 && o->weight_decay() == 0;
  steps_ = 0;
  const std::string pattern = target_pattern(ctx.model);
  for (auto& [name, layer] : ctx.model->linear_layers(pattern)) {
    if (full_match(head_, name)) continue;
    Layer l;
    l.name = name;
    l.layer = layer;
    l.rank = std::min(layer->out_features(), layer->in_features());
    l.importance = kNaN;
    layers_.push_back(std::move(l));
  }
  TORCH_CHECK(!layers_.empty(), "strata::continual::OSFTMethod: target '", pattern,
              "' matches no Linear layer outside the head '", head_, "'");

  // Frozen ranks. From a fresh model, task 0 is plain full fine-tuning under every rule; from
  // pre-trained weights (protected start) the starting weights count as a task before task 0.
  std::vector<int64_t> k(layers_.size(), 0);
  if (t > 0 || protected_start_) {
    if (rule_ == "importance") {
      auto imp = importances(ctx, layers_);
      std::vector<int64_t> R, group;
      for (size_t i = 0; i < layers_.size(); ++i) {
        layers_[i].importance = imp[i];
        R.push_back(layers_[i].rank);
        // Square (cos) and non-square (CKA) scores have different scales: each kind is normalised
        // by its own mean.
        group.push_back(layers_[i].layer->out_features() == layers_[i].layer->in_features() ? 0 : 1);
      }
      k = osft_importance_ranks(imp, R, mrr_, trr_, group);
    } else {
      for (size_t i = 0; i < layers_.size(); ++i) {
        const int64_t R = layers_[i].rank;
        const double f = rule_ != "progressive" ? fraction_
                         : protected_start_      ? static_cast<double>(t + 1) / (T + 1)
                                                 : static_cast<double>(t) / T;
        k[i] = std::clamp<int64_t>(static_cast<int64_t>(std::floor(f * R + 1e-9)), 0, R);
      }
    }
  }

  nlohmann::json entry;
  entry["task"] = t;
  entry["rule"] = rule_;
  entry["protected_start"] = protected_start_;
  int64_t frozen = 0, total = 0;
  for (size_t i = 0; i < layers_.size(); ++i) {
    auto& l = layers_[i];
    l.k = k[i];
    const auto& W = l.layer->weight;
    if (l.k > 0) {
      auto r = subspaces::svd(W.detach(), subspaces::SvdOptions().method("exact"));
      l.U = r.U.slice(1, 0, l.k).to(W.dtype()).contiguous();
      l.S = r.S.slice(0, 0, l.k).to(W.dtype()).contiguous();
      l.V = r.Vh.slice(0, 0, l.k).t().to(W.dtype()).contiguous();
      const auto e = r.S.to(torch::kFloat64).square();
      const double tot = e.sum().item<double>();
      l.energy = tot > 0 ? e.slice(0, 0, l.k).sum().item<double>() / tot : 0.0;
      prepare(l);
    }
    frozen += l.k;
    total += l.rank;
    entry["layers"][l.name] = {{"k", l.k},
                               {"rank", l.rank},
                               {"frozen_fraction", static_cast<double>(l.k) / l.rank},
                               {"frozen_energy", l.energy},
                               {"importance", number_or_null(l.importance)}};
  }
  entry["frozen_rank_fraction"] = total > 0 ? static_cast<double>(frozen) / total : 0.0;
  history_.push_back(entry);
  set_trainable(ctx.model, t);
  if (factored_)
    for (auto& l : layers_) {
      if (l.k == 0) continue;
      l.layer->set_output_projection(l.U, l.U_perp);
      l.layer->set_input_projection(l.V, l.V_perp);
    }
  write_store(ctx);
}

void OSFTMethod::write_store(const TaskContext& ctx) const {
  if (!ctx.recorder) return;
  std::map<std::string, subspaces::SubspaceRecord> records;
  for (const auto& l : layers_) {
    if (l.k == 0) continue;
    subspaces::SubspaceRecord r;
    r.basis = l.V;
    r.singular_values = l.S;
    r.side = "input";
    r.method = "osft";
    r.threshold = static_cast<double>(l.k) / l.rank;
    r.captured_energy = l.energy;
    r.extra["U_h"] = l.U;
    records[l.name] = std::move(r);
  }
  ctx.recorder->record(task_, records);
}

OSFTMethod::~OSFTMethod() { clear_projections(); }

void OSFTMethod::clear_projections() {
  for (auto& l : layers_) {
    if (!l.layer || !factored_) continue;
    l.layer->set_input_projection({});
    l.layer->set_output_projection({});
  }
}

void OSFTMethod::after_backward(StepContext& sc) {
  if (factored_) return;  // the layers' backward already wrote P(G)
  // With stateless plain SGD the step is linear in G and after_step re-projects W, so projecting
  // G first gives the same weights (P is linear and idempotent); skip the O(mnk) work. Stateful
  // optimizers (momentum, Adam moments) need the projected gradient in their state.
  const TrainOptions* o = sc.task ? sc.task->train : nullptr;
  if (o && o->optimizer() == "sgd" && o->momentum() == 0) return;
  torch::NoGradGuard no_grad;
  for (auto& l : layers_) {
    if (l.k == 0) continue;
    auto g = l.layer->weight.mutable_grad();
    if (!g.defined()) continue;
    subspaces::project_out_both_(g, l.U, l.V, l.U_perp, l.V_perp);
  }
}

void OSFTMethod::after_step(StepContext&) {
  torch::NoGradGuard no_grad;
  // Plain SGD adds P(G), which keeps the constraint up to round-off: clear that now and then.
  if (factored_ && ++steps_ % 256 != 0) return;
  for (auto& l : layers_) {
    if (l.k == 0) continue;
    auto& W = l.layer->weight;
    // W_start + P(W − W_start) = P(W) + U_h diag(σ_h) V_hᵀ, since W_start − P(W_start) is exactly
    // the frozen top-k part of W_start's SVD.
    subspaces::project_out_both_(W, l.U, l.V, l.U_perp, l.V_perp).add_(l.frozen);
  }
}

void OSFTMethod::prepare(Layer& l) {
  const int64_t m = l.U.size(0), n = l.V.size(0);
  l.U_perp = 2 * l.k > m ? subspaces::complement_basis(l.U) : torch::Tensor();
  l.V_perp = 2 * l.k > n ? subspaces::complement_basis(l.V) : torch::Tensor();
  l.frozen = (l.U * l.S.unsqueeze(0)).mm(l.V.t()).contiguous();
}

void OSFTMethod::on_task_end(TaskContext&) {}

MethodState OSFTMethod::save() const {
  MethodState s;
  s.meta["task"] = task_;
  s.meta["rank_rule"] = rule_;
  s.meta["protected_start"] = protected_start_;
  s.meta["history"] = history_;
  nlohmann::json ls = nlohmann::json::array();
  for (const auto& l : layers_) {
    ls.push_back({{"name", l.name},
                  {"k", l.k},
                  {"rank", l.rank},
                  {"importance", number_or_null(l.importance)},
                  {"energy", l.energy}});
    if (l.k == 0) continue;
    s.tensors["layers/" + l.name + "/U"] = l.U;
    s.tensors["layers/" + l.name + "/S"] = l.S;
    s.tensors["layers/" + l.name + "/V"] = l.V;
  }
  s.meta["layers"] = ls;
  return s;
}

void OSFTMethod::load(const MethodState& state, models::Model& model) {
  if (!state.meta.contains("task")) return;  // saved before any task
  TORCH_CHECK(state.meta.value("rank_rule", rule_) == rule_, "strata::continual::OSFTMethod::load(): state saved with rank_rule '",
              state.meta.value("rank_rule", std::string()), "', this method uses '", rule_, "'");
  task_ = state.meta["task"].get<int64_t>();
  protected_start_ = state.meta.value("protected_start", false);
  history_ = state.meta.value("history", nlohmann::json::array());
  clear_projections();
  factored_ = false;  // a loaded method re-projects every step until the next task start
  layers_.clear();
  auto all = model->linear_layers();
  for (const auto& j : state.meta.value("layers", nlohmann::json::array())) {
    Layer l;
    l.name = j["name"].get<std::string>();
    for (auto& [n, layer] : all)
      if (n == l.name) l.layer = layer;
    TORCH_CHECK(l.layer, "strata::continual::OSFTMethod::load(): the model has no Linear layer '", l.name, "'");
    l.k = j["k"].get<int64_t>();
    l.rank = j["rank"].get<int64_t>();
    l.importance = number_or_nan(j["importance"]);
    l.energy = j.value("energy", 0.0);
    if (l.k > 0) {
      auto get = [&](const char* what) {
        auto it = state.tensors.find("layers/" + l.name + "/" + what);
        TORCH_CHECK(it != state.tensors.end(), "strata::continual::OSFTMethod::load(): missing tensor layers/", l.name,
                    "/", what);
        return it->second.to(l.layer->weight.dtype()).contiguous();
      };
      l.U = get("U");
      l.S = get("S");
      l.V = get("V");
      TORCH_CHECK(l.U.size(0) == l.layer->out_features() && l.V.size(0) == l.layer->in_features() &&
                      l.U.size(1) == l.k && l.V.size(1) == l.k && l.S.numel() == l.k,
                  "strata::continual::OSFTMethod::load(): bases of '", l.name, "' do not match the layer");
      prepare(l);
    }
    layers_.push_back(std::move(l));
  }
  if (task_ >= 0) set_trainable(model, task_);
}

nlohmann::json OSFTMethod::report() const {
  return {{"rank_rule", rule_}, {"tasks", history_}};
}

}  // namespace strata::continual
