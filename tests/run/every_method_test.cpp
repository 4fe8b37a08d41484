// Every registered method, through the same checks: the Runner calls its hooks in the documented
// order, save() -> load() restores the same state, and a run resumed from any earlier version ends
// with the same accuracy matrix and weights as the uninterrupted run.
#include "run/runner.h"
#include "tests/support.h"

#include <gtest/gtest.h>

#include <filesystem>

namespace fs = std::filesystem;
using namespace strata::continual;
using namespace strata::run;

namespace {

// Forwards every hook to the wrapped method and logs its name (per-step hooks once per task).
class Recording : public Method {
 public:
  Recording(std::unique_ptr<Method> inner, std::vector<std::string>* log) : inner_(std::move(inner)), log_(log) {}
  std::string name() const override { return inner_->name(); }
  void attach(strata::models::Model& model) override { note("attach"), inner_->attach(model); }
  void on_task_start(TaskContext& ctx) override {
    stepped_ = false;
    note("on_task_start"), inner_->on_task_start(ctx);
  }
  std::vector<torch::Tensor> parameters(TaskContext& ctx) override { return note("parameters"), inner_->parameters(ctx); }
  strata::tasks::Split training_data(TaskContext& ctx) override { return inner_->training_data(ctx); }
  std::unique_ptr<torch::optim::Optimizer> make_optimizer(TaskContext& ctx, const std::vector<torch::Tensor>& p) override {
    return inner_->make_optimizer(ctx, p);
  }
  torch::Tensor training_logit_mask(TaskContext& ctx) override { return inner_->training_logit_mask(ctx); }
  bool mask_seen_classes() const override { return inner_->mask_seen_classes(); }
  std::optional<OptimizerRecipe> recipe() const override { return inner_->recipe(); }
  torch::Tensor training_logits(const torch::Tensor& z) override { return inner_->training_logits(z); }
  double task_loss_weight(const StepContext& step) const override { return inner_->task_loss_weight(step); }
  torch::Tensor extra_loss(StepContext& step) override { return inner_->extra_loss(step); }
  std::optional<TrainOptions> next_stage(TaskContext& ctx, int64_t stage) override {
    note("next_stage");
    return inner_->next_stage(ctx, stage);
  }
  void after_backward(StepContext& step) override {
    if (!stepped_) note("after_backward");
    inner_->after_backward(step);
  }
  void after_step(StepContext& step) override {
    if (!stepped_) note("after_step");
    stepped_ = true;
    inner_->after_step(step);
  }
  void on_task_end(TaskContext& ctx) override { note("on_task_end"), inner_->on_task_end(ctx); }
  MethodState save() const override { return inner_->save(); }
  void load(const MethodState& s, strata::models::Model& m) override { note("load"), inner_->load(s, m); }
  nlohmann::json report() const override { return inner_->report(); }
  Method& inner() { return *inner_; }

 private:
  void note(const char* hook) {
    if (log_) log_->push_back(hook);
  }
  std::unique_ptr<Method> inner_;
  std::vector<std::string>* log_;
  bool stepped_ = false;
};

// The built-in registry with every method wrapped in Recording.
MethodRegistry recording_registry(std::vector<std::string>* log) {
  MethodRegistry r;
  for (const auto& name : builtin_methods().names()) {
    const MethodInfo& info = builtin_methods().get(name);
    r.add({info.name, info.summary, info.options, [make = info.make, log](const MethodConfig& c) {
             return std::make_unique<Recording>(make(c), log);
           }});
  }
  return r;
}

RunConfig tiny_config(const fs::path& out, const std::string& name, const std::string& method) {
  RunConfig c;
  c.out = out.string();
  c.name = name;
  c.quiet = true;
  c.stream.name("synthetic").num_tasks(3).seed(3);
  c.model.hidden({24});
  c.train.lr(0.05).batch_size(32).epochs(1).seed(7);
  c.method = MethodConfig(method, {});
  return c;
}

void expect_same_weights(const Runner& a, const Runner& b) {
  const auto pa = a.model()->named_parameters(), pb = b.model()->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& item : pa) {
    ASSERT_TRUE(pb.contains(item.key())) << item.key();
    EXPECT_TRUE(torch::equal(item.value(), pb[item.key()])) << item.key();
  }
}

class EveryMethod : public ::testing::TestWithParam<std::string> {
 protected:
  fs::path root = strata::testing::fresh_dir("every_method_" + GetParam());
  ~EveryMethod() override { fs::remove_all(root); }
};

TEST_P(EveryMethod, HooksRunInTheDocumentedOrder) {
  std::vector<std::string> log;
  const auto registry = recording_registry(&log);
  Runner runner(tiny_config(root, "run", GetParam()), registry);
  runner.run();
  // attach once; per task: on_task_start, parameters, the step hooks, next_stage(1) (nullopt for
  // every built-in method without --compat), on_task_end.
  std::vector<std::string> expected = {"attach"};
  for (int t = 0; t < 3; ++t)
    for (const char* h : {"on_task_start", "parameters", "after_backward", "after_step", "next_stage", "on_task_end"})
      expected.push_back(h);
  EXPECT_EQ(log, expected);
}

TEST_P(EveryMethod, SaveLoadRestoresTheSameState) {
  Runner runner(tiny_config(root, "run", GetParam()));
  runner.run();
  const MethodState saved = runner.method().save();
  // A fresh method on a fresh model, restored the way resume restores it.
  const LoadedVersion lv = load_version(runner.folder().version(2));
  const MethodState again = lv.method->save();
  ASSERT_EQ(saved.tensors.size(), again.tensors.size());
  for (const auto& [key, t] : saved.tensors) {
    ASSERT_TRUE(again.tensors.count(key)) << key;
    EXPECT_TRUE(torch::equal(t, again.tensors.at(key))) << key;
  }
  EXPECT_EQ(saved.meta, again.meta);
  EXPECT_EQ(runner.method().report(), lv.method->report());
}

TEST_P(EveryMethod, ResumeFromAnyVersionMatchesTheUninterruptedRun) {
  Runner full(tiny_config(root, "full", GetParam()));
  full.run();
  for (int keep : {1, 2}) {  // versions kept: v000 only, v000 and v001
    const std::string name = "cut" + std::to_string(keep);
    fs::copy(root / "full", root / name, fs::copy_options::recursive);
    for (int v = keep; v < 3; ++v) fs::remove(root / name / "versions" / (std::string("v00") + std::to_string(v) + ".h5"));
    RunConfig c = read_run_config((root / name / "config.ini").string());
    c.out = root.string();
    c.name = name;
    c.quiet = true;
    Runner cut(c);
    cut.resume();
    EXPECT_TRUE(torch::equal(full.accuracy_matrix(), cut.accuracy_matrix()))
        << "resumed after " << keep << " versions:\n" << full.accuracy_matrix() << "\n" << cut.accuracy_matrix();
    expect_same_weights(full, cut);
  }
}

INSTANTIATE_TEST_SUITE_P(Registered, EveryMethod, ::testing::ValuesIn(builtin_methods().names()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
