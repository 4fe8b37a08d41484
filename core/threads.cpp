#include "core/threads.h"

#include <torch/torch.h>

#include <dlfcn.h>

namespace strata::core {

bool set_num_threads(int threads) {
  TORCH_CHECK(threads >= 1, "strata::core::set_num_threads(): threads must be >= 1, got ", threads);
  torch::set_num_threads(threads);
  using Fn = void (*)(int);
  auto fn = reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (fn) fn(threads);
  return fn != nullptr;
}

std::string blas_kernels() {
  using Name = char* (*)();
  // Only a dynamic-architecture OpenBLAS can change kernels; it exports both.
  auto name = reinterpret_cast<Name>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  if (!name || !dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init")) return "";
  const char* n = name();
  return n ? n : "";
}

}  // namespace strata::core
