#include "checkpoints/version_store.h"

#include "core/h5.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <mutex>
#include <set>

namespace fs = std::filesystem;

namespace strata::checkpoints {
namespace {

constexpr const char* kChecksumScope =
    "zlib crc32 chained over the raw C-order bytes of every dataset, datasets in byte-wise sorted order of "
    "their full path, starting from 0";
constexpr const char* kOptimizerNote =
    "empty: the Trainer builds a fresh optimizer for every task, so at a task boundary there is no optimizer "
    "state to carry";
const char* const kTimingColumns = "task,train_seconds,eval_seconds,examples_per_s,train_steps";

std::string shape_str(at::IntArrayRef s) {
  std::string o = "[";
  for (size_t i = 0; i < s.size(); ++i) o += (i ? ", " : "") + std::to_string(s[i]);
  return o + "]";
}

std::string utc_now() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// Every dataset below `group_path` (recursively), full paths from the root.
void collect_datasets(const H5::Group& root, const std::string& group_path, std::vector<std::string>& out) {
  for (const auto& child : core::list_children(root, group_path)) {
    const std::string p = group_path == "/" ? "/" + child : group_path + "/" + child;
    if (core::is_group(root, p))
      collect_datasets(root, p, out);
    else
      out.push_back(p);
  }
}

uint32_t checksum_of(const std::map<std::string, torch::Tensor>& sorted) {
  uint32_t crc = 0;
  for (const auto& [path, t] : sorted) {
    torch::Tensor c = t.scalar_type() == torch::kBool ? t.to(torch::kUInt8) : t;
    crc = core::crc32_tensor(c, crc);
  }
  return crc;
}

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  TORCH_CHECK(false, "strata::checkpoints::read_version(): '", path, "': ", what);
}

}  // namespace

std::string version_path(const std::string& run_dir, int64_t version) {
  TORCH_CHECK(version >= 0 && version < 1000, "strata::checkpoints::version_path(): version must be in [0, 999], got ",
              version);
  char name[16];
  std::snprintf(name, sizeof name, "v%03lld.h5", static_cast<long long>(version));
  return (fs::path(run_dir) / "versions" / name).string();
}

void write_version(const std::string& path, const Version& v) {
  const auto& pos = v.position;
  const int64_t T = pos.num_tasks;
  TORCH_CHECK(T > 0 && pos.next_task >= 0 && pos.next_task <= T, "strata::checkpoints::write_version(): '", path,
              "': bad position next_task ", pos.next_task, " of ", T, " tasks");
  TORCH_CHECK(pos.accuracy_matrix.defined() && pos.accuracy_matrix.sizes() == at::IntArrayRef({T, T}),
              "strata::checkpoints::write_version(): '", path, "': accuracy_matrix must be [", T, ", ", T, "]");
  TORCH_CHECK(pos.initial_accuracy.defined() && pos.initial_accuracy.sizes() == at::IntArrayRef({T}),
              "strata::checkpoints::write_version(): '", path, "': initial_accuracy must be [", T, "]");
  TORCH_CHECK(v.rng_cpu.defined(), "strata::checkpoints::write_version(): '", path, "': rng_cpu state missing");
  TORCH_CHECK(v.requires_grad.empty() || v.requires_grad.size() == v.parameters.size(),
              "strata::checkpoints::write_version(): '", path, "': requires_grad has ", v.requires_grad.size(),
              " entries for ", v.parameters.size(), " parameters");

  // Every dataset, keyed by full path: std::map gives the checksum's sorted order.
  std::map<std::string, torch::Tensor> data;
  auto add = [&](const std::string& p, const torch::Tensor& t) {
    TORCH_CHECK(t.defined(), "strata::checkpoints::write_version(): '", path, "': undefined tensor for '", p, "'");
    TORCH_CHECK(data.emplace(p, t.detach().to(torch::kCPU).contiguous()).second,
                "strata::checkpoints::write_version(): '", path, "': duplicate dataset '", p, "'");
  };
  for (const auto& [n, t] : v.parameters) {
    TORCH_CHECK(!n.empty() && n.find('/') == std::string::npos, "strata::checkpoints::write_version(): '", path,
                "': bad tensor name '", n, "'");
    add("/model/" + n, t);
  }
  for (const auto& [n, t] : v.buffers) add("/model/" + n, t);
  for (const auto& [k, t] : v.method_tensors) add("/method/tensors/" + k, t);
  add("/rng/torch_cpu", v.rng_cpu);
  add("/position/accuracy_matrix", pos.accuracy_matrix.to(torch::kFloat64));
  add("/position/initial_accuracy", pos.initial_accuracy.to(torch::kFloat64));
  auto timings = torch::zeros({static_cast<int64_t>(pos.timings.size()), 5}, torch::kFloat64);
  for (size_t i = 0; i < pos.timings.size(); ++i) {
    const auto& tm = pos.timings[i];
    const double row[5] = {static_cast<double>(tm.task), tm.train_seconds, tm.eval_seconds, tm.examples_per_s,
                           static_cast<double>(tm.train_steps)};
    for (int c = 0; c < 5; ++c) timings[static_cast<int64_t>(i)][c] = row[c];
  }
  add("/position/timings", timings);
  const uint32_t crc = checksum_of(data);

  std::error_code ec;
  const auto parent = fs::path(path).parent_path();
  if (!parent.empty()) fs::create_directories(parent, ec);
  TORCH_CHECK(!ec, "strata::checkpoints::write_version(): cannot create folder '", parent.string(), "': ",
              ec.message());

  core::atomic_write_h5(path, [&](H5::H5File& f) {
    for (const auto& [p, t] : data) core::write_tensor(f, p, t);
    core::set_attr(f, "format", kFormatName);
    core::set_attr(f, "format_version", kFormatVersion);
    core::set_attr(f, "version", v.version);
    core::set_attr(f, "method", v.method);
    core::set_attr(f, "config_ini", v.config_ini);
    core::set_attr(f, "torch_version", std::string(TORCH_VERSION));
    core::set_attr(f, "created", utc_now());
    core::set_attr(f, "checksum_crc32", static_cast<int64_t>(crc));
    core::set_attr(f, "checksum_scope", kChecksumScope);
    auto model = core::open_group(f, "model", true);
    core::set_attr(model, "note", "one dataset per parameter and buffer, named by module path (state_dict key)");
    for (size_t i = 0; i < v.parameters.size(); ++i) {
      auto ds = core::open_dataset(f, "/model/" + v.parameters[i].first);
      core::set_attr(ds, "kind", "parameter");
      core::set_attr(ds, "requires_grad",
                     static_cast<int64_t>(v.requires_grad.empty() ? v.parameters[i].second.requires_grad()
                                                                  : v.requires_grad[i]));
    }
    for (const auto& [n, t] : v.buffers) {
      auto ds = core::open_dataset(f, "/model/" + n);
      core::set_attr(ds, "kind", "buffer");
      core::set_attr(ds, "requires_grad", static_cast<int64_t>(0));
    }
    auto method = core::open_group(f, "method", true);
    core::set_attr(method, "name", v.method);
    core::set_attr(method, "meta_json", v.method_meta.dump());
    core::open_group(f, "method/tensors", true);
    auto opt = core::open_group(f, "optimizer", true);
    core::set_attr(opt, "note", kOptimizerNote);
    auto position = core::open_group(f, "position", true);
    core::set_attr(position, "next_task", pos.next_task);
    core::set_attr(position, "num_tasks", T);
    auto tds = core::open_dataset(f, "/position/timings");
    core::set_attr(tds, "columns", kTimingColumns);
  }, kUserBlockMagic);
}

bool has_version_user_block(const std::string& path) { return core::starts_with_user_block(path, kUserBlockMagic); }

Version read_version(const std::string& path) {
  Version v;
  // The whole file first, with plain reads: HDF5 never sees a damaged file that has a user block.
  const core::UserBlockCheck block = core::check_user_block(path, kUserBlockMagic);
  if (!block.problem.empty()) fail(path, block.problem);
  try {
    H5::H5File f = core::open_file(path, core::FileMode::kRead, block.present);
    auto str_attr = [&](const H5::H5Object& o, const std::string& obj, const std::string& name) {
      if (!core::has_attr(o, name)) fail(path, "missing attribute '" + name + "' on '" + obj + "'");
      return core::get_attr_string(o, name);
    };
    auto int_attr = [&](const H5::H5Object& o, const std::string& obj, const std::string& name) {
      if (!core::has_attr(o, name)) fail(path, "missing attribute '" + name + "' on '" + obj + "'");
      return core::get_attr_int(o, name);
    };
    const std::string format = core::has_attr(f, "format") ? core::get_attr_string(f, "format") : "";
    if (format != kFormatName)
      fail(path, "not a Strata version file (root attribute 'format' is '" + format + "', expected '" +
                     kFormatName + "')");
    const int64_t fv = int_attr(f, "/", "format_version");
    if (fv != kFormatVersion)
      fail(path, "unknown format_version " + std::to_string(fv) + " (this build reads format_version " +
                     std::to_string(kFormatVersion) + ")");
    v.version = int_attr(f, "/", "version");
    v.method = str_attr(f, "/", "method");
    v.config_ini = str_attr(f, "/", "config_ini");
    v.torch_version = core::has_attr(f, "torch_version") ? core::get_attr_string(f, "torch_version") : "";
    v.created = core::has_attr(f, "created") ? core::get_attr_string(f, "created") : "";
    const int64_t stored_crc = int_attr(f, "/", "checksum_crc32");

    for (const char* req : {"/model", "/method", "/method/tensors", "/position", "/rng"})
      if (!core::is_group(f, req)) fail(path, std::string("missing group '") + req + "'");
    for (const char* req : {"/position/accuracy_matrix", "/position/initial_accuracy", "/position/timings",
                            "/rng/torch_cpu"})
      if (!core::exists(f, req) || core::is_group(f, req)) fail(path, std::string("missing dataset '") + req + "'");
    auto position = core::open_group(f, "position");
    v.position.next_task = int_attr(position, "/position", "next_task");
    v.position.num_tasks = int_attr(position, "/position", "num_tasks");
    auto method = core::open_group(f, "method");
    v.method_meta = nlohmann::json::object();
    const std::string meta = str_attr(method, "/method", "meta_json");
    try {
      v.method_meta = nlohmann::json::parse(meta);
    } catch (const std::exception& e) {
      fail(path, std::string("attribute 'meta_json' on '/method' is not valid JSON: ") + e.what());
    }

    // Read every dataset (a truncated file fails here, naming the dataset) and verify the checksum.
    std::vector<std::string> paths;
    collect_datasets(f, "/", paths);
    std::map<std::string, torch::Tensor> data;
    for (const auto& p : paths) data[p] = core::read_tensor(f, p);
    const uint32_t crc = checksum_of(data);
    if (static_cast<int64_t>(crc) != stored_crc)
      fail(path, "checksum mismatch (stored checksum_crc32 " + std::to_string(stored_crc) + ", data gives " +
                     std::to_string(crc) + "): the file is corrupt");
    v.checksum = crc;

    const int64_t T = v.position.num_tasks;
    if (T <= 0 || v.position.next_task < 0 || v.position.next_task > T)
      fail(path, "bad /position: next_task " + std::to_string(v.position.next_task) + ", num_tasks " +
                     std::to_string(T));
    auto& R = data.at("/position/accuracy_matrix");
    auto& b = data.at("/position/initial_accuracy");
    auto& tm = data.at("/position/timings");
    if (R.sizes() != at::IntArrayRef({T, T}) || R.scalar_type() != torch::kFloat64)
      fail(path, "dataset '/position/accuracy_matrix' has shape " + shape_str(R.sizes()) + ", expected float64 [" +
                     std::to_string(T) + ", " + std::to_string(T) + "]");
    if (b.sizes() != at::IntArrayRef({T}) || b.scalar_type() != torch::kFloat64)
      fail(path, "dataset '/position/initial_accuracy' has shape " + shape_str(b.sizes()) + ", expected float64 [" +
                     std::to_string(T) + "]");
    if (tm.dim() != 2 || tm.size(1) != 5 || tm.scalar_type() != torch::kFloat64)
      fail(path, "dataset '/position/timings' has shape " + shape_str(tm.sizes()) + ", expected float64 [N, 5]");
    v.position.accuracy_matrix = R;
    v.position.initial_accuracy = b;
    for (int64_t i = 0; i < tm.size(0); ++i) {
      TaskTiming t;
      t.task = static_cast<int64_t>(tm[i][0].item<double>());
      t.train_seconds = tm[i][1].item<double>();
      t.eval_seconds = tm[i][2].item<double>();
      t.examples_per_s = tm[i][3].item<double>();
      t.train_steps = static_cast<int64_t>(tm[i][4].item<double>());
      v.position.timings.push_back(t);
    }
    v.rng_cpu = data.at("/rng/torch_cpu");
    if (v.rng_cpu.scalar_type() != torch::kUInt8 || v.rng_cpu.dim() != 1)
      fail(path, "dataset '/rng/torch_cpu' must be uint8 [K], got shape " + shape_str(v.rng_cpu.sizes()));

    for (const auto& name : core::list_children(f, "model")) {
      const std::string p = "/model/" + name;
      if (core::is_group(f, p)) fail(path, "'" + p + "' is a group, expected a dataset");
      auto ds = core::open_dataset(f, p);
      const std::string kind = str_attr(ds, p, "kind");
      if (kind == "parameter") {
        v.parameters.emplace_back(name, data.at(p));
        v.requires_grad.push_back(int_attr(ds, p, "requires_grad") != 0);
      } else if (kind == "buffer") {
        v.buffers.emplace_back(name, data.at(p));
      } else {
        fail(path, "attribute 'kind' on '" + p + "' is '" + kind + "', expected 'parameter' or 'buffer'");
      }
    }
    const std::string prefix = "/method/tensors/";
    for (const auto& [p, t] : data)
      if (p.compare(0, prefix.size(), prefix) == 0) v.method_tensors[p.substr(prefix.size())] = t;
  } catch (const c10::Error& e) {
    const std::string msg = e.msg();
    if (msg.find("strata::checkpoints::read_version()") != std::string::npos) throw;
    TORCH_CHECK(false, "strata::checkpoints::read_version(): cannot load version file '", path, "': ", msg);
  }
  return v;
}

VersionScan scan_versions(const std::string& run_dir) {
  VersionScan s;
  const fs::path dir = fs::path(run_dir) / "versions";
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return s;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.find(".tmp-") != std::string::npos) {
      s.partial.push_back(e.path().string());
      continue;
    }
    // vNNN.h5 exactly: 'v', three digits, ".h5".
    if (name.size() == 7 && name[0] == 'v' && std::isdigit(static_cast<unsigned char>(name[1])) &&
        std::isdigit(static_cast<unsigned char>(name[2])) && std::isdigit(static_cast<unsigned char>(name[3])) &&
        name.compare(4, 3, ".h5") == 0 && e.is_regular_file()) {
      s.versions.push_back(std::stoll(name.substr(1, 3)));
    } else {
      s.other.push_back(e.path().string());
    }
  }
  TORCH_CHECK(!ec, "strata::checkpoints::scan_versions(): cannot list '", dir.string(), "': ", ec.message());
  std::sort(s.versions.begin(), s.versions.end());
  std::sort(s.partial.begin(), s.partial.end());
  std::sort(s.other.begin(), s.other.end());
  return s;
}

void copy_named_tensors(const NamedTensors& stored, const NamedTensors& targets, const std::string& file,
                        const std::string& what) {
  std::map<std::string, const torch::Tensor*> by_name;
  for (const auto& [n, t] : stored) by_name[n] = &t;
  std::set<std::string> target_names;
  for (const auto& [n, t] : targets) {
    target_names.insert(n);
    auto it = by_name.find(n);
    TORCH_CHECK(it != by_name.end(), "strata::checkpoints::copy_named_tensors(): '", file, "': missing dataset '/",
                what, "/", n, "' (the model has ", what, " tensor '", n, "' of shape ", shape_str(t.sizes()),
                "; was the file written with another model configuration or method?)");
    const torch::Tensor& s = *it->second;
    TORCH_CHECK(s.sizes() == t.sizes(), "strata::checkpoints::copy_named_tensors(): '", file, "': dataset '/", what,
                "/", n, "' has shape ", shape_str(s.sizes()), " but the model configuration gives ",
                shape_str(t.sizes()));
    TORCH_CHECK(s.scalar_type() == t.scalar_type() ||
                    (s.scalar_type() == torch::kUInt8 && t.scalar_type() == torch::kBool),
                "strata::checkpoints::copy_named_tensors(): '", file, "': dataset '/", what, "/", n, "' has dtype ",
                s.scalar_type(), " but the model tensor is ", t.scalar_type());
  }
  for (const auto& [n, t] : stored)
    TORCH_CHECK(target_names.count(n), "strata::checkpoints::copy_named_tensors(): '", file,
                "': unexpected dataset '/", what, "/", n, "' of shape ", shape_str(t.sizes()),
                " (the model has no such tensor; was the file written with another model configuration or method?)");
  torch::NoGradGuard no_grad;
  for (const auto& [n, t] : targets) {
    torch::Tensor dst = t;
    dst.copy_(*by_name.at(n));
  }
}

torch::Tensor cpu_rng_state() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_cpu_rng_state(const torch::Tensor& state) {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

}  // namespace strata::checkpoints
