#include "run/limits.h"

#include "core/h5.h"
#include "tasks/dataset.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace strata::run {

namespace {

void in_range(const char* option, int64_t v, int64_t lo, int64_t hi, const char* what = "") {
  TORCH_CHECK(v >= lo && v <= hi, "option --", option, ": ", v, " is out of range ", lo, "..", hi, what);
}

struct DataShape {
  int64_t train = 0, test = 0;  ///< examples per task before limits (split: of the whole dataset)
  int64_t pixels = 1;           ///< C x H x W
  std::vector<int64_t> input{1, 28, 28};
  int64_t classes = 10;
};

std::string recipe(const std::string& stream) {
  if (stream == "permuted-fmnist") return "permuted";
  if (stream == "split-fmnist") return "split";
  if (stream == "rotated-fmnist") return "rotated";
  return stream;
}

DataShape data_shape(const RunConfig& c) {
  DataShape d;
  const auto& s = c.stream;
  const int64_t T = s.num_tasks();
  if (s.name() == "synthetic") {
    // The synthetic stream's own sizes (tasks/streams.cpp): 400 train, 200 test, 1x8x8, 2 classes a task.
    d.train = 400, d.test = 200, d.input = {1, 8, 8}, d.classes = std::max<int64_t>(4, 2 * T);
  } else if (s.dataset() == "fmnist") {
    d.train = 60000, d.test = 10000, d.classes = 10;  // Fashion-MNIST
  } else {
    // A user file: the dataset shapes, without reading the data.
    H5::H5File f = core::open_file(s.dataset(), core::FileMode::kRead);
    auto examples = [&](const std::string& path, bool shape) {
      if (!core::exists(f, path) || core::is_group(f, path)) return int64_t(0);
      const auto info = core::dataset_info(f, path);
      if (info.shape.empty()) return int64_t(0);
      // The loader's own bounds (tasks::example_shape), checked here before any memory estimate.
      if (shape) d.input = tasks::example_shape(info.shape, "dataset '" + s.dataset() + "': '" + path + "'");
      return info.shape[0];
    };
    if (recipe(s.name()) == "tasks") {
      for (int64_t k = 0; k < T; ++k) {
        d.train = std::max(d.train, examples("tasks/" + std::to_string(k) + "/train/x", k == 0));
        d.test = std::max(d.test, examples("tasks/" + std::to_string(k) + "/test/x", false));
      }
    } else {
      d.train = examples("train/x", true);
      d.test = examples("test/x", false);
    }
    d.classes = std::max<int64_t>(10, s.first_task_classes() + s.classes_per_task() * T);
  }
  for (auto v : d.input) d.pixels *= v;
  return d;
}

struct LinearShape {
  int64_t in, out;
};

// The Linear layers of the model (what methods project or adapt) and the parameter count.
std::vector<LinearShape> linear_layers(const models::ModelOptions& m, const DataShape& d, int64_t& params) {
  std::vector<LinearShape> out;
  params = 0;
  const bool bias = m.arch() == "vit" || m.bias();
  auto lin = [&](int64_t in, int64_t o) {
    out.push_back({in, o});
    params += in * o + (bias ? o : 0);
  };
  if (m.arch() == "mlp") {
    int64_t in = d.pixels;
    for (auto h : m.hidden()) lin(in, h), in = h;
    lin(in, d.classes);
  } else if (m.arch() == "cnn") {
    const int64_t c0 = m.channels().size() > 0 ? m.channels()[0] : 16, c1 = m.channels().size() > 1 ? m.channels()[1] : 32;
    params += d.input[0] * c0 * 9 + c0 + c0 * c1 * 9 + c1;
    lin(c1 * (d.input[1] / 4) * (d.input[2] / 4), 128);
    lin(128, d.classes);
  } else {
    const int64_t p = std::max<int64_t>(m.patch(), 1), D = m.dim(), H = m.vit_mlp_dim();
    const int64_t n = (d.input[1] / p) * (d.input[2] / p);
    lin(d.input[0] * p * p, D);
    params += D + (n + 1) * D;
    for (int64_t b = 0; b < m.depth(); ++b) {
      for (int k = 0; k < 4; ++k) lin(D, D);
      lin(D, H), lin(H, D);
      params += 4 * D;  // two LayerNorms
    }
    params += 2 * D;
    lin(D, d.classes);
  }
  return out;
}

int64_t method_int(const RunConfig& c, const std::string& key, int64_t fallback) {
  const auto& v = c.method.values();
  auto it = v.find(key);
  if (it == v.end()) return fallback;
  try {
    return std::stoll(it->second);
  } catch (const std::exception&) {
    return fallback;
  }
}

}  // namespace

void check_bounds(const RunConfig& c, const continual::MethodRegistry& registry) {
  in_range("threads", c.threads, 1, 1024);
  const auto& s = c.stream;
  in_range("tasks", s.num_tasks(), 1, tasks::kMaxTasks);
  in_range("classes-per-task", s.classes_per_task(), 1, tasks::kMaxClasses);
  in_range("first-task-classes", s.first_task_classes(), 0, tasks::kMaxClasses);
  in_range("train-limit", s.train_limit(), 0, int64_t(1) << 31, " (0 = no limit)");
  in_range("test-limit", s.test_limit(), 0, int64_t(1) << 31, " (0 = no limit)");
  const auto& m = c.model;
  TORCH_CHECK(m.hidden().size() <= 64, "option --hidden: ", m.hidden().size(), " layers is out of range 0..64");
  for (auto h : m.hidden()) in_range("hidden", h, 1, 65536, " (per layer)");
  for (auto ch : m.channels()) in_range("channels", ch, 1, 4096, " (per layer)");
  in_range("patch", m.patch(), 1, 1024);
  in_range("dim", m.dim(), 1, 16384);
  in_range("depth", m.depth(), 1, 256);
  in_range("heads", m.heads(), 1, 1024);
  in_range("mlp-ratio", m.mlp_ratio(), 1, 64);
  in_range("mlp-dim", m.mlp_dim(), 0, 65536, " (0 = dim x mlp-ratio)");
  in_range("batch-size", c.train.batch_size(), 1, 1 << 20);
  in_range("eval-batch-size", c.train.eval_batch_size(), 1, 1 << 20);
  in_range("epochs", c.train.epochs(), 1, 1000000);
  in_range("pretrain-epochs", c.pretrain_epochs, 1, 1000000);
  in_range("compat-epochs", c.compat.stage2_epochs(), 0, 1000000, " (0 = --epochs)");
  // Integer method options are ranks, sample counts, budgets and periods: none needs more than 2^20.
  if (registry.has(c.method.method()))
    for (const auto& o : registry.get(c.method.method()).options) {
      const bool integer_default = !o.default_value.empty() &&
                                   std::all_of(o.default_value.begin(), o.default_value.end(), ::isdigit);
      auto it = c.method.values().find(o.key);
      if (!integer_default || it == c.method.values().end()) continue;
      const std::string& v = it->second;
      size_t pos = 0;
      long long x = 0;
      try {
        x = std::stoll(v, &pos);
      } catch (const std::out_of_range&) {
        TORCH_CHECK(false, "option --", c.method.method(), ".", o.key, ": ", v, " is out of range (at most 1048576)");
      } catch (const std::exception&) {
        continue;  // not an integer: the method's own parser names it
      }
      if (pos != v.size()) continue;
      TORCH_CHECK(x <= (1 << 20), "option --", c.method.method(), ".", o.key, ": ", v,
                  " is out of range (at most 1048576)");
    }
}

std::string MemoryEstimate::describe() const {
  std::ostringstream o;
  o << format_bytes(static_cast<double>(total())) << " (model and optimizer " << format_bytes(model)
    << ", activations " << format_bytes(activations) << ", method state " << format_bytes(method) << ", data "
    << format_bytes(data) << ", predictions " << format_bytes(predictions) << ")";
  return o.str();
}

MemoryEstimate estimate_memory(const RunConfig& c) {
  MemoryEstimate e;
  const DataShape d = data_shape(c);
  const auto& s = c.stream;
  const double T = static_cast<double>(s.num_tasks());
  const double train = static_cast<double>(s.train_limit() > 0 ? std::min(d.train, s.train_limit()) : d.train);
  const double test = static_cast<double>(s.test_limit() > 0 ? std::min(d.test, s.test_limit()) : d.test);
  const std::string r = recipe(s.name());
  // Permuted/rotated/synthetic/file tasks each have their own examples; split tasks share one dataset.
  const bool split = r == "split";
  const double train_rows = split ? std::min(train * T, static_cast<double>(d.train)) : train * T;
  const double test_rows = split ? std::min(test * T, static_cast<double>(d.test)) : test * T;
  // Doubles throughout: a silly configuration must give a huge estimate, not an overflow.
  double dataset = (static_cast<double>(d.train) + static_cast<double>(d.test)) * static_cast<double>(d.pixels) * 4;
  if (s.name() == "synthetic") dataset *= T;
  double data = dataset + (train_rows + test_rows) * 40;

  int64_t params = 0;
  const auto layers = linear_layers(c.model, d, params);
  const double P = static_cast<double>(params);
  const auto& opt = c.train.optimizer();
  const double state = opt == "sgd" ? (c.train.momentum() > 0 ? 1 : 0) : 2;
  double model = P * 4 * (2 + state + 1);
  double widths = 0, square = 0, adapters = 0;
  for (const auto& l : layers) {
    widths += static_cast<double>(l.out);
    square += static_cast<double>(l.in) * l.in + static_cast<double>(l.out) * l.out;
    adapters += static_cast<double>(l.in + l.out);
  }
  const double B = static_cast<double>(c.train.batch_size()), EB = static_cast<double>(c.train.eval_batch_size());
  double act = 0;
  if (c.model.arch() == "vit") {
    const double p = static_cast<double>(std::max<int64_t>(c.model.patch(), 1));
    const double tokens = std::floor(d.input[1] / p) * std::floor(d.input[2] / p) + 1;
    const double per = tokens * static_cast<double>(c.model.depth()) *
                       (12.0 * c.model.dim() + 2.0 * c.model.vit_mlp_dim() + c.model.heads() * tokens) * 4;
    act = B * per * 2 + EB * per;
  } else {
    double per = static_cast<double>(d.pixels) + widths;
    if (c.model.arch() == "cnn") {
      const double c0 = c.model.channels().empty() ? 16 : c.model.channels()[0];
      const double c1 = c.model.channels().size() > 1 ? c.model.channels()[1] : 32;
      per += (c0 + c1) * static_cast<double>(d.input[1] * d.input[2]) * 2;
    }
    act = (B * 4 + EB) * per * 4;
  }
  const std::string method = c.method.method();
  double mstate = 0;
  if (method == "gpm" || method == "coso" || method == "osft") {
    mstate = square * 4 * 2;
    // GPM's representation matrices: samples x layer input.
    if (method == "gpm") {
      double inputs = 0;
      for (const auto& l : layers) inputs += static_cast<double>(l.in);
      mstate += static_cast<double>(method_int(c, "samples", 300)) * inputs * 4;
    }
  } else if (method == "lora" || method == "olora" || method == "codyra" || method == "mora") {
    mstate = T * static_cast<double>(method_int(c, "rank", 16)) * adapters * 4 * 4;
  } else if (method == "joint") {
    mstate = train_rows * 16;
  }
  // Every version keeps every task's test predictions in memory; writing predictions.h5 copies them.
  const double predictions = T * test_rows * 72;
  auto clamp = [](double v) { return static_cast<int64_t>(std::min(v, 9.0e18)); };
  e.model = clamp(model);
  e.activations = clamp(act);
  e.method = clamp(mstate);
  e.data = clamp(data);
  e.predictions = clamp(predictions);
  return e;
}

int64_t available_memory() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  int64_t kb = 0;
  std::string unit;
  while (f >> key >> kb) {
    std::getline(f, unit);
    if (key == "MemAvailable:") return kb * 1024;
  }
  return -1;
}

void check_memory(const MemoryEstimate& estimate, int64_t available) {
  if (available < 0) return;
  TORCH_CHECK(estimate.total() <= available, "this run needs an estimated ", estimate.describe(), " but the machine has ",
              format_bytes(static_cast<double>(available)),
              " available; reduce --tasks, --train-limit/--test-limit, the model size or the batch size");
}

std::string format_bytes(double b) {
  char buf[64];
  if (b < 1024)
    std::snprintf(buf, sizeof buf, "%.0f B", b);
  else if (b < 1024.0 * 1024)
    std::snprintf(buf, sizeof buf, "%.1f KiB", b / 1024);
  else if (b < 1024.0 * 1024 * 1024)
    std::snprintf(buf, sizeof buf, "%.1f MiB", b / (1024.0 * 1024));
  else
    std::snprintf(buf, sizeof buf, "%.2f GiB", b / (1024.0 * 1024 * 1024));
  return buf;
}

}  // namespace strata::run
