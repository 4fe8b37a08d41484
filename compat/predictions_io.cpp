#include "compat/predictions_io.h"

#include "core/h5.h"
#include "core/names.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace strata::compat {
namespace {

std::string version_group(int64_t version) { return core::indexed_name("v", version, 3); }

}  // namespace

std::vector<int64_t> list_prediction_versions(const std::string& path) {
  core::quiet_hdf5();
  H5::H5File file = core::open_file(path, core::FileMode::kRead);
  std::vector<int64_t> out;
  for (const auto& name : core::list_children(file, "/")) {
    const int64_t v = core::parse_indexed_name(name, "v");
    if (v >= 0 && core::is_group(file, name)) out.push_back(v);
  }
  std::sort(out.begin(), out.end());
  return out;
}

PredictionTable read_prediction_table(const std::string& path, int64_t version) {
  core::quiet_hdf5();
  H5::H5File file = core::open_file(path, core::FileMode::kRead);
  const std::string vg = version_group(version);
  if (!core::is_group(file, vg)) {
    std::ostringstream present;
    for (const auto& name : core::list_children(file, "/"))
      if (core::parse_indexed_name(name, "v") >= 0) present << " " << name;
    TORCH_CHECK(false, "strata::compat::read_prediction_table(): '", path, "' has no group /", vg,
                " (versions present:", present.str().empty() ? " none" : present.str(), ")");
  }
  std::vector<torch::Tensor> ids, labels, preds, probs, groups;
  for (const auto& name : core::list_children(file, vg)) {  // sorted by name = task order (zero-padded)
    const int64_t task = core::parse_indexed_name(name, "task");
    if (task < 0) continue;
    const std::string g = vg + "/" + name;
    for (const char* ds : {"id", "label", "pred", "prob"})
      TORCH_CHECK(core::exists(file, g + "/" + ds), "strata::compat::read_prediction_table(): '", path,
                  "' group /", g, " has no dataset '", ds, "'");
    torch::Tensor id = core::read_tensor(file, g + "/id").reshape({-1}).to(torch::kLong);
    torch::Tensor label = core::read_tensor(file, g + "/label").reshape({-1}).to(torch::kLong);
    torch::Tensor pred = core::read_tensor(file, g + "/pred").reshape({-1}).to(torch::kLong);
    torch::Tensor prob = core::read_tensor(file, g + "/prob").reshape({-1}).to(torch::kFloat);
    const int64_t n = id.size(0);
    TORCH_CHECK(label.size(0) == n && pred.size(0) == n && prob.size(0) == n,
                "strata::compat::read_prediction_table(): '", path, "' group /", g,
                " datasets differ in length: id ", n, ", label ", label.size(0), ", pred ", pred.size(0), ", prob ",
                prob.size(0));
    // The same example (same source index) appears in every task of permuted/rotated streams:
    // an item is (task, example), encoded as task·2^32 + example id like the version-file mode.
    ids.push_back(id + task * (int64_t{1} << 32));
    labels.push_back(label);
    preds.push_back(pred);
    probs.push_back(prob);
    groups.push_back(torch::full({n}, task, torch::kLong));
  }
  TORCH_CHECK(!ids.empty(), "strata::compat::read_prediction_table(): '", path, "' group /", vg,
              " has no taskTT groups");
  PredictionTable t;
  t.ids = torch::cat(ids);
  t.labels = torch::cat(labels);
  t.preds = torch::cat(preds);
  t.conf = torch::cat(probs);
  t.groups = torch::cat(groups);
  return t;
}

}  // namespace strata::compat
