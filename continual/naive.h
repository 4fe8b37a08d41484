#pragma once
// `naive`: plain fine-tuning on each task in turn (the lower bound: no protection against forgetting).
#include "continual/method.h"

namespace strata::continual {

class Naive : public Method {
 public:
  std::string name() const override { return "naive"; }
};

}  // namespace strata::continual
