#pragma once
// MoRA / MoRAM adapter: a growing bank of rank-1 "key–value" atoms (a_i = A[i,:] ∈ R^n,
// b_i = B[:,i] ∈ R^m), r new trainable atoms per task, earlier atoms frozen, and self-activated sparse
// routing (no router network). Follows XTAIL/loralib/moram.py (MoRAM_Linear.forward).
//
// Per token x [n]  (A_all = [A_old; A_new] [R, n], B_all = [B_old, s·B_new] [m, R], R = R_old + r):
//   z = A_all x                                   raw key responses          [R]
//   ŝ = z / max(‖z‖₂, eps)                        normalised over all atoms
//   k = min(max(k_cfg, 2), R)                     activation budget (k_cfg defaults to r)
//   w = softmax(mask_topk(ŝ, k) / τ)              top-k on SIGNED ŝ; others −∞ → weight 0
//   inference only, δ > 0:  w_i ← w_i · 1[ŝ_i ≥ δ]   ("rank pruning"; not renormalised)
//   y = base + B_all (w ⊙ z)                      weights multiply the RAW responses z
//
// Cost. forward() is one autograd node: two BLAS products (the second one addmm onto base) around
// one loop per token for ‖z‖, ŝ, the top-k (counted branch-free; on a NaN or a tie across the k-th
// place ATen's CPU topk algorithm is repeated, so the same atoms win, ties included), the softmax
// over the k selected scores, δ and w ⊙ z, and a backward written out as one loop per token plus
// the products, forming the gradient of the r trainable atoms only. Outputs and gradients agree
// with the composed operators to float round-off (tests/adapters/mora_test.cpp). A_all and B_all
// are kept in a cache: the frozen part is copied once per bank (rebuilt when A_old or B_old is
// another tensor, has another size, or was written in place: task switch, load_state, to()), and
// the r trainable rows/columns are copied in place at each call; nothing of size R·(m + n) is
// allocated per step.
//
// The update depends on x, so it cannot be merged into W: delta_weight() is defined only when every
// atom's value vector is zero (e.g. right after add_task_atoms on an empty bank) and fails otherwise.
//
// Per task: start → add_task_atoms() (freezes the previous task's atoms into the bank, appends r fresh
// ones); train A_new, B_new (no auxiliary loss); end → freeze_old_atoms() (optional: the next
// add_task_atoms does it). Evaluate in eval() mode (threshold δ on) or force a mode with set_routing_mode.
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

#include "adapters/stateful_adapter.h"

namespace strata::adapters {

struct MoRAOptions {
  /* implicit */ MoRAOptions(int64_t rank) : rank_(rank) {}
  /// New atoms per task (r).
  TORCH_ARG(int64_t, rank);
  /// k_cfg of the top-k budget; 0 = rank (the code's default). Effective k = min(max(k_cfg, 2), R).
  TORCH_ARG(int64_t, top_k) = 0;
  /// Softmax temperature τ (0.01 CLIP / X-TAIL, 0.03 LLM / TRACE).
  TORCH_ARG(double, temperature) = 0.01;
  /// Inference threshold δ on ŝ; ≤ 0 disables it (the code applies it only when δ > 0).
  TORCH_ARG(double, threshold) = 0.2;
  /// LoRA scale s of the new atoms' B (default 1). Banked atoms store s·B_new, so banking never
  /// changes the output even for s ≠ 1 (the TRACE code ignores s there; that mismatch is not reproduced).
  TORCH_ARG(double, scaling) = 1.0;
  /// eps of the normalisation (F.normalize's default).
  TORCH_ARG(double, eps) = 1e-12;
};

enum class RoutingMode {
  Auto,       ///< threshold δ applied iff the module is in eval() mode (the code's behaviour)
  Train,      ///< never apply δ
  Inference,  ///< always apply δ
};

/// Atom-activation statistics accumulated while recording (an atom is "active" on a token when its
/// final weight w_i is > 0, i.e. it is in the top-k, not underflowed by the softmax, and passed δ).
struct MoRAActivation {
  int64_t total_atoms = 0;           ///< R at the time of the report
  int64_t tokens = 0;                ///< tokens routed while recording
  double mean_active_per_token = 0;  ///< average number of active atoms per token
  torch::Tensor frequency;           ///< [R] fraction of tokens on which atom i was active (float64)
};

class MoRAImpl : public StatefulAdapter {
 public:
  /// Starts with no atoms (forward adds nothing); call add_task_atoms() at the start of each task.
  MoRAImpl(int64_t in_features, int64_t out_features, MoRAOptions options);

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& base_out) override;
  torch::Tensor delta_weight() const override;

  /// Freeze the current trainable atoms into the bank (if any), then append r fresh trainable atoms
  /// (r ≤ 0: options.rank): A_new Kaiming-uniform(a=√5) i.e. U(−1/√n, 1/√n), B_new = 0.
  /// Resets the activation statistics (the atom count changed).
  void add_task_atoms(int64_t r = 0);
  /// A_old ← [A_old; A_new], B_old ← [B_old, s·B_new]; no trainable atoms remain until add_task_atoms.
  void freeze_old_atoms();

  /// Routing weights w [..., R] for input x [..., n], exactly as forward() uses them (for inspection).
  torch::Tensor routing_weights(const torch::Tensor& x) const;
  void set_routing_mode(RoutingMode mode) { mode_ = mode; }
  RoutingMode routing_mode() const { return mode_; }
  void set_threshold(double delta) { options_.threshold(delta); }
  void set_temperature(double tau);
  void set_top_k(int64_t k_cfg);

  int64_t total_atoms() const { return A_old.size(0) + A_new.size(0); }
  int64_t bank_atoms() const { return A_old.size(0); }
  int64_t new_atoms() const { return A_new.size(0); }
  /// k = min(max(k_cfg, 2), R).
  int64_t effective_k() const;
  const MoRAOptions& options() const { return options_; }

  /// Accumulate activation statistics in forward() (no gradient cost; off by default).
  void set_recording(bool on) { recording_ = on; }
  void reset_stats();
  MoRAActivation active_atoms() const;

  /// Keys: "A_old", "B_old", "A_new", "B_new".
  TensorMap state() const override;
  void load_state(const TensorMap& state) override;

  torch::Tensor A_old, B_old;  ///< frozen bank (buffers) [R_old, n], [m, R_old]
  torch::Tensor A_new, B_new;  ///< trainable [r, n], [m, r] (empty before the first add_task_atoms)

 private:
  bool threshold_on() const;
  torch::Tensor routing_from(const torch::Tensor& z) const;
  /// A_all_ = [A_old; A_new], B_all_ = [B_old, s·B_new]: the bank part rebuilt only when bank_key_
  /// changed, the trainable tails copied in place.
  void refresh_bank_cache();

  /// What the cached bank was copied from: storage, in-place write count and size of A_old and
  /// B_old, the trainable atoms' count, dtype and device.
  struct BankKey {
    const void *a_data = nullptr, *b_data = nullptr;
    int64_t a_version = -1, b_version = -1, bank = -1, fresh = -1;
    torch::ScalarType dtype = torch::kFloat32;
    torch::Device device = torch::kCPU;
    bool operator==(const BankKey& o) const {
      return a_data == o.a_data && b_data == o.b_data && a_version == o.a_version && b_version == o.b_version &&
             bank == o.bank && fresh == o.fresh && dtype == o.dtype && device == o.device;
    }
  };
  BankKey bank_key_;
  torch::Tensor A_all_, B_all_;  // [R, n], [m, R]; never registered (not part of the state)
  // Views made once per bank, so a step dispatches no narrow() or t(): the trainable tails
  // A_all_[R_old:], B_all_[:, R_old:] and the transposes A_all_ᵀ [n, R], B_all_ᵀ [R, m].
  torch::Tensor A_tail_, B_tail_, A_all_t_, B_all_t_;

  MoRAOptions options_;
  int64_t in_, out_;
  RoutingMode mode_ = RoutingMode::Auto;
  bool recording_ = false;
  torch::Tensor act_counts_;  // [R] int64
  int64_t tokens_ = 0;
  int64_t active_total_ = 0;
};
TORCH_MODULE(MoRA);

/// add_task_atoms(r) on every MoRA adapter (task start). Returns the number of adapters.
int64_t mora_start_task(const torch::nn::Module& model, int64_t r = 0);
/// Recording on/off (and reset) for every MoRA adapter; then active_atoms() per layer for the report.
void mora_record(const torch::nn::Module& model, bool on, bool reset = true);
std::vector<std::pair<std::string, MoRAActivation>> mora_activation_report(const torch::nn::Module& model);

}  // namespace strata::adapters
