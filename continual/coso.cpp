#include "continual/coso.h"

#include "continual/trainer.h"
#include "subspaces/basis.h"
#include "subspaces/store.h"
#include "subspaces/svd.h"

#include <cmath>
#include <regex>

namespace strata::continual {

namespace {
bool fusable_adam(std::initializer_list<const torch::Tensor*> ts) {
  const torch::Tensor& first = **ts.begin();
  for (const torch::Tensor* t : ts)
    if (!t->defined() || !t->device().is_cpu() || t->scalar_type() != torch::kFloat32 || !t->is_contiguous() ||
        t->numel() != first.numel())
      return false;
  return true;
}
// Written through raw pointers: count the writes as ATen's in-place operators do, so that a graph
// still holding one of them reports the change.
void bump_versions(std::initializer_list<torch::Tensor*> ts) {
  for (torch::Tensor* t : ts) t->unsafeGetTensorImpl()->bump_version();
}
}  // namespace

torch::Tensor adam_direction_(torch::Tensor& m, torch::Tensor& v, const torch::Tensor& R, double beta1, double beta2,
                              double eps) {
  TORCH_CHECK(m.sizes() == R.sizes() && v.sizes() == R.sizes(),
              "strata::continual::adam_direction_(): moments ", m.sizes(), ", ", v.sizes(), " and coordinates ",
              R.sizes(), " differ in shape");
  if (!fusable_adam({&m, &v, &R})) {
    m.lerp_(R, 1 - beta1);
    v.mul_(beta2).addcmul_(R, R, 1 - beta2);
    return m / v.sqrt().add_(eps);
  }
  auto N = torch::empty_like(R);
  float *pm = m.data_ptr<float>(), *pv = v.data_ptr<float>(), *pn = N.data_ptr<float>();
  const float* pr = R.data_ptr<float>();
  const float w1 = static_cast<float>(1 - beta1), b2 = static_cast<float>(beta2), w2 = static_cast<float>(1 - beta2),
              e = static_cast<float>(eps);
  for (int64_t i = 0, n = R.numel(); i < n; ++i) {
    const float r = pr[i];
    const float mi = pm[i] + w1 * (r - pm[i]);
    const float vi = b2 * pv[i] + w2 * (r * r);
    pm[i] = mi;
    pv[i] = vi;
    pn[i] = mi / (std::sqrt(vi) + e);
  }
  bump_versions({&m, &v});
  return N;
}

void adam_step_(torch::Tensor& param, torch::Tensor& m, torch::Tensor& v, const torch::Tensor& g,
                const torch::Tensor& row_mask, double beta1, double beta2, double eps, double step_size) {
  TORCH_CHECK(m.sizes() == param.sizes() && v.sizes() == param.sizes() && g.sizes() == param.sizes(),
              "strata::continual::adam_step_(): parameter ", param.sizes(), ", moments ", m.sizes(), ", ",
              v.sizes(), " and gradient ", g.sizes(), " differ in shape");
  const bool mask_ok = !row_mask.defined() || (param.dim() > 0 && row_mask.numel() == param.size(0) &&
                                               row_mask.is_contiguous() && row_mask.device().is_cpu() &&
                                               row_mask.scalar_type() == torch::kFloat32);
  torch::NoGradGuard no_grad;
  if (!mask_ok || !fusable_adam({&param, &m, &v, &g})) {
    const torch::Tensor gm = row_mask.defined() ? g * row_mask : g;
    m.mul_(beta1).add_(gm, 1 - beta1);
    v.mul_(beta2).addcmul_(gm, gm, 1 - beta2);
    param.addcdiv_(m, v.sqrt().add_(eps), -step_size);
    return;
  }
  float *pp = param.data_ptr<float>(), *pm = m.data_ptr<float>(), *pv = v.data_ptr<float>();
  const float* pg = g.data_ptr<float>();
  const float* mask = row_mask.defined() ? row_mask.data_ptr<float>() : nullptr;
  const float b1 = static_cast<float>(beta1), w1 = static_cast<float>(1 - beta1), b2 = static_cast<float>(beta2),
              w2 = static_cast<float>(1 - beta2), e = static_cast<float>(eps), s = static_cast<float>(step_size);
  const int64_t rows = param.dim() > 0 ? param.size(0) : 1, inner = rows > 0 ? param.numel() / rows : 0;
  for (int64_t row = 0; row < rows; ++row) {
    const float keep = mask ? mask[row] : 1.0f;
    for (int64_t j = row * inner, end = j + inner; j < end; ++j) {
      const float gi = pg[j] * keep;
      const float mi = b1 * pm[j] + w1 * gi;
      const float vi = b2 * pv[j] + w2 * (gi * gi);
      pm[j] = mi;
      pv[j] = vi;
      pp[j] -= s * (mi / (std::sqrt(vi) + e));
    }
  }
  bump_versions({&param, &m, &v});
}

const OptionTable<CoSOOptions>& coso_table() {
  using O = CoSOOptions;
  static const auto table =
      OptionTable<O>()
          .add("target", "projected Linear layers: a layer glob; auto = vit attention outputs, mlp fc*, cnn fc1",
               [](O& o) -> auto& { return o.target(); })
          .add("r1", "projector rank r1 (Adam runs in an r1 x n space per layer)", [](O& o) -> auto& { return o.r1(); })
          .add("r2", "Frequent-Directions sketch rank r2", [](O& o) -> auto& { return o.r2(); })
          .add("gap", "projector refresh (and sketch update) every gap steps", [](O& o) -> auto& { return o.gap(); })
          .add("threshold", "energy threshold on the sketch spectrum for the historical basis",
               [](O& o) -> auto& { return o.threshold(); })
          .add("decay", "sketch decay before each merge (db_decay)", [](O& o) -> auto& { return o.decay(); })
          .add("lr", "learning rate of the projected layers", [](O& o) -> auto& { return o.lr(); })
          .add("other_lr", "learning rate of the other trained parameters (0 = lr)",
               [](O& o) -> auto& { return o.other_lr(); })
          .add("beta1", "Adam beta1", [](O& o) -> auto& { return o.beta1(); })
          .add("beta2", "Adam beta2", [](O& o) -> auto& { return o.beta2(); })
          .add("eps", "Adam epsilon", [](O& o) -> auto& { return o.eps(); })
          .add("schedule", "per-task lr schedule: cosine (CoSO code) | constant",
               [](O& o) -> auto& { return o.schedule(); })
          .add("temperature", "training logits are divided by this (CoSO code: 3)",
               [](O& o) -> auto& { return o.temperature(); })
          .add("others",
               "non-projected parameters trained with Adam: head (the current task's head rows, CoSO code) | all | "
               "none (others frozen)",
               [](O& o) -> auto& { return o.others(); })
          .add("cil_loss",
               "class-IL training loss: task (cross-entropy over the current task's classes, CoSO code) | seen "
               "(over every class seen so far)",
               [](O& o) -> auto& { return o.cil_loss(); })
          .add("svd", "SVD backend for the exact projector refresh and the sketch merges (subspaces::svd method)",
               [](O& o) -> auto& { return o.svd(); })
          .add("refresh", "projector refresh: power (warm-started subspace iteration, r1 vectors) | exact (thin SVD)",
               [](O& o) -> auto& { return o.refresh(); })
          .add("power_iters", "subspace iterations per power refresh", [](O& o) -> auto& { return o.power_iters(); })
          .add("gradient",
               "target layers' weight gradient: auto (factored δᵀX where cheaper for the layer and batch, power "
               "refresh, one process) | dense",
               [](O& o) -> auto& { return o.gradient(); });
  return table;
}

CoSOOptions CoSOOptions::from_config(const MethodConfig& c) {
  CoSOOptions o = coso_table().parse(c);
  o.validate();
  return o;
}

void CoSOOptions::validate() const {
  const char* who = "strata::continual::CoSOOptions::validate():";
  TORCH_CHECK(r1_ >= 0, who, " coso.r1 must be >= 0, got ", r1_);
  TORCH_CHECK(r2_ > 0, who, " coso.r2 must be > 0, got ", r2_);
  TORCH_CHECK(gap_ > 0, who, " coso.gap must be > 0, got ", gap_);
  TORCH_CHECK(threshold_ > 0 && threshold_ <= 1, who, " coso.threshold must be in (0,1], got ", threshold_);
  TORCH_CHECK(decay_ >= 0, who, " coso.decay must be >= 0, got ", decay_);
  TORCH_CHECK(std::isfinite(lr_) && lr_ > 0, who, " coso.lr must be > 0, got ", lr_);
  TORCH_CHECK(std::isfinite(other_lr_) && other_lr_ >= 0, who, " coso.other_lr must be >= 0, got ", other_lr_);
  TORCH_CHECK(beta1_ >= 0 && beta1_ < 1, who, " coso.beta1 must be in [0,1), got ", beta1_);
  TORCH_CHECK(beta2_ >= 0 && beta2_ < 1, who, " coso.beta2 must be in [0,1), got ", beta2_);
  TORCH_CHECK(eps_ > 0, who, " coso.eps must be > 0, got ", eps_);
  TORCH_CHECK(schedule_ == "cosine" || schedule_ == "constant", who, " coso.schedule must be cosine or constant, got '",
              schedule_, "'");
  TORCH_CHECK(temperature_ > 0, who, " coso.temperature must be > 0, got ", temperature_);
  TORCH_CHECK(others_ == "all" || others_ == "head" || others_ == "none", who,
              " coso.others must be all, head or none, got '", others_, "'");
  TORCH_CHECK(cil_loss_ == "task" || cil_loss_ == "seen", who, " coso.cil_loss must be task or seen, got '", cil_loss_,
              "'");
  TORCH_CHECK(refresh_ == "power" || refresh_ == "exact", who, " coso.refresh must be power or exact, got '", refresh_,
              "'");
  TORCH_CHECK(power_iters_ >= 1, who, " coso.power_iters must be >= 1, got ", power_iters_);
  TORCH_CHECK(gradient_ == "auto" || gradient_ == "dense", who, " coso.gradient must be auto or dense, got '",
              gradient_, "'");
  bool known = false;
  for (const auto& m : subspaces::svd_methods()) known = known || m == svd_ || svd_ == "auto";
  TORCH_CHECK(known, who, " coso.svd: unknown SVD method '", svd_, "'");
}

namespace {

int64_t nbytes(const torch::Tensor& t) { return t.defined() ? t.numel() * static_cast<int64_t>(t.element_size()) : 0; }

// Owns nothing: the moments and projectors live in the method (so save()/load() see them); this
// adapter lets the Trainer call zero_grad()/step() as for any optimizer.
class CoSOOptimizer : public torch::optim::Optimizer {
 public:
  CoSOOptimizer(const std::vector<torch::Tensor>& params, CoSO* method, double lr)
      : torch::optim::Optimizer({torch::optim::OptimizerParamGroup(params)},
                                std::make_unique<torch::optim::AdamOptions>(lr)),
        method_(method) {}
  torch::Tensor step(LossClosure closure = nullptr) override {
    torch::Tensor loss;
    if (closure) {
      torch::AutoGradMode enable(true);
      loss = closure();
    }
    method_->step();
    return loss;
  }

 private:
  CoSO* method_;
};

}  // namespace

CoSO::CoSO(const MethodConfig& config) : CoSO(CoSOOptions::from_config(config)) {}
CoSO::CoSO(CoSOOptions options) : options_(std::move(options)) { options_.validate(); }

std::unique_ptr<subspaces::FrequentDirections> CoSO::new_sketch(int64_t rows) const {
  return std::make_unique<subspaces::FrequentDirections>(
      rows, subspaces::SketchOptions(options_.r2())
                .decay(options_.decay())
                .svd(subspaces::SvdOptions().method(options_.svd())));
}

void CoSO::set_basis(CoSOLayer& l, torch::Tensor M) const {
  l.M = std::move(M);
  l.M_perp = l.M.defined() && 2 * l.M.size(1) > l.rows() ? subspaces::complement_basis(l.M) : torch::Tensor();
}

torch::Tensor CoSO::refresh_power(CoSOLayer& l, const torch::Tensor& G, const torch::Tensor& delta,
                                  const torch::Tensor& X) const {
  const int64_t m = l.rows(), n = l.weight.size(1);
  const int64_t r = std::min(options_.r1(), std::min(m, n));
  // The iteration runs on Gc = (I − MMᵀ)G without forming it: only its [m, r] iterates are
  // projected (O(m·K·r) each, against O(m·n·K) for Gc; see subspaces::subspace_iteration). The
  // warm start, the previous P, was projected at its refresh, as the method requires.
  std::function<torch::Tensor(const torch::Tensor&)> project;
  if (l.M_perp.defined())
    project = [&l](const torch::Tensor& Y) { return l.M_perp.mm(l.M_perp.t().mm(Y)); };
  else if (l.basis_rank() > 0)
    project = [&l](const torch::Tensor& Y) { return subspaces::project_out_output(Y, l.M); };
  // The range finder's seed is fixed by the layer's shape so resumed runs draw the same.
  const uint64_t seed = 0x9E3779B97F4A7C15ull ^ static_cast<uint64_t>(m * 131 + n);
  if (G.defined()) return subspaces::subspace_iteration(G, r, l.P, options_.power_iters(), seed, project);
  return subspaces::subspace_iteration_outer(delta, X, r, l.P, options_.power_iters(), seed, project);
}

CoSO::~CoSO() { install_factors(false); }

void CoSO::install_factors(bool on) {
  on = on && options_.gradient() == "auto" && options_.refresh() == "power";
  for (auto& l : layers_) {
    if (!l.module) continue;
    if (on && !l.factors) {
      // Factored iff p·2·B·r·(m + n) < 2·B·m·n + p·2·m·n·r (coso.h), p = passes over G per step.
      const double m = l.rows(), n = l.weight.size(1);
      const double r = std::min<double>(options_.r1(), std::min(m, n));
      const double p = 1.0 + 2.0 * options_.power_iters() / options_.gap();
      const double excess = p * r * (m + n) - m * n;
      l.factors = c10::make_intrusive<adapters::GradientFactors>();
      if (excess > 0)
        l.factors->max_rows = static_cast<int64_t>(std::min(p * m * n * r / excess, 1e15));
    }
    if (on && l.module->gradient_factors() != l.factors) l.module->set_gradient_factors(l.factors);
    if (!on && l.factors && l.module->gradient_factors() == l.factors) l.module->set_gradient_factors({});
    if (!on && l.factors) l.factors->clear();
  }
}

torch::Tensor CoSO::dense_gradient(const CoSOLayer& l) {
  torch::Tensor G = l.weight.grad();
  if (G.defined()) G = G.to(torch::kFloat32);
  if (l.factors && !l.factors->empty()) {
    auto F = l.factors->dense();
    G = G.defined() ? G + F : F;
  }
  return G;
}

void CoSO::attach(models::Model& model) {
  model_ = model;
  const std::string pattern =
      model->resolve_targets(options_.target(), models::TargetRole::kAttentionOutput, "coso.target");
  install_factors(false);  // a second attach: off the previous model's layers
  layers_.clear();
  others_.clear();
  for (auto& [name, layer] : model->linear_layers(pattern)) {
    CoSOLayer l;
    l.name = name;
    l.module = layer;
    l.weight = layer->weight;
    l.sketch = new_sketch(layer->weight.size(0));
    layers_.push_back(std::move(l));
  }
  TORCH_CHECK(!layers_.empty(), "strata::continual::CoSO::attach(): coso.target '", pattern,
              "' matches no Linear layer of the ", model->options().arch(), " model");
  const std::regex head("head(\\..*)?");
  for (auto& item : model->named_parameters()) {
    bool projected = false;
    for (const auto& l : layers_) projected = projected || l.weight.is_same(item.value());
    if (projected) {
      item.value().requires_grad_(true);
      continue;
    }
    const bool train = options_.others() == "all" || (options_.others() == "head" && std::regex_match(item.key(), head));
    item.value().requires_grad_(train);
    if (train) others_.push_back(CoSOOther{item.key(), item.value(), {}, {}, {}, 0});
  }
  install_factors(true);
}

void CoSO::reset_task_state() {
  for (auto& l : layers_) {
    l.P = l.exp_avg = l.exp_avg_sq = l.cov = torch::Tensor();
    l.step = l.refreshes = 0;
    l.sketch->reset();
    if (l.factors) l.factors->clear();
  }
  for (auto& o : others_) {
    o.exp_avg = o.exp_avg_sq = o.row_mask = torch::Tensor();
    o.step = 0;
  }
  lr_factor_ = 1.0;
}

void CoSO::on_task_start(TaskContext& ctx) {
  TORCH_CHECK(model_, "strata::continual::CoSO::on_task_start(): attach() was not called");
  reset_task_state();
  // Several workers all-reduce dense gradients: the factors (per worker) would not be summed.
  install_factors(!is_parallel(ctx.parallel));
  if (options_.others() != "head" || !ctx.stream) return;
  // The current task's head: the head rows of its classes (the code's head of task t).
  const int64_t C = ctx.stream->num_classes;
  auto rows = torch::zeros({C}, torch::kFloat32);
  for (int64_t c : ctx.task().classes) rows[c] = 1.0f;
  for (auto& o : others_) {
    if (o.param.dim() == 0 || o.param.size(0) != C) continue;
    std::vector<int64_t> shape(o.param.dim(), 1);
    shape[0] = C;
    o.row_mask = rows.view(shape).to(o.param.options());
  }
}

std::vector<torch::Tensor> CoSO::parameters(TaskContext&) {
  std::vector<torch::Tensor> out;
  for (auto& l : layers_) out.push_back(l.weight);
  for (auto& o : others_) out.push_back(o.param);
  return out;
}

std::unique_ptr<torch::optim::Optimizer> CoSO::make_optimizer(TaskContext& ctx,
                                                               const std::vector<torch::Tensor>& params) {
  weight_decay_ = ctx.train ? ctx.train->weight_decay() : 0.0;
  return std::make_unique<CoSOOptimizer>(params, this, options_.lr());
}

torch::Tensor CoSO::training_logits(const torch::Tensor& z) {
  // One CE(z / T) in the Trainer: no CE(z) computed only to be cancelled. Masked −inf stay −inf.
  return options_.temperature() == 1.0 ? z : z / options_.temperature();
}

void CoSO::after_backward(StepContext& s) {
  lr_factor_ = 1.0;
  if (options_.schedule() == "cosine" && s.task && s.task->train) {
    const int64_t E = s.task->train->epochs();
    if (E > 1) lr_factor_ = std::cos(99.0 * M_PI * s.epoch / (200.0 * (E - 1)));
  }
}

void CoSO::step() {
  torch::NoGradGuard no_grad;
  const double lr = options_.lr() * lr_factor_;
  const double other_lr = (options_.other_lr() > 0 ? options_.other_lr() : options_.lr()) * lr_factor_;
  for (auto& l : layers_) step_layer(l, lr);
  for (auto& o : others_) step_other(o, other_lr);
}

void CoSO::step_layer(CoSOLayer& l, double lr) {
  const torch::Tensor& grad = l.weight.grad();
  const int64_t m = l.weight.size(0), n = l.weight.size(1);
  // The factored gradient G = δᵀX of this step's backward (gradient = auto), consumed here.
  torch::Tensor delta, X;
  if (l.factors && !l.factors->empty()) {
    auto& f = *l.factors;
    if (grad.defined() || f.delta.size() > 1) {
      // Several backward passes, or a batch over max_rows next to one under it: G as one tensor.
      delta = torch::cat(f.delta).to(torch::kFloat32);
      X = torch::cat(f.input).to(torch::kFloat32);
    } else {
      delta = f.delta[0].to(torch::kFloat32);
      X = f.input[0].to(torch::kFloat32);
    }
    f.clear();
  }
  // Zero budget: no projector rank, or the historical basis spans the whole output space.
  if ((!grad.defined() && !delta.defined()) || options_.r1() == 0 || l.basis_rank() >= m) return;
  torch::Tensor G;
  if (grad.defined()) {
    G = grad.scalar_type() == torch::kFloat32 ? grad : grad.to(torch::kFloat32);
    if (delta.defined()) G = G.addmm(delta.t(), X);  // a dense part too: one dense G
    delta = X = torch::Tensor();
  }
  const bool factored = delta.defined();
  TORCH_INTERNAL_ASSERT(!factored || options_.refresh() == "power",
                        "strata::continual::CoSO::step_layer(): factored gradient with the exact refresh");
  const bool power = options_.refresh() == "power";
  const bool refresh = !l.P.defined() || l.step % options_.gap() == 0;
  // The power refresh never forms Gc = (I − MMᵀ)G (4·m·n·K flops a step, more than the rest of the
  // step once K ≈ m/2): it projects the thin iterates (refresh_power), and every P is projected off
  // M, so R = Pᵀ Gc = ((I − MMᵀ)P)ᵀ G = Pᵀ G. The exact refresh keeps the explicit Gc (its SVD
  // needs it).
  if (!power) {
    if (l.M_perp.defined())
      G = l.M_perp.mm(l.M_perp.t().mm(G));  // = G − M MᵀG, through the narrower complement
    else if (l.basis_rank() > 0)
      G = subspaces::project_out_output(G, l.M);
  }
  if (power && refresh) {
    torch::Tensor P = refresh_power(l, G, delta, X);
    if (l.basis_rank() > 0) P = subspaces::project_out_output(P, l.M);
    l.P = P;
    ++l.refreshes;
    if (!l.exp_avg.defined()) {
      l.exp_avg = torch::zeros({l.P.size(1), n}, l.P.options());
      l.exp_avg_sq = torch::zeros({l.P.size(1), n}, l.P.options());
    }
  } else if (refresh) {
    const int64_t want = std::min(std::max(options_.r1(), options_.r2() + 1), std::min(m, n));
    auto s = subspaces::svd(G, subspaces::SvdOptions().method(options_.svd()).rank(want));
    torch::Tensor P = s.U.narrow(1, 0, std::min(options_.r1(), s.U.size(1)));
    // Deviation (safety): singular vectors of (numerically) zero singular values are arbitrary and
    // may lie in span(M); removing M from P keeps Mᵀ ΔW = 0 and changes nothing for σ > 0 columns.
    if (l.basis_rank() > 0) P = subspaces::project_out_output(P, l.M);
    l.P = P.contiguous();
    l.sketch->update_from_svd(s.U, s.S);
    ++l.refreshes;
    if (!l.exp_avg.defined()) {
      l.exp_avg = torch::zeros({l.P.size(1), n}, G.options());
      l.exp_avg_sq = torch::zeros({l.P.size(1), n}, G.options());
    }
  }
  const double b1 = options_.beta1(), b2 = options_.beta2();
  // [r1, n]  (= Pᵀ Gc, see above); factored: (δP)ᵀX, 2·B·r1·(m + n) flops instead of 2·m·n·r1.
  torch::Tensor R = factored ? delta.mm(l.P).t().mm(X) : l.P.t().mm(G);
  // The captured part P R of Gc: C ← decay·C + P (R Rᵀ) Pᵀ.
  if (power && refresh) {
    auto PS = l.P.mm(R.mm(R.t()));  // P (R Rᵀ)
    if (!l.cov.defined())
      l.cov = PS.mm(l.P.t());
    else
      l.cov.addmm_(PS, l.P.t(), /*beta=*/options_.decay());  // one kernel: decay folded into addmm's beta
  }
  torch::Tensor N = adam_direction_(l.exp_avg, l.exp_avg_sq, R, b1, b2, options_.eps());
  ++l.step;
  const double step_size =
      lr * std::sqrt(1 - std::pow(b2, static_cast<double>(l.step))) / (1 - std::pow(b1, static_cast<double>(l.step)));
  if (l.weight.scalar_type() == N.scalar_type())
    l.weight.addmm_(l.P, N, /*beta=*/1, /*alpha=*/-step_size);
  else
    l.weight.add_(l.P.mm(N).to(l.weight.dtype()), -step_size);
}

void CoSO::step_other(CoSOOther& o, double lr) {
  const torch::Tensor& g = o.param.grad();
  if (!g.defined()) return;
  if (!o.exp_avg.defined()) {
    o.exp_avg = torch::zeros_like(o.param);
    o.exp_avg_sq = torch::zeros_like(o.param);
  }
  const double b1 = options_.beta1(), b2 = options_.beta2();
  if (weight_decay_ > 0) {
    if (o.row_mask.defined())
      o.param.sub_(o.param * o.row_mask, lr * weight_decay_);
    else
      o.param.mul_(1 - lr * weight_decay_);
  }
  ++o.step;
  const double step_size =
      lr * std::sqrt(1 - std::pow(b2, static_cast<double>(o.step))) / (1 - std::pow(b1, static_cast<double>(o.step)));
  adam_step_(o.param, o.exp_avg, o.exp_avg_sq, g, o.row_mask, b1, b2, options_.eps(), step_size);
}

CoSO::Memory CoSO::memory() const {
  Memory mem;
  for (const auto& l : layers_) {
    mem.coso_bytes += nbytes(l.P) + nbytes(l.exp_avg) + nbytes(l.exp_avg_sq) + nbytes(l.M);
    if (!l.sketch->empty())
      mem.coso_bytes += nbytes(l.sketch->sketch()) + nbytes(l.sketch->basis()) + nbytes(l.sketch->singular_values());
    mem.coso_bytes += nbytes(l.cov) + nbytes(l.M_perp);
    mem.basis_bytes += nbytes(l.M);
    mem.adamw_bytes += 2 * nbytes(l.weight);
  }
  for (const auto& o : others_) {
    mem.coso_bytes += nbytes(o.exp_avg) + nbytes(o.exp_avg_sq);
    mem.adamw_bytes += 2 * nbytes(o.param);
  }
  return mem;
}

void CoSO::on_task_end(TaskContext& ctx) {
  torch::NoGradGuard no_grad;
  const Memory mem = memory();  // at its peak: moments, projectors and sketches are still held
  nlohmann::json rep = {{"task", ctx.task_index},
                        {"optimizer_state_bytes", {{"coso", mem.coso_bytes}, {"coso_basis", mem.basis_bytes},
                                                   {"adamw", mem.adamw_bytes}}},
                        {"layers", nlohmann::json::object()}};
  std::map<std::string, subspaces::SubspaceRecord> records;
  for (auto& l : layers_) {
    if (l.cov.defined()) {
      // Top r2 + 1 eigenpairs of the accumulated covariance, as one FD update (shrunk by λ_{r2+1}).
      auto [evals, evecs] = torch::linalg_eigh(l.cov.to(torch::kFloat64));
      const int64_t p = std::min(options_.r2() + 1, l.rows());
      auto lam = evals.flip(0).narrow(0, 0, p).clamp_min(0);
      l.sketch->update_from_svd(evecs.flip(1).narrow(1, 0, p).contiguous(), lam.sqrt().contiguous());
    }
    const int64_t before = l.basis_rank();
    int64_t k = 0;
    double captured = 0;
    torch::Tensor sigma;
    if (!l.sketch->empty()) {
      sigma = l.sketch->singular_values().clone();
      k = l.sketch->energy_rank(options_.threshold());
      const double total = sigma.square().sum().item<double>();
      captured = total > 0 ? sigma.narrow(0, 0, k).square().sum().item<double>() / total : 0.0;
      if (k > 0) set_basis(l, subspaces::extend_basis(l.M, l.sketch->top_directions(k)));
    }
    rep["layers"][l.name] = {{"sketch_rank", k},
                             {"added", l.basis_rank() - before},
                             {"basis_rank", l.basis_rank()},
                             {"rows", l.rows()},
                             {"refreshes", l.refreshes},
                             {"steps", l.step},
                             {"captured_energy", captured}};
    if (l.basis_rank() > 0) {
      subspaces::SubspaceRecord r;
      r.basis = l.M;
      r.singular_values = sigma;
      r.captured_energy = captured;
      r.threshold = options_.threshold();
      r.side = "output";
      r.method = "coso";
      records[l.name] = r;
    }
  }
  task_reports_.push_back(rep);
  reset_task_state();

  if (ctx.recorder) ctx.recorder->record(ctx.task_index, records);
}

MethodState CoSO::save() const {
  MethodState s;
  nlohmann::json layers = nlohmann::json::object(), others = nlohmann::json::object();
  auto put = [&](const std::string& key, const torch::Tensor& t) {
    if (t.defined()) s.tensors[key] = t.detach().clone();
  };
  for (const auto& l : layers_) {
    const std::string p = "layer/" + l.name + "/";
    put(p + "M", l.M);
    put(p + "P", l.P);
    put(p + "exp_avg", l.exp_avg);
    put(p + "exp_avg_sq", l.exp_avg_sq);
    if (!l.sketch->empty()) {
      put(p + "sketch_basis", l.sketch->basis());
      put(p + "sketch_sigma", l.sketch->singular_values());
    }
    put(p + "cov", l.cov);
    layers[l.name] = {{"step", l.step}, {"refreshes", l.refreshes}};
  }
  for (const auto& o : others_) {
    put("other/" + o.name + "/exp_avg", o.exp_avg);
    put("other/" + o.name + "/exp_avg_sq", o.exp_avg_sq);
    put("other/" + o.name + "/row_mask", o.row_mask);
    others[o.name] = {{"step", o.step}};
  }
  s.meta = {{"layers", layers}, {"others", others}, {"lr_factor", lr_factor_}, {"tasks", task_reports_}};
  return s;
}

void CoSO::load(const MethodState& s, models::Model& model) {
  if (!model_ || model_ != model) attach(model);
  auto get = [&](const std::string& key) {
    auto it = s.tensors.find(key);
    return it == s.tensors.end() ? torch::Tensor() : it->second.clone();
  };
  TORCH_CHECK(s.meta.contains("layers"), "strata::continual::CoSO::load(): state has no 'layers' entry");
  for (auto& l : layers_) {
    TORCH_CHECK(s.meta["layers"].contains(l.name), "strata::continual::CoSO::load(): state has no layer '", l.name,
                "' (was it saved with another coso.target?)");
    const std::string p = "layer/" + l.name + "/";
    l.M = get(p + "M");
    l.P = get(p + "P");
    l.exp_avg = get(p + "exp_avg");
    l.exp_avg_sq = get(p + "exp_avg_sq");
    l.step = s.meta["layers"][l.name].at("step").get<int64_t>();
    l.refreshes = s.meta["layers"][l.name].at("refreshes").get<int64_t>();
    l.sketch->reset();
    // An empty sketch fed (U_B, s) with p = r2 columns takes them unshrunk (δ = 0): B = U_B diag(s).
    if (auto U = get(p + "sketch_basis"); U.defined()) l.sketch->update_from_svd(U, get(p + "sketch_sigma"));
    l.cov = get(p + "cov");
    set_basis(l, l.M);
    TORCH_CHECK(!l.M.defined() || l.M.size(0) == l.rows(), "strata::continual::CoSO::load(): basis of '", l.name,
                "' has ", l.M.size(0), " rows, the layer has ", l.rows());
  }
  for (auto& o : others_) {
    o.exp_avg = get("other/" + o.name + "/exp_avg");
    o.exp_avg_sq = get("other/" + o.name + "/exp_avg_sq");
    o.row_mask = get("other/" + o.name + "/row_mask");
    o.step = s.meta.contains("others") && s.meta["others"].contains(o.name) ? s.meta["others"][o.name].at("step").get<int64_t>() : 0;
  }
  lr_factor_ = s.meta.value("lr_factor", 1.0);
  task_reports_ = s.meta.value("tasks", nlohmann::json::array());
}

nlohmann::json CoSO::report() const {
  const Memory mem = memory();
  nlohmann::json ranks = nlohmann::json::object();
  for (const auto& l : layers_) ranks[l.name] = {{"basis_rank", l.basis_rank()}, {"rows", l.rows()}};
  return {{"tasks", task_reports_},
          {"layers", ranks},
          {"optimizer_state_bytes_now",
           {{"coso", mem.coso_bytes}, {"coso_basis", mem.basis_bytes}, {"adamw", mem.adamw_bytes}}},
          {"options",
           {{"r1", options_.r1()},
            {"r2", options_.r2()},
            {"gap", options_.gap()},
            {"threshold", options_.threshold()},
            {"lr", options_.lr()},
            {"others", options_.others()},
            {"cil_loss", options_.cil_loss()},
            {"refresh", options_.refresh()},
            {"gradient", options_.gradient()},
            {"temperature", options_.temperature()}}}};
}

}  // namespace strata::continual
