#pragma once
// `joint`: at task t, trains on the union of the training sets of tasks 0..t (the upper bound).
// Each example keeps its own task's logit mask, so Task-IL joint training stays correct.
#include "continual/method.h"

namespace strata::continual {

class Joint : public Method {
 public:
  std::string name() const override { return "joint"; }
  tasks::Split training_data(TaskContext& ctx) override;
};

}  // namespace strata::continual
