#include "core/threads.h"

#include <torch/torch.h>

#include <dlfcn.h>

#include <cstdlib>

namespace strata::core {

bool set_num_threads(int threads) {
  TORCH_CHECK(threads >= 1, "strata::core::set_num_threads(): threads must be >= 1, got ", threads);
  torch::set_num_threads(threads);
  using Fn = void (*)(int);
  auto fn = reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (fn) fn(threads);
  return fn != nullptr;
}

// __builtin_cpu_supports also checks that the OS saves the AVX-512 registers (XCR0), as OpenBLAS's
// own support_avx512() does.
bool cpu_has_avx512() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

std::string blas_kernels_to_select(const std::string& current, const char* user_choice, bool cpu_avx512) {
  if (current.empty() || user_choice != nullptr || !cpu_avx512) return "";
  return current == "Haswell" || current == "Zen" ? "SkylakeX" : "";
}

std::string blas_kernels() {
  using Name = char* (*)();
  // Only a dynamic-architecture OpenBLAS can change kernels; it exports both.
  auto name = reinterpret_cast<Name>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  if (!name || !dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init")) return "";
  const char* n = name();
  return n ? n : "";
}

std::string select_blas_kernels() {
  const std::string current = blas_kernels();
  const std::string target = blas_kernels_to_select(current, std::getenv("OPENBLAS_CORETYPE"), cpu_has_avx512());
  if (target.empty()) return current;
  using Fn = void (*)();
  auto quit = reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit"));
  auto init = reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init"));
  if (!quit || !init) return current;
  // gotoblas_dynamic_init() reads OPENBLAS_CORETYPE, as at library load; quit() only clears the
  // table pointer, so the pair re-runs OpenBLAS's own start-up choice with the kernel set named.
  setenv("OPENBLAS_CORETYPE", target.c_str(), 1);
  quit();
  init();
  return blas_kernels();
}

}  // namespace strata::core
