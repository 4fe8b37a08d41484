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
// Deviation: only Linear weights are projected. GPM's CIFAR models zero the gradients of 1-D
// parameters (BatchNorm) after task 1; our MLP protocol has none, and for models with biases or
// LayerNorms those stay trainable (they are not in any representation matrix).
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

 public:
  void validate() const;
};

class Gpm : public Method {
 public:
  explicit Gpm(GpmOptions options);
  ~Gpm() override;
  std::string name() const override { return "gpm"; }
  void attach(models::Model& model) override;
  void on_task_end(TaskContext& ctx) override;
  MethodState save() const override;
  void load(const MethodState& state, models::Model& model) override;
  nlohmann::json report() const override;

  /// Current basis of a layer ([n, k]; undefined before the first task ends).
  const torch::Tensor& basis(const std::string& layer) const;

 private:
  void install_projections();

  GpmOptions options_;
  std::vector<std::pair<std::string, adapters::AdaptableLinear>> layers_;
  std::map<std::string, torch::Tensor> bases_;
  nlohmann::json history_ = nlohmann::json::array();  // per task: {layer: {rank, added, energy}}
};

/// Registry entry helpers (method_registry.cpp).
/// The options table: registry entries (defaults from GpmOptions) and the parse into GpmOptions.
const OptionTable<GpmOptions>& gpm_table();
std::unique_ptr<Method> make_gpm(const MethodConfig& config);

}  // namespace strata::continual
