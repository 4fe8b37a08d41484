#include "continual/osft.h"

#include "adapters/inject.h"

#include "continual/trainer.h"

#include "subspaces/basis.h"
#include "subspaces/store.h"
#include "subspaces/svd.h"

#include <algorithm>
#include <cmath>
#include <limits>
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

std::vector<MethodOption> osft_options() {
  return {
      {"target", "auto", "decomposed Linear layers: a layer glob; auto = vit every block layer, mlp fc*, cnn fc1"},
      {"head", "head", "classifier layers (a layer glob): never decomposed, always trained"},
      {"rank_rule", "importance", "frozen rank per layer: importance (paper R1), progressive (k=t/T*R), fixed"},
      {"mrr", "0.1", "importance rule: minimum retained fraction"},
      {"trr", "0.8", "importance rule: target retained fraction (of an average-importance layer)"},
      {"fraction", "0.5", "fixed rule: frozen fraction of min(m,n) from task 2 on"},
      {"importance_data", "previous", "data for the importance scores: previous (paper) or current task"},
      {"importance_samples", "128", "examples used for the importance scores"},
      {"train_other", "false", "train non-target, non-head parameters after task 1 (T5 script) instead of freezing"},
  };
}

double osft_layer_importance(const torch::Tensor& x, const torch::Tensor& W) {
  torch::NoGradGuard no_grad;
  TORCH_CHECK(W.dim() == 2 && x.size(-1) == W.size(1), "strata::continual::osft_layer_importance(): input ",
              x.sizes(), " does not match weight ", W.sizes());
  auto X = x.reshape({-1, W.size(1)}).to(torch::kFloat32);
  auto Y = torch::mm(X, W.to(torch::kFloat32).t());
  const int64_t d = std::min(W.size(0), W.size(1));
  auto cos = torch::nn::functional::cosine_similarity(
      X.slice(1, 0, d), Y.slice(1, 0, d), torch::nn::functional::CosineSimilarityFuncOptions().dim(1).eps(1e-8));
  return cos.mean().item<double>();
}

std::vector<int64_t> osft_importance_ranks(const std::vector<double>& importance, const std::vector<int64_t>& full_rank,
                                           double mrr, double trr) {
  TORCH_CHECK(importance.size() == full_rank.size(), "strata::continual::osft_importance_ranks(): ",
              importance.size(), " scores for ", full_rank.size(), " layers");
  double mean = 0;
  for (double v : importance) mean += v;
  mean /= std::max<size_t>(1, importance.size());
  std::vector<int64_t> k(importance.size());
  for (size_t l = 0; l < importance.size(); ++l) {
    // Without a usable positive mean the ratio is meaningless: treat every layer as average.
    const double in = mean > 1e-8 ? importance[l] / mean : 1.0;
    const double r = mrr + in * (trr - mrr);
    const int64_t R = full_rank[l];
    const int64_t lo = std::min<int64_t>(1, R - 1), hi = R - 1;
    k[l] = std::clamp<int64_t>(static_cast<int64_t>(std::floor(r * R)), lo, hi);
  }
  return k;
}

OSFTMethod::OSFTMethod(const MethodConfig& config)
    : target_(config.get_string("target")),
      head_(config.get_string("head")),
      rule_(config.get_string("rank_rule")),
      importance_data_(config.get_string("importance_data")),
      mrr_(config.get_double("mrr")),
      trr_(config.get_double("trr")),
      fraction_(config.get_double("fraction")),
      importance_samples_(config.get_int("importance_samples")),
      train_other_(config.get_bool("train_other")) {
  TORCH_CHECK(rule_ == "importance" || rule_ == "progressive" || rule_ == "fixed",
              "strata: option osft.rank_rule: '", rule_, "' is not one of importance, progressive, fixed");
  TORCH_CHECK(importance_data_ == "previous" || importance_data_ == "current",
              "strata: option osft.importance_data: '", importance_data_, "' is not previous or current");
  TORCH_CHECK(mrr_ >= 0 && mrr_ <= 1, "strata: option osft.mrr must be in [0,1], got ", mrr_);
  TORCH_CHECK(trr_ >= 0 && trr_ <= 1, "strata: option osft.trr must be in [0,1], got ", trr_);
  TORCH_CHECK(fraction_ >= 0 && fraction_ <= 1, "strata: option osft.fraction must be in [0,1], got ", fraction_);
  TORCH_CHECK(importance_samples_ > 0, "strata: option osft.importance_samples must be > 0, got ",
              importance_samples_);
  TORCH_CHECK(!target_.empty(), "strata: option osft.target is empty (use 'auto' or a layer glob)");
}

std::string OSFTMethod::target_pattern(const models::Model& model) const {
  return model->resolve_targets(target_, models::TargetRole::kBlocks, "osft.target");
}

std::vector<double> OSFTMethod::importances(TaskContext& ctx, const std::vector<Layer>& layers) const {
  const int64_t src = importance_data_ == "previous" ? ctx.task_index - 1 : ctx.task_index;
  const auto& split = ctx.stream->tasks.at(src).train;
  TORCH_CHECK(split.size() > 0, "strata::continual::OSFTMethod: task ", src, " has no training data for the importance scores");
  auto& model = *ctx.model;
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  model.set_recording(true);
  model.forward(split.slice(0, std::min(importance_samples_, split.size())));
  std::vector<double> out;
  for (const auto& l : layers) out.push_back(osft_layer_importance(l.layer->last_input(), l.layer->weight));
  model.set_recording(false);
  if (was_training) model.train();
  return out;
}

void OSFTMethod::set_trainable(models::Model& model, int64_t task) const {
  const bool other = train_other_ || task == 0;
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
  layers_.clear();
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

  // Frozen ranks. Task 0 is plain full fine-tuning under every rule.
  std::vector<int64_t> k(layers_.size(), 0);
  if (t > 0) {
    if (rule_ == "importance") {
      auto imp = importances(ctx, layers_);
      std::vector<int64_t> R;
      for (size_t i = 0; i < layers_.size(); ++i) {
        layers_[i].importance = imp[i];
        R.push_back(layers_[i].rank);
      }
      k = osft_importance_ranks(imp, R, mrr_, trr_);
    } else {
      for (size_t i = 0; i < layers_.size(); ++i) {
        const int64_t R = layers_[i].rank;
        const double f = rule_ == "progressive" ? static_cast<double>(t) / T : fraction_;
        k[i] = std::clamp<int64_t>(static_cast<int64_t>(std::floor(f * R + 1e-9)), 0, R);
      }
    }
  }

  nlohmann::json entry;
  entry["task"] = t;
  entry["rule"] = rule_;
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

void OSFTMethod::after_backward(StepContext& sc) {
  // With stateless plain SGD the step is linear in G and after_step re-projects W, so projecting
  // G first gives the same weights (P is linear and idempotent); skip the O(mnk) work. Stateful
  // optimizers (momentum, Adam moments) need the projected gradient in their state.
  const TrainOptions* o = sc.task ? sc.task->train : nullptr;
  if (o && o->optimizer() == "sgd" && o->momentum() == 0) return;
  torch::NoGradGuard no_grad;
  for (auto& l : layers_) {
    if (l.k == 0) continue;
    auto g = l.layer->weight.grad();
    if (!g.defined()) continue;
    g.copy_(subspaces::project_out_both(g, l.U, l.V));
  }
}

void OSFTMethod::after_step(StepContext&) {
  torch::NoGradGuard no_grad;
  for (auto& l : layers_) {
    if (l.k == 0) continue;
    auto& W = l.layer->weight;
    // W_start + P(W − W_start) = P(W) + U_h diag(σ_h) V_hᵀ, since W_start − P(W_start) is exactly
    // the frozen top-k part of W_start's SVD. With A = U_hᵀW, B = W V_h, C = A V_h:
    //   P(W) + U_h σ_h V_hᵀ = W − U_h A − (B − U_h (C + diag σ_h)) V_hᵀ   (four O(mnk) products).
    const auto A = torch::mm(l.U.t(), W);
    auto B = torch::mm(W, l.V);
    auto C = torch::mm(A, l.V);
    C.diagonal().add_(l.S);
    B.sub_(torch::mm(l.U, C));
    W.sub_(torch::mm(l.U, A)).sub_(torch::mm(B, l.V.t()));
  }
}

void OSFTMethod::on_task_end(TaskContext&) {}

MethodState OSFTMethod::save() const {
  MethodState s;
  s.meta["task"] = task_;
  s.meta["rank_rule"] = rule_;
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
  history_ = state.meta.value("history", nlohmann::json::array());
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
    }
    layers_.push_back(std::move(l));
  }
  if (task_ >= 0) set_trainable(model, task_);
}

nlohmann::json OSFTMethod::report() const {
  return {{"rank_rule", rule_}, {"tasks", history_}};
}

}  // namespace strata::continual
