#include "run/run_folder.h"

#include "checkpoints/version_store.h"
#include "core/h5.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;

namespace strata::run {

std::string RunFolder::version(int64_t v) const { return checkpoints::version_path(dir_, v); }

bool RunFolder::holds_run() const { return fs::exists(config_ini()); }

void RunFolder::create() const {
  TORCH_CHECK(!holds_run(), "strata::run::RunFolder::create(): run folder '", dir_,
              "' already holds a run; choose another --name, or --resume it");
  std::error_code ec;
  fs::create_directories(dir_, ec);
  TORCH_CHECK(!ec, "strata::run::RunFolder::create(): cannot create run folder '", dir_, "': ", ec.message());
  TORCH_CHECK(::access(dir_.c_str(), W_OK) == 0, "strata::run::RunFolder::create(): run folder '", dir_,
              "' is not writable");
}

void RunFolder::check_resumable() const {
  TORCH_CHECK(fs::is_regular_file(config_ini()), "cannot resume '", dir_, "': no config.ini there (not a run folder)");
  TORCH_CHECK(::access(dir_.c_str(), W_OK) == 0, "cannot resume '", dir_, "': the run folder is not writable");
}

std::string RunFolder::read_config() const {
  std::ifstream in(config_ini(), std::ios::binary);
  TORCH_CHECK(in, "strata::run::RunFolder::read_config(): cannot read '", config_ini(), "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void RunFolder::write_config(const std::string& text) const { core::atomic_write_text(config_ini(), text); }

void RunFolder::write_report(const std::string& json_text) const { core::atomic_write_text(report_json(), json_text); }
void RunFolder::write_report(const std::vector<std::string_view>& json_parts) const {
  core::atomic_write_text(report_json(), json_parts);
}

void RunFolder::write_plot(const std::string& file, const std::string& text) const {
  std::filesystem::create_directories(plots());
  core::atomic_write_text(plots() + "/" + file, text);
}

std::string RunFolder::read_report() const {
  std::ifstream in(report_json(), std::ios::binary);
  if (!in) return "";
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void RunFolder::write_metrics(const std::vector<std::string>& rows) const {
  std::string text = std::string(kMetricsHeader) + "\n";
  for (const auto& r : rows) text += r + "\n";
  core::atomic_write_text(metrics_csv(), text);
}

std::vector<std::string> RunFolder::read_metrics(int64_t last_task) const {
  std::vector<std::string> kept;
  std::ifstream in(metrics_csv());
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    const auto comma = line.find(',');
    if (comma == std::string::npos) continue;
    try {
      if (std::stoll(line.substr(0, comma)) <= last_task) kept.push_back(line);
    } catch (const std::exception&) {
      // A row cut by a crash mid-write of an older, non-atomic metrics.csv: dropped.
    }
  }
  return kept;
}

}  // namespace strata::run
