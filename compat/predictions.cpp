#include "compat/predictions.h"

#include "core/h5.h"
#include "core/names.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>
#include <unordered_map>

namespace strata::compat {
namespace {

// First line of predictions.h5's user block (whole-file checksum, core/h5.h).
constexpr const char* kPredictionsUserBlock = "strata-predictions-userblock";

std::string version_group(int64_t version) { return core::indexed_name("v", version, 3); }

void check_column(const torch::Tensor& t, const std::string& what, const char* name, int64_t n, bool integral) {
  TORCH_CHECK(t.dim() == 1, "strata::compat::check_table(): ", what, ": ", name, " must be 1-D [N], got shape ",
              t.sizes());
  TORCH_CHECK(t.size(0) == n, "strata::compat::check_table(): ", what, ": ids has ", n, " rows but ", name, " has ",
              t.size(0));
  if (integral) {
    TORCH_CHECK(!c10::isFloatingType(t.scalar_type()) && t.scalar_type() != torch::kBool,
                "strata::compat::check_table(): ", what, ": ", name, " must be an integer tensor, got ",
                t.scalar_type());
  } else {
    TORCH_CHECK(c10::isFloatingType(t.scalar_type()), "strata::compat::check_table(): ", what, ": ", name,
                " must be a floating tensor, got ", t.scalar_type());
  }
}

// ---- text ledgers ----

std::string trim(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && (s[a] == ' ' || s[a] == '\t' || s[a] == '\r')) ++a;
  while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t' || s[b - 1] == '\r')) --b;
  return s.substr(a, b - a);
}

std::vector<std::string> split_commas(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : line) {
    if (c == ',') {
      out.push_back(trim(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(trim(cur));
  return out;
}

// Rows accumulated by both text readers; add() rejects a duplicate item naming both lines.
struct LedgerBuilder {
  std::string path;
  bool has_prob = false, has_task = false;
  std::vector<int64_t> ids, labels, preds, tasks;
  std::vector<float> probs;
  std::map<std::pair<int64_t, int64_t>, int64_t> first_line;  // (task or 0, id) -> line

  void add(int64_t line, int64_t id, int64_t label, int64_t pred, float prob, int64_t task) {
    const auto key = std::make_pair(has_task ? task : 0, id);
    const auto [it, fresh] = first_line.emplace(key, line);
    TORCH_CHECK(fresh, path, ":", line, ": duplicate item ",
                has_task ? "(task " + std::to_string(task) + ", id " + std::to_string(id) + ")"
                         : "id " + std::to_string(id),
                " (first at line ", it->second, ")");
    ids.push_back(id);
    labels.push_back(label);
    preds.push_back(pred);
    if (has_prob) probs.push_back(prob);
    if (has_task) tasks.push_back(task);
  }

  PredictionTable finish() const {
    TORCH_CHECK(!ids.empty(), path, ": no prediction rows");
    auto L = [](const std::vector<int64_t>& v) { return torch::tensor(v, torch::kLong); };
    PredictionTable t;
    t.ids = L(ids);
    t.labels = L(labels);
    t.preds = L(preds);
    if (has_prob) t.conf = torch::tensor(probs, torch::kFloat);
    if (has_task) t.tasks = L(tasks);
    return t;
  }
};

int64_t parse_int(const std::string& s, const std::string& path, int64_t line, const char* column) {
  errno = 0;
  char* end = nullptr;
  const long long v = s.empty() ? 0 : std::strtoll(s.c_str(), &end, 10);
  TORCH_CHECK(!s.empty() && end == s.c_str() + s.size() && errno == 0, path, ":", line, ": column '", column,
              "' must be an integer, got '", s, "'");
  return static_cast<int64_t>(v);
}

float parse_prob(const std::string& s, const std::string& path, int64_t line) {
  char* end = nullptr;
  const double v = s.empty() ? NAN : std::strtod(s.c_str(), &end);
  TORCH_CHECK(!s.empty() && end == s.c_str() + s.size() && std::isfinite(v) && v >= 0.0 && v <= 1.0, path, ":",
              line, ": column 'prob' must be a probability in [0, 1], got '", s, "'");
  return static_cast<float>(v);
}

std::ifstream open_in(const std::string& path) {
  std::ifstream f(path);
  TORCH_CHECK(f.good(), "strata::compat::read_predictions(): cannot open '", path, "'");
  return f;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

void check_table(const PredictionTable& t, const std::string& what) {
  TORCH_CHECK(t.ids.defined() && t.labels.defined() && t.preds.defined(), "strata::compat::check_table(): ", what,
              ": needs ids, labels and preds");
  TORCH_CHECK(t.ids.dim() == 1, "strata::compat::check_table(): ", what, ": ids must be 1-D [N], got shape ",
              t.ids.sizes());
  const int64_t n = t.ids.size(0);
  check_column(t.ids, what, "ids", n, true);
  check_column(t.labels, what, "labels", n, true);
  check_column(t.preds, what, "preds", n, true);
  if (t.conf.defined()) check_column(t.conf, what, "conf", n, false);
  if (t.tasks.defined()) check_column(t.tasks, what, "tasks", n, true);
}

std::vector<int64_t> table_tasks(const PredictionTable& t) {
  if (!t.tasks.defined() || t.tasks.numel() == 0) return {};
  const torch::Tensor u = std::get<0>(torch::_unique(t.tasks.to(torch::kLong), /*sorted=*/true)).contiguous();
  return std::vector<int64_t>(u.data_ptr<int64_t>(), u.data_ptr<int64_t>() + u.numel());
}

PredictionTable select_tasks(const PredictionTable& t, const std::vector<int64_t>& tasks) {
  TORCH_CHECK(t.tasks.defined(), "strata::compat::select_tasks(): the table has no task column");
  const torch::Tensor wanted = torch::tensor(tasks.empty() ? std::vector<int64_t>{} : tasks, torch::kLong);
  const torch::Tensor keep = torch::isin(t.tasks.to(torch::kLong), wanted).nonzero().reshape({-1});
  PredictionTable out;
  out.ids = t.ids.index_select(0, keep);
  out.labels = t.labels.index_select(0, keep);
  out.preds = t.preds.index_select(0, keep);
  if (t.conf.defined()) out.conf = t.conf.index_select(0, keep);
  out.tasks = t.tasks.index_select(0, keep);
  return out;
}

PredictionTable concat_tables(const std::vector<PredictionTable>& parts) {
  TORCH_CHECK(!parts.empty(), "strata::compat::concat_tables(): nothing to concatenate");
  std::vector<torch::Tensor> ids, labels, preds, conf, tasks;
  for (const auto& p : parts) {
    TORCH_CHECK(p.conf.defined() == parts[0].conf.defined() && p.tasks.defined() == parts[0].tasks.defined(),
                "strata::compat::concat_tables(): the parts differ in their optional columns");
    ids.push_back(p.ids.to(torch::kLong));
    labels.push_back(p.labels.to(torch::kLong));
    preds.push_back(p.preds.to(torch::kLong));
    if (p.conf.defined()) conf.push_back(p.conf.to(torch::kFloat));
    if (p.tasks.defined()) tasks.push_back(p.tasks.to(torch::kLong));
  }
  PredictionTable t;
  t.ids = torch::cat(ids);
  t.labels = torch::cat(labels);
  t.preds = torch::cat(preds);
  if (!conf.empty()) t.conf = torch::cat(conf);
  if (!tasks.empty()) t.tasks = torch::cat(tasks);
  return t;
}

std::vector<int64_t> tasks_trained_by(int64_t version) {
  TORCH_CHECK(version >= 0, "strata::compat::tasks_trained_by(): version must be >= 0, got ", version);
  std::vector<int64_t> out(static_cast<size_t>(version + 1));
  for (int64_t t = 0; t <= version; ++t) out[static_cast<size_t>(t)] = t;
  return out;
}

std::vector<int64_t> default_compare_tasks(int64_t old_version, int64_t new_version) {
  return tasks_trained_by(std::min(old_version, new_version));
}

namespace {

// The whole file, before HDF5 opens it (core/h5.h, user block); files without one open as before.
H5::H5File open_predictions(const std::string& path, const char* fn) {
  const core::UserBlockCheck block = core::check_user_block(path, kPredictionsUserBlock);
  TORCH_CHECK(block.problem.empty(), "strata::compat::", fn, "(): '", path, "': ", block.problem);
  return core::open_file(path, core::FileMode::kRead, block.present);
}

void check_writable(const std::string& path, int64_t version, const PredictionTable& t) {
  const std::string what = "'" + path + "' version " + std::to_string(version);
  TORCH_CHECK(version >= 0 && version < 1000, "strata::compat::write_predictions(): '", path,
              "': version must be in [0, 999], got ", version);
  check_table(t, what);
  TORCH_CHECK(t.tasks.defined() && t.conf.defined(), "strata::compat::write_predictions(): ", what,
              " needs the tasks and conf columns");
  for (int64_t task : table_tasks(t))
    TORCH_CHECK(task >= 0 && task < 100, "strata::compat::write_predictions(): ", what,
                ": task must be in [0, 99], got ", task);
}

void write_root(H5::H5File& f) {
  core::set_attr(f, "format", "strata-predictions");
  core::set_attr(f, "format_version", static_cast<int64_t>(1));
}

void write_version_group(H5::H5File& f, int64_t version, const PredictionTable& t) {
  const std::string vg = version_group(version);
  auto g = core::open_group(f, vg, true);
  core::set_attr(g, "version", version);
  for (int64_t task : table_tasks(t)) {
    const PredictionTable p = select_tasks(t, {task});
    const std::string tg = vg + "/" + core::indexed_name("task", task, 2);
    core::write_tensor(f, tg + "/id", p.ids.to(torch::kInt64));
    core::write_tensor(f, tg + "/label", p.labels.to(torch::kInt64));
    core::write_tensor(f, tg + "/pred", p.preds.to(torch::kInt64));
    core::write_tensor(f, tg + "/prob", p.conf.to(torch::kFloat32));
    auto group = core::open_group(f, tg);
    core::set_attr(group, "task", task);
  }
}

}  // namespace

void write_predictions(const std::string& path, const PredictionVersions& versions) {
  for (const auto& [version, t] : versions) check_writable(path, version, t);
  core::atomic_write_h5(path, [&](H5::H5File& f) {
    write_root(f);
    for (const auto& [version, t] : versions) write_version_group(f, version, t);
  }, kPredictionsUserBlock);
}

void append_predictions(const std::string& path, int64_t version, const PredictionTable& table) {
  check_writable(path, version, table);
  if (std::filesystem::exists(path)) {  // a file that is not ours is an error, not something to extend
    core::quiet_hdf5();
    H5::H5File f = open_predictions(path, "append_predictions");
    TORCH_CHECK(core::has_attr(f, "format") && core::get_attr_string(f, "format") == "strata-predictions",
                "strata::compat::append_predictions(): '", path, "' is not a strata-predictions file");
  }
  core::atomic_update_h5(path, [&](H5::H5File& f) {
    if (!core::has_attr(f, "format")) write_root(f);
    for (const auto& name : core::list_children(f, "/"))
      if (core::parse_indexed_name(name, "v") >= version)
        TORCH_CHECK(H5Ldelete(f.getId(), name.c_str(), H5P_DEFAULT) >= 0, "strata::compat::append_predictions(): '",
                    path, "': cannot replace group /", name);
    write_version_group(f, version, table);
  }, kPredictionsUserBlock);
}

namespace {


PredictionTable read_version_group(const H5::H5File& f, const std::string& path, const std::string& vg) {
  std::vector<PredictionTable> parts;
  for (const auto& name : core::list_children(f, vg)) {  // sorted by name = task order (zero-padded)
    const int64_t task = core::parse_indexed_name(name, "task");
    const std::string g = vg + "/" + name;
    TORCH_CHECK(task >= 0 && core::is_group(f, g), "strata::compat::read_predictions(): '", path,
                "': unexpected object '/", g, "' (expected groups taskTT)");
    for (const char* ds : {"id", "label", "pred", "prob"})
      TORCH_CHECK(core::exists(f, g + "/" + ds), "strata::compat::read_predictions(): '", path, "': group /", g,
                  " has no dataset '", ds, "'");
    PredictionTable p;
    p.ids = core::read_tensor(f, g + "/id").reshape({-1}).to(torch::kLong);
    p.labels = core::read_tensor(f, g + "/label").reshape({-1}).to(torch::kLong);
    p.preds = core::read_tensor(f, g + "/pred").reshape({-1}).to(torch::kLong);
    p.conf = core::read_tensor(f, g + "/prob").reshape({-1}).to(torch::kFloat);
    const int64_t n = p.ids.size(0);
    TORCH_CHECK(p.labels.size(0) == n && p.preds.size(0) == n && p.conf.size(0) == n,
                "strata::compat::read_predictions(): '", path, "': datasets of /", g, " differ in length: id ", n,
                ", label ", p.labels.size(0), ", pred ", p.preds.size(0), ", prob ", p.conf.size(0));
    p.tasks = torch::full({n}, task, torch::kLong);
    parts.push_back(std::move(p));
  }
  TORCH_CHECK(!parts.empty(), "strata::compat::read_predictions(): '", path, "': group /", vg,
              " has no taskTT groups");
  return concat_tables(parts);
}

}  // namespace

PredictionVersions read_predictions(const std::string& path) {
  core::quiet_hdf5();
  H5::H5File f = open_predictions(path, "read_predictions");
  PredictionVersions out;
  for (const auto& name : core::list_children(f, "/")) {
    const int64_t v = core::parse_indexed_name(name, "v");
    TORCH_CHECK(v >= 0 && core::is_group(f, name), "strata::compat::read_predictions(): '", path,
                "': unexpected object '/", name, "' (expected groups vNNN)");
    out[v] = read_version_group(f, path, name);
  }
  return out;
}

PredictionTable read_predictions(const std::string& path, int64_t version) {
  core::quiet_hdf5();
  H5::H5File f = open_predictions(path, "read_predictions");
  const std::string vg = version_group(version);
  if (!core::is_group(f, vg)) {
    std::ostringstream present;
    for (const auto& name : core::list_children(f, "/"))
      if (core::parse_indexed_name(name, "v") >= 0) present << " " << name;
    TORCH_CHECK(false, "strata::compat::read_predictions(): '", path, "' has no group /", vg,
                " (versions present:", present.str().empty() ? " none" : present.str(), ")");
  }
  return read_version_group(f, path, vg);
}

std::vector<int64_t> list_prediction_versions(const std::string& path) {
  core::quiet_hdf5();
  H5::H5File f = open_predictions(path, "list_prediction_versions");
  std::vector<int64_t> out;
  for (const auto& name : core::list_children(f, "/")) {
    const int64_t v = core::parse_indexed_name(name, "v");
    if (v >= 0 && core::is_group(f, name)) out.push_back(v);
  }
  std::sort(out.begin(), out.end());
  return out;
}

PredictionTable read_predictions_csv(const std::string& path) {
  std::ifstream f = open_in(path);
  std::string line;
  TORCH_CHECK(std::getline(f, line), path, ":1: empty file (expected a header line id,label,pred[,prob][,task])");
  const std::vector<std::string> header = split_commas(line);
  int col_id = -1, col_label = -1, col_pred = -1, col_prob = -1, col_task = -1;
  for (size_t i = 0; i < header.size(); ++i) {
    int* slot = header[i] == "id"      ? &col_id
                : header[i] == "label" ? &col_label
                : header[i] == "pred"  ? &col_pred
                : header[i] == "prob"  ? &col_prob
                : header[i] == "task"  ? &col_task
                                       : nullptr;
    TORCH_CHECK(slot != nullptr, path, ":1: unknown column '", header[i],
                "' in the header (expected id,label,pred[,prob][,task])");
    TORCH_CHECK(*slot < 0, path, ":1: column '", header[i], "' appears twice in the header");
    *slot = static_cast<int>(i);
  }
  const std::pair<int, const char*> required[] = {{col_id, "id"}, {col_label, "label"}, {col_pred, "pred"}};
  for (const auto& [col, name] : required)
    TORCH_CHECK(col >= 0, path, ":1: the header has no '", name,
                "' column (a header line id,label,pred[,prob][,task] is required)");
  LedgerBuilder b;
  b.path = path;
  b.has_prob = col_prob >= 0;
  b.has_task = col_task >= 0;
  int64_t lineno = 1;
  while (std::getline(f, line)) {
    ++lineno;
    if (trim(line).empty()) continue;
    const std::vector<std::string> v = split_commas(line);
    TORCH_CHECK(v.size() == header.size(), path, ":", lineno, ": ", v.size(), " fields, the header has ",
                header.size());
    b.add(lineno, parse_int(v[col_id], path, lineno, "id"), parse_int(v[col_label], path, lineno, "label"),
          parse_int(v[col_pred], path, lineno, "pred"), b.has_prob ? parse_prob(v[col_prob], path, lineno) : 0.0f,
          b.has_task ? parse_int(v[col_task], path, lineno, "task") : 0);
  }
  return b.finish();
}

PredictionTable read_predictions_jsonl(const std::string& path) {
  std::ifstream f = open_in(path);
  LedgerBuilder b;
  b.path = path;
  std::string line;
  int64_t lineno = 0;
  bool first = true;
  while (std::getline(f, line)) {
    ++lineno;
    if (trim(line).empty()) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      TORCH_CHECK(false, path, ":", lineno, ": not valid JSON (", e.what(), ")");
    }
    TORCH_CHECK(j.is_object(), path, ":", lineno, ": expected a JSON object {\"id\", \"label\", \"pred\", ...}");
    for (const auto& [key, value] : j.items())
      TORCH_CHECK(key == "id" || key == "label" || key == "pred" || key == "prob" || key == "task", path, ":",
                  lineno, ": unknown key '", key, "' (expected id, label, pred[, prob][, task])");
    if (first) {
      b.has_prob = j.contains("prob");
      b.has_task = j.contains("task");
      first = false;
    }
    TORCH_CHECK(j.contains("prob") == b.has_prob && j.contains("task") == b.has_task, path, ":", lineno,
                ": every line must carry the same keys as the first (prob ", b.has_prob ? "present" : "absent",
                ", task ", b.has_task ? "present" : "absent", ")");
    auto integer = [&](const char* key) -> int64_t {
      TORCH_CHECK(j.contains(key), path, ":", lineno, ": missing key '", key, "'");
      const auto& v = j[key];
      TORCH_CHECK(v.is_number_integer(), path, ":", lineno, ": '", key, "' must be an integer, got ", v.dump());
      return v.get<int64_t>();
    };
    float prob = 0.0f;
    if (b.has_prob) {
      const auto& v = j["prob"];
      TORCH_CHECK(v.is_number() && v.get<double>() >= 0.0 && v.get<double>() <= 1.0, path, ":", lineno,
                  ": 'prob' must be a probability in [0, 1], got ", v.dump());
      prob = v.get<float>();
    }
    b.add(lineno, integer("id"), integer("label"), integer("pred"), prob, b.has_task ? integer("task") : 0);
  }
  return b.finish();
}

int64_t write_predictions_csv(const std::string& path, const PredictionTable& t) {
  check_table(t, "'" + path + "'");
  const torch::Tensor ids = t.ids.to(torch::kLong).contiguous(), y = t.labels.to(torch::kLong).contiguous(),
                      p = t.preds.to(torch::kLong).contiguous();
  const torch::Tensor c = t.conf.defined() ? t.conf.to(torch::kDouble).contiguous() : torch::Tensor();
  const torch::Tensor k = t.tasks.defined() ? t.tasks.to(torch::kLong).contiguous() : torch::Tensor();
  core::AtomicFile out(path);
  {
    std::ofstream f(out.tmp_path(), std::ios::out | std::ios::trunc);
    TORCH_CHECK(f.good(), "strata::compat::write_predictions_csv(): cannot open '", path, "' for writing");
    f << "id,label,pred" << (c.defined() ? ",prob" : "") << (k.defined() ? ",task" : "") << "\n";
    f << std::setprecision(9);
    for (int64_t i = 0; i < ids.numel(); ++i) {
      f << ids.data_ptr<int64_t>()[i] << ',' << y.data_ptr<int64_t>()[i] << ',' << p.data_ptr<int64_t>()[i];
      if (c.defined()) f << ',' << c.data_ptr<double>()[i];
      if (k.defined()) f << ',' << k.data_ptr<int64_t>()[i];
      f << '\n';
    }
    f.close();
    TORCH_CHECK(!f.fail(), "strata::compat::write_predictions_csv(): writing '", path, "' failed");
  }
  out.commit();
  return ids.numel();
}

bool is_ledger_file(const std::string& path) {
  return ends_with(path, ".csv") || ends_with(path, ".jsonl") || ends_with(path, ".ndjson");
}

PredictionTable read_ledger_file(const std::string& path) {
  TORCH_CHECK(is_ledger_file(path), "strata::compat::read_ledger_file(): '", path,
              "' is neither .csv nor .jsonl");
  return ends_with(path, ".csv") ? read_predictions_csv(path) : read_predictions_jsonl(path);
}

}  // namespace strata::compat
