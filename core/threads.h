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

/// The kernel set OpenBLAS runs in this process ("Haswell", "SkylakeX", ...), or "" when the BLAS
/// is not a run-time dispatching OpenBLAS.
std::string blas_kernels();

/// Picks OpenBLAS's AVX-512 kernels on a CPU that has AVX-512 but that this OpenBLAS does not
/// recognise. OpenBLAS 0.3.21 (Debian 12) does not know AMD Zen 4 and runs it on its AVX2 (Haswell)
/// kernels; later OpenBLAS releases run Zen 4 on the SkylakeX kernels, which at the small GEMMs of
/// a batch-10 MLP step take about a third of the time (the eight GEMMs of a 784-100-100-10 step:
/// 74 against 27 µs). Switches only when OPENBLAS_CORETYPE is unset (the user's choice wins; set it
/// to Haswell to keep the AVX2 kernels), OpenBLAS chose an AVX2 set (Haswell or Zen), and the CPU
/// and the OS support AVX-512 F, CD, BW, DQ and VL (what the SkylakeX kernels use). Exports
/// OPENBLAS_CORETYPE=SkylakeX so that child processes (data-parallel workers, reference scripts)
/// load the same kernels. Call it at the start of main(), before any thread runs a BLAS call.
/// Returns the kernel set in use afterwards (as blas_kernels()).
std::string select_blas_kernels();

/// select_blas_kernels()'s decision: the kernel set to switch to ("" = keep `current`), given the set
/// OpenBLAS chose, the user's OPENBLAS_CORETYPE (nullptr when unset) and whether the CPU and OS run
/// the SkylakeX kernels.
std::string blas_kernels_to_select(const std::string& current, const char* user_choice, bool cpu_has_avx512);

/// Whether this CPU and its OS run OpenBLAS's SkylakeX kernels (AVX-512 F, CD, BW, DQ, VL, and the
/// registers saved by the OS).
bool cpu_has_avx512();

}  // namespace strata::core
