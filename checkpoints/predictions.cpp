#include "checkpoints/predictions.h"

#include "core/h5.h"
#include "core/names.h"

#include <cstdio>

namespace strata::checkpoints {
namespace {

std::string group_name(int64_t version, int64_t task) {
  return core::indexed_name("v", version, 3) + "/" + core::indexed_name("task", task, 2);
}

}  // namespace

void write_predictions(const std::string& path, const PredictionTable& table) {
  for (const auto& [version, tasks] : table) {
    TORCH_CHECK(version >= 0 && version < 1000, "strata::checkpoints::write_predictions(): '", path,
                "': version must be in [0, 999], got ", version);
    for (const auto& p : tasks) {
      const std::string g = group_name(version, p.task);
      TORCH_CHECK(p.id.defined() && p.label.defined() && p.pred.defined() && p.prob.defined(),
                  "strata::checkpoints::write_predictions(): '", path, "': ", g, " lacks id, label, pred or prob");
      const int64_t n = p.id.numel();
      TORCH_CHECK(p.id.dim() == 1 && p.label.dim() == 1 && p.pred.dim() == 1 && p.prob.dim() == 1 &&
                      p.label.numel() == n && p.pred.numel() == n && p.prob.numel() == n,
                  "strata::checkpoints::write_predictions(): '", path, "': ", g,
                  ": id, label, pred and prob must all be [N] (id has ", n, ")");
    }
  }
  core::atomic_write_h5(path, [&](H5::H5File& f) {
    core::set_attr(f, "format", "strata-predictions");
    core::set_attr(f, "format_version", static_cast<int64_t>(1));
    for (const auto& [version, tasks] : table) {
      char vname[16];
      std::snprintf(vname, sizeof vname, "v%03lld", static_cast<long long>(version));
      auto vg = core::open_group(f, vname, true);
      core::set_attr(vg, "version", version);
      for (const auto& p : tasks) {
        const std::string g = group_name(version, p.task);
        core::write_tensor(f, g + "/id", p.id.to(torch::kInt64));
        core::write_tensor(f, g + "/label", p.label.to(torch::kInt64));
        core::write_tensor(f, g + "/pred", p.pred.to(torch::kInt64));
        core::write_tensor(f, g + "/prob", p.prob.to(torch::kFloat32));
        auto tg = core::open_group(f, g);
        core::set_attr(tg, "task", p.task);
      }
    }
  });
}

PredictionTable read_predictions(const std::string& path) {
  PredictionTable table;
  H5::H5File f = core::open_file(path, core::FileMode::kRead);
  for (const auto& vname : core::list_children(f, "/")) {
    const int64_t version = core::parse_indexed_name(vname, "v");
    TORCH_CHECK(version >= 0 && core::is_group(f, vname), "strata::checkpoints::read_predictions(): '", path,
                "': unexpected object '/", vname, "' (expected groups vNNN)");
    auto& tasks = table[version];
    for (const auto& tname : core::list_children(f, vname)) {
      const int64_t task = core::parse_indexed_name(tname, "task");
      const std::string g = vname + "/" + tname;
      TORCH_CHECK(task >= 0 && core::is_group(f, g), "strata::checkpoints::read_predictions(): '", path,
                  "': unexpected object '/", g, "' (expected groups taskTT)");
      TaskPredictions p;
      p.task = task;
      for (const char* d : {"id", "label", "pred", "prob"})
        TORCH_CHECK(core::exists(f, g + "/" + d), "strata::checkpoints::read_predictions(): '", path,
                    "': missing dataset '/", g, "/", d, "'");
      p.id = core::read_tensor(f, g + "/id").to(torch::kInt64);
      p.label = core::read_tensor(f, g + "/label").to(torch::kInt64);
      p.pred = core::read_tensor(f, g + "/pred").to(torch::kInt64);
      p.prob = core::read_tensor(f, g + "/prob").to(torch::kFloat32);
      const int64_t n = p.id.numel();
      TORCH_CHECK(p.label.numel() == n && p.pred.numel() == n && p.prob.numel() == n,
                  "strata::checkpoints::read_predictions(): '", path, "': datasets of '/", g,
                  "' differ in length (id has ", n, ")");
      tasks.push_back(std::move(p));
    }
  }
  return table;
}

}  // namespace strata::checkpoints
