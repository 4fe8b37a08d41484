// SVD front-end selectable by name.
//
//   A [m, n]  or a batch A [b, m, n]   ->   A ≈ U diag(S) Vh
//   U [.., m, k]  (orthonormal columns, left singular vectors)
//   S [.., k]     (descending, >= 0)
//   Vh [.., k, n] (orthonormal rows, right singular vectors transposed)
//
// k = min(m, n) for the full thin SVD (rank <= 0), otherwise k = rank (top-rank truncation).
//
// Methods (by name):
//   "exact"       torch::linalg_svd(full_matrices=false), then truncated to rank.
//   "randomized"  Halko-Martinsson-Tropp range finder: Y = A Ω with Ω [n, rank+oversample]
//                 Gaussian (seeded, drawn on the CPU so results do not depend on the device),
//                 `power_iters` QR-stabilised power iterations (A Aᵀ)^q, then the exact SVD of the
//                 small (rank+oversample) x n matrix Qᵀ A. Needs rank > 0.
//   "cusolver"    cuSOLVER gesvdaStridedBatched on CUDA tensors (one call for the whole batch;
//                 approximate top-rank SVD for a tall matrix, wide inputs are transposed). Only
//                 available when built with STRATA_HAVE_CUDA (the CUDA toolkit and a CUDA
//                 LibTorch) and only for CUDA tensors. Runs on the legacy default stream and
//                 synchronises before returning.
//   "auto"        cusolver for CUDA tensors when compiled in; otherwise randomized when
//                 rank > 0 and rank + oversample <= min(m, n) / 4 (measured crossover, see
//                 bench/svd_bench.cpp); otherwise exact.
//
// Precision: float64 input is computed in float64; every other floating dtype in float32 (never
// narrower). Results are on the input's device. Non-finite input (NaN/Inf) is an error.
#pragma once

#include <torch/torch.h>

#include <functional>

#include <string>
#include <vector>

namespace strata::subspaces {

struct SvdOptions {
  // "auto", "exact", "randomized" or "cusolver".
  TORCH_ARG(std::string, method) = "auto";
  // Number of leading singular triplets to return; <= 0 = all min(m, n).
  TORCH_ARG(int64_t, rank) = -1;
  // Randomized: extra sketch columns beyond rank.
  TORCH_ARG(int64_t, oversample) = 10;
  // Randomized: number of power iterations (each costs two passes over A).
  TORCH_ARG(int64_t, power_iters) = 2;
  // Randomized: seed of the Gaussian test matrix (results are reproducible for a fixed seed).
  TORCH_ARG(uint64_t, seed) = 0;
};

struct SvdResult {
  torch::Tensor U;   // [.., m, k]
  torch::Tensor S;   // [.., k]
  torch::Tensor Vh;  // [.., k, n]
  std::string method;  // the method that actually ran (resolves "auto")
};

// Computes the (truncated) SVD of A (2-D or 3-D batch). See the file comment.
SvdResult svd(const torch::Tensor& A, const SvdOptions& options = {});

// The method "auto" would pick for this input and options.
std::string resolve_svd_method(const torch::Tensor& A, const SvdOptions& options);

// Method names usable in this build ("cusolver" only when compiled in).
std::vector<std::string> svd_methods();

// True when the cuSOLVER backend was compiled in (STRATA_HAVE_CUDA).
bool cusolver_compiled();

// Orthonormal basis P [m, r] of the dominant r-dimensional left singular subspace of G [m, n] by
// subspace iteration: P ← qr(G (Gᵀ P)), `iters` times, each costing two passes over G (O(mnr)).
// `warm` [m, r] (e.g. the previous step's P) starts the iteration; undefined = randomized range
// finder qr(G Ω), Ω [n, r] Gaussian from `seed`, followed by iters + 1 iterations. The QR is the
// one with diag(R) >= 0, so a converged iteration keeps its columns and their signs. Computes no
// singular values, no Vᵀ, and does no finiteness check (callers on a hot path own that).
// Convergence per iteration is (σ_{r+1}/σ_r)²; columns are ordered by the iteration, not sorted.
//
// `project` (optional) is an orthogonal projector Π applied to every [m, r] iterate before its QR:
// the iteration then runs on Π G without forming it, since Π G (Π G)ᵀ Q = Π (G (Gᵀ Q)) for Q in
// range(Π) (every QR of a projected iterate is; a `warm` start must be too), and the range finder's
// Π G Ω = Π (G Ω). With Π = I − MMᵀ, M [m, K], that is O(m K r) per iterate instead of O(m n K) to
// form Π G once (CoSO's historical projection).
torch::Tensor subspace_iteration(const torch::Tensor& G, int64_t r, const torch::Tensor& warm = {}, int64_t iters = 1,
                                 uint64_t seed = 0,
                                 const std::function<torch::Tensor(const torch::Tensor&)>& project = {});

// The same iteration on G = δᵀX [m, n] given by its factors δ [b, m], X [b, n] (a Linear layer's
// weight gradient, b = examples·tokens), without forming G: G Z = δᵀ(X Z), Gᵀ P = Xᵀ(δ P), so an
// iteration costs 4·b·r·(m + n) flops instead of 4·m·n·r. Same seed, warm start and projector as
// subspace_iteration(δᵀX, ...); the result equals it up to round-off.
torch::Tensor subspace_iteration_outer(const torch::Tensor& delta, const torch::Tensor& X, int64_t r,
                                       const torch::Tensor& warm = {}, int64_t iters = 1, uint64_t seed = 0,
                                       const std::function<torch::Tensor(const torch::Tensor&)>& project = {});

// Throws c10::Error naming `who` when A has NaN or Inf entries.
void check_finite(const torch::Tensor& A, const char* who);

}  // namespace strata::subspaces
