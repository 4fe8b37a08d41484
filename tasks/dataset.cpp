// Datasets: Fashion-MNIST from its IDX files, user datasets from HDF5.
#include "tasks/dataset.h"

#include <algorithm>
#include <sstream>

#include "core/h5.h"
#include "tasks/idx.h"
#include "tasks/streams.h"

namespace strata::tasks {
namespace {

// Fashion-MNIST training-set pixel statistics (after scaling to [0, 1]), the constants every
// reference pipeline (torchvision/Avalanche transforms) uses; fixed constants rather than
// per-subset statistics keep inputs identical across task subsets, limits and seeds.
constexpr double kFmnistMean = 0.2860;
constexpr double kFmnistStd = 0.3530;

// Refuse absurd sizes from a file header before allocating.
constexpr int64_t kMaxExamples = int64_t(1) << 31;
constexpr int64_t kMaxBytes = int64_t(1) << 36;  // 64 GiB

std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream o;
  o << c10::IntArrayRef(s);
  return o.str();
}

// Root attributes that apply to every split of a file.
struct FileAttrs {
  std::vector<std::string> classes;  // empty = not given
  std::vector<double> mean, std;     // empty = not given
};

FileAttrs read_attrs(H5::H5File& f, const std::string& path) {
  FileAttrs a;
  const bool has_mean = core::has_attr(f, "mean"), has_std = core::has_attr(f, "std");
  TORCH_CHECK(has_mean == has_std, "strata::tasks::load_h5_dataset(): '", path, "': root attribute '",
              has_mean ? "mean" : "std", "' is given without '", has_mean ? "std" : "mean", "'");
  if (has_mean) {
    a.mean = core::get_attr_doubles(f, "mean");
    a.std = core::get_attr_doubles(f, "std");
    TORCH_CHECK(a.mean.size() == a.std.size(), "strata::tasks::load_h5_dataset(): '", path,
                "': root attributes 'mean' and 'std' have ", a.mean.size(), " and ", a.std.size(),
                " values (expected one per channel each)");
    for (size_t c = 0; c < a.std.size(); ++c)
      TORCH_CHECK(std::isfinite(a.mean[c]) && std::isfinite(a.std[c]) && a.std[c] > 0,
                  "strata::tasks::load_h5_dataset(): '", path, "': root attributes mean/std for channel ", c, " are ",
                  a.mean[c], "/", a.std[c], " (std must be finite and > 0)");
  }
  if (core::has_attr(f, "classes")) {
    a.classes = core::get_attr_strings(f, "classes");
    TORCH_CHECK(!a.classes.empty() && static_cast<int64_t>(a.classes.size()) <= kMaxClasses,
                "strata::tasks::load_h5_dataset(): '", path, "': root attribute 'classes' has ", a.classes.size(),
                " names (expected 1..", kMaxClasses, ")");
  }
  return a;
}

struct RawSplit {
  std::shared_ptr<const InputSource> source;
  torch::Tensor y;  // int64
};

// Reads and checks <group>/x and <group>/y.
RawSplit read_split(H5::H5File& f, const std::string& path, const std::string& group, const FileAttrs& attrs) {
  const std::string fn = "strata::tasks::load_h5_dataset(): '" + path + "': ";
  TORCH_CHECK(core::is_group(f, group), fn, "missing group '", group, "'");
  const std::string xp = group + "/x", yp = group + "/y";
  TORCH_CHECK(core::exists(f, xp), fn, "missing dataset '", xp, "'");
  TORCH_CHECK(core::exists(f, yp), fn, "missing dataset '", yp, "'");
  const core::DatasetInfo xi = core::dataset_info(f, xp), yi = core::dataset_info(f, yp);
  TORCH_CHECK(xi.dtype == torch::kUInt8 || xi.dtype == torch::kFloat32, fn, "dataset '", xp, "': unsupported dtype ",
              xi.type_name, " (expected uint8 or float32)");
  const std::vector<int64_t> shape = example_shape(xi.shape, fn + "dataset '" + xp + "'");
  TORCH_CHECK(yi.dtype && (*yi.dtype == torch::kUInt8 || *yi.dtype == torch::kInt32 || *yi.dtype == torch::kInt64) &&
                  yi.type_name != "bool",
              fn, "dataset '", yp, "': unsupported dtype ", yi.type_name, " (labels must be integers)");
  TORCH_CHECK(yi.shape.size() == 1, fn, "dataset '", yp, "': wrong rank ", yi.shape.size(), " (shape ",
              shape_str(yi.shape), "; expected [N])");
  const int64_t n = xi.shape[0];
  TORCH_CHECK(n > 0, fn, "dataset '", xp, "': empty split (no examples)");
  TORCH_CHECK(yi.shape[0] == n, fn, "N mismatch: '", xp, "' has ", n, " examples but '", yp, "' has ", yi.shape[0]);
  const int64_t p = shape[0] * shape[1] * shape[2];
  const int64_t elem = xi.dtype == torch::kUInt8 ? 1 : 4;
  TORCH_CHECK(n <= kMaxExamples && n * p * elem <= kMaxBytes, fn, "dataset '", xp, "': ", shape_str(xi.shape),
              " is too large to load (limit ", kMaxBytes >> 30, " GiB)");
  const bool is_u8 = xi.dtype == torch::kUInt8;
  if (is_u8 && !attrs.mean.empty())
    TORCH_CHECK(static_cast<int64_t>(attrs.mean.size()) == shape[0], fn, "root attributes mean/std have ",
                attrs.mean.size(), " values but dataset '", xp, "' has ", shape[0], " channels");

  torch::Tensor x = core::read_tensor(f, xp);
  if (!is_u8) {
    const auto bad = torch::isfinite(x).logical_not_().view({n, -1}).any(1);
    if (bad.any().item<bool>()) {
      const int64_t i = bad.nonzero()[0][0].item<int64_t>();
      TORCH_CHECK(false, fn, "dataset '", xp, "': NaN or Inf in float data (first at example ", i, ")");
    }
  }
  torch::Tensor y = core::read_tensor(f, yp).to(torch::kInt64).contiguous();
  const int64_t lo = y.min().item<int64_t>(), hi = y.max().item<int64_t>();
  if (lo < 0) {
    const int64_t i = y.lt(0).nonzero()[0][0].item<int64_t>();
    TORCH_CHECK(false, fn, "dataset '", yp, "': negative label ", lo, " (first at example ", i, ")");
  }
  const int64_t k = attrs.classes.empty() ? kMaxClasses : static_cast<int64_t>(attrs.classes.size());
  if (hi >= k) {
    const int64_t i = y.ge(k).nonzero()[0][0].item<int64_t>();
    TORCH_CHECK(false, fn, "dataset '", yp, "': label ", hi, " out of range (first at example ", i, "; ",
                attrs.classes.empty() ? "at most " + std::to_string(kMaxClasses) + " classes"
                                      : "root attribute 'classes' names " + std::to_string(k) + " classes",
                ")");
  }
  auto src = std::make_shared<InputSource>();
  src->data = x.reshape({n, p}).contiguous();
  src->shape = shape;
  if (is_u8) {
    src->mean = attrs.mean;
    src->std = attrs.std;
  }
  src->validate(fn + "dataset '" + xp + "'");
  return {std::move(src), std::move(y)};
}

Dataset read_pair(H5::H5File& f, const std::string& path, const std::string& prefix, const FileAttrs& attrs) {
  RawSplit tr = read_split(f, path, prefix + "train", attrs);
  RawSplit te = read_split(f, path, prefix + "test", attrs);
  TORCH_CHECK(tr.source->shape == te.source->shape, "strata::tasks::load_h5_dataset(): '", path, "': '", prefix,
              "train/x' has examples of shape ", shape_str(tr.source->shape), " but '", prefix, "test/x' has ",
              shape_str(te.source->shape));
  TORCH_CHECK(tr.source->data.scalar_type() == te.source->data.scalar_type(), "strata::tasks::load_h5_dataset(): '",
              path, "': '", prefix, "train/x' is ", tr.source->data.scalar_type(), " but '", prefix, "test/x' is ",
              te.source->data.scalar_type());
  Dataset d;
  d.name = path;
  d.train = std::move(tr.source);
  d.test = std::move(te.source);
  d.train_y = std::move(tr.y);
  d.test_y = std::move(te.y);
  d.class_names = attrs.classes;
  d.num_classes = attrs.classes.empty()
                      ? std::max(d.train_y.max().item<int64_t>(), d.test_y.max().item<int64_t>()) + 1
                      : static_cast<int64_t>(attrs.classes.size());
  return d;
}

}  // namespace

std::vector<int64_t> example_shape(const std::vector<int64_t>& dataset_shape, const std::string& what) {
  const size_t rank = dataset_shape.size();
  TORCH_CHECK(rank == 4 || rank == 2, what, ": wrong rank ", rank, " (shape ", shape_str(dataset_shape),
              "; expected [N, C, H, W] or [N, D])");
  static const char* const kSides[] = {"channels", "height", "width"};
  int64_t values = 1;
  for (size_t i = 1; i < rank; ++i) {
    const int64_t d = dataset_shape[i];
    const char* side = rank == 2 ? "D (values per example)" : kSides[i - 1];
    TORCH_CHECK(d >= 1 && d <= kMaxExampleSide, what, ": shape ", shape_str(dataset_shape), ": ", side, " ", d,
                " is out of range 1..", kMaxExampleSide);
    values *= d;  // <= 65536^3: no overflow
  }
  TORCH_CHECK(values <= kMaxValuesPerExample, what, ": shape ", shape_str(dataset_shape), ": examples of ", values,
              " values are too large (at most ", kMaxValuesPerExample, " = C x H x W)");
  if (rank == 2) return {1, 1, dataset_shape[1]};
  return {dataset_shape[1], dataset_shape[2], dataset_shape[3]};
}

Dataset fashion_mnist_dataset(const std::string& data_dir) {
  const FashionMnist& data = load_fashion_mnist(data_dir);
  auto source = [](const torch::Tensor& images) {
    auto s = std::make_shared<InputSource>();
    s->data = images.view({images.size(0), -1});  // a view of the cached tensor: no copy
    s->shape = {1, images.size(1), images.size(2)};
    s->mean = {kFmnistMean};
    s->std = {kFmnistStd};
    return std::shared_ptr<const InputSource>(std::move(s));
  };
  Dataset d;
  d.name = "fmnist";
  d.train = source(data.train_images);
  d.test = source(data.test_images);
  d.train_y = data.train_labels;
  d.test_y = data.test_labels;
  d.num_classes = 10;
  d.class_names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return d;
}

Dataset load_h5_dataset(const std::string& path) {
  H5::H5File f = core::open_file(path, core::FileMode::kRead);
  const FileAttrs attrs = read_attrs(f, path);
  return read_pair(f, path, "", attrs);
}

std::vector<Dataset> load_h5_tasks(const std::string& path, int64_t num_tasks) {
  TORCH_CHECK(num_tasks >= 1 && num_tasks <= kMaxTasks, "strata::tasks::load_h5_tasks(): num_tasks must be in 1..",
              kMaxTasks, ", got ", num_tasks);
  H5::H5File f = core::open_file(path, core::FileMode::kRead);
  const FileAttrs attrs = read_attrs(f, path);
  TORCH_CHECK(core::is_group(f, "tasks") && core::exists(f, "tasks"), "strata::tasks::load_h5_tasks(): '", path,
              "': missing group 'tasks' (the tasks recipe reads tasks/0, tasks/1, ...)");
  int64_t available = 0;
  while (available < num_tasks && core::is_group(f, "tasks/" + std::to_string(available))) ++available;
  TORCH_CHECK(available == num_tasks, "strata::tasks::load_h5_tasks(): '", path, "': ", num_tasks,
              " tasks asked for but the file has ", available, " (missing group 'tasks/", available, "')");
  std::vector<Dataset> out;
  int64_t k = 0;
  for (int64_t t = 0; t < num_tasks; ++t) {
    out.push_back(read_pair(f, path, "tasks/" + std::to_string(t) + "/", attrs));
    TORCH_CHECK(out.back().train->shape == out.front().train->shape, "strata::tasks::load_h5_tasks(): '", path,
                "': 'tasks/", t, "/train/x' has examples of shape ", shape_str(out.back().train->shape),
                " but 'tasks/0/train/x' has ", shape_str(out.front().train->shape));
    k = std::max(k, out.back().num_classes);
  }
  for (auto& d : out) d.num_classes = k;
  return out;
}

}  // namespace strata::tasks
