// The explicit method registry: one line per built-in method.
#include "continual/joint.h"
#include "continual/method.h"
#include "continual/naive.h"

namespace strata::continual {

namespace {
MethodRegistry build() {
  MethodRegistry r;
  r.add({"naive", "plain fine-tuning on each task in turn (lower bound)", {},
         [](const MethodConfig&) { return std::make_unique<Naive>(); }});
  r.add({"joint", "trains on the union of all tasks so far (upper bound)", {},
         [](const MethodConfig&) { return std::make_unique<Joint>(); }});
  return r;
}
}  // namespace

const MethodRegistry& builtin_methods() {
  static const MethodRegistry registry = build();
  return registry;
}

}  // namespace strata::continual
