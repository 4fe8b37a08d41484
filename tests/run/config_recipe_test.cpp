// A method's optimizer recipe applies when the user set no optimizer option, and config.ini records
// what was used.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "run/config.h"

using namespace strata::run;
namespace fs = std::filesystem;

namespace {

RunConfig parse(std::vector<const char*> argv) {
  argv.insert(argv.begin(), "train");
  return parse_run_config(static_cast<int>(argv.size()), argv.data());
}

TEST(RunConfigRecipe, MethodRecipeAppliesOnlyWithoutUserOptimizerSettings) {
  const RunConfig c = parse({"--method", "codyra"});
  EXPECT_EQ(c.train_recipe, "codyra");
  EXPECT_EQ(c.train.optimizer(), "adamw");
  EXPECT_DOUBLE_EQ(c.train.lr(), 5e-4);
  EXPECT_DOUBLE_EQ(c.train.beta1(), 0.9);
  EXPECT_DOUBLE_EQ(c.train.beta2(), 0.9999);
  EXPECT_DOUBLE_EQ(c.train.weight_decay(), 0);
  EXPECT_EQ(c.train.schedule(), "cosine");
  const std::string ini = c.to_ini();
  EXPECT_NE(ini.find("# optimizer settings: the codyra recipe"), std::string::npos) << ini;
  EXPECT_NE(ini.find("optimizer = adamw"), std::string::npos);
  EXPECT_NE(ini.find("adam-beta2 = 0.9999"), std::string::npos);
  EXPECT_NE(ini.find("lr-schedule = cosine"), std::string::npos);
  // config.ini reads back to the same training settings (now explicit: no recipe is applied again).
  const fs::path path = fs::temp_directory_path() / ("strata_config_recipe_" + std::to_string(::getpid()) + ".ini");
  std::ofstream(path) << ini;
  const RunConfig back = read_run_config(path.string());
  fs::remove(path);
  EXPECT_EQ(back.train.optimizer(), "adamw");
  EXPECT_DOUBLE_EQ(back.train.lr(), 5e-4);
  EXPECT_DOUBLE_EQ(back.train.beta2(), 0.9999);
  EXPECT_EQ(back.train.schedule(), "cosine");

  // Any optimizer option given: the user's settings and the trainer's defaults, no recipe.
  for (const auto& opt : std::vector<std::vector<const char*>>{
           {"--lr", "0.02"}, {"--optimizer", "sgd"}, {"--lr-schedule", "constant"}, {"--weight-decay", "0"}}) {
    std::vector<const char*> argv = {"--method", "mora"};
    argv.insert(argv.end(), opt.begin(), opt.end());
    const RunConfig u = parse(argv);
    EXPECT_TRUE(u.train_recipe.empty()) << opt[0];
    EXPECT_EQ(u.train.optimizer(), "sgd") << opt[0];
    EXPECT_EQ(u.train.schedule(), "constant") << opt[0];
  }
  // Methods without a recipe keep the trainer's defaults.
  const RunConfig n = parse({"--method", "naive"});
  EXPECT_TRUE(n.train_recipe.empty());
  EXPECT_EQ(n.train.optimizer(), "sgd");
  EXPECT_DOUBLE_EQ(n.train.lr(), 0.01);
  EXPECT_DOUBLE_EQ(n.train.beta2(), 0.999);
  EXPECT_EQ(n.to_ini().find("recipe"), std::string::npos);
}

}  // namespace
