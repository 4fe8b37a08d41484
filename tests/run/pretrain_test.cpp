#include "run/pretrain.h"
#include "run/runner.h"

#include <gtest/gtest.h>

#include <filesystem>

namespace fs = std::filesystem;
using namespace strata::continual;
using namespace strata::run;
namespace tasks = strata::tasks;

TEST(Pretrain, SpecParsing) {
  EXPECT_EQ(PretrainSpec::parse("task:2").kind, "task");
  EXPECT_EQ(PretrainSpec::parse("split:3").value, 3);
  for (const char* bad : {"", "task", "task:", "task:x", "split:0", "split:6", "classes:1", "task:-1", "split:2x"})
    EXPECT_THROW(PretrainSpec::parse(bad), c10::Error) << bad;
}

TEST(Pretrain, TaskOfTheStreamTrainsEveryParameter) {
  torch::manual_seed(0);
  auto so = tasks::StreamOptions().name("synthetic").num_tasks(2).seed(4);
  auto stream = tasks::make_stream(so);
  auto model = strata::models::make_model(strata::models::ModelOptions().input_shape(stream.input_shape).num_classes(stream.num_classes).hidden({16}));
  std::vector<torch::Tensor> before;
  for (auto& p : model->parameters()) before.push_back(p.detach().clone());
  const double acc0 = evaluate(*model, stream.tasks[1].test, {}).accuracy();
  EXPECT_EQ(pretrain(model, "task:1", 3, TrainOptions().lr(0.05).batch_size(16), stream, so),
            stream.tasks[1].train.size());
  const double acc1 = evaluate(*model, stream.tasks[1].test, {}).accuracy();
  EXPECT_GT(acc1, std::max(0.6, acc0 + 0.2));
  auto params = model->parameters();
  for (size_t i = 0; i < params.size(); ++i) EXPECT_FALSE(torch::equal(params[i], before[i])) << i;
  EXPECT_THROW(pretrain(model, "task:5", 1, TrainOptions(), stream, so), c10::Error);
}

TEST(Pretrain, InitFromVersionLoadsWeightsAndRefusesAnotherShape) {
  auto dir = fs::temp_directory_path() / ("strata_init_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  RunConfig c;
  c.out = dir.string();
  c.name = "src";
  c.quiet = true;
  c.stream.name("synthetic").num_tasks(1).seed(2);
  c.model.hidden({8});
  c.method = MethodConfig("naive", {});
  Runner src(c);
  src.run();
  const auto file = (dir / "src" / "versions" / "v000.h5").string();
  auto model = strata::models::make_model(src.config().model);
  init_from_version(*model, file);
  auto a = model->named_parameters(), b = src.model()->named_parameters();
  for (const auto& item : b) EXPECT_TRUE(torch::equal(a[item.key()], item.value())) << item.key();
  auto other = strata::models::make_model(strata::models::ModelOptions(src.config().model).hidden({6}));
  auto w = other->named_parameters()["fc1.weight"].clone();
  try {
    init_from_version(*other, file);
    FAIL() << "expected a shape error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.msg()).find("fc1.weight"), std::string::npos) << e.msg();
  }
  EXPECT_TRUE(torch::equal(other->named_parameters()["fc1.weight"], w));  // untouched
  fs::remove_all(dir);
}
