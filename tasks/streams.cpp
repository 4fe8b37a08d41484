// The built-in task streams: permuted / split / rotated Fashion-MNIST and a synthetic stream.
#include "tasks/streams.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "tasks/dataset.h"
#include "tasks/idx.h"

namespace strata::tasks {
namespace {


// Synthetic stream: examples per task (before the validation hold-out) and class-mean scale.
// With unit Gaussian noise in 64 dimensions, a class-mean scale of 0.35 gives a linear model
// about 90 % test accuracy on 4 classes (checked by tasks_stream_test's SyntheticIsLearnable).
constexpr int64_t kSynthTrain = 400;
constexpr int64_t kSynthTest = 200;
constexpr int64_t kSynthClasses = 4;
constexpr double kSynthMeanScale = 0.35;

// What a seeded generator is used for: separate streams of randomness, so that e.g. changing
// train_limit never changes a task's permutation.
enum class Purpose : uint64_t { kPermutation = 1, kTrainSubset = 2, kTestSubset = 3, kSynthetic = 4, kClassOrder = 5 };

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
const std::vector<std::string>& recipes() {
  static const std::vector<std::string> n = {"split", "permuted", "rotated", "tasks"};
  return n;
}

// The recipe behind a stream name ("" for synthetic).
std::string recipe_of(const std::string& name) {
  if (name == "permuted-fmnist") return "permuted";
  if (name == "split-fmnist") return "split";
  if (name == "rotated-fmnist") return "rotated";
  if (name == "synthetic") return "";
  return name;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
  return s;
}

Scenario default_scenario(const std::string& name) {
  return recipe_of(name) == "split" ? Scenario::kTaskIncremental : Scenario::kDomainIncremental;
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

// A lazy split: `idx` rows of `source` under `tf`; ids share the row tensor, and the task column
// is a broadcast scalar (no per-example storage).
Split lazy_split(const std::shared_ptr<const InputSource>& source, const torch::Tensor& labels, const torch::Tensor& idx,
                 int64_t task, const InputTransform& tf) {
  Split s;
  s.ids = idx.contiguous();
  s.x = Inputs(source, s.ids, tf);
  // A split of every source example in order (the test split of permuted/rotated tasks) shares
  // the label tensor instead of copying it per task.
  const bool all_rows = s.ids.size(0) == labels.size(0) && s.ids.size(0) > 0 &&
                        torch::equal(s.ids, torch::arange(labels.size(0), torch::kInt64));
  s.y = all_rows ? labels : labels.index_select(0, s.ids);
  s.task = torch::full({1}, task, torch::kInt64).expand({s.ids.size(0)});
  return s;
}

std::string format_angle(double deg) {
  std::ostringstream os;
  os << deg;
  return os.str();
}

std::string split_task_name(int64_t t, const std::vector<int64_t>& classes) {
  std::string n = "split" + std::to_string(t);
  if (classes.size() > 4) return n + "-" + std::to_string(classes.size()) + "classes";
  n += "-classes";
  for (int64_t c : classes) n += "-" + std::to_string(c);
  return n;
}

std::vector<int64_t> all_classes(int64_t k) {
  std::vector<int64_t> v(static_cast<size_t>(k));
  for (int64_t c = 0; c < k; ++c) v[c] = c;
  return v;
}

// How many classes a split stream's tasks use in total.
int64_t split_classes_needed(const StreamOptions& o) {
  const int64_t first = o.first_task_classes() > 0 ? o.first_task_classes() : o.classes_per_task();
  return first + (o.num_tasks() - 1) * o.classes_per_task();
}

torch::Tensor rows_of_classes(const torch::Tensor& labels, const std::vector<int64_t>& classes) {
  auto mask = labels.eq(classes.at(0));
  for (size_t i = 1; i < classes.size(); ++i) mask.logical_or_(labels.eq(classes[i]));
  return torch::nonzero(mask).view(-1);
}

// split / permuted / rotated over one dataset.
TaskStream make_recipe(const StreamOptions& o, const std::string& recipe, const Dataset& d, Scenario scenario) {
  const auto& shape = d.train->shape;
  const int64_t p = d.train->data.size(1);
  TORCH_CHECK(recipe != "rotated" || (shape[1] > 1 && shape[2] > 1), "strata::tasks::make_stream(): ", o.name(),
              " rotates images, but dataset '", d.name, "' has examples of shape ", c10::IntArrayRef(shape),
              " ([N, D] vectors cannot be rotated)");
  const auto all_train = torch::arange(d.train->size(), torch::kInt64);
  const auto all_test = torch::arange(d.test->size(), torch::kInt64);

  TaskStream st;
  st.name = o.name();
  st.scenario = scenario;
  st.input_shape = shape;
  st.num_classes = d.num_classes;
  const std::vector<double> angles = recipe == "rotated" ? rotation_angles(o) : std::vector<double>{};
  std::vector<int64_t> order;
  int64_t first = 0;
  if (recipe == "split") {
    order = split_class_order(o, d.num_classes);
    first = o.first_task_classes() > 0 ? o.first_task_classes() : o.classes_per_task();
    const int64_t need = split_classes_needed(o);
    TORCH_CHECK(need <= static_cast<int64_t>(order.size()), "strata::tasks::make_stream(): ", o.name(), " over '",
                d.name, "' has at most ",
                first > static_cast<int64_t>(order.size())
                    ? 0
                    : 1 + (static_cast<int64_t>(order.size()) - first) / o.classes_per_task(),
                " tasks (", order.size(), " classes: ", first, " in the first task, ", o.classes_per_task(),
                " per task after it), got num_tasks ", o.num_tasks());
  }
  int64_t max_class = -1;
  for (int64_t t = 0; t < o.num_tasks(); ++t) {
    Task task;
    task.index = t;
    InputTransform tf;
    torch::Tensor train_cand = all_train, test_cand = all_test;
    if (recipe == "permuted") {
      task.name = "perm" + std::to_string(t);
      if (t > 0) tf.perm = pixel_permutation(o.seed(), t, p);  // task 0: identity
      task.classes = all_classes(d.num_classes);
    } else if (recipe == "rotated") {
      tf.degrees = angles[t];
      task.name = "rot" + format_angle(angles[t]);
      task.classes = all_classes(d.num_classes);
    } else {  // split: global class ids kept
      const int64_t begin = t == 0 ? 0 : first + (t - 1) * o.classes_per_task();
      const int64_t end = t == 0 ? first : begin + o.classes_per_task();
      task.classes.assign(order.begin() + begin, order.begin() + end);
      task.name = split_task_name(t, task.classes);
      train_cand = rows_of_classes(d.train_y, task.classes);
      test_cand = rows_of_classes(d.test_y, task.classes);
      TORCH_CHECK(train_cand.size(0) > 0 && test_cand.size(0) > 0, "strata::tasks::make_stream(): task ", t, " of ",
                  o.name(), " over '", d.name, "' (classes ", c10::IntArrayRef(task.classes), ") has no ",
                  train_cand.size(0) == 0 ? "training" : "test", " examples");
      for (int64_t c : task.classes) max_class = std::max(max_class, c);
    }
    const Indices idx = choose(train_cand, test_cand, t, o);
    task.train = lazy_split(d.train, d.train_y, idx.train, t, tf);
    task.val = lazy_split(d.train, d.train_y, idx.val, t, tf);
    task.test = lazy_split(d.test, d.test_y, idx.test, t, tf);
    st.tasks.push_back(std::move(task));
  }
  // Split streams keep global class ids: the head covers every id used so far (0..2T-1 for
  // split-fmnist in its natural order).
  if (recipe == "split") st.num_classes = max_class + 1;
  return st;
}

// The file's own tasks.
TaskStream make_file_tasks(const StreamOptions& o, Scenario scenario) {
  const std::vector<Dataset> ds = load_h5_tasks(o.dataset(), o.num_tasks());
  TaskStream st;
  st.name = o.name();
  st.scenario = scenario;
  st.input_shape = ds.front().train->shape;
  st.num_classes = ds.front().num_classes;
  for (int64_t t = 0; t < o.num_tasks(); ++t) {
    const Dataset& d = ds[t];
    Task task;
    task.index = t;
    task.name = "task" + std::to_string(t);
    const auto present = std::get<0>(at::_unique(torch::cat({d.train_y, d.test_y}), /*sorted=*/true));
    task.classes.assign(present.data_ptr<int64_t>(), present.data_ptr<int64_t>() + present.numel());
    const Indices idx = choose(torch::arange(d.train->size(), torch::kInt64),
                               torch::arange(d.test->size(), torch::kInt64), t, o);
    task.train = lazy_split(d.train, d.train_y, idx.train, t, {});
    task.val = lazy_split(d.train, d.train_y, idx.val, t, {});
    task.test = lazy_split(d.test, d.test_y, idx.test, t, {});
    st.tasks.push_back(std::move(task));
  }
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
std::vector<std::string> recipe_names() { return recipes(); }

std::vector<int64_t> split_class_order(const StreamOptions& o, int64_t k) {
  TORCH_CHECK(k >= 1 && k <= kMaxClasses, "strata::tasks::split_class_order(): num_classes must be in 1..", kMaxClasses,
              ", got ", k);
  if (!o.class_order().empty()) {
    std::vector<bool> seen(static_cast<size_t>(k), false);
    for (int64_t c : o.class_order()) {
      TORCH_CHECK(c >= 0 && c < k, "strata::tasks::StreamOptions: class_order entry ", c, " is not a class of the ",
                  k, "-class dataset '", o.dataset(), "'");
      TORCH_CHECK(!seen[c], "strata::tasks::StreamOptions: class_order lists class ", c, " twice");
      seen[c] = true;
    }
    return o.class_order();
  }
  if (o.class_order_seed() < 0) return all_classes(k);
  auto perm = torch::randperm(k, make_gen(o.class_order_seed(), 0, Purpose::kClassOrder), torch::kInt64);
  return std::vector<int64_t>(perm.data_ptr<int64_t>(), perm.data_ptr<int64_t>() + k);
}

void StreamOptions::validate() const {
  const auto& n = names();
  const auto& r = recipes();
  const bool builtin = std::find(n.begin(), n.end(), name()) != n.end();
  const bool recipe = std::find(r.begin(), r.end(), name()) != r.end();
  TORCH_CHECK(builtin || recipe, "strata::tasks::StreamOptions::validate(): unknown stream name '", name(),
              "' (valid: ", join(n), "; or a recipe over the dataset option: ", join(r), ")");
  TORCH_CHECK(num_tasks() > 0, "strata::tasks::StreamOptions::validate(): num_tasks must be >= 1, got ", num_tasks());
  TORCH_CHECK(num_tasks() <= kMaxTasks, "strata::tasks::StreamOptions::validate(): num_tasks must be <= ", kMaxTasks,
              ", got ", num_tasks());
  TORCH_CHECK(!dataset().empty(), "strata::tasks::StreamOptions::validate(): dataset is empty (use 'fmnist' or a PATH.h5)");
  TORCH_CHECK(!builtin || dataset() == "fmnist", "strata::tasks::StreamOptions::validate(): stream '", name(),
              "' is built in (", name() == "synthetic" ? "its own synthetic data" : "Fashion-MNIST",
              ") and ignores datasets; for dataset '", dataset(), "' use a recipe: ", join(r));
  TORCH_CHECK(name() != "tasks" || dataset() != "fmnist",
              "strata::tasks::StreamOptions::validate(): the tasks recipe reads the groups tasks/<k> of an HDF5 "
              "dataset; set dataset to a PATH.h5 (fmnist has none)");
  TORCH_CHECK(classes_per_task() >= 1 && classes_per_task() <= kMaxClasses,
              "strata::tasks::StreamOptions::validate(): classes_per_task must be in 1..", kMaxClasses, ", got ",
              classes_per_task());
  TORCH_CHECK(first_task_classes() >= 0 && first_task_classes() <= kMaxClasses,
              "strata::tasks::StreamOptions::validate(): first_task_classes must be in 0..", kMaxClasses,
              " (0 = classes_per_task), got ", first_task_classes());
  TORCH_CHECK(class_order_seed() >= -1, "strata::tasks::StreamOptions::validate(): class_order_seed must be >= -1 "
              "(-1 = natural order), got ", class_order_seed());
  TORCH_CHECK(static_cast<int64_t>(class_order().size()) <= kMaxClasses,
              "strata::tasks::StreamOptions::validate(): class_order has ", class_order().size(), " entries (at most ",
              kMaxClasses, ")");
  if (recipe_of(name()) == "split" && dataset() == "fmnist") {
    // Fashion-MNIST has 10 classes: refuse before loading anything.
    const int64_t k = class_order().empty() ? 10 : static_cast<int64_t>(class_order().size());
    const int64_t first = first_task_classes() > 0 ? first_task_classes() : classes_per_task();
    const int64_t max_tasks = first > k ? 0 : 1 + (k - first) / classes_per_task();
    TORCH_CHECK(num_tasks() <= max_tasks, "strata::tasks::StreamOptions::validate(): ", name(), " has at most ",
                max_tasks, " tasks (", k, " classes, ", first == classes_per_task() ? "" : std::to_string(first) +
                " in the first task, ", classes_per_task(), " per task), got num_tasks ", num_tasks());
  }
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
    // Permuted/rotated tasks share labels 0..K-1, so task masks equal the full head and Class-IL
    // "classes seen so far" is all classes from task 0: only Domain-IL is meaningful. Split tasks
    // keep global class ids, so Domain-IL (relabelling to 0/1) is not offered.
    const std::string rc = recipe_of(name());
    const bool shared = rc == "permuted" || rc == "rotated";
    TORCH_CHECK(!shared || s == Scenario::kDomainIncremental, "strata::tasks::StreamOptions::validate(): scenario '",
                scenario(), "' is not supported by ", name(), " (its tasks share one label set): use 'domain'");
    TORCH_CHECK(rc != "split" || s != Scenario::kDomainIncremental, "strata::tasks::StreamOptions::validate(): "
                "scenario 'domain' is not supported by ", name(), " (tasks keep global class ids): use 'task' or 'class'");
  }
  if (name() != "synthetic" && dataset() == "fmnist")
    TORCH_CHECK(!data_dir().empty(), "strata::tasks::StreamOptions::validate(): data_dir is empty");
}

TaskStream make_stream(const StreamOptions& options) {
  options.validate();
  torch::NoGradGuard no_grad;
  const Scenario scenario =
      options.scenario().empty() ? default_scenario(options.name()) : scenario_from_string(options.scenario());
  if (options.name() == "synthetic") return make_synthetic(options, scenario);
  const std::string recipe = recipe_of(options.name());
  if (recipe == "tasks") return make_file_tasks(options, scenario);
  const Dataset d =
      options.dataset() == "fmnist" ? fashion_mnist_dataset(options.data_dir()) : load_h5_dataset(options.dataset());
  return make_recipe(options, recipe, d, scenario);
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
