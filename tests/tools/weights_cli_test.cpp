// strata export and strata eval of a weight file, end to end on a tiny ViT.
#include "tests/tools/cli_support.h"
#include <gtest/gtest.h>

#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

using Result = strata::testing::CliResult;
Result run(const std::string& args) { return strata::testing::run_strata(args); }

// The per-task accuracy lines ("   1  name   test   12.34%...") of strata eval's output.
std::vector<std::string> accuracies(const std::string& out) {
  std::vector<std::string> v;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    const auto pct = line.find('%');
    if (pct == std::string::npos || line.rfind("   ", 0) != 0) continue;
    v.push_back(line.substr(0, pct));  // task, name, test size, accuracy
  }
  return v;
}

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> v;
  std::string line;
  while (std::getline(in, line)) v.push_back(line);
  return v;
}

}  // namespace

TEST(WeightsCli, ExportThenEvalTheWeightFileGivesTheVersionsAccuracy) {
  const auto dir = fs::temp_directory_path() / ("strata_cli_weights_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string model = "--model vit --patch 4 --dim 16 --depth 1 --heads 2 --mlp-dim 24";
  const std::string stream = "--stream synthetic --tasks 2 --scenario class";
  auto t = run("train --quiet --out " + dir.string() + " --name vit " + stream + " " + model +
               " --method olora --epochs 1 --test-limit 64");  // unmerged banks: export merges them
  ASSERT_EQ(t.code, 0) << t.output;
  const std::string version = (dir / "vit" / "versions" / "v001.h5").string();
  auto ev = run("eval " + version + " --predictions " + (dir / "version.csv").string());
  ASSERT_EQ(ev.code, 0) << ev.output;
  const auto expected = accuracies(ev.output);
  ASSERT_EQ(expected.size(), 2u) << ev.output;

  struct Case {
    std::string names, format, eval_names;
  };
  for (const Case& c : {Case{"torchvision", "safetensors", ""}, Case{"timm", "h5", "--weights-names timm"},
                        Case{"strata", "safetensors", "--weights-names strata"}}) {
    const auto file = (dir / ("w_" + c.names + "." + c.format)).string();
    auto ex = run("export " + version + " --format " + c.format + " --names " + c.names + " -o " + file);
    ASSERT_EQ(ex.code, 0) << ex.output;
    EXPECT_NE(ex.output.find("adapters merged"), std::string::npos) << ex.output;
    const auto csv = (dir / ("p_" + c.names + ".csv")).string();
    auto w = run("eval " + file + " " + model + " " + stream + " --test-limit 64 " + c.eval_names + " --predictions " + csv);
    ASSERT_EQ(w.code, 0) << w.output;
    EXPECT_NE(w.output.find(c.names + " names"), std::string::npos) << w.output;
    EXPECT_EQ(accuracies(w.output), expected) << w.output << "\nversion:\n" << ev.output;
    const auto rows = lines_of(csv);
    ASSERT_EQ(rows.size(), 1u + 2 * 64) << csv;
    EXPECT_EQ(rows[0], "id,label,pred,prob,task");
    // The merged export predicts what the (unmerged) version predicts, item by item.
    const auto vrows = lines_of((dir / "version.csv").string());
    ASSERT_EQ(vrows.size(), rows.size());
    int same_pred = 0;
    for (size_t i = 1; i < rows.size(); ++i) {
      auto cut = [](const std::string& r) {  // id,label,pred
        size_t p = r.find(',');
        p = r.find(',', p + 1);
        return r.substr(0, r.find(',', p + 1));
      };
      same_pred += cut(rows[i]) == cut(vrows[i]);
    }
    EXPECT_EQ(same_pred, static_cast<int>(rows.size()) - 1);
  }

  // strata train --init from the export: strict by default (3 tasks = 6 classes, the file has 4),
  // --init-head reset keeps the fresh classifier.
  const auto tv = (dir / "w_torchvision.safetensors").string();
  const std::string train3 = "train --out " + dir.string() + " --stream synthetic --tasks 3 --scenario class " + model +
                             " --method naive --epochs 1 --test-limit 16 --train-limit 32 --init " + tv;
  auto strict = run(train3 + " --name strict");
  EXPECT_NE(strict.code, 0);
  EXPECT_NE(strict.output.find("heads.head.weight: file [4, 16], model [6, 16]"), std::string::npos) << strict.output;
  auto reset = run(train3 + " --name reset --init-head reset");
  EXPECT_EQ(reset.code, 0) << reset.output;
  EXPECT_NE(reset.output.find("safetensors, torchvision names); classifier kept fresh"), std::string::npos)
      << reset.output;

  // Clear errors: wrong model for the file, unknown names, torchvision names for an MLP.
  auto bad = run("eval " + tv + " --model vit --patch 4 --dim 16 --depth 2 --heads 2 --mlp-dim 24 " + stream);
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.output.find("missing keys (12)"), std::string::npos) << bad.output;
  auto names = run("export " + version + " --names keras -o " + (dir / "x.safetensors").string());
  EXPECT_NE(names.code, 0);
  EXPECT_NE(names.output.find("keras"), std::string::npos) << names.output;
  EXPECT_FALSE(fs::exists(dir / "x.safetensors"));
  auto mlp = run("train --quiet --out " + dir.string() + " --name mlp --stream synthetic --tasks 1 --method naive --epochs 1");
  ASSERT_EQ(mlp.code, 0) << mlp.output;
  auto mx = run("export " + (dir / "mlp" / "versions" / "v000.h5").string() + " --names torchvision -o " +
                (dir / "m.safetensors").string());
  EXPECT_NE(mx.code, 0);
  EXPECT_NE(mx.output.find("vit model only"), std::string::npos) << mx.output;
  auto ms = run("export " + (dir / "mlp" / "versions" / "v000.h5").string() + " --format h5 -o " + (dir / "m.h5").string());
  EXPECT_EQ(ms.code, 0) << ms.output;
  auto me = run("eval " + (dir / "m.h5").string() + " --stream synthetic --tasks 1");
  EXPECT_EQ(me.code, 0) << me.output;
  fs::remove_all(dir);
}
