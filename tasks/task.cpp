// Scenarios, split concatenation and per-scenario logit masks.
#include "tasks/task.h"

namespace strata::tasks {

std::string to_string(Scenario s) {
  switch (s) {
    case Scenario::kTaskIncremental: return "task";
    case Scenario::kClassIncremental: return "class";
    case Scenario::kDomainIncremental: return "domain";
  }
  TORCH_CHECK(false, "strata::tasks::to_string(): unknown Scenario value ", static_cast<int>(s));
}

Scenario scenario_from_string(const std::string& s) {
  if (s == "task") return Scenario::kTaskIncremental;
  if (s == "class") return Scenario::kClassIncremental;
  if (s == "domain") return Scenario::kDomainIncremental;
  TORCH_CHECK(false, "strata::tasks::scenario_from_string(): unknown scenario '", s,
              "' (expected one of: task, class, domain)");
}

Split concat(const std::vector<const Split*>& splits) {
  std::vector<torch::Tensor> xs, ys, ids, task;
  for (size_t i = 0; i < splits.size(); ++i) {
    const Split* s = splits[i];
    TORCH_CHECK(s != nullptr, "strata::tasks::concat(): split ", i, " is null");
    if (!s->y.defined()) continue;  // an empty, never-filled split contributes nothing
    TORCH_CHECK(s->x.defined() && s->ids.defined() && s->task.defined(), "strata::tasks::concat(): split ", i,
                " has y but is missing x, ids or task");
    TORCH_CHECK(s->x.size(0) == s->size() && s->ids.size(0) == s->size() && s->task.size(0) == s->size(),
                "strata::tasks::concat(): split ", i, " has inconsistent lengths: x ", s->x.sizes(), ", y ",
                s->y.sizes(), ", ids ", s->ids.sizes(), ", task ", s->task.sizes());
    if (!xs.empty())
      TORCH_CHECK(s->x.sizes().slice(1) == xs.front().sizes().slice(1), "strata::tasks::concat(): split ", i,
                  " has example shape ", s->x.sizes().slice(1), ", expected ", xs.front().sizes().slice(1));
    xs.push_back(s->x);
    ys.push_back(s->y);
    ids.push_back(s->ids);
    task.push_back(s->task);
  }
  Split out;
  if (xs.empty()) return out;
  if (xs.size() == 1) {
    // Tensors are shared, not copied; callers treat splits as read-only.
    out.x = xs[0];
    out.y = ys[0];
    out.ids = ids[0];
    out.task = task[0];
    return out;
  }
  out.x = torch::cat(xs);
  out.y = torch::cat(ys);
  out.ids = torch::cat(ids);
  out.task = torch::cat(task);
  return out;
}

torch::Tensor TaskStream::logit_mask(int64_t stage) const {
  TORCH_CHECK(stage >= 0 && stage < size(), "strata::tasks::TaskStream::logit_mask(): stage ", stage,
              " is out of range for a stream of ", size(), " tasks");
  TORCH_CHECK(num_classes > 0, "strata::tasks::TaskStream::logit_mask(): num_classes is ", num_classes);
  const int64_t n = size();
  auto mask = torch::zeros({n, num_classes}, torch::kBool);
  if (scenario == Scenario::kDomainIncremental) {
    mask.fill_(true);
    return mask;
  }
  auto acc = mask.accessor<bool, 2>();
  auto mark = [&](int64_t row, const Task& t) {
    for (int64_t c : t.classes) {
      TORCH_CHECK(c >= 0 && c < num_classes, "strata::tasks::TaskStream::logit_mask(): task ", t.index,
                  " has class ", c, " outside the head of ", num_classes, " classes");
      acc[row][c] = true;
    }
  };
  for (int64_t t = 0; t < n; ++t) {
    if (scenario == Scenario::kTaskIncremental) {
      mark(t, tasks[t]);
    } else {  // class-incremental: every class seen up to max(t, stage)
      const int64_t last = std::max(t, stage);
      for (int64_t s = 0; s <= last; ++s) mark(t, tasks[s]);
    }
  }
  return mask;
}

}  // namespace strata::tasks
