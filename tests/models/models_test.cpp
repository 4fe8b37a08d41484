// Models: stable layer names, shapes, input recording, and the default layers per method role.
#include "models/models.h"
#include "tests/support.h"

#include <gtest/gtest.h>

#include <algorithm>

TEST(Models, StableLayerNamesAndShapes) {
  torch::manual_seed(0);
  auto mlp = strata::models::make_model(strata::models::ModelOptions().hidden({100, 100}).bias(false));
  std::vector<std::string> names;
  for (auto& [n, l] : mlp->linear_layers()) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{"fc1", "fc2", "head"}));
  EXPECT_FALSE(mlp->linear_layers()[0].second->has_bias());
  EXPECT_EQ(mlp->forward(torch::randn({4, 1, 28, 28})).sizes(), (std::vector<int64_t>{4, 10}));

  auto vit = strata::models::make_model(strata::models::ModelOptions().arch("vit").depth(2));
  auto attn = vit->linear_layers("blocks.*.attn.*");
  EXPECT_EQ(attn.size(), 8u);
  EXPECT_EQ(attn[0].first, "blocks.0.attn.q");
  EXPECT_EQ(vit->forward(torch::randn({3, 1, 28, 28})).sizes(), (std::vector<int64_t>{3, 10}));

  auto cnn = strata::models::make_model(strata::models::ModelOptions().arch("cnn"));
  EXPECT_EQ(cnn->forward(torch::randn({2, 1, 28, 28})).sizes(), (std::vector<int64_t>{2, 10}));
  EXPECT_THROW(strata::models::make_model(strata::models::ModelOptions().arch("resnet")), c10::Error);
}

// What `target = auto` means for each method role, and a selection that matches nothing is an error.
TEST(Models, DefaultTargetsPerRole) {
  using strata::models::TargetRole;
  auto names = [](strata::models::ModelImpl& m, const std::string& glob) {
    std::vector<std::string> out;
    for (auto& [n, l] : m.linear_layers(glob)) out.push_back(n);
    return out;
  };
  auto mlp = strata::models::make_model(strata::models::ModelOptions().hidden({16, 16}));
  auto vit = strata::models::make_model(strata::models::ModelOptions().arch("vit").depth(1));
  auto cnn = strata::models::make_model(strata::models::ModelOptions().arch("cnn"));
  using V = std::vector<std::string>;
  EXPECT_EQ(names(*mlp, mlp->default_targets(TargetRole::kAttentionQV)), (V{"fc1", "fc2"}));
  EXPECT_EQ(names(*mlp, mlp->default_targets(TargetRole::kAll)), (V{"fc1", "fc2", "head"}));
  EXPECT_EQ(names(*cnn, cnn->default_targets(TargetRole::kAttentionOutput)), (V{"fc1"}));
  EXPECT_EQ(names(*vit, vit->default_targets(TargetRole::kAttentionQV)), (V{"blocks.0.attn.q", "blocks.0.attn.v"}));
  EXPECT_EQ(names(*vit, vit->default_targets(TargetRole::kAttentionOutput)), (V{"blocks.0.attn.o"}));
  EXPECT_EQ(names(*vit, vit->default_targets(TargetRole::kAttentionAndMlp)).size(), 6u);
  const auto blocks = names(*vit, vit->default_targets(TargetRole::kBlocks));
  EXPECT_EQ(std::count(blocks.begin(), blocks.end(), "head"), 0);
  EXPECT_EQ(blocks.size(), 6u);
  EXPECT_EQ(mlp->resolve_targets("fc2", TargetRole::kAll, "gpm.target"), "fc2");
  const std::string err = strata::testing::error_of([&] { mlp->resolve_targets("fc9", TargetRole::kAll, "gpm.target"); });
  EXPECT_NE(err.find("gpm.target"), std::string::npos) << err;
  EXPECT_NE(err.find("'fc9'"), std::string::npos) << err;
}

TEST(Models, RecordingCapturesLayerInputs) {
  auto mlp = strata::models::make_model(strata::models::ModelOptions().input_shape({1, 8, 8}).hidden({16}).num_classes(4));
  mlp->set_recording(true);
  auto x = torch::randn({5, 1, 8, 8});
  mlp->forward(x);
  auto layers = mlp->linear_layers();
  EXPECT_TRUE(torch::equal(layers[0].second->last_input(), x.flatten(1)));
  EXPECT_EQ(layers[1].second->last_input().sizes(), (std::vector<int64_t>{5, 16}));
  mlp->set_recording(false);
  EXPECT_FALSE(layers[0].second->last_input().defined());
}

