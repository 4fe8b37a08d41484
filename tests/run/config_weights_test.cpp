// The model and --init options added for standard ViT checkpoints: presets, --mlp-dim,
// --weights-names, --init-head, and their round trip through config.ini.
#include <gtest/gtest.h>

#include "run/config.h"

using namespace strata;

namespace {

run::RunConfig parse(std::vector<std::string> args) {
  args.insert(args.begin(), "train");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  return run::parse_run_config(static_cast<int>(argv.size()), argv.data());
}

std::string error_of(std::vector<std::string> args) {
  try {
    parse(std::move(args));
  } catch (const c10::Error& e) {
    return e.msg();
  }
  return "";
}

}  // namespace

TEST(ConfigWeights, VitPresetsAsModelOrOption) {
  auto a = parse({"--model", "vit-s16"});
  EXPECT_EQ(a.model.arch(), "vit");
  EXPECT_EQ(a.model.patch(), 16);
  EXPECT_EQ(a.model.dim(), 384);
  EXPECT_EQ(a.model.depth(), 12);
  EXPECT_EQ(a.model.heads(), 6);
  EXPECT_EQ(a.model.vit_mlp_dim(), 1536);
  auto b = parse({"--model", "vit", "--vit-preset", "vit-b16"});
  EXPECT_EQ(b.model.dim(), 768);
  EXPECT_EQ(b.model.vit_mlp_dim(), 3072);
  EXPECT_NE(error_of({"--model", "mlp", "--vit-preset", "vit-b16"}).find("--vit-preset"), std::string::npos);
  EXPECT_NE(error_of({"--model", "vit", "--vit-preset", "vit-h14"}).find("vit-h14"), std::string::npos);
  // config.ini records the resolved sizes, so re-reading it gives the same model.
  auto again = run::parse_run_config_text(a.to_ini(), "test");
  EXPECT_EQ(again.model.arch(), "vit");
  EXPECT_EQ(again.model.dim(), 384);
  EXPECT_EQ(again.model.mlp_dim(), 1536);
}

TEST(ConfigWeights, MlpDimAndInitOptions) {
  auto c = parse({"--model", "vit", "--dim", "48", "--heads", "3", "--mlp-dim", "96", "--weights-names", "timm",
                  "--init-head", "reset"});
  EXPECT_EQ(c.model.vit_mlp_dim(), 96);
  EXPECT_EQ(c.weights_names, "timm");
  EXPECT_EQ(c.init_head, "reset");
  auto again = run::parse_run_config_text(c.to_ini(), "test");
  EXPECT_EQ(again.model.mlp_dim(), 96);
  EXPECT_EQ(again.weights_names, "timm");
  EXPECT_EQ(again.init_head, "reset");
  EXPECT_EQ(parse({"--model", "vit", "--dim", "48"}).model.vit_mlp_dim(), 96) << "default: dim * mlp-ratio";
  EXPECT_NE(error_of({"--weights-names", "keras"}).find("keras"), std::string::npos);
  EXPECT_NE(error_of({"--init-head", "drop"}).find("--init-head"), std::string::npos);
}
