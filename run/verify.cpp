#include "run/verify.h"

#include "checkpoints/version_store.h"
#include "compat/predictions.h"
#include "run/run_folder.h"
#include "run/runner.h"
#include "subspaces/store.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

namespace fs = std::filesystem;

namespace strata::run {

namespace {

std::string shape_str(at::IntArrayRef s) {
  std::string o = "[";
  for (size_t i = 0; i < s.size(); ++i) o += (i ? ", " : "") + std::to_string(s[i]);
  return o + "]";
}

std::string message(const c10::Error& e) { return e.msg(); }

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// "v002", as the version files are named.
std::string vname(int64_t v) {
  return v < 0 ? std::string("none") : fs::path(checkpoints::version_path("", v)).stem().string();
}

std::string relative(const std::string& dir, const std::string& path) {
  return fs::path(path).lexically_relative(dir).string();
}

}  // namespace

std::string check_version(const std::string& path, int64_t expected, int64_t num_tasks, const std::string& method,
                          const models::Model* model) {
  checkpoints::Version v;
  try {
    v = checkpoints::read_version(path);
  } catch (const c10::Error& e) {
    return message(e);
  }
  std::ostringstream o;
  if (v.version != expected)
    o << "'" << path << "' holds version " << v.version << ", expected " << expected;
  else if (v.position.next_task != expected + 1 || v.position.num_tasks != num_tasks)
    o << "'" << path << "' has position next_task " << v.position.next_task << " of " << v.position.num_tasks
      << " tasks, expected " << expected + 1 << " of " << num_tasks;
  else if (!method.empty() && v.method != method)
    o << "'" << path << "' was written by method '" << v.method << "', the run uses '" << method << "'";
  if (!o.str().empty()) return o.str();
  if (model) {
    std::map<std::string, torch::Tensor> stored;
    for (const auto& [n, t] : v.parameters) stored[n] = t;
    for (const auto& [n, t] : v.buffers) stored[n] = t;
    auto check = [&](const std::string& n, const torch::Tensor& t) {
      auto it = stored.find(n);
      if (it != stored.end() && it->second.sizes() != t.sizes() && o.str().empty())
        o << "'" << path << "': dataset '/model/" << n << "' has shape " << shape_str(it->second.sizes())
          << " but the run's model gives " << shape_str(t.sizes());
    };
    for (const auto& p : (*model)->named_parameters()) check(p.key(), p.value());
    for (const auto& b : (*model)->named_buffers()) check(b.key(), b.value());
  }
  return o.str();
}

bool RunCheck::sound() const {
  for (const auto& f : files)
    if (!f.ok()) return false;
  return true;
}

RunCheck verify_run(const std::string& dir_in, const continual::MethodRegistry& registry) {
  std::string dir = dir_in;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  TORCH_CHECK(fs::is_directory(dir), "no run folder '", dir, "'");
  const RunFolder folder(dir);
  TORCH_CHECK(fs::exists(folder.config_ini()) || fs::is_directory(dir + "/versions"), "'", dir,
              "' is not a run folder (neither config.ini nor versions/)");
  RunCheck out;
  auto add = [&](const std::string& path, std::string problem, std::string note = "") {
    out.files.push_back({relative(dir, path), std::move(problem), std::move(note)});
  };

  // config.ini: it parses, and it gives the task count, method and model the versions must match.
  std::optional<RunConfig> config;
  std::string config_text;
  if (!fs::exists(folder.config_ini())) {
    add(folder.config_ini(), "missing");
  } else {
    try {
      config = read_run_config(folder.config_ini(), registry);
      config_text = folder.read_config();
      add(folder.config_ini(), "");
    } catch (const c10::Error& e) {
      add(folder.config_ini(), "does not parse: " + message(e));
    }
  }
  // A fresh model of the configuration, for the shape checks (needs the stream's input shape).
  std::optional<models::Model> model;
  std::optional<tasks::TaskStream> stream;
  std::string model_note;
  if (config) {
    try {
      stream = tasks::make_stream(config->stream);
      RunConfig c = *config;
      c.model.input_shape(stream->input_shape).num_classes(stream->num_classes);
      torch::manual_seed(c.train.seed());
      model = models::make_model(c.model);
    } catch (const c10::Error& e) {
      model_note = "; shapes not checked (cannot build the run's stream: " + message(e) + ")";
    }
  }

  // versions/: contiguous v000..vLAST, each sound; their accuracy rows agree with the newest's.
  const auto scan = checkpoints::scan_versions(dir);
  const int64_t T = config ? config->stream.num_tasks() : -1;
  std::string method;
  if (config) {
    try {
      method = make_run_method(*config, registry)->name();
    } catch (const c10::Error& e) {
      out.files.back().problem = "its method does not build: " + message(e);
      config.reset();
    }
  }
  std::map<int64_t, checkpoints::Version> good;
  int64_t last = scan.versions.empty() ? -1 : scan.versions.back();
  for (int64_t v = 0; v <= last; ++v) {
    const std::string path = folder.version(v);
    if (!std::binary_search(scan.versions.begin(), scan.versions.end(), v)) {
      add(path, "missing (later versions exist)");
      continue;
    }
    if (!config) {
      try {
        good[v] = checkpoints::read_version(path);
        add(path, "", "checksum and format only (config.ini unusable)");
      } catch (const c10::Error& e) {
        add(path, message(e));
      }
      continue;
    }
    std::string problem = check_version(path, v, T, method, model ? &*model : nullptr);
    if (problem.empty()) {
      good[v] = checkpoints::read_version(path);
      if (good[v].config_ini != config_text) problem = "its stored configuration differs from config.ini";
    }
    add(path, problem, problem.empty() ? "checksum, format, position" + std::string(model ? ", shapes" : "") + model_note : "");
  }
  if (!good.empty() && config && model && stream && good.count(last)) {
    // The resume point restores completely (method state and every tensor).
    try {
      LoadVersionOptions lo;
      lo.registry = &registry;
      lo.stream = &*stream;
      load_version(folder.version(last), lo);
    } catch (const c10::Error& e) {
      add(folder.version(last), "does not restore: " + message(e));
    }
  }
  for (const auto& p : scan.partial) add(p, "", "partial file left by an interrupted write, ignored by --resume");
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().filename().string().find(".tmp-") != std::string::npos)
      add(e.path().string(), "", "partial file left by an interrupted write, ignored");
  for (const auto& p : scan.other)
    add(p, "", p.size() > 8 && p.compare(p.size() - 8, 8, ".corrupt") == 0 ? "moved aside by --resume, ignored"
                                                                           : "not a version file, ignored");
  const bool versions_sound = static_cast<int64_t>(good.size()) == last + 1;
  // R of the newest good version: every earlier version's rows must be its rows.
  torch::Tensor R;
  if (!good.empty()) {
    R = good.rbegin()->second.position.accuracy_matrix;
    for (const auto& [v, ver] : good) {
      const auto rows = ver.position.accuracy_matrix.slice(0, 0, v + 1);
      if (v != good.rbegin()->first && !torch::equal(rows, R.slice(0, 0, v + 1)))
        add(folder.version(v), "its accuracy rows differ from the newest version's");
    }
  }

  // predictions.h5: one table per version; its accuracies are the versions' rows.
  if (!fs::exists(folder.predictions_h5())) {
    if (last >= 0) add(folder.predictions_h5(), "missing (the run has versions)");
  } else {
    try {
      // One version at a time: a 100-task run's predictions do not fit in memory at once.
      const auto present = compat::list_prediction_versions(folder.predictions_h5());
      std::string problem;
      for (int64_t u : present) {
        if (!problem.empty()) break;
        if (u > last) {
          problem = "holds version " + std::to_string(u) + " but the newest version file is " + vname(last);
          break;
        }
        if (!good.count(u)) continue;
        const compat::PredictionTable table = compat::read_predictions(folder.predictions_h5(), u);
        const auto& Ru = good.at(u).position.accuracy_matrix;
        for (int64_t j = 0; j < Ru.size(1) && problem.empty(); ++j) {
          const auto sel = table.tasks.eq(j);
          const int64_t n = sel.sum().item<int64_t>();
          const double acc = n == 0 ? 0.0
                                    : table.preds.masked_select(sel).eq(table.labels.masked_select(sel))
                                              .to(torch::kFloat64).mean().item<double>();
          if (std::abs(acc - Ru[u][j].item<double>()) > 1e-9)
            problem = "version " + std::to_string(u) + " task " + std::to_string(j) + ": predictions give accuracy " +
                      std::to_string(acc) + ", the version recorded " + std::to_string(Ru[u][j].item<double>());
        }
      }
      for (int64_t u = 0; u <= last && problem.empty(); ++u)
        if (!std::binary_search(present.begin(), present.end(), u)) problem = "lacks version " + std::to_string(u);
      add(folder.predictions_h5(), problem, "accuracies agree with the versions");
    } catch (const c10::Error& e) {
      add(folder.predictions_h5(), message(e));
    }
  }

  // subspaces.h5: every record reads (HDF5 verifies its Fletcher32 chunk checksums), task keys in order.
  if (fs::exists(folder.subspaces_h5())) {
    try {
      const auto store = subspaces::SubspaceStore::open(folder.subspaces_h5());
      std::string problem;
      int64_t records = 0;
      const auto tasks = store.tasks();
      // Methods may skip tasks (OSFT records from the second on), but keys increase and none is
      // beyond the task after the newest version (recorded before a kill, retrained on resume).
      int64_t previous = -1;
      for (size_t i = 0; i < tasks.size() && problem.empty(); ++i) {
        int64_t k = -1;
        for (int64_t t = previous + 1; t <= last + 1 && k < 0; ++t)
          if (tasks[i] == subspaces::task_key(t)) k = t;
        if (k < 0)
          problem = "task record '" + tasks[i] + "' is out of order or beyond the task after the newest version (" +
                    vname(last) + ")";
        previous = k;
        for (const auto& layer : store.layers(tasks[i])) {
          const auto r = store.get(tasks[i], layer);
          ++records;
          if (r.basis.dim() != 2 && problem.empty())
            problem = "task '" + tasks[i] + "' layer '" + layer + "': basis has shape " + shape_str(r.basis.sizes());
        }
      }
      add(folder.subspaces_h5(), problem, std::to_string(tasks.size()) + " tasks, " + std::to_string(records) + " records");
    } catch (const c10::Error& e) {
      add(folder.subspaces_h5(), message(e));
    }
  }

  // report.json: written after each version; it must describe the newest one.
  if (!fs::exists(folder.report_json())) {
    if (last >= 0) add(folder.report_json(), "missing (the run has versions)");
  } else {
    std::string problem;
    try {
      const auto r = nlohmann::json::parse(slurp(folder.report_json()));
      const int64_t stages = r.at("stages_done").get<int64_t>();
      const auto& m = r.at("accuracy_matrix");
      if (T >= 0 && static_cast<int64_t>(r.at("stream").at("tasks").size()) != T)
        problem = "lists " + std::to_string(r.at("stream").at("tasks").size()) + " tasks, config.ini " + std::to_string(T);
      else if (stages != last + 1)
        problem = "stages_done is " + std::to_string(stages) + " but the versions go to " + vname(last) +
                  " (interrupted before the report was written: strata train --resume rewrites it)";
      else if (R.defined() && versions_sound) {
        for (int64_t i = 0; i < R.size(0) && problem.empty(); ++i)
          for (int64_t j = 0; j < R.size(1) && problem.empty(); ++j)
            if (m.at(static_cast<size_t>(i)).at(static_cast<size_t>(j)).get<double>() != R[i][j].item<double>())
              problem = "accuracy_matrix[" + std::to_string(i) + "][" + std::to_string(j) + "] differs from the newest version's";
      }
    } catch (const std::exception& e) {
      problem = std::string("not a valid report: ") + e.what();
    }
    add(folder.report_json(), problem);
  }

  // metrics.csv: the header, and rows for every task with a version (none beyond the next task).
  if (!fs::exists(folder.metrics_csv())) {
    add(folder.metrics_csv(), "missing");
  } else {
    std::istringstream in(slurp(folder.metrics_csv()));
    std::string line, problem;
    std::getline(in, line);
    std::set<int64_t> tasks_seen;
    if (line != RunFolder::kMetricsHeader) problem = "header is '" + line + "', expected '" + RunFolder::kMetricsHeader + "'";
    int64_t row = 1;
    while (problem.empty() && std::getline(in, line)) {
      ++row;
      try {
        size_t pos = 0;
        const int64_t t = std::stoll(line, &pos);
        if (pos >= line.size() || line[pos] != ',') throw std::invalid_argument("no comma");
        tasks_seen.insert(t);
        if (t > last + 1) problem = "row " + std::to_string(row) + " is for task " + std::to_string(t) +
                                    " but the newest version is " + vname(last);
      } catch (const std::exception&) {
        problem = "row " + std::to_string(row) + " does not parse: '" + line + "'";
      }
    }
    for (int64_t t = 0; t <= last && problem.empty(); ++t)
      if (!tasks_seen.count(t)) problem = "has no rows for task " + std::to_string(t) + " (" + vname(t) + " exists)";
    add(folder.metrics_csv(), problem);
  }
  return out;
}

}  // namespace strata::run
