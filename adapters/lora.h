#pragma once
// LoRA adapter with an optional frozen bank of earlier tasks' factors (O-LoRA).
//
// Shapes (W [m=out, n=in]): trainable A [r, n] (Kaiming-uniform, i.e. U(-1/√n, 1/√n)), B [m, r] (zeros);
// frozen bank A_old [R, n], B_old [m, R] (buffers, never trained; R = 0 until bank_current()).
//   forward:  y = base + s·B·A·drop(x) + s·B_old·A_old·drop(x),   s = alpha / r
//   ΔW = s·(B·A + B_old·A_old)
// Plain (sequential) LoRA never uses the bank: merge it into W at task end (merge_all) and attach a
// fresh one. O-LoRA calls bank_current() at task end and adds olora_penalty() to the loss.
#include <torch/torch.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "adapters/stateful_adapter.h"

namespace strata::adapters {

struct LoRAOptions {
  /* implicit */ LoRAOptions(int64_t rank) : rank_(rank), alpha_(static_cast<double>(rank)) {}
  TORCH_ARG(int64_t, rank);
  /// Scaling s = alpha / rank; defaults to alpha = rank (s = 1).
  TORCH_ARG(double, alpha);
  /// Dropout on the adapter's input (training only). 0 = off.
  TORCH_ARG(double, dropout) = 0.0;
};

class LoRAImpl : public StatefulAdapter {
 public:
  LoRAImpl(int64_t in_features, int64_t out_features, LoRAOptions options);

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& base_out) override;
  torch::Tensor delta_weight() const override;

  /// A ← Kaiming-uniform(a=√5), B ← 0 (in place: the same parameter tensors stay registered).
  void reset_parameters();
  /// End of an O-LoRA task: A_old ← [A_old; A], B_old ← [B_old, B] (frozen), then reset_parameters().
  /// The forward output is unchanged by this call (B is zero again and the bank carries the old update).
  void bank_current();
  /// Σ_ij |(A_old Aᵀ)_ij| (element-wise L1 of the cross-Gram, differentiable in A). 0 with an empty bank.
  torch::Tensor orthogonality_penalty() const;
  /// ‖A‖_F + ‖B‖_F (the O-LoRA λ₂ term: plain norms, not squared).
  torch::Tensor l2_penalty() const;

  double scaling() const { return options_.alpha() / static_cast<double>(options_.rank()); }
  int64_t rank() const { return options_.rank(); }
  int64_t bank_rank() const { return A_old.size(0); }
  const LoRAOptions& options() const { return options_; }

  /// Keys: "A", "B", "A_old", "B_old".
  TensorMap state() const override;
  void load_state(const TensorMap& state) override;

  torch::Tensor A, B;          ///< trainable [r, n], [m, r]
  torch::Tensor A_old, B_old;  ///< frozen bank [R, n], [m, R]

 private:
  LoRAOptions options_;
  int64_t in_, out_;
};
TORCH_MODULE(LoRA);

/// O-LoRA's regulariser over a list of adapters, its orthogonality term one autograd node over every
/// layer with a bank, the per-task constants (each layer's A_oldᵀ) kept between calls:
///   value     λ₁ Σ_l Σ_ij |(A_old,l A_lᵀ)_ij|  +  λ₂ Σ_l (‖A_l‖_F + ‖B_l‖_F)        (0-d)
///   ∂/∂A_l    λ₁ sign(A_old,l A_lᵀ)ᵀ A_old,l   [r, n]   (sign(0) = 0, as abs's gradient)
/// Shapes: A_l [r, n_l], A_old,l [R_l, n_l]; layers may differ in n_l and R_l. Per call and step the
/// term costs one product A_l A_old,lᵀ [r, R_l] per layer in the forward pass (abs, sum and sign in
/// one loop over it) and one product per layer in the backward pass, against about ten operators per
/// layer composed (t, mm, abs, sum, mul, add and their backwards). The λ₂ term is composed (plain norms).
/// The cache is checked at every call (per layer: adapter, bank storage, size, version counter), so
/// banking at a task end, load_state() or another adapter list refresh it; keep one per model.
class OLoRAPenalty {
 public:
  /// The regulariser above; undefined when no layer has a term (empty banks, λ₂ = 0): then the
  /// penalty is exactly 0 and adds no operator to the step.
  torch::Tensor operator()(const std::vector<std::shared_ptr<LoRAImpl>>& adapters, double lambda1, double lambda2);

  /// One adapter's bank as the orthogonality node reads it, constant within a task.
  struct Bank {
    const LoRAImpl* adapter = nullptr;
    torch::Tensor A_old;    ///< [R, n] an alias holding the storage it was read from (undefined: R = 0)
    torch::Tensor A_old_t;  ///< [n, R] its transpose (a view: BLAS reads it transposed)
    int64_t version = 0;    ///< A_old's version counter when read
  };

 private:
  bool valid(const std::vector<std::shared_ptr<LoRAImpl>>& adapters) const;
  void refresh(const std::vector<std::shared_ptr<LoRAImpl>>& adapters);
  std::vector<Bank> banks_;             // one per adapter, in list order
  std::vector<torch::Tensor> params_;   // A of the layers with a bank: the node's inputs
  std::vector<const Bank*> banked_;     // their banks, in the same order
};

/// O-LoRA regulariser over every LoRA adapter in `model`:
///   λ₁ Σ_layers Σ_ij |(A_old Aᵀ)_ij|  +  λ₂ Σ_layers (‖A‖_F + ‖B‖_F).
/// Returns a 0-d tensor (0 when the model has no LoRA adapter).
torch::Tensor olora_penalty(const torch::nn::Module& model, double lambda1 = 0.5, double lambda2 = 0.0);
/// The same sum over given adapters (a per-step caller keeps them in an AdapterCache instead of
/// walking the model, and an OLoRAPenalty instead of this one-off one). Layers whose term is exactly 0
/// (empty bank, λ₂ = 0) add no operator; the result is undefined when no layer has a term (the model
/// version returns 0 then).
torch::Tensor olora_penalty(const std::vector<std::shared_ptr<LoRAImpl>>& adapters, double lambda1, double lambda2);
/// O-LoRA task end: bank_current() on every LoRA adapter. Returns the number of adapters banked.
int64_t olora_end_task(const torch::nn::Module& model);
/// Sequential-LoRA task end: for every LoRA adapter, W += ΔW (bank included), empty the bank and
/// reset_parameters(); the adapter stays attached, ready for the next task (output unchanged by the
/// call). Returns (layer name, ‖ΔW‖_F merged) per layer, for the report.
std::vector<std::pair<std::string, double>> lora_merge_and_reset(const torch::nn::Module& model);

}  // namespace strata::adapters
