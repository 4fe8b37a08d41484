// restore_version(): the method's load() runs before the tensors are copied, so a method that adds
// modules re-creates them first; a model built from another configuration is refused by name.
#include "checkpoints/version_store.h"
#include "run/runner.h"

#include <gtest/gtest.h>

using namespace strata;
using namespace strata::continual;
using namespace strata::run;

namespace {

// Adds a parameter "extra" [3] to the model (as adapter methods add child modules); load() re-adds it.
class AddsParameter : public Method {
 public:
  std::string name() const override { return "adds-parameter"; }
  void attach(strata::models::Model& model) override {}
  MethodState save() const override {
    MethodState s;
    s.tensors["scale"] = torch::full({1}, 2.5);
    s.meta["attached"] = true;
    return s;
  }
  void load(const MethodState& state, strata::models::Model& model) override {
    loaded_scale = state.tensors.at("scale").item<double>();
    if (state.meta.value("attached", false)) model->register_parameter("extra", torch::zeros({3}));
  }
  double loaded_scale = 0;
};

checkpoints::Version snapshot(const strata::models::Model& model, const Method& method) {
  checkpoints::Version v;
  v.method = method.name();
  for (const auto& p : model->named_parameters()) v.parameters.emplace_back(p.key(), p.value().detach().clone());
  for (const auto& b : model->named_buffers()) v.buffers.emplace_back(b.key(), b.value().detach().clone());
  const auto s = method.save();
  v.method_tensors = s.tensors;
  v.method_meta = s.meta;
  return v;
}

strata::models::ModelOptions mlp(std::vector<int64_t> hidden) {
  return strata::models::ModelOptions().arch("mlp").input_shape({1, 4, 4}).num_classes(3).hidden(hidden);
}

}  // namespace

TEST(Restore, MethodLoadRecreatesStructureBeforeTensors) {
  torch::manual_seed(1);
  strata::models::Model trained = strata::models::make_model(mlp({8}));
  AddsParameter m1;
  trained->register_parameter("extra", torch::tensor({1.0f, 2.0f, 3.0f}));
  const auto v = snapshot(trained, m1);

  torch::manual_seed(2);
  strata::models::Model fresh = strata::models::make_model(mlp({8}));
  AddsParameter m2;
  restore_version(v, fresh, m2, "v000.h5");
  EXPECT_EQ(m2.loaded_scale, 2.5);
  auto params = fresh->named_parameters();
  ASSERT_TRUE(params.contains("extra"));
  EXPECT_TRUE(torch::equal(params["extra"], torch::tensor({1.0f, 2.0f, 3.0f})));
  for (const auto& p : trained->named_parameters()) EXPECT_TRUE(torch::equal(params[p.key()], p.value())) << p.key();

  // Without the method's load (a method that does not re-create "extra"), the extra tensor is refused.
  struct Plain : AddsParameter {
    void load(const MethodState&, strata::models::Model&) override {}
  } plain;
  strata::models::Model other = strata::models::make_model(mlp({8}));
  try {
    restore_version(v, other, plain, "runs/r/versions/v000.h5");
    FAIL() << "loaded a version with an unexpected tensor";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.msg()).find("unexpected dataset '/model/extra'"), std::string::npos) << e.msg();
  }
}

TEST(Restore, RefusesAnotherModelConfigurationOrMethod) {
  torch::manual_seed(1);
  strata::models::Model a = strata::models::make_model(mlp({8}));
  AddsParameter m;
  auto v = snapshot(a, m);
  v.method_meta["attached"] = false;
  strata::models::Model b = strata::models::make_model(mlp({6}));
  const auto before = b->named_parameters()["fc1.weight"].clone();
  try {
    restore_version(v, b, m, "runs/r/versions/v001.h5");
    FAIL() << "loaded hidden=8 weights into a hidden=6 model";
  } catch (const c10::Error& e) {
    const std::string msg = e.msg();
    EXPECT_NE(msg.find("runs/r/versions/v001.h5"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'/model/fc1.weight' has shape [8, 16] but the model configuration gives [6, 16]"),
              std::string::npos)
        << msg;
  }
  EXPECT_TRUE(torch::equal(b->named_parameters()["fc1.weight"], before)) << "partially loaded";

  v.method = "naive";
  try {
    restore_version(v, a, m, "v.h5");
    FAIL();
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.msg()).find("written by method 'naive'"), std::string::npos) << e.msg();
  }
}
