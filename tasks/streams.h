#pragma once
// Built-in task streams over Fashion-MNIST, plus a tiny synthetic stream for tests.
#include "tasks/task.h"

#include <string>
#include <vector>

namespace strata::tasks {

struct StreamOptions {
  /// "permuted-fmnist" | "split-fmnist" | "rotated-fmnist" | "synthetic"
  TORCH_ARG(std::string, name) = "permuted-fmnist";
  /// Number of tasks (split-fmnist: 1..5; others >= 1).
  TORCH_ARG(int64_t, num_tasks) = 5;
  /// Seeds permutations, rotations' data subsampling, validation split and synthetic data.
  TORCH_ARG(int64_t, seed) = 0;
  /// Fraction of each task's training set held out as its validation split, in [0, 0.5].
  TORCH_ARG(double, val_fraction) = 0.1;
  /// If > 0, keep at most this many training (and validation) examples per task (seeded subset).
  TORCH_ARG(int64_t, train_limit) = 0;
  /// If > 0, keep at most this many test examples per task (seeded subset).
  TORCH_ARG(int64_t, test_limit) = 0;
  /// Scenario: "" = the stream's default (split-fmnist: task; permuted/rotated: domain; synthetic: domain).
  TORCH_ARG(std::string, scenario) = "";
  /// Folder holding the four gzip'd IDX files of Fashion-MNIST.
  TORCH_ARG(std::string, data_dir) = "/usr/share/datasets/fashion-mnist";
  /// rotated-fmnist: degrees between consecutive tasks (task t is rotated by t * step).
  TORCH_ARG(double, rotation_step) = 0.0;  // 0 = spread tasks evenly over [0, 180)

  void validate() const;
};

/// Build a stream. Throws (c10::Error) with a message naming the bad option or file.
TaskStream make_stream(const StreamOptions& options);
std::vector<std::string> stream_names();

}  // namespace strata::tasks
