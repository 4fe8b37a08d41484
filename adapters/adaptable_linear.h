#pragma once
// AdaptableLinear: the Linear layer every Strata model is built from.
//
// LibTorch has no forward hooks, and Module::replace_module() does not update the typed member a
// parent's forward() calls. So models build each adaptable layer as an AdaptableLinear, which owns
// its weight and bias like torch::nn::Linear (parameter names stay "<path>.weight"/"<path>.bias",
// loadable into a PyTorch state_dict) and can route its output through an Adapter in place.
//
// Shapes: weight [out, in], bias [out]; input [..., in] -> output [..., out].
#include <torch/torch.h>

#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace strata::core {
struct StepInputs;
}

namespace strata::adapters {

/// A trainable addition to a frozen (or trainable) base Linear: y = base(x) + delta(x).
/// Subclasses register their own parameters/buffers; they are registered under the
/// AdaptableLinear as child "adapter", so their names read "<path>.adapter.<name>".
class Adapter : public torch::nn::Module {
 public:
  /// x: [..., in], base_out: [..., out] (= x W^T + b). Returns the adapted output [..., out].
  virtual torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& base_out) = 0;
  /// The dense update ΔW [out, in] this adapter adds to the base weight (for merging).
  virtual torch::Tensor delta_weight() const = 0;
};

/// The factors of a Linear weight gradient G = Σ_i δ_iᵀ X_i [out, in], collected by the layer's
/// backward instead of G (AdaptableLinearImpl::set_gradient_factors; CoSO's factored step). One
/// pair per backward through the layer: δ_i [r_i, out] the output gradient, X_i [r_i, in] the input
/// (r_i = examples·tokens), both detached. The consumer reads and clears them, as an optimizer
/// reads and drops .grad(); until then they accumulate like .grad() does.
struct GradientFactors : torch::CustomClassHolder {
  std::vector<torch::Tensor> delta, input;
  /// Forwards with more input rows than this take the plain path (dense weight.grad, no factors):
  /// the caller's cost model picks the form per layer and batch. < 0 = never factored.
  int64_t max_rows = std::numeric_limits<int64_t>::max();
  bool empty() const { return delta.empty(); }
  void clear() { delta.clear(), input.clear(); }
  /// Σ_i δ_iᵀ X_i [out, in] in float32 (undefined when empty).
  torch::Tensor dense() const;
};

class AdaptableLinearImpl : public torch::nn::Module {
 public:
  AdaptableLinearImpl(int64_t in_features, int64_t out_features, bool bias = true);

  torch::Tensor forward(const torch::Tensor& x);

  /// Route the output through `adapter` (replaces any previous one).
  void set_adapter(std::shared_ptr<Adapter> adapter);
  /// Remove the adapter without merging; returns it (or nullptr).
  std::shared_ptr<Adapter> remove_adapter();
  const std::shared_ptr<Adapter>& adapter() const { return adapter_; }
  /// Fold the adapter's ΔW into the weight and remove it (no inference overhead afterwards).
  void merge_adapter();

  /// When on, forward() keeps a detached copy of its last input (GPM representation matrices).
  void set_recording(bool on) { recording_ = on; if (!on) last_input_ = torch::Tensor(); }
  /// Last recorded input [..., in]; undefined when recording is off or before a forward.
  const torch::Tensor& last_input() const { return last_input_; }

  /// Input-side weight-gradient projection (GPM): while set, backward through this layer writes
  /// weight.grad = G (I − U Uᵀ) for G = δᵀX instead of G, computed from the factors δ [r, out] and
  /// X [r, in] in the cheapest form for the batch (subspaces::project_out_input_outer): the
  /// projection acts on the r input rows when r < out, and on the complement U_perp [in, in − k]
  /// when one is given and k > in − k. The input and bias gradients are the plain ones. An
  /// undefined or empty U clears it.
  void set_input_projection(torch::Tensor U, torch::Tensor U_perp = {});
  const torch::Tensor& input_projection() const { return proj_U_; }
  /// The complement U_perp given with it (undefined when none was).
  const torch::Tensor& input_projection_complement() const { return proj_U_perp_; }
  /// Output-side counterpart (OSFT): weight.grad = (I − M Mᵀ) G, from δ − (δ M) Mᵀ (O(r·out·k));
  /// M [out, k], M_perp [out, out − k] optional. Combines with the input projection (both sides).
  void set_output_projection(torch::Tensor M, torch::Tensor M_perp = {});
  const torch::Tensor& output_projection() const { return proj_M_; }

  /// Deferred input-side projection (GPM under plain SGD): the layer's effective weight is
  /// W = weight + C Fᵀ, with F [in, f] fixed and C [out, f] a tensor the caller trains (not a
  /// registered parameter: it is no part of the state dict, the caller hands it to the optimizer,
  /// and fold_deferred_projection() writes it into `weight`). Forward: y = x·weightᵀ + (x F) Cᵀ (+ b).
  /// The gradients the backward writes are GPM's update split in two, not dL/d(weight, C):
  ///  - `free` false, F = U (the protected basis): weight.grad = δᵀX, C.grad = −δᵀ(X U);
  ///  - `free` true, F = U⊥ (its complement): weight gets none, C.grad = δᵀ(X U⊥).
  /// Either way one SGD step with learning rate η moves W by −η·δᵀX(I − UUᵀ), the projected step,
  /// and so does SGD with momentum (the split is linear); weight decay and Adam are not, and must not
  /// be used with it. What this saves is mapping the projected input back to [rows, in] every step:
  /// the extra cost is 2·rows·f·(in + 2·out) (plus 2·rows·f·(in + out) when the input needs a
  /// gradient, and minus the dense 2·rows·in·out weight gradient when `free`) against
  /// 4·min(rows, out)·in·f for the input projection. The layer compares the two at its first
  /// training forward (when it knows whether its input needs a gradient) and keeps the input
  /// projection (set_input_projection) when that is cheaper; `C` then stays zero. `batch` > 0 is
  /// the global batch (examples) to judge the costs at, so that data-parallel workers, whose shards
  /// differ by a row, decide alike; 0 = the first forward's own rows.
  void set_deferred_projection(torch::Tensor F, torch::Tensor C, bool free, int64_t batch = 0,
                               int64_t ahead_bytes = kAheadBytes, int64_t cache_bytes = kCacheBytes);
  /// Default size of a chunk of inputs-ahead rows (below): large enough that its GEMM runs at the
  /// speed of a large one (the [in, f] operand is packed once per chunk, not once per step), small
  /// beside the training data.
  static constexpr int64_t kAheadBytes = int64_t{4} << 20;
  /// Default budget of the whole-task cache of inputs-ahead rows (below): 60 000 rows of
  /// f + out = 447 floats (the first layer of a 784-100-100 MLP late in a GPM run) take 107 MB.
  static constexpr int64_t kCacheBytes = int64_t{128} << 20;
  /// weight += C Fᵀ and the deferred projection is cleared (a no-op when none is set).
  ///
  /// Inputs known ahead (core/step_inputs.h): when a training forward's input is the step's input
  /// itself (the trainer's gathered batch, [B, in], float32 on the CPU), x F, and x·weightᵀ in the
  /// `free` form (where the weight is constant for the task), are taken from one GEMM over a chunk
  /// of the epoch's coming rows, [C, in]·[in, f (+ out)] of `ahead_bytes` (C at least B), instead
  /// of a [B, in]·[in, f] product per step. The values are the same products of the same inputs
  /// (float round-off aside); any other input computes them from x. `ahead_bytes` 0 turns this off.
  /// When the step inputs name their rows (rows_id) and the products of all of them, num_rows
  /// × (f (+ out)) floats, fit in `cache_bytes`, those are computed once per rows_id (in chunks of
  /// `ahead_bytes`) and each step copies its rows out: one pass of that GEMM per task instead of one
  /// per epoch, for num_rows·(f (+ out))·4 bytes held until the projection is folded. `cache_bytes`
  /// 0 = per-epoch chunks only.
  void fold_deferred_projection();
  /// Whether the deferred projection carries this layer's updates (decided at its first training forward).
  bool deferred_projection_active() const { return defer_state_ == DeferState::kActive; }
  /// Factored weight gradient (CoSO): while set, a forward with grad enabled, weight requiring
  /// grad and at most factors->max_rows input rows records its backward's δ and X in `factors`
  /// and leaves weight.grad untouched (undefined after a reset): the dense δᵀX GEMM (2·r·out·in
  /// flops) is not run, and a consumer that needs only thin products of G (Gᵀ P = Xᵀ(δP),
  /// PᵀG = (δP)ᵀX) pays O(r·(out + in)) per product. The input and bias gradients are the plain
  /// ones. Not combined with the input/output projections (an error). nullptr clears it.
  void set_gradient_factors(c10::intrusive_ptr<GradientFactors> factors);
  const c10::intrusive_ptr<GradientFactors>& gradient_factors() const { return factors_; }

  int64_t in_features() const { return weight.size(1); }
  int64_t out_features() const { return weight.size(0); }
  bool has_bias() const { return bias.defined(); }

  torch::Tensor weight;  ///< [out, in]
  torch::Tensor bias;    ///< [out] or undefined

 private:
  std::shared_ptr<Adapter> adapter_;
  bool recording_ = false;
  torch::Tensor proj_U_, proj_U_perp_, proj_M_, proj_M_perp_;
  enum class DeferState { kNone, kUndecided, kActive, kInactive };
  DeferState defer_state_ = DeferState::kNone;
  bool defer_free_ = false;
  int64_t defer_ahead_bytes_ = 0, defer_cache_bytes_ = 0;
  int64_t defer_batch_ = 0;
  torch::Tensor defer_F_, defer_C_;
  /// Rows order[begin, end) of [x F | x·weightᵀ] for the deferred form (fold_deferred_projection).
  struct AheadRows {
    torch::Tensor rows, inputs;  ///< [chunk, f (+ out)]; the gathered inputs' buffer
    uint64_t order_id = 0;
    int64_t begin = 0, end = 0, weight_version = -1;
  } ahead_;
  struct CachedRows {
    torch::Tensor rows, step;  ///< [num_rows, f (+ out)] by training row; the step's rows of it
    uint64_t rows_id = 0;
    int64_t weight_version = -1;
  } cached_;
  /// This forward's rows of cached_ (filled once per rows_id) or of ahead_ (refilled when they are
  /// not in it); undefined when `x` is not the current step's input.
  torch::Tensor precomputed_rows(const torch::Tensor& x);
  torch::Tensor cached_rows(const core::StepInputs& si, int64_t width);
  /// The fixed map the precomputed rows apply: F, or [F | weightᵀ] in the `free` form.
  torch::Tensor ahead_map() const;
  torch::Tensor last_input_;
  c10::intrusive_ptr<GradientFactors> factors_;
};
TORCH_MODULE(AdaptableLinear);

}  // namespace strata::adapters
