// The built-in task streams: permuted / split / rotated Fashion-MNIST and a synthetic stream.
#include "tasks/streams.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "tasks/idx.h"

namespace strata::tasks {
namespace {

// Fashion-MNIST training-set pixel statistics (after scaling to [0, 1]), the constants every
// reference pipeline (torchvision/Avalanche transforms) uses; fixed constants rather than
// per-subset statistics keep inputs identical across task subsets, limits and seeds.
constexpr double kFmnistMean = 0.2860;
constexpr double kFmnistStd = 0.3530;
constexpr int64_t kPixels = 28 * 28;

// Synthetic stream: examples per task (before the validation hold-out) and class-mean scale.
// With unit Gaussian noise in 64 dimensions, a class-mean scale of 0.35 gives a linear model
// about 90 % test accuracy on 4 classes (checked by tasks_stream_test's SyntheticIsLearnable).
constexpr int64_t kSynthTrain = 400;
constexpr int64_t kSynthTest = 200;
constexpr int64_t kSynthClasses = 4;
constexpr double kSynthMeanScale = 0.35;

// What a seeded generator is used for: separate streams of randomness, so that e.g. changing
// train_limit never changes a task's permutation.
enum class Purpose : uint64_t { kPermutation = 1, kTrainSubset = 2, kTestSubset = 3, kSynthetic = 4 };

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

at::Generator make_gen(int64_t seed, int64_t task, Purpose purpose) {
  uint64_t s = splitmix64(static_cast<uint64_t>(seed));
  s = splitmix64(s ^ static_cast<uint64_t>(task));
  s = splitmix64(s ^ static_cast<uint64_t>(purpose));
  return at::detail::createCPUGenerator(s);
}

const std::vector<std::string>& names() {
  static const std::vector<std::string> n = {"permuted-fmnist", "split-fmnist", "rotated-fmnist", "synthetic"};
  return n;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
  return s;
}

Scenario default_scenario(const std::string& name) {
  return name == "split-fmnist" ? Scenario::kTaskIncremental : Scenario::kDomainIncremental;
}

struct Indices {
  torch::Tensor train, val, test;  // int64, sorted, into the source's train / test examples
};

// Seeded subsets of one task's candidate examples: at most train_limit training-pool examples
// (train + val together), of which floor(val_fraction * n) become validation; at most test_limit
// test examples. Sorted, so gathers walk the source memory in order.
Indices choose(const torch::Tensor& train_cand, const torch::Tensor& test_cand, int64_t task,
               const StreamOptions& o) {
  Indices out;
  const int64_t n_pool = train_cand.size(0);
  const int64_t n = o.train_limit() > 0 ? std::min(o.train_limit(), n_pool) : n_pool;
  const int64_t n_val = static_cast<int64_t>(std::floor(o.val_fraction() * static_cast<double>(n)));
  TORCH_CHECK(n - n_val > 0, "strata::tasks::make_stream(): task ", task, " of ", o.name(),
              " has no training examples left (pool ", n_pool, ", train_limit ", o.train_limit(),
              ", val_fraction ", o.val_fraction(), ")");
  auto perm = torch::randperm(n_pool, make_gen(o.seed(), task, Purpose::kTrainSubset), torch::kInt64);
  out.val = std::get<0>(train_cand.index_select(0, perm.slice(0, 0, n_val)).sort());
  out.train = std::get<0>(train_cand.index_select(0, perm.slice(0, n_val, n)).sort());
  const int64_t n_test_pool = test_cand.size(0);
  if (o.test_limit() > 0 && o.test_limit() < n_test_pool) {
    auto tperm = torch::randperm(n_test_pool, make_gen(o.seed(), task, Purpose::kTestSubset), torch::kInt64);
    out.test = std::get<0>(test_cand.index_select(0, tperm.slice(0, 0, o.test_limit())).sort());
  } else {
    out.test = test_cand;
  }
  return out;
}

// Fused gather + pixel permutation + scaling + normalisation: out[i, j] = lut[src[rows[i], perm[j]]]
// with lut[v] = (v / 255 - mean) / std. One pass that writes each output float once; the
// unfused tensor chain (row gather, column gather, convert, scale, shift, divide) made several
// passes over a 170 MB task and dominated the stream build time.
torch::Tensor gather_normalised(const torch::Tensor& src_flat, const torch::Tensor& rows, const torch::Tensor& perm) {
  TORCH_CHECK(src_flat.scalar_type() == torch::kUInt8 && src_flat.dim() == 2 && src_flat.is_contiguous(),
              "strata::tasks::gather_normalised(): expected contiguous uint8 [N, P], got ", src_flat.sizes());
  const int64_t n = rows.size(0), p = src_flat.size(1), n_src = src_flat.size(0);
  float lut[256];
  for (int v = 0; v < 256; ++v) lut[v] = static_cast<float>((v / 255.0 - kFmnistMean) / kFmnistStd);
  auto rows_c = rows.contiguous();
  const int64_t* r = rows_c.data_ptr<int64_t>();
  const int64_t min_row = n ? rows_c.min().item<int64_t>() : 0, max_row = n ? rows_c.max().item<int64_t>() : 0;
  TORCH_CHECK(min_row >= 0 && max_row < n_src, "strata::tasks::gather_normalised(): row index out of range");
  torch::Tensor perm_c;
  const int64_t* pm = nullptr;
  if (perm.defined()) {
    perm_c = perm.contiguous();
    TORCH_CHECK(perm_c.numel() == p, "strata::tasks::gather_normalised(): permutation has ", perm_c.numel(),
                " entries for ", p, " pixels");
    pm = perm_c.data_ptr<int64_t>();
  }
  auto out = torch::empty({n, p}, torch::kFloat32);
  const uint8_t* src = src_flat.data_ptr<uint8_t>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const uint8_t* s = src + r[i] * p;
      float* d = dst + i * p;
      if (pm) {
        for (int64_t j = 0; j < p; ++j) d[j] = lut[s[pm[j]]];
      } else {
        for (int64_t j = 0; j < p; ++j) d[j] = lut[s[j]];
      }
    }
  });
  return out;
}

// One task's input transform.
struct FmnistTransform {
  torch::Tensor perm;    // defined: permute pixels
  double degrees = 0.0;  // != 0: rotate
  torch::Tensor apply(const torch::Tensor& src_flat, const torch::Tensor& rows) const {
    if (degrees == 0.0) return gather_normalised(src_flat, rows, perm).view({-1, 1, 28, 28});
    // Rotate in [0, 1] before normalising: zero padding then means black background, as in the
    // raw image.
    auto x = src_flat.index_select(0, rows).to(torch::kFloat32).mul_(1.0 / 255.0).view({-1, 1, 28, 28});
    return rotate_images(x, degrees).sub_(kFmnistMean).div_(kFmnistStd).contiguous();
  }
};

Split fmnist_split(const torch::Tensor& images_flat, const torch::Tensor& labels, const torch::Tensor& idx,
                   int64_t task, const FmnistTransform& tf) {
  Split s;
  s.x = tf.apply(images_flat, idx);
  s.y = labels.index_select(0, idx);
  s.ids = idx.contiguous();
  s.task = torch::full({idx.size(0)}, task, torch::kInt64);
  return s;
}

std::string format_angle(double deg) {
  std::ostringstream os;
  os << deg;
  return os.str();
}

TaskStream make_fmnist(const StreamOptions& o, Scenario scenario) {
  const FashionMnist& data = load_fashion_mnist(o.data_dir());
  const torch::Tensor train_flat = data.train_images.view({-1, kPixels});
  const torch::Tensor test_flat = data.test_images.view({-1, kPixels});
  const int64_t n_train = train_flat.size(0), n_test = test_flat.size(0);
  const auto all_train = torch::arange(n_train, torch::kInt64);
  const auto all_test = torch::arange(n_test, torch::kInt64);

  TaskStream st;
  st.name = o.name();
  st.scenario = scenario;
  st.input_shape = {1, 28, 28};
  st.num_classes = 10;
  const std::vector<double> angles = o.name() == "rotated-fmnist" ? rotation_angles(o) : std::vector<double>{};
  for (int64_t t = 0; t < o.num_tasks(); ++t) {
    Task task;
    task.index = t;
    FmnistTransform tf;
    torch::Tensor train_cand = all_train, test_cand = all_test;
    if (o.name() == "permuted-fmnist") {
      task.name = "perm" + std::to_string(t);
      tf.perm = t == 0 ? torch::Tensor() : pixel_permutation(o.seed(), t, kPixels);  // task 0: identity
      task.classes = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    } else if (o.name() == "rotated-fmnist") {
      tf.degrees = angles[t];
      task.name = "rot" + format_angle(angles[t]);
      task.classes = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    } else {  // split-fmnist: classes {2t, 2t+1}, global ids kept
      const int64_t a = 2 * t, b = 2 * t + 1;
      task.name = "split" + std::to_string(t) + "-classes-" + std::to_string(a) + "-" + std::to_string(b);
      task.classes = {a, b};
      train_cand = torch::nonzero(data.train_labels.eq(a).logical_or_(data.train_labels.eq(b))).view(-1);
      test_cand = torch::nonzero(data.test_labels.eq(a).logical_or_(data.test_labels.eq(b))).view(-1);
    }
    const Indices idx = choose(train_cand, test_cand, t, o);
    task.train = fmnist_split(train_flat, data.train_labels, idx.train, t, tf);
    task.val = fmnist_split(train_flat, data.train_labels, idx.val, t, tf);
    task.test = fmnist_split(test_flat, data.test_labels, idx.test, t, tf);
    st.tasks.push_back(std::move(task));
  }
  if (o.name() == "split-fmnist") st.num_classes = 2 * o.num_tasks();
  return st;
}

TaskStream make_synthetic(const StreamOptions& o, Scenario scenario) {
  TaskStream st;
  st.name = o.name();
  st.scenario = scenario;
  st.input_shape = {1, 8, 8};
  const bool shared_labels = scenario == Scenario::kDomainIncremental;
  // Domain-IL: the same 4 labels in every task. Task-/Class-IL: task t owns classes {2t, 2t+1}.
  const int64_t k = shared_labels ? kSynthClasses : 2;
  st.num_classes = shared_labels ? kSynthClasses : 2 * o.num_tasks();
  const int64_t dim = 64;
  for (int64_t t = 0; t < o.num_tasks(); ++t) {
    Task task;
    task.index = t;
    task.name = "synth" + std::to_string(t);
    for (int64_t c = 0; c < k; ++c) task.classes.push_back(shared_labels ? c : 2 * t + c);
    auto gen = make_gen(o.seed(), t, Purpose::kSynthetic);
    auto means = torch::randn({k, dim}, gen, torch::kFloat32).mul_(kSynthMeanScale);
    auto classes = torch::tensor(task.classes, torch::kInt64);
    // Balanced labels in a seeded order; x = class mean + unit Gaussian noise.
    auto sample = [&](int64_t n, torch::Tensor& x, torch::Tensor& y) {
      auto local = torch::arange(n, torch::kInt64).remainder_(k);
      local = local.index_select(0, torch::randperm(n, gen, torch::kInt64));
      x = means.index_select(0, local).add_(torch::randn({n, dim}, gen, torch::kFloat32)).view({n, 1, 8, 8});
      y = classes.index_select(0, local);
    };
    torch::Tensor xtr, ytr, xte, yte;
    sample(kSynthTrain, xtr, ytr);
    sample(kSynthTest, xte, yte);
    const Indices idx = choose(torch::arange(kSynthTrain, torch::kInt64), torch::arange(kSynthTest, torch::kInt64),
                               t, o);
    auto fill = [&](const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& ids) {
      Split s;
      s.x = x.index_select(0, ids).contiguous();
      s.y = y.index_select(0, ids);
      s.ids = ids.contiguous();
      s.task = torch::full({ids.size(0)}, t, torch::kInt64);
      return s;
    };
    task.train = fill(xtr, ytr, idx.train);
    task.val = fill(xtr, ytr, idx.val);
    task.test = fill(xte, yte, idx.test);
    st.tasks.push_back(std::move(task));
  }
  return st;
}

}  // namespace

std::vector<std::string> stream_names() { return names(); }

void StreamOptions::validate() const {
  const auto& n = names();
  TORCH_CHECK(std::find(n.begin(), n.end(), name()) != n.end(), "strata::tasks::StreamOptions::validate(): unknown stream name '",
              name(), "' (valid: ", join(n), ")");
  TORCH_CHECK(num_tasks() > 0, "strata::tasks::StreamOptions::validate(): num_tasks must be >= 1, got ", num_tasks());
  TORCH_CHECK(name() != "split-fmnist" || num_tasks() <= 5,
              "strata::tasks::StreamOptions::validate(): split-fmnist has at most 5 tasks (10 classes, 2 per task), "
              "got num_tasks ", num_tasks());
  TORCH_CHECK(std::isfinite(val_fraction()) && val_fraction() >= 0.0 && val_fraction() <= 0.5,
              "strata::tasks::StreamOptions::validate(): val_fraction must be in [0, 0.5], got ", val_fraction());
  TORCH_CHECK(train_limit() >= 0, "strata::tasks::StreamOptions::validate(): train_limit must be >= 0 (0 = no limit), got ",
              train_limit());
  TORCH_CHECK(test_limit() >= 0, "strata::tasks::StreamOptions::validate(): test_limit must be >= 0 (0 = no limit), got ",
              test_limit());
  TORCH_CHECK(std::isfinite(rotation_step()) && rotation_step() >= 0.0,
              "strata::tasks::StreamOptions::validate(): rotation_step must be >= 0 (0 = spread over [0, 180)), got ",
              rotation_step());
  if (!scenario().empty()) {
    const Scenario s = scenario_from_string(scenario());  // throws naming the bad value
    // Permuted/rotated tasks share labels 0..9, so task masks equal the full head and Class-IL
    // "classes seen so far" is all classes from task 0: only Domain-IL is meaningful. Split tasks
    // keep global class ids, so Domain-IL (relabelling to 0/1) is not offered.
    const bool shared = name() == "permuted-fmnist" || name() == "rotated-fmnist";
    TORCH_CHECK(!shared || s == Scenario::kDomainIncremental, "strata::tasks::StreamOptions::validate(): scenario '",
                scenario(), "' is not supported by ", name(), " (its tasks share labels 0..9): use 'domain'");
    TORCH_CHECK(name() != "split-fmnist" || s != Scenario::kDomainIncremental,
                "strata::tasks::StreamOptions::validate(): scenario 'domain' is not supported by split-fmnist "
                "(tasks keep global class ids): use 'task' or 'class'");
  }
  if (name() != "synthetic")
    TORCH_CHECK(!data_dir().empty(), "strata::tasks::StreamOptions::validate(): data_dir is empty");
}

TaskStream make_stream(const StreamOptions& options) {
  options.validate();
  torch::NoGradGuard no_grad;
  const Scenario scenario =
      options.scenario().empty() ? default_scenario(options.name()) : scenario_from_string(options.scenario());
  if (options.name() == "synthetic") return make_synthetic(options, scenario);
  return make_fmnist(options, scenario);
}

torch::Tensor pixel_permutation(int64_t seed, int64_t task, int64_t num_pixels) {
  TORCH_CHECK(task >= 0, "strata::tasks::pixel_permutation(): task must be >= 0, got ", task);
  TORCH_CHECK(num_pixels > 0, "strata::tasks::pixel_permutation(): num_pixels must be > 0, got ", num_pixels);
  if (task == 0) return torch::arange(num_pixels, torch::kInt64);
  return torch::randperm(num_pixels, make_gen(seed, task, Purpose::kPermutation), torch::kInt64);
}

std::vector<double> rotation_angles(const StreamOptions& o) {
  TORCH_CHECK(o.num_tasks() > 0, "strata::tasks::rotation_angles(): num_tasks must be >= 1, got ", o.num_tasks());
  std::vector<double> a(o.num_tasks());
  const double step = o.rotation_step() > 0 ? o.rotation_step() : 180.0 / static_cast<double>(o.num_tasks());
  for (int64_t t = 0; t < o.num_tasks(); ++t) a[t] = static_cast<double>(t) * step;
  return a;
}

torch::Tensor rotate_images(const torch::Tensor& images, double degrees) {
  TORCH_CHECK(images.dim() == 4, "strata::tasks::rotate_images(): images must be [N, C, H, W], got ", images.sizes());
  TORCH_CHECK(images.is_floating_point(), "strata::tasks::rotate_images(): images must be floating point, got ",
              images.scalar_type());
  if (degrees == 0.0 || images.numel() == 0) return images;
  torch::NoGradGuard no_grad;
  const int64_t n = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3);
  const double r = degrees * M_PI / 180.0, cs = std::cos(r), sn = std::sin(r);
  // theta maps output (x, y) to the input location sampled, in normalised coordinates (y down):
  // sampling at R(theta) of the output turns the picture counter-clockwise as displayed.
  auto theta = torch::tensor({cs, -sn, 0.0, sn, cs, 0.0}, torch::TensorOptions().dtype(images.scalar_type()))
                   .view({1, 2, 3});
  // One grid for the whole batch: fold the batch into channels ([1, N*C, H, W]) so the grid
  // is [1, H, W, 2] instead of N copies.
  auto grid = torch::nn::functional::affine_grid(theta, {1, n * c, h, w}, /*align_corners=*/false);
  auto out = torch::nn::functional::grid_sample(
      images.reshape({1, n * c, h, w}), grid,
      torch::nn::functional::GridSampleFuncOptions().mode(torch::kBilinear).padding_mode(torch::kZeros).align_corners(false));
  return out.view({n, c, h, w});
}

}  // namespace strata::tasks
