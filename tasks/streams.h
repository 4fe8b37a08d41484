#pragma once
// Task streams: recipes (split / permuted / rotated / tasks) over a dataset (the built-in
// Fashion-MNIST or the user's HDF5 file), the built-in named streams, and a tiny synthetic stream.
#include "tasks/task.h"

#include <string>
#include <vector>

namespace strata::tasks {

/// Most tasks a stream may have (bounds the per-task tensors before anything is allocated).
constexpr int64_t kMaxTasks = 10000;
/// Most classes a dataset may have (logit masks are [tasks, classes]).
constexpr int64_t kMaxClasses = 100000;

struct StreamOptions {
  /// A built-in stream: "permuted-fmnist" | "split-fmnist" | "rotated-fmnist" | "synthetic"
  /// (the first three are the recipes below over dataset "fmnist"), or a recipe over `dataset`:
  ///   "split"    class-incremental splits: first_task_classes classes, then classes_per_task each,
  ///              in class_order; labels keep their dataset class ids;
  ///   "permuted" task t permutes the C*H*W input values by pixel_permutation(seed, t) (task 0: identity);
  ///   "rotated"  task t rotates images by rotation_angles()[t];
  ///   "tasks"    the file's own tasks: groups tasks/<k>/{train,test}/{x,y}, k = 0, 1, ...
  TORCH_ARG(std::string, name) = "permuted-fmnist";
  /// "fmnist" (the built-in Fashion-MNIST, read from data_dir) or the path of an HDF5 dataset
  /// (schema: see load_h5_dataset in tasks/dataset.h).
  TORCH_ARG(std::string, dataset) = "fmnist";
  /// Number of tasks, 1..kMaxTasks (split: as many as the classes allow; tasks: at most the file's).
  TORCH_ARG(int64_t, num_tasks) = 5;
  /// split: classes in each task after the first.
  TORCH_ARG(int64_t, classes_per_task) = 2;
  /// split: classes in the first task (0 = classes_per_task); "B50 Inc10" = 50 then 10 per task.
  TORCH_ARG(int64_t, first_task_classes) = 0;
  /// split: explicit class order (distinct dataset class ids); empty = see class_order_seed.
  TORCH_ARG(std::vector<int64_t>, class_order) = {};
  /// split without class_order: -1 = natural order 0..K-1, >= 0 = seeded shuffle of the K classes.
  TORCH_ARG(int64_t, class_order_seed) = -1;
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
/// The built-in stream names.
std::vector<std::string> stream_names();
/// The recipe names usable with any dataset: split, permuted, rotated, tasks.
std::vector<std::string> recipe_names();

/// The class order of a split stream over `num_classes` classes: class_order if given (checked
/// against num_classes), else 0..K-1 or a seeded shuffle (class_order_seed >= 0).
std::vector<int64_t> split_class_order(const StreamOptions& options, int64_t num_classes);

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
