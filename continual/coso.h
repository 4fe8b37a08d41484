#pragma once
// `coso`: CoSO — Continuous Subspace Optimization for continual learning (code
// quinn-ch/CoSO). Full-weight training of the target Linear layers inside a moving low-rank
// subspace that is kept orthogonal (output side) to the subspaces of earlier tasks.
//
// Per target weight W [m = out, n = in] with gradient G [m, n] (every shape, left/output side):
//   1. G ← G - M (Mᵀ G)                      M [m, K]: historical basis (empty in task 0)
//   2. every `gap` steps (step 0 of each task included), refresh = exact: thin SVD G = U Σ Vᵀ,
//        P = U[:, :r1]  (then P ← P - M MᵀP, see deviations),  FD sketch ← (U, Σ) (rank r2)
//      refresh = power (default; the exact SVD of every gradient at every step was the whole
//      cost of the method): subspace iteration warm-started from the previous P,
//        P ← qr(G (Gᵀ P)) (`power_iters` times; diag(R) > 0 so columns keep their sign and the
//        Adam moments stay aligned), at the first refresh of a task P = qr(G Ω), Ω [n, r1]
//        seeded Gaussian, then power_iters + 1 iterations; P ← P - M MᵀP as above.
//        Only the r1 vectors are computed (no Vᵀ, no SVD per step). Step 1 is never formed here:
//        with Π = I − MMᵀ, Π G Gᵀ Π Q = Π (G (Gᵀ Q)) for Q in range(Π), so only the [m, r1] iterates
//        are projected (O(m K r1) each instead of O(m n K)), and R = Pᵀ Π G = Pᵀ G since P = Π P.
//        Per step that leaves four passes over G or W of 2·m·n·r1 flops each (Gᵀ P, G (GᵀP),
//        PᵀG, P N). Instead of an FD merge per
//        step, the captured part PR (R = PᵀG) is accumulated as C += P (R Rᵀ) Pᵀ [m, m] (O(m²r1 +
//        r1²n)); at task end the sketch takes the top r2 + 1 eigenpairs of C (one FD update: the
//        incoming block is shrunk by λ_{r2+1}), i.e. the best rank-r2 FD summary of the stream
//        Σ PR (PR)ᵀ. Memory: m² floats per layer instead of the sketch's 2·m·r2.
//      With K > m/2 the historical projection runs through the complement M⊥ [m, m − K].
//   3. R = Pᵀ G [r1, n];  Adam on R:  m̃ = β₁m̃ + (1-β₁)R,  ṽ = β₂ṽ + (1-β₂)R²,  t += 1
//   4. W ← W - lr·√(1-β₂ᵗ)/(1-β₁ᵗ) · P (m̃ / (√ṽ + eps))        (no α scaling, no weight decay)
// Every column of P lies in the complement of span(M), so Mᵀ ΔW = 0 up to round-off. Moments
// persist across projector refreshes inside a task. Task end: k = E(s, ε) on the sketch's shrunk
// spectrum (strict "<"), M ← orth([M, U_S[:, :k]]) (subspaces::extend_basis, capped at m columns),
// handed to the run's recorder (TaskContext::recorder) as taskTT/<layer> (side "output");
// then sketch, P, moments and step counters are reset.
//
// Trained set (`others`): head (default, the CoSO code's) = the projected weights plus the head's
// rows of the current task's classes (weight and bias; the rows of other tasks keep their values,
// as the code's frozen per-task heads do); all = every parameter (head, biases, norms, non-target
// layers); none = the projected weights only. Non-projected parameters get plain Adam in the same
// optimizer with the same formula (CoSO's CoSOAdamW non-CoSO group), plus decoupled weight decay
// from the run's --weight-decay (never applied to projected weights: it would break Mᵀ ΔW = 0).
//
// Class-IL loss (`cil_loss`): task (default, the CoSO code's: cross-entropy over the current
// task's logits only, i.e. the code's per-task head with labels shifted to the task's classes)
// | seen (over every class seen so far). Task-IL and domain-IL keep the scenario's mask.
//
// Options:
//   target ""   regex (full match) of projected layers; "" = per architecture:
//               vit `blocks\.[0-9]+\.attn\.o` (the paper: MHSA output projections),
//               mlp `fc*` (every hidden layer),
//               cnn `fc[0-9]+`.
//   r1 8 (projector rank), r2 32 (sketch rank), gap 1, threshold 0.98, decay 1.0 (sketch decay),
//   lr 4e-4 (projected layers), other_lr 0 (= lr), beta1 0.9, beta2 0.999, eps 1e-6,
//   schedule cosine (per task, lr_e = lr·cos(99π e / (200 (E-1))), code's CosineSchedule) | constant,
//   temperature 3 (the task loss is CE(z / T): Method::training_logits; the code's trick), others head | all | none,
//   cil_loss task | seen, svd exact (subspaces::svd method, exact refresh and sketch merges),
//   refresh power | exact, power_iters 1,
//   gradient auto | dense: auto = a target layer's backward hands CoSO the factors of its gradient
//               G = δᵀX (δ [B, m], X [B, n]; adapters::GradientFactors) instead of G wherever that
//               is cheaper for the layer and batch (see below); dense = always the dense G.
//
// Factored gradient (gradient = auto, refresh = power, one process): the step touches G only
// through thin products, so with G = δᵀX it never forms G: Gᵀ P = Xᵀ(δP), G Z = δᵀ(X Z),
// R = PᵀG = (δP)ᵀX, each 2·B·r1·(m + n) flops instead of 2·m·n·r1, and the backward's dense δᵀX
// GEMM (2·B·m·n) is not run. Per step, with p = 1 + 2·power_iters/gap such passes on average,
// factored costs p·2·B·r1·(m + n) against 2·B·m·n + p·2·m·n·r1 dense; the layer takes the factored
// path for batches of B ≤ max_rows rows, max_rows solved from that inequality once per layer
// (every B when p·r1·(m + n) ≤ m·n: MLP fc1 784→100 at r1 = 8 is 21 216 against 78 400). The
// result equals the dense path up to round-off. W −= P N stays dense. The exact refresh (an SVD
// of G) and data-parallel runs (gradients are all-reduced as dense tensors) keep the dense G.
// The run's --optimizer / --lr are not used (CoSO owns its optimizer).
#include "adapters/adaptable_linear.h"
#include "continual/method.h"
#include "continual/option_table.h"
#include "subspaces/sketch.h"

#include <memory>

namespace strata::continual {

struct CoSOOptions {
  TORCH_ARG(std::string, target) = "auto";
  TORCH_ARG(int64_t, r1) = 8;
  TORCH_ARG(int64_t, r2) = 32;
  TORCH_ARG(int64_t, gap) = 1;
  TORCH_ARG(double, threshold) = 0.98;
  TORCH_ARG(double, decay) = 1.0;
  TORCH_ARG(double, lr) = 4e-4;
  TORCH_ARG(double, other_lr) = 0.0;
  TORCH_ARG(double, beta1) = 0.9;
  TORCH_ARG(double, beta2) = 0.999;
  TORCH_ARG(double, eps) = 1e-6;
  TORCH_ARG(std::string, schedule) = "cosine";
  TORCH_ARG(double, temperature) = 3.0;
  TORCH_ARG(std::string, others) = "head";
  TORCH_ARG(std::string, cil_loss) = "task";
  TORCH_ARG(std::string, svd) = "exact";
  TORCH_ARG(std::string, refresh) = "power";
  TORCH_ARG(int64_t, power_iters) = 1;
  TORCH_ARG(std::string, gradient) = "auto";

 public:
  static CoSOOptions from_config(const MethodConfig& config);
  void validate() const;
};

/// One projected layer's state.
struct CoSOLayer {
  std::string name;
  adapters::AdaptableLinear module = nullptr;
  torch::Tensor weight;       ///< the layer's weight parameter [m, n]
  /// gradient = auto: where the layer's backward puts δ, X (max_rows = the batch limit of the
  /// factored form); installed on `module` while CoSO trains it in one process.
  c10::intrusive_ptr<adapters::GradientFactors> factors;
  torch::Tensor M;            ///< [m, K] historical basis (undefined = K = 0)
  torch::Tensor P;            ///< [m, r1'] projector (undefined until the first refresh of a task)
  torch::Tensor exp_avg;      ///< [r1', n]
  torch::Tensor exp_avg_sq;   ///< [r1', n]
  int64_t step = 0;           ///< Adam steps this task (t_s)
  int64_t refreshes = 0;      ///< projector refreshes (= sketch updates) this task
  std::unique_ptr<subspaces::FrequentDirections> sketch;
  torch::Tensor cov;          ///< [m, m] power refresh: Σ (PR)(PR)ᵀ this task (undefined until fed)
  torch::Tensor M_perp;       ///< [m, m − K] complement of M, only when K > m/2
  int64_t rows() const { return weight.size(0); }
  int64_t basis_rank() const { return M.defined() ? M.size(1) : 0; }
};

/// Plain Adam state of a non-projected parameter.
struct CoSOOther {
  std::string name;
  torch::Tensor param, exp_avg, exp_avg_sq;
  /// others = head: [rows, 1, ...] 1 for the current task's class rows, 0 elsewhere (undefined = all).
  torch::Tensor row_mask;
  int64_t step = 0;
};

/// The options table: registry entries (defaults from CoSOOptions) and the parse into CoSOOptions.
const OptionTable<CoSOOptions>& coso_table();

/// Adam's moments and direction for CoSO's subspace coordinates R [r, n], in place:
///   m ← m + (1 − β₁)(R − m),  v ← β₂·v + (1 − β₂)·R²,  returns N = m / (√v + ε)  [r, n].
/// Contiguous float32 CPU tensors of one size take one pass over the elements (the composed form
/// is six kernels and two temporaries per layer and step, for an [8, 784] matrix at the defaults);
/// anything else takes the composed ATen operators. Both give the same values up to round-off.
torch::Tensor adam_direction_(torch::Tensor& m, torch::Tensor& v, const torch::Tensor& R, double beta1,
                              double beta2, double eps);
/// One Adam step without weight decay on `param` with gradient g, in place:
///   g' = g ⊙ row_mask (row_mask [rows, 1, ...] 0/1 over param's first dimension; undefined = all),
///   m ← β₁·m + (1 − β₁)·g',  v ← β₂·v + (1 − β₂)·g'²,  param ← param − step_size · m / (√v + ε).
/// Fused for contiguous float32 CPU tensors as adam_direction_ is; composed otherwise.
void adam_step_(torch::Tensor& param, torch::Tensor& m, torch::Tensor& v, const torch::Tensor& g,
                const torch::Tensor& row_mask, double beta1, double beta2, double eps, double step_size);

class CoSO : public Method {
 public:
  explicit CoSO(const MethodConfig& config);
  explicit CoSO(CoSOOptions options);
  /// Takes its gradient-factor sinks off the layers (the model may outlive the method).
  ~CoSO() override;
  std::string name() const override { return "coso"; }

  void attach(models::Model& model) override;
  void on_task_start(TaskContext& ctx) override;
  std::vector<torch::Tensor> parameters(TaskContext& ctx) override;
  std::unique_ptr<torch::optim::Optimizer> make_optimizer(TaskContext& ctx,
                                                           const std::vector<torch::Tensor>& params) override;
  /// Class-IL with cil_loss = task (the official form): the loss sees the current task's classes only.
  bool mask_seen_classes() const override { return options_.cil_loss() == "task"; }
  /// z / temperature (z itself at temperature 1): the task loss is CE(z / T, y), the code's trick.
  torch::Tensor training_logits(const torch::Tensor& logits) override;
  void after_backward(StepContext& step) override;
  void on_task_end(TaskContext& ctx) override;
  MethodState save() const override;
  void load(const MethodState& state, models::Model& model) override;
  nlohmann::json report() const override;

  /// One optimizer step over every projected layer and other parameter (what the optimizer's
  /// step() calls). Uses the current .grad() of each parameter; parameters without one are skipped.
  void step();

  /// Bytes of optimizer state held now: projected layers (P, moments, sketch, M) + other params'
  /// moments; and what AdamW (two moments per trained element) would hold for the same parameters.
  struct Memory {
    int64_t coso_bytes = 0, basis_bytes = 0, adamw_bytes = 0;
  };
  Memory memory() const;

  const CoSOOptions& options() const { return options_; }
  const std::vector<CoSOLayer>& layers() const { return layers_; }
  const std::vector<CoSOOther>& others() const { return others_; }
  /// The weight gradient [m, n] of `l` the last backward produced, dense: weight.grad() plus the
  /// collected factors' δᵀX (float32; undefined when neither is there). Does not consume them.
  static torch::Tensor dense_gradient(const CoSOLayer& l);
  /// The learning-rate factor of the cosine schedule now (1 for "constant").
  double lr_factor() const { return lr_factor_; }

 private:
  void reset_task_state();
  void set_basis(CoSOLayer& l, torch::Tensor M) const;
  void step_layer(CoSOLayer& l, double lr);
  /// G = grad (dense), or δ, X with G = δᵀX (factored; grad undefined).
  torch::Tensor refresh_power(CoSOLayer& l, const torch::Tensor& G, const torch::Tensor& delta,
                              const torch::Tensor& X) const;
  /// Installs (or, for gradient = dense, refresh = exact or several workers, removes) the layers'
  /// gradient-factor sinks.
  void install_factors(bool on);
  void step_other(CoSOOther& o, double lr);
  std::unique_ptr<subspaces::FrequentDirections> new_sketch(int64_t rows) const;

  CoSOOptions options_;
  models::Model model_;
  std::vector<CoSOLayer> layers_;
  std::vector<CoSOOther> others_;
  double weight_decay_ = 0.0;
  double lr_factor_ = 1.0;
  nlohmann::json task_reports_ = nlohmann::json::array();
};

}  // namespace strata::continual
