// Subspace bases in factored form: complement projections, the GPM/CoSO energy rank rule, basis
// growth, principal angles and projector distances. Notation:
// a Linear weight / gradient G is [m = out, n = in]; an input-side (right, GPM) basis U is
// [n, k]; an output-side (left, CoSO) basis M is [m, k]; both have orthonormal columns.
//
// Projections never form an m x m or n x n projector: G - (G U) Uᵀ costs O(m n k).
// An undefined basis or one with k = 0 columns means "nothing to remove" (G is returned as is).
#pragma once

#include <torch/torch.h>

#include "subspaces/svd.h"

namespace strata::subspaces {

// ---- complement projections ---------------------------------------------------------------

// G - (G U) Uᵀ,  G [.., m, n], U [n, k]   (GPM: remove the protected input space).
torch::Tensor project_out_input(const torch::Tensor& G, const torch::Tensor& U);
// G - M (Mᵀ G),  G [.., m, n], M [m, k]   (CoSO: remove the historical output space).
torch::Tensor project_out_output(const torch::Tensor& G, const torch::Tensor& M);
// Both sides: G - M MᵀG - GUUᵀ + M MᵀG U Uᵀ (= (I - MMᵀ) G (I - UUᵀ)).
torch::Tensor project_out_both(const torch::Tensor& G, const torch::Tensor& M, const torch::Tensor& U);
// In-place variants for 2-D G (e.g. a parameter's .grad()); return G.
torch::Tensor& project_out_input_(torch::Tensor& G, const torch::Tensor& U);
torch::Tensor& project_out_output_(torch::Tensor& G, const torch::Tensor& M);
// (I − MMᵀ) G (I − UUᵀ) written into 2-D G, M [m, k_m], U [n, k_n]. A side given its complement
// (M_perp [m, m − k_m] or U_perp [n, n − k_n]) is applied as M⊥M⊥ᵀ (resp. U⊥U⊥ᵀ), which costs
// O(·(dim − k)) instead of O(·k); through M⊥ the right side then acts on the small M⊥ᵀG.
torch::Tensor& project_out_both_(torch::Tensor& G, const torch::Tensor& M, const torch::Tensor& U,
                                 const torch::Tensor& M_perp = {}, const torch::Tensor& U_perp = {});

// ---- a Linear weight gradient projected from its factors ----------------------------------
// A Linear layer's weight gradient is G = δᵀX (δ [r, out] the output gradient, X [r, in] the
// input, r = examples·tokens). Its input-side projection G (I − UUᵀ) equals δᵀ(X − (XU)Uᵀ), so
// the projection can act on the r input rows, O(r·in·k), instead of the out gradient rows,
// O(out·in·k). With a complement basis U⊥ [in, in − k] (orthonormal, spanning span(U)^⊥),
// I − UUᵀ = U⊥U⊥ᵀ, which is cheaper when k > in/2. Each form costs one δᵀ(·) product on top.
enum class OuterProjection {
  kAuto,                // the cheapest of the four below for these shapes
  kInput,               // δᵀ (X − (X U) Uᵀ)
  kInputComplement,     // δᵀ ((X U⊥) U⊥ᵀ)
  kGradient,            // G − (G U) Uᵀ           (today's form: G materialised first)
  kGradientComplement,  // (G U⊥) U⊥ᵀ
};

// The form kAuto picks: the smaller of r and out for the side, the smaller of k and in − k for the
// basis (k_perp < 0 = no complement available).
OuterProjection choose_outer_projection(int64_t rows, int64_t out, int64_t k, int64_t k_perp);

// Orthonormal basis [n, n − k] of span(U)^⊥ for U [n, k] with orthonormal columns (from the
// complete QR of U, in float64, returned in U's dtype).
torch::Tensor complement_basis(const torch::Tensor& U);

// G (I − UUᵀ) for G = δᵀX, δ [r, out], X [r, in], U [in, k], U_perp [in, in − k] or undefined.
// Returns [out, in]. An undefined/empty U returns δᵀX. The complement forms need U_perp.
torch::Tensor project_out_input_outer(const torch::Tensor& delta, const torch::Tensor& X, const torch::Tensor& U,
                                      const torch::Tensor& U_perp = {},
                                      OuterProjection form = OuterProjection::kAuto);

// ---- energy rank rule ---------------------------------------------------------------------

// E(σ, ε) = #{ i : (Σ_{j<=i} σ_j²) / (Σ_j σ_j²) < ε } with the strict "<" (GPM task 1, CoSO).
// σ must be sorted descending. Returns 0 for an all-zero spectrum.
int64_t energy_rank(const torch::Tensor& sigma, double threshold);

// GPM's incremental criterion (task > 1). With τ = ‖R‖_F² the total energy of the new
// representation and σ̂ the singular values of the residual R̂ = R - U Uᵀ R:
//   acc = (τ - Σσ̂²) / τ;  k = 0;  while k < len(σ̂) and acc < ε: acc += σ̂_k² / τ, k += 1.
// Returns k (can be 0: the old basis already captures ε of the energy).
int64_t energy_rank_incremental(const torch::Tensor& sigma_residual, double total_energy, double threshold);

// ---- basis growth -------------------------------------------------------------------------

// [U_old, V] re-orthonormalised and capped at `dim` = U_old.size(0) columns.
// V is first made orthogonal to U_old (one block Gram-Schmidt pass plus QR), so drift in U_old's
// orthogonality does not accumulate; directions of V that lie (numerically, relative norm < 1e-6)
// inside span(U_old) are dropped. U_old may be undefined (returns an orthonormal basis of V).
torch::Tensor extend_basis(const torch::Tensor& U_old, const torch::Tensor& V);

struct BasisUpdate {
  torch::Tensor basis;     // [n, k_total] orthonormal columns (old columns first)
  torch::Tensor spectrum;  // singular values the rank was chosen from: of R (first task) or of R̂
  double captured_energy;  // fraction of ‖R‖_F² inside span(basis), as the rule accumulated it
  int64_t rank;            // k_total = basis.size(1)
  int64_t added;           // new columns this update
  double total_energy;     // τ = ‖R‖_F²
  std::string svd_method;  // the SVD method that ran ("auto" resolved)
};

// GPM memory update for one layer:
//   U_old undefined/empty: SVD of R, k = E(σ, ε), basis = U[:, :k].
//   otherwise: residual R̂ = R - U_old U_oldᵀ R, its SVD (σ̂, Û), k by energy_rank_incremental,
//              basis = extend_basis(U_old, Û[:, :k]) (unchanged if k = 0), capped at n columns.
// R is the representation matrix [n, S] (one column per sample). Computed in float32 or wider.
// SVD: "exact" takes the full thin SVD. A truncated method ("randomized", or "auto" where it picks
// randomized for the rank asked; svd_options.rank() <= 0 = start at min(n, S)/8) computes only
// the leading triplets, doubling the rank until they decide the energy rule (their energy reaches
// the threshold before the last one), and falls back to the exact SVD at rank min(n, S); the
// rule's ratios use ‖R‖_F² and ‖R̂‖_F², so the truncated spectrum gives the exact rule's k (up to
// the approximation of the leading singular values). `spectrum` is then the truncated one.
BasisUpdate gpm_update_basis(const torch::Tensor& U_old, const torch::Tensor& R, double threshold,
                             const SvdOptions& svd_options = SvdOptions().method("exact"));

// ---- comparing subspaces ------------------------------------------------------------------

// Principal angles (radians, ascending) between span(A) and span(B), A [n, p], B [n, q]; the
// columns need not be orthonormal (they are orthonormalised by QR). Returns min(p, q) angles.
// Computed in float64; small angles use the sine formula (accurate near 0).
torch::Tensor principal_angles(const torch::Tensor& A, const torch::Tensor& B);

// ‖P_A - P_B‖_F for orthonormal A [n, p], B [n, q], in factored form:
// sqrt(p + q - 2‖AᵀB‖_F²) = sqrt(‖B - A AᵀB‖_F² + ‖A - B BᵀA‖_F²) (the latter is evaluated).
double projector_distance(const torch::Tensor& A, const torch::Tensor& B);

// What span(current) adds to span(previous): an orthonormal basis [n, a] (float64) of the part of
// span(current) orthogonal to span(previous), i.e. the left singular vectors of (I - P Pᵀ) C with
// singular value > tol (P, C orthonormalised first). When GPM-style memories grow by appending
// (span(previous) ⊂ span(current)) the singular values are 0 or 1 and this is exactly the new
// columns; principal angles between cumulative memories are then 0 by construction, between
// additions they say whether two tasks used related directions. previous may be undefined or
// empty (everything in current is new).
torch::Tensor added_directions(const torch::Tensor& previous, const torch::Tensor& current, double tol = 1e-3);

}  // namespace strata::subspaces
