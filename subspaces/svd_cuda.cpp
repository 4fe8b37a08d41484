// cuSOLVER backend of strata::subspaces::svd; CMake adds this file only when the CUDA toolkit is found.

#include "subspaces/svd.h"

#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <algorithm>
#include <vector>

namespace strata::subspaces {
namespace {

#define STRATA_CUSOLVER_CHECK(expr)                                                               \
  do {                                                                                            \
    cusolverStatus_t _st = (expr);                                                                \
    TORCH_CHECK(_st == CUSOLVER_STATUS_SUCCESS, "strata::subspaces::svd(cusolver): ", #expr,      \
                " failed with status ", static_cast<int>(_st));                                  \
  } while (0)

cusolverDnHandle_t handle() {
  // One handle per thread; created lazily, lives for the process (cuSOLVER handles are cheap to keep).
  thread_local cusolverDnHandle_t h = nullptr;
  if (!h) STRATA_CUSOLVER_CHECK(cusolverDnCreate(&h));
  return h;
}

template <typename T>
struct Gesvda;
template <>
struct Gesvda<float> {
  static constexpr auto buffer = cusolverDnSgesvdaStridedBatched_bufferSize;
  static constexpr auto run = cusolverDnSgesvdaStridedBatched;
};
template <>
struct Gesvda<double> {
  static constexpr auto buffer = cusolverDnDgesvdaStridedBatched_bufferSize;
  static constexpr auto run = cusolverDnDgesvdaStridedBatched;
};

// X: row-major [b, cols, rows] buffer = column-major rows x cols matrices with rows >= cols.
// Returns column-major Ux (rows x k) as row-major [b, k, rows], S [b, k], Vx (cols x k) as [b, k, cols].
template <typename T>
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> gesvda(const torch::Tensor& X, int rows, int cols, int k) {
  const int batch = static_cast<int>(X.size(0));
  auto opts = X.options();
  torch::Tensor S = torch::empty({batch, k}, opts);
  torch::Tensor U = torch::empty({batch, k, rows}, opts);
  torch::Tensor V = torch::empty({batch, k, cols}, opts);
  torch::Tensor info = torch::zeros({batch}, opts.dtype(torch::kInt32));
  const long long sA = static_cast<long long>(rows) * cols, sS = k, sU = static_cast<long long>(rows) * k,
                  sV = static_cast<long long>(cols) * k;
  int lwork = 0;
  auto* a = X.data_ptr<T>();
  STRATA_CUSOLVER_CHECK(Gesvda<T>::buffer(handle(), CUSOLVER_EIG_MODE_VECTOR, k, rows, cols, a, rows, sA,
                                          S.data_ptr<T>(), sS, U.data_ptr<T>(), rows, sU, V.data_ptr<T>(), cols,
                                          sV, &lwork, batch));
  torch::Tensor work = torch::empty({std::max(lwork, 1)}, opts);
  std::vector<double> residual(static_cast<size_t>(batch));
  STRATA_CUSOLVER_CHECK(Gesvda<T>::run(handle(), CUSOLVER_EIG_MODE_VECTOR, k, rows, cols, a, rows, sA,
                                       S.data_ptr<T>(), sS, U.data_ptr<T>(), rows, sU, V.data_ptr<T>(), cols, sV,
                                       work.data_ptr<T>(), lwork, info.data_ptr<int>(), residual.data(), batch));
  TORCH_CHECK(cudaDeviceSynchronize() == cudaSuccess, "strata::subspaces::svd(cusolver): CUDA error after gesvda");
  auto bad = info.ne(0).any().item<bool>();
  TORCH_CHECK(!bad, "strata::subspaces::svd(cusolver): gesvdaStridedBatched reported info != 0: ", info.cpu());
  return {U, S, V};
}

}  // namespace

SvdResult cusolver_svd(const torch::Tensor& A, int64_t rank) {
  const bool batched = A.dim() == 3;
  torch::Tensor A3 = batched ? A : A.unsqueeze(0);
  const int64_t m = A3.size(1), n = A3.size(2);
  const bool tall = m >= n;
  // Column-major view trick: a row-major [p, q] buffer is the column-major q x p matrix (its transpose).
  // gesvda wants a tall matrix, so feed A (tall) or Aᵀ (wide) in column-major form.
  torch::Tensor X = tall ? A3.transpose(1, 2).contiguous() : A3.contiguous();
  const int rows = static_cast<int>(tall ? m : n), cols = static_cast<int>(tall ? n : m);
  const int k = static_cast<int>(rank > 0 ? rank : cols);
  torch::Tensor Ux, S, Vx;
  if (A.scalar_type() == torch::kFloat64)
    std::tie(Ux, S, Vx) = gesvda<double>(X, rows, cols, k);
  else
    std::tie(Ux, S, Vx) = gesvda<float>(X, rows, cols, k);
  // Ux: [b, k, rows] -> [b, rows, k]; Vx: [b, k, cols].
  torch::Tensor U = tall ? Ux.transpose(1, 2) : Vx.transpose(1, 2);  // [b, m, k]
  torch::Tensor Vh = tall ? Vx : Ux;                                 // [b, k, n]
  U = U.contiguous();
  Vh = Vh.contiguous();
  if (!batched) {
    U = U.squeeze(0);
    S = S.squeeze(0);
    Vh = Vh.squeeze(0);
  }
  return {U, S, Vh, "cusolver"};
}

}  // namespace strata::subspaces

