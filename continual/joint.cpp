#include "continual/joint.h"

namespace strata::continual {

tasks::Split Joint::training_data(TaskContext& ctx) {
  std::vector<const tasks::Split*> parts;
  for (int64_t t = 0; t <= ctx.task_index; ++t) parts.push_back(&ctx.stream->tasks.at(t).train);
  return tasks::concat(parts);
}

}  // namespace strata::continual
