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

 public:  // TORCH_ARG leaves the struct in a private section
  /// Throws (c10::Error) naming the bad option and its value. make_stream() calls it.
  void validate() const;
};

/// Build a stream. Throws (c10::Error) with a message naming the bad option or file.
TaskStream make_stream(const StreamOptions& options);
std::vector<std::string> stream_names();

// --- Building blocks of the streams, public so tests and tools can check them. ---

/// The pixel permutation of permuted-fmnist task `task` (int64 [num_pixels], a permutation of
/// 0..num_pixels-1). Task 0 is the identity (the usual convention: task 0 is plain Fashion-MNIST);
/// task t >= 1 is torch::randperm from a generator seeded by (seed, t), never the global RNG.
/// Task t's flattened images are x_flat.index_select(1, perm): output pixel j = input pixel perm[j].
torch::Tensor pixel_permutation(int64_t seed, int64_t task, int64_t num_pixels = 784);

/// The rotation (degrees) of every rotated-fmnist task: t * rotation_step if rotation_step > 0,
/// else t * 180 / num_tasks (evenly spread over [0, 180)).
std::vector<double> rotation_angles(const StreamOptions& options);

/// Rotates a batch of images [N, C, H, W] (float) by `degrees` about the image centre: bilinear
/// sampling, zero padding outside the source, one affine_grid + grid_sample for the whole batch.
/// Positive angles turn the image counter-clockwise as displayed (row 0 at the top).
torch::Tensor rotate_images(const torch::Tensor& images, double degrees);

}  // namespace strata::tasks
