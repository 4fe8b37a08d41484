// Frequent Directions sketch, CoSO's variant.
//
// The sketch summarises a stream of matrices G_t [m, n_t] whose *columns* live in R^m (CoSO: the
// output side of a gradient, already projected off the historical basis). State, with r = rank:
//   B   [m, r]  the sketch (B = U_B diag(s)),  s [r] descending,  U_B [m, r] orthonormal.
// update(G):
//   1. thin SVD G = U Σ Vᵀ;  δ = σ_{r+1}² (0 when G has <= r singular values);
//      Q = U[:, :r] diag(sqrt(max(σ_i² - δ, 0)))          (the incoming block is already shrunk)
//   2. first update: B = Q.  Otherwise SVD of [decay·B, Q] (m x 2r) = U' Σ' V'ᵀ,
//      δ' = σ'_{r+1}²,  s_i = sqrt(max(σ'_i² - δ', 0)),  B = U'[:, :r] diag(s).
// Guarantee (decay = 1; A = [G_1, ..., G_T], each shrink is an FD step with ℓ = r + 1):
//   0 ⪯ A Aᵀ - B Bᵀ   and   ‖A Aᵀ - B Bᵀ‖₂ <= ‖A - A_k‖_F² / (r + 1 - k)  for every k <= r,
// where A_k is the best rank-k approximation of A.
// Deviation from the CoSO code: when G (or [B, Q]) has no (r+1)-th singular value the code would
// fail (it requires r < min dims); here δ = 0 (the exact value of σ_{r+1}) and missing columns are
// zero.
#pragma once

#include <torch/torch.h>

#include "subspaces/svd.h"

namespace strata::subspaces {

struct SketchOptions {
  explicit SketchOptions(int64_t rank) : rank_(rank) {}
  // r₂: number of directions kept.
  TORCH_ARG(int64_t, rank);
  // Multiplies the old sketch before each merge (CoSO `db_decay`; 1.0 in every config).
  TORCH_ARG(double, decay) = 1.0;
  // SVD backend for both SVDs (rank is set internally; method/oversample/seed are used).
  TORCH_ARG(SvdOptions, svd) = SvdOptions().method("exact");
};

class FrequentDirections {
 public:
  // dim = m, the length of the fed columns.
  FrequentDirections(int64_t dim, SketchOptions options);

  // Feeds the columns of G [m, n].
  void update_columns(const torch::Tensor& G);
  // Feeds the rows of A [n, m] (same as update_columns(A.t())).
  void update_rows(const torch::Tensor& A) { update_columns(A.t()); }
  // Feeds a precomputed thin SVD of G (U [m, p] descending σ [p]); CoSO reuses the SVD it computes
  // for the optimisation projector. p may be <= r (then δ = 0).
  void update_from_svd(const torch::Tensor& U, const torch::Tensor& sigma);

  bool empty() const { return !sketch_.defined(); }
  int64_t dim() const { return dim_; }
  int64_t rank() const { return options_.rank(); }
  // B = U_B diag(s) [m, r]; undefined before the first update.
  const torch::Tensor& sketch() const { return sketch_; }
  // U_B [m, r] (orthonormal; columns with s_i = 0 carry no information).
  const torch::Tensor& basis() const { return basis_; }
  // s [r] descending (the sketch's singular values; energies are s²).
  const torch::Tensor& singular_values() const { return sigma_; }
  // Top-k directions U_B[:, :k].
  torch::Tensor top_directions(int64_t k) const;
  // CoSO's task-boundary rank: E(s, ε) (strict "<" energy rule on the shrunk spectrum; can be 0).
  int64_t energy_rank(double threshold) const;
  // Forgets everything (CoSO resets the sketch at each task boundary).
  void reset();

 private:
  void merge(const torch::Tensor& U, const torch::Tensor& q);

  int64_t dim_;
  SketchOptions options_;
  torch::Tensor sketch_, basis_, sigma_;
};

}  // namespace strata::subspaces
