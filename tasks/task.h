#pragma once
// Tasks and task streams: the data every continual-learning run consumes.
//
// All data is held as contiguous tensors, loaded once; a batch is an index_select, never a
// per-sample copy.
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace strata::tasks {

/// van de Ven's three scenarios: what is known at test time.
enum class Scenario {
  kTaskIncremental,    ///< task id given: logits masked to the task's classes (train and test)
  kClassIncremental,   ///< one head over all classes seen so far (future logits masked)
  kDomainIncremental,  ///< same label space in every task, all logits used
};
std::string to_string(Scenario s);
/// "task" | "class" | "domain"; throws naming the bad value otherwise.
Scenario scenario_from_string(const std::string& s);

/// One split (train, val or test) of one task.
struct Split {
  torch::Tensor x;     ///< [N, C, H, W] float32, normalised
  torch::Tensor y;     ///< [N] int64, global class ids (permuted/rotated: 0..9 in every task)
  torch::Tensor ids;   ///< [N] int64, stable example id (index into the source data file)
  torch::Tensor task;  ///< [N] int64, index of the task each example belongs to (joint training mixes tasks)
  int64_t size() const { return y.defined() ? y.size(0) : 0; }
};

/// Concatenate splits (e.g. joint training on the union of tasks seen so far).
Split concat(const std::vector<const Split*>& splits);

struct Task {
  int64_t index = 0;             ///< position in the stream, 0-based
  std::string name;              ///< e.g. "perm3", "split1-classes-2-3", "rot45"
  Split train, val, test;
  std::vector<int64_t> classes;  ///< global class ids this task contains
};

struct TaskStream {
  std::string name;                  ///< e.g. "permuted-fmnist"
  Scenario scenario = Scenario::kDomainIncremental;
  int64_t num_classes = 10;          ///< size of the (single) output head
  std::vector<int64_t> input_shape;  ///< {C, H, W}
  std::vector<Task> tasks;

  int64_t size() const { return static_cast<int64_t>(tasks.size()); }
  /// [num_tasks, num_classes] bool: row t marks the logits allowed when an example of task t
  /// is trained or evaluated after training task `stage` (Task-IL: t's classes; Class-IL: every
  /// class of tasks 0..max(t, stage); Domain-IL: all). Index rows by Split::task for a batch mask.
  torch::Tensor logit_mask(int64_t stage) const;
};

}  // namespace strata::tasks
