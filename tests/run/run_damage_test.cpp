// Damaged run folders: `--resume` verifies every version it relies on (a damaged newest version is
// moved aside and its task trained again; a damaged middle version stops the resume, naming it), and
// verify_run() reports each damaged file while a sound folder verifies clean.
#include "checkpoints/version_store.h"
#include "run/runner.h"
#include "run/verify.h"
#include "tests/support.h"

#include <H5Cpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;
using namespace strata::run;
using strata::testing::error_of;

namespace {

RunConfig tiny(const fs::path& out, const std::string& name) {
  RunConfig c;
  c.out = out.string();
  c.name = name;
  c.quiet = true;
  c.stream.name("synthetic").num_tasks(3).seed(7).train_limit(64).test_limit(40);
  c.model.hidden({16});
  c.train.lr(0.05).batch_size(16).epochs(1).seed(7);
  c.method = strata::continual::MethodConfig("gpm", {{"samples", "32"}});
  return c;
}

// One complete 3-task run, made once and copied by each test.
const fs::path& reference_run() {
  static const fs::path root = strata::testing::fresh_dir("run_damage");
  static const bool made = [] {
    Runner r(tiny(root, "ref"));
    r.run();
    return true;
  }();
  (void)made;
  return root;
}

fs::path copy_of(const std::string& name) {
  const fs::path dst = reference_run() / name;
  fs::remove_all(dst);
  fs::copy(reference_run() / "ref", dst, fs::copy_options::recursive);
  return dst;
}

void flip_byte_in_data(const std::string& path) {
  // The largest model dataset's first byte: data, not HDF5 metadata, so only the checksum sees it.
  H5::H5File f(path, H5F_ACC_RDONLY);
  H5::DataSet ds = f.openDataSet("/model/fc1.weight");
  const haddr_t offset = ds.getOffset();
  f.close();
  std::fstream io(path, std::ios::in | std::ios::out | std::ios::binary);
  io.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  io.read(&c, 1);
  c ^= 0x10;
  io.seekp(static_cast<std::streamoff>(offset));
  io.write(&c, 1);
}

void truncate_half(const std::string& path) { fs::resize_file(path, fs::file_size(path) / 2); }

void drop_dataset(const std::string& path, const std::string& name) {
  H5::H5File f(path, H5F_ACC_RDWR);
  f.unlink(name);
}

struct Resumed {
  std::vector<std::string> log;
  torch::Tensor R;
  std::string error;
};

Resumed resume(const fs::path& dir) {
  Resumed out;
  RunConfig c = read_run_config((dir / "config.ini").string());
  c.out = dir.parent_path().string();
  c.name = dir.filename().string();
  c.quiet = true;
  Runner r(c);
  r.on_log = [&](const std::string& l) { out.log.push_back(l); };
  out.error = error_of([&] { r.resume(); });
  out.R = r.accuracy_matrix().clone();
  return out;
}

torch::Tensor reference_matrix() {
  return strata::checkpoints::read_version(strata::checkpoints::version_path((reference_run() / "ref").string(), 2))
      .position.accuracy_matrix;
}

bool log_has(const Resumed& r, const std::string& s) {
  for (const auto& l : r.log)
    if (l.find(s) != std::string::npos) return true;
  return false;
}

TEST(RunDamage, SoundRunVerifiesClean) {
  const auto check = verify_run((reference_run() / "ref").string());
  for (const auto& f : check.files) EXPECT_TRUE(f.ok()) << f.file << ": " << f.problem;
  EXPECT_TRUE(check.sound());
  std::vector<std::string> names;
  for (const auto& f : check.files) names.push_back(f.file);
  for (const char* want : {"config.ini", "versions/v000.h5", "versions/v002.h5", "predictions.h5", "subspaces.h5",
                           "report.json", "metrics.csv"})
    EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << want;
  EXPECT_NE(error_of([&] { verify_run((reference_run() / "nope").string()); }).find("no run folder"), std::string::npos);
}

TEST(RunDamage, DamagedNewestVersionIsMovedAsideAndItsTaskTrainedAgain) {
  using Damage = void (*)(const std::string&);
  const std::pair<const char*, Damage> damages[] = {
      {"bitflip", flip_byte_in_data},
      {"truncated", truncate_half},
      {"missing", [](const std::string& p) { drop_dataset(p, "/model/fc1.weight"); }}};
  for (const auto& [name, damage] : damages) {
    const fs::path dir = copy_of(std::string("newest-") + name);
    const std::string v2 = strata::checkpoints::version_path(dir.string(), 2);
    damage(v2);
    // verify names the file; resume never calls the run complete.
    const auto check = verify_run(dir.string());
    EXPECT_FALSE(check.sound()) << name;
    bool named = false;
    for (const auto& f : check.files) named |= f.file == "versions/v002.h5" && !f.ok();
    EXPECT_TRUE(named) << name;
    const Resumed r = resume(dir);
    EXPECT_EQ(r.error, "") << name;
    EXPECT_TRUE(log_has(r, "moved aside to '" + v2 + ".corrupt'")) << name;
    EXPECT_TRUE(log_has(r, "task 3 is trained again from version 1")) << name;
    EXPECT_TRUE(fs::exists(v2 + ".corrupt")) << name;
    EXPECT_TRUE(torch::equal(r.R, reference_matrix())) << name << "\n" << r.R << "\nvs\n" << reference_matrix();
    // The retrained run is sound again (the moved-aside file is reported, not counted as damage).
    const auto after = verify_run(dir.string());
    for (const auto& f : after.files) EXPECT_TRUE(f.ok()) << name << " " << f.file << ": " << f.problem;
  }
}

TEST(RunDamage, DamagedMiddleVersionStopsTheResumeNamingIt) {
  const fs::path dir = copy_of("middle");
  const std::string v1 = strata::checkpoints::version_path(dir.string(), 1);
  flip_byte_in_data(v1);
  // The run is otherwise complete: the damage is found before "already complete" is decided.
  const Resumed r = resume(dir);
  EXPECT_NE(r.error.find("version '" + v1 + "' is damaged"), std::string::npos) << r.error;
  EXPECT_NE(r.error.find("checksum mismatch"), std::string::npos) << r.error;
  EXPECT_TRUE(fs::exists(v1)) << "a middle version is never moved";
}

TEST(RunDamage, CompleteRunWithDamagedNewestIsNotComplete) {
  // The original bug: "already complete" for a run whose last version is damaged.
  const fs::path dir = copy_of("not-complete");
  truncate_half(strata::checkpoints::version_path(dir.string(), 2));
  const Resumed r = resume(dir);
  EXPECT_EQ(r.error.find("already complete"), std::string::npos) << r.error;
  // And a sound complete run still is.
  const Resumed again = resume(dir);
  EXPECT_NE(again.error.find("already complete"), std::string::npos) << again.error;
}

TEST(RunDamage, VerifyNamesEachDamagedCompanionFile) {
  auto problem_of = [](const fs::path& dir, const std::string& file) {
    for (const auto& f : verify_run(dir.string()).files)
      if (f.file == file) return f.ok() ? std::string("ok") : f.problem;
    return std::string("not listed");
  };
  {
    const fs::path d = copy_of("pred");
    truncate_half((d / "predictions.h5").string());
    EXPECT_NE(problem_of(d, "predictions.h5"), "ok");
  }
  {
    const fs::path d = copy_of("subs");
    truncate_half((d / "subspaces.h5").string());
    EXPECT_NE(problem_of(d, "subspaces.h5"), "ok");
  }
  {
    const fs::path d = copy_of("report");
    std::string text;
    {
      std::ifstream in(d / "report.json");
      std::ostringstream s;
      s << in.rdbuf();
      text = s.str();
    }
    const auto pos = text.find("\"stages_done\": 3");
    ASSERT_NE(pos, std::string::npos);
    text.replace(pos, 16, "\"stages_done\": 2");
    std::ofstream(d / "report.json") << text;
    EXPECT_NE(problem_of(d, "report.json").find("stages_done is 2"), std::string::npos) << problem_of(d, "report.json");
    std::ofstream(d / "report.json") << "{ not json";
    EXPECT_NE(problem_of(d, "report.json").find("not a valid report"), std::string::npos);
  }
  {
    const fs::path d = copy_of("metrics");
    std::ofstream(d / "metrics.csv") << "task,epoch,steps,examples,loss,train_acc,val_acc,seconds,examples_per_s\n"
                                        "0,0,4,64,1,1,1,1,1\n";
    EXPECT_NE(problem_of(d, "metrics.csv").find("no rows for task 1"), std::string::npos) << problem_of(d, "metrics.csv");
  }
  {
    const fs::path d = copy_of("config");
    std::ofstream(d / "config.ini", std::ios::app) << "tasks = banana\n";
    EXPECT_NE(problem_of(d, "config.ini").find("does not parse"), std::string::npos) << problem_of(d, "config.ini");
  }
  {
    const fs::path d = copy_of("gap");
    fs::remove(strata::checkpoints::version_path(d.string(), 1));
    EXPECT_EQ(problem_of(d, "versions/v001.h5"), "missing (later versions exist)");
  }
}

}  // namespace
