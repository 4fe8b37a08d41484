#include "subspaces/store.h"

#include "core/names.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>

#include "core/h5.h"

namespace strata::subspaces {
namespace core = strata::core;
namespace {

bool file_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

void check_name(const std::string& name, const char* what, const char* who) {
  TORCH_CHECK(!name.empty() && name.find('/') == std::string::npos && name != "." && name != "..",
              "strata::subspaces::SubspaceStore::", who, "(): invalid ", what, " name '", name,
              "' (must be non-empty, without '/', not '.' or '..')");
}

void check_record(const SubspaceRecord& r, const std::string& task, const std::string& layer) {
  const std::string where = "task '" + task + "', layer '" + layer + "'";
  TORCH_CHECK(r.basis.defined() && r.basis.dim() == 2 && r.basis.is_floating_point(),
              "strata::subspaces::SubspaceStore::put(): ", where, ": basis must be a 2-D floating tensor [dim, rank]");
  TORCH_CHECK(r.basis.size(0) > 0, "strata::subspaces::SubspaceStore::put(): ", where, ": basis has dim 0");
  TORCH_CHECK(r.side == "input" || r.side == "output", "strata::subspaces::SubspaceStore::put(): ", where,
              ": side must be 'input' or 'output', got '", r.side, "'");
  TORCH_CHECK(!r.singular_values.defined() || r.singular_values.dim() == 1, "strata::subspaces::SubspaceStore::put(): ",
              where, ": singular_values must be 1-D, got shape ", r.singular_values.sizes());
  TORCH_CHECK(torch::isfinite(r.basis).all().item<bool>(), "strata::subspaces::SubspaceStore::put(): ", where,
              ": basis has NaN or Inf entries");
  for (const auto& [name, t] : r.extra) {
    check_name(name, "extra tensor", "put");
    TORCH_CHECK(t.defined(), "strata::subspaces::SubspaceStore::put(): ", where, ": extra tensor '", name,
                "' is undefined");
  }
}

void write_record(H5::Group& layer_group, const SubspaceRecord& r) {
  const auto opts = core::H5Options::compressed();
  core::write_tensor(layer_group, "basis", r.basis.to(torch::kFloat32), opts);
  torch::Tensor sv = r.singular_values.defined() ? r.singular_values.to(torch::kFloat32) : torch::empty({0});
  core::write_tensor(layer_group, "singular_values", sv, opts);
  for (const auto& [name, t] : r.extra) core::write_tensor(layer_group, "extra/" + name, t, opts);
  core::set_attr(layer_group, "rank", r.rank());
  core::set_attr(layer_group, "dim", r.basis.size(0));
  core::set_attr(layer_group, "side", r.side);
  core::set_attr(layer_group, "method", r.method);
  core::set_attr(layer_group, "threshold", r.threshold);
  core::set_attr(layer_group, "captured_energy", r.captured_energy);
}

// The whole file with plain reads (core/h5.h, user block); true when it has a user block.
bool check_whole_file(const std::string& path, const char* fn) {
  const core::UserBlockCheck block = core::check_user_block(path, SubspaceStore::kUserBlockMagic);
  TORCH_CHECK(block.problem.empty(), "strata::subspaces::SubspaceStore::", fn, "(): '", path, "': ", block.problem);
  return block.present;
}

H5::H5File open_checked(const std::string& path, core::FileMode mode) {
  // A store with a user block had its checksum checked when it was opened (check_whole_file); one
  // without (older) is probed at every open, as every unchecked HDF5 file is.
  H5::H5File f = core::open_file(path, mode, core::starts_with_user_block(path, SubspaceStore::kUserBlockMagic));
  TORCH_CHECK(core::has_attr(f, "format") && core::get_attr_string(f, "format") == SubspaceStore::kFormat,
              "strata::subspaces::SubspaceStore::open(): '", path,
              "' is an HDF5 file but not a Strata subspace store (no format = '", SubspaceStore::kFormat,
              "' attribute)");
  TORCH_CHECK(core::has_attr(f, "format_version"), "strata::subspaces::SubspaceStore::open(): '", path,
              "' has no format_version attribute");
  const int64_t v = core::get_attr_int(f, "format_version");
  TORCH_CHECK(v >= 1 && v <= SubspaceStore::kFormatVersion, "strata::subspaces::SubspaceStore::open(): '", path,
              "' has format_version ", v, " (this build reads up to ", SubspaceStore::kFormatVersion, ")");
  TORCH_CHECK(core::is_group(f, "tasks"), "strata::subspaces::SubspaceStore::open(): '", path,
              "' has no /tasks group (corrupt store)");
  return f;
}

}  // namespace

SubspaceStore SubspaceStore::create(const std::string& path) {
  TORCH_CHECK(!file_exists(path), "strata::subspaces::SubspaceStore::create(): '", path, "' already exists");
  core::atomic_write_h5(path, [](H5::H5File& f) {
    core::set_attr(f, "format", kFormat);
    core::set_attr(f, "format_version", kFormatVersion);
    core::open_group(f, "tasks", /*create=*/true);
  }, kUserBlockMagic);
  return SubspaceStore(path);
}

SubspaceStore SubspaceStore::open(const std::string& path) {
  check_whole_file(path, "open");
  open_checked(path, core::FileMode::kRead);
  return SubspaceStore(path);
}

SubspaceStore SubspaceStore::open_or_create(const std::string& path) {
  return file_exists(path) ? open(path) : create(path);
}

void SubspaceStore::put(const std::string& task, const std::string& layer, const SubspaceRecord& record) {
  append(task, {{layer, record}}, /*new_task_only=*/false);
}

void SubspaceStore::put_task(const std::string& task, const std::map<std::string, SubspaceRecord>& layers) {
  append(task, layers, /*new_task_only=*/true);
}

void SubspaceStore::append(const std::string& task, const std::map<std::string, SubspaceRecord>& layers,
                           bool new_task_only) {
  torch::NoGradGuard no_grad;
  check_name(task, "task", "put");
  for (const auto& [layer, rec] : layers) {
    check_name(layer, "layer", "put");
    check_record(rec, task, layer);
  }
  check_whole_file(path_, "put");
  { open_checked(path_, core::FileMode::kRead); }  // validates before copying
  core::atomic_update_h5(path_, [&](H5::H5File& f) {
    const std::string tpath = "tasks/" + task;
    const bool exists = core::exists(f, tpath);
    TORCH_CHECK(!(exists && new_task_only), "strata::subspaces::SubspaceStore::put_task(): task '", task,
                "' already exists in '", path_, "' (the store is append-only)");
    H5::Group tg;
    if (!exists) {
      const int64_t index = static_cast<int64_t>(core::list_children(f, "tasks").size());
      tg = core::open_group(f, tpath, /*create=*/true);
      core::set_attr(tg, "index", index);
    } else {
      tg = core::open_group(f, tpath);
    }
    for (const auto& [layer, rec] : layers) {
      TORCH_CHECK(!core::exists(tg, layer), "strata::subspaces::SubspaceStore::put(): task '", task, "', layer '",
                  layer, "' already exists in '", path_, "' (the store is append-only)");
      H5::Group lg = core::open_group(tg, layer, /*create=*/true);
      write_record(lg, rec);
    }
  }, kUserBlockMagic);
}

std::vector<std::string> SubspaceStore::tasks() const {
  H5::H5File f = open_checked(path_, core::FileMode::kRead);
  std::vector<std::pair<int64_t, std::string>> order;
  for (const auto& name : core::list_children(f, "tasks")) {
    H5::Group g = core::open_group(f, "tasks/" + name);
    order.emplace_back(core::has_attr(g, "index") ? core::get_attr_int(g, "index") : 0, name);
  }
  std::sort(order.begin(), order.end());
  std::vector<std::string> out;
  for (auto& p : order) out.push_back(p.second);
  return out;
}

bool SubspaceStore::has_task(const std::string& task) const {
  H5::H5File f = open_checked(path_, core::FileMode::kRead);
  return !task.empty() && task.find('/') == std::string::npos && core::exists(f, "tasks/" + task);
}

std::vector<std::string> SubspaceStore::layers(const std::string& task) const {
  H5::H5File f = open_checked(path_, core::FileMode::kRead);
  check_name(task, "task", "layers");
  TORCH_CHECK(core::exists(f, "tasks/" + task), "strata::subspaces::SubspaceStore::layers(): no task '", task,
              "' in '", path_, "'");
  return core::list_children(f, "tasks/" + task);
}

bool SubspaceStore::has(const std::string& task, const std::string& layer) const {
  H5::H5File f = open_checked(path_, core::FileMode::kRead);
  if (task.empty() || layer.empty() || task.find('/') != std::string::npos || layer.find('/') != std::string::npos)
    return false;
  return core::exists(f, "tasks/" + task + "/" + layer);
}

SubspaceRecord SubspaceStore::get(const std::string& task, const std::string& layer) const {
  H5::H5File f = open_checked(path_, core::FileMode::kRead);
  check_name(task, "task", "get");
  check_name(layer, "layer", "get");
  const std::string lpath = "tasks/" + task + "/" + layer;
  TORCH_CHECK(core::exists(f, lpath), "strata::subspaces::SubspaceStore::get(): no record for task '", task,
              "', layer '", layer, "' in '", path_, "'");
  H5::Group g = core::open_group(f, lpath);
  SubspaceRecord r;
  r.basis = core::read_tensor(g, "basis");
  r.singular_values = core::read_tensor(g, "singular_values");
  r.side = core::get_attr_string(g, "side");
  r.method = core::get_attr_string(g, "method");
  r.threshold = core::get_attr_double(g, "threshold");
  r.captured_energy = core::get_attr_double(g, "captured_energy");
  const int64_t rank = core::get_attr_int(g, "rank");
  TORCH_CHECK(r.basis.dim() == 2 && r.basis.size(1) == rank, "strata::subspaces::SubspaceStore::get(): '", path_,
              "' task '", task, "', layer '", layer, "': basis shape ", r.basis.sizes(), " disagrees with rank ", rank);
  if (core::exists(g, "extra"))
    for (const auto& name : core::list_children(g, "extra")) r.extra[name] = core::read_tensor(g, "extra/" + name);
  return r;
}

std::string task_key(int64_t index) { return core::indexed_name("task", index, 2); }

void StoreRecorder::record(int64_t task, const std::map<std::string, SubspaceRecord>& layers) {
  if (layers.empty()) return;
  auto store = SubspaceStore::open_or_create(path_);
  const std::string key = task_key(task);
  if (!store.has_task(key)) store.put_task(key, layers);
}

}  // namespace strata::subspaces
