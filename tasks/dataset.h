#pragma once
// Labelled datasets that task streams are cut from: the built-in Fashion-MNIST or the user's own
// HDF5 file.
//
// HDF5 schema (h5py writes it directly from numpy arrays):
//   /train/x   [N, C, H, W] or [N, D]; uint8 or float32
//   /train/y   [N], any integer dtype, class ids 0..K-1
//   /test/x, /test/y   the same for the test examples (same example shape)
//   root attributes (optional):
//     classes    list of K class names (then labels must be < K; else K = largest label + 1)
//     mean, std  one value per channel, uint8 data only: x = (v / 255 - mean[c]) / std[c]
// uint8 values are scaled to [0, 1] (and normalised when mean/std are given); float32 values are
// used as they are. [N, D] data is served as images [N, 1, 1, D].
// A "tasks" file holds its own tasks instead: /tasks/<k>/{train,test}/{x,y}, k = 0, 1, ...,
// with the same rules (and root attributes) for each; every task has the same example shape.
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "tasks/task.h"

namespace strata::tasks {

/// Bounds on an example's shape {C, H, W}, wherever it is read: each of channels, height and width
/// (or the D of [N, D] data) 1..kMaxExampleSide, and at most kMaxValuesPerExample values in all.
constexpr int64_t kMaxExampleSide = 65536;
constexpr int64_t kMaxValuesPerExample = int64_t(1) << 24;

/// The example shape {C, H, W} of a dataset of shape [N, C, H, W] or [N, D] ({1, 1, D}), checked
/// against the bounds above. Throws one c10::Error starting with `what` (the file and dataset)
/// naming the dataset's shape, the side ("height") and its value.
std::vector<int64_t> example_shape(const std::vector<int64_t>& dataset_shape, const std::string& what);

/// Train and test examples over classes 0..num_classes-1, kept once in memory.
struct Dataset {
  std::string name;  ///< "fmnist" or the file path
  std::shared_ptr<const InputSource> train, test;
  torch::Tensor train_y, test_y;         ///< [N] int64
  int64_t num_classes = 0;
  std::vector<std::string> class_names;  ///< empty, or num_classes names
};

/// Fashion-MNIST from the IDX files in `data_dir` (uint8, its usual normalisation constants).
/// The images are the process-wide cached tensors of load_fashion_mnist, not copies.
Dataset fashion_mnist_dataset(const std::string& data_dir);

/// Reads groups train and test of `path`. Every problem is one c10::Error naming the file, the
/// dataset and what is wrong: missing group or dataset, wrong rank, unsupported dtype, N
/// mismatch between x and y, empty split, NaN/Inf in float data, negative or out-of-range
/// label, mean/std length != C, example shapes that differ between splits.
Dataset load_h5_dataset(const std::string& path);

/// Reads the first `num_tasks` groups tasks/0, tasks/1, ... of `path` (same checks; num_classes
/// and class_names are the union over the tasks read). Throws when the file has fewer tasks.
std::vector<Dataset> load_h5_tasks(const std::string& path, int64_t num_tasks);

}  // namespace strata::tasks
