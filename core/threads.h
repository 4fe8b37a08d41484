#pragma once
// Intra-op thread count for LibTorch and for the BLAS it calls, and the BLAS's kernel set.
//
// Debian's LibTorch calls the system BLAS, which may be OpenBLAS's pthread build: OpenBLAS keeps
// its own thread pool that torch::set_num_threads() does not reach (it sets OpenMP's and MKL's),
// so a "one-thread" run still ran every matmul on all cores. On shared cores at small batches
// those threads cost more than they bring (GPM protocol, batch 10: 0.62 -> 0.31 ms/step at task 2).
#include <string>

namespace strata::core {

/// torch::set_num_threads(threads), and OpenBLAS's count when OpenBLAS is the BLAS in this process
/// (looked up at run time, so other BLAS builds are unaffected). Returns whether OpenBLAS was set.
bool set_num_threads(int threads);

/// The kernel set OpenBLAS runs in this process ("Haswell", "Cooperlake", ...), or "" when the BLAS
/// is not a run-time dispatching OpenBLAS. OpenBLAS picks it from the CPU at load time unless
/// OPENBLAS_CORETYPE names one; at the small GEMMs of a batch-10 MLP step the AVX-512 sets take
/// about 0.4 of the AVX2 (Haswell) set's time, so the benchmarks print it.
std::string blas_kernels();

}  // namespace strata::core
