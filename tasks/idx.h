#pragma once
// Reader for IDX files (LeCun's MNIST format), plain or gzip'd.
#include <torch/torch.h>

#include <string>

namespace strata::tasks {

/// Reads an IDX file with unsigned-byte data (type code 0x08), gzip'd or not.
/// Returns a contiguous uint8 tensor with the file's dimensions (e.g. [60000, 28, 28]).
/// Throws (c10::Error) naming the file and the problem: missing file, bad magic, unsupported
/// type, zero/absurd dimensions, truncated data or trailing garbage, gzip corruption.
torch::Tensor read_idx(const std::string& path);

struct FashionMnist {
  torch::Tensor train_images;  ///< [60000, 28, 28] uint8
  torch::Tensor train_labels;  ///< [60000] int64
  torch::Tensor test_images;   ///< [10000, 28, 28] uint8
  torch::Tensor test_labels;   ///< [10000] int64
};
/// Loads the four files from `dir` (train-images-idx3-ubyte.gz, ...) and checks they agree
/// (image/label counts, labels in 0..9). Cached per directory for the life of the process.
const FashionMnist& load_fashion_mnist(const std::string& dir);

}  // namespace strata::tasks
