#pragma once
// StatefulAdapter: an Adapter whose whole state (trainable factors, frozen banks, gates) can be read
// and written as a flat map of named tensors, so a continual-learning method can store it in a
// version checkpoint (HDF5) or in the subspace store without knowing the adapter's layout.
#include <torch/torch.h>

#include <map>
#include <string>

#include "adapters/adaptable_linear.h"

namespace strata::adapters {

using TensorMap = std::map<std::string, torch::Tensor>;

class StatefulAdapter : public Adapter {
 public:
  /// Detached copies of every tensor that defines the adapter (names are adapter-specific, documented
  /// by each adapter). Loading them into a freshly constructed adapter of the same in/out size and
  /// options reproduces forward() exactly, whatever the bank sizes or pruned ranks were.
  virtual TensorMap state() const = 0;
  virtual void load_state(const TensorMap& state) = 0;
};

namespace detail {

/// Replace the contents (and possibly the shape) of a registered parameter or buffer in place, so the
/// handle held by the Module's parameter/buffer dictionary sees the new value. Drops a stale gradient.
inline void assign_(torch::Tensor& dst, const torch::Tensor& src) {
  torch::NoGradGuard no_grad;
  dst.set_(src.detach().to(dst.device(), dst.scalar_type()).clone().contiguous());
  if (dst.grad().defined()) dst.mutable_grad().reset();
}

inline const torch::Tensor& require(const TensorMap& state, const std::string& key, const char* who) {
  auto it = state.find(key);
  TORCH_CHECK(it != state.end() && it->second.defined(), "strata::adapters::", who,
              "::load_state(): missing tensor ", key);
  return it->second;
}

}  // namespace detail
}  // namespace strata::adapters
