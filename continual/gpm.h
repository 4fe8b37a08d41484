#pragma once
// GPM: Gradient Projection Memory (Saha, Garg & Roy, ICLR 2021).
//
// State per projected layer l: M_l [n_l, k_l], an orthonormal basis of the layer's INPUT space
// (weight W [m, n_l]). From the second task on, every weight gradient is projected onto the
// complement of M_l on the input side:  G <- G - (G M_l) M_lᵀ  (factored; never n×n).
// At every task end, S random training samples are passed through the model; each layer's inputs,
// stacked as columns, form R_l [n_l, S·tokens], and M_l grows by the GPM energy rule
// (subspaces::gpm_update_basis: plain rule on the first task, residual rule afterwards).
//
// Convolutions (`conv`, default on): a Conv2d weight [out, C, kh, kw] is projected as the
// [out, C·kh·kw] matrix: G ← G − (G M) Mᵀ with M a basis of the unfolded input patches (im2col,
// the conv's own padding, stride and dilation). Its representation matrix holds every patch of
// the first `conv_samples` of the S samples as a column: R [C·kh·kw, conv_samples·L] (GPM's code
// uses every patch position of a subset of its representation batch). Projection after backward.
//
// 1-D parameters (`freeze_1d`, default on): biases and norm weights are frozen from the second
// task on (GPM's code zeroes their gradients); they are in no representation matrix, so
// training them would move old tasks' outputs. The same holds for the ViT's class token and
// position embedding (not 1-D, but no Linear or Conv2d weight): they are frozen with them.
//
// Task-incremental streams with target = auto: the head is neither projected nor frozen. GPM's
// task-IL models have one unprojected head per task; Strata's shared head with per-task logit
// masks is the same thing (a task's rows get gradient only from its own examples), so projecting
// it would only slow the new task's rows down (with every layer projected, small tasks did not
// learn at all).
//
// Optimizers: with plain SGD without weight decay the update is a multiple of the projected
// gradient, so it stays outside span(M). There (`factored_sgd`, default on) a projected Linear layer
// keeps the task's update factored instead of projecting its input at every step: its effective
// weight is W = weight + C Fᵀ, F = M or its complement (the narrower), C [out, f] trained beside the
// weight, and each step's gradients split GPM's update between the two
// (adapters::AdaptableLinear::set_deferred_projection). The projected input is then never mapped
// back to [B, in]: on the first layer of the GPM protocol's MLP that is 40 % of the projection's
// FLOPs. A layer keeps the input projection where that is cheaper (the cost model is in
// adaptable_linear.h). C is folded into the weight when training ends (Method::on_train_end), so
// every reader after train_task() sees the trained weight; forwards during training (validation)
// include C Fᵀ. The steps are the projected ones up to float round-off (tested); momentum is linear
// and allowed. Adam/AdamW (per-coordinate scaling) and weight decay (a pull along W itself) are
// not: for those the applied update is re-projected after the step,
// W ← W_before + ΔW − (ΔW M) Mᵀ, for every projected weight.
#include "continual/method.h"
#include "continual/option_table.h"

namespace strata::continual {

struct GpmOptions {
  /// Energy thresholds ε_l, one per projected layer in forward order; the last repeats.
  TORCH_ARG(std::vector<double>, thresholds) = std::vector<double>{0.95, 0.99, 0.99};
  /// Added to every threshold per finished task (GPM CIFAR: 0.003); thresholds are capped at 1.
  TORCH_ARG(double, threshold_increment) = 0.0;
  /// Training samples S drawn at task end for the representation matrices.
  TORCH_ARG(int64_t, samples) = 300;
  /// std::regex over layer paths; "" = every Linear layer.
  TORCH_ARG(std::string, target) = "auto";
  /// SVD backend for the memory update: exact | randomized | auto.
  TORCH_ARG(std::string, svd) = "exact";
  /// Project every Conv2d weight (input patches).
  TORCH_ARG(bool, conv) = true;
  /// Samples (of the S) whose patches form a convolution's representation matrix.
  TORCH_ARG(int64_t, conv_samples) = 100;
  /// Freeze every 1-D parameter (biases, norms), and the ViT's class token and position embedding,
  /// from the second task on.
  TORCH_ARG(bool, freeze_1d) = true;
  /// Under plain SGD without weight decay, keep each layer's update factored within a task (the
  /// same steps up to round-off, fewer FLOPs); off = project every step's input.
  TORCH_ARG(bool, factored_sgd) = true;
  /// With factored_sgd: a layer whose input is the step's input itself (the first Linear of an MLP)
  /// takes its products with F (and with its weight, when that is frozen for the task) from one GEMM
  /// per chunk of the epoch's coming steps (adapters::AdaptableLinear, core/step_inputs.h).
  TORCH_ARG(bool, inputs_ahead) = true;
  /// With inputs_ahead: a layer whose products over all the task's training rows fit in this many
  /// MiB computes them once per task instead of once per epoch; 0 = once per epoch.
  TORCH_ARG(int64_t, inputs_cache_mb) = 128;  // adapters::AdaptableLinearImpl::kCacheBytes

 public:
  void validate() const;
};

class Gpm : public Method {
 public:
  explicit Gpm(GpmOptions options);
  ~Gpm() override;
  std::string name() const override { return "gpm"; }
  void attach(models::Model& model) override;
  std::vector<torch::Tensor> parameters(TaskContext& ctx) override;
  void after_backward(StepContext& step) override;
  void after_step(StepContext& step) override;
  void on_train_end(TaskContext& ctx) override { fold_factored(); }
  void on_task_end(TaskContext& ctx) override;
  MethodState save() const override;
  void load(const MethodState& state, models::Model& model) override;
  nlohmann::json report() const override;

  /// Current basis of a layer ([n, k]; n = in_features, or C·kh·kw for a convolution; undefined
  /// before the first task ends).
  const torch::Tensor& basis(const std::string& layer) const;
  /// The 1-D parameters frozen so far (names).
  const std::vector<std::string>& frozen() const { return frozen_names_; }

 private:
  void install_projections();
  /// Task-IL with target = auto: the head is not projected (see gpm.cpp).
  void release_head();
  /// Writes every layer's pending factored update into its weight (see factored_sgd).
  void fold_factored();
  /// Every projected weight with its basis, as [rows, n] views.
  std::vector<std::pair<torch::Tensor, torch::Tensor>> projected_weights();

  GpmOptions options_;
  models::Model model_;
  std::vector<std::pair<std::string, adapters::AdaptableLinear>> layers_;
  std::vector<std::pair<std::string, torch::nn::Conv2d>> convs_;
  std::vector<torch::Tensor> frozen_;  ///< 1-D parameters this method froze (restored on destruction)
  std::vector<std::string> frozen_names_;
  std::vector<torch::Tensor> before_;  ///< weights before the optimizer step (re-projection)
  std::map<std::string, torch::Tensor> bases_;
  nlohmann::json history_ = nlohmann::json::array();  // per task: {layer: {rank, added, energy}}
};

/// Registry entry helpers (method_registry.cpp).
/// The options table: registry entries (defaults from GpmOptions) and the parse into GpmOptions.
const OptionTable<GpmOptions>& gpm_table();
std::unique_ptr<Method> make_gpm(const MethodConfig& config);

}  // namespace strata::continual
