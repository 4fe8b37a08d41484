// Training recipes (Method::recipe), the per-task cosine schedule and class-incremental masking of
// seen classes out of the loss (Method::mask_seen_classes).
#include "continual/codyra_method.h"
#include "continual/mora_method.h"
#include "continual/olora_method.h"
#include "continual/trainer.h"
#include "tasks/streams.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace strata::continual;

namespace {

// Records the head's gradient rows after every backward; a plain method otherwise.
class GradProbe : public Method {
 public:
  explicit GradProbe(bool mask_seen) : mask_seen_(mask_seen) {}
  std::string name() const override { return "probe"; }
  bool mask_seen_classes() const override { return mask_seen_; }
  void after_backward(StepContext& step) override {
    for (auto& [n, l] : step.task->model->linear_layers())
      if (n == "head" && l->weight.grad().defined()) grad_abs.push_back(l->weight.grad().abs().sum(1).clone());
  }
  std::vector<torch::Tensor> grad_abs;  // [C] per step

 private:
  bool mask_seen_;
};

}  // namespace

TEST(Recipe, CosineScheduleAndRecipeValues) {
  TrainOptions o;
  o.lr(0.1);
  EXPECT_DOUBLE_EQ(scheduled_lr(o, 5, 10), 0.1);  // constant
  o.schedule("cosine");
  EXPECT_DOUBLE_EQ(scheduled_lr(o, 0, 10), 0.1);
  EXPECT_NEAR(scheduled_lr(o, 5, 10), 0.05, 1e-12);
  EXPECT_NEAR(scheduled_lr(o, 9, 10), 0.1 * 0.5 * (1 + std::cos(M_PI * 0.9)), 1e-12);
  o.schedule("linear");
  EXPECT_THROW(o.validate(), c10::Error);

  const auto cod = builtin_methods().make(MethodConfig("codyra", {}))->recipe();
  ASSERT_TRUE(cod.has_value());
  EXPECT_EQ(cod->optimizer, "adamw");
  EXPECT_DOUBLE_EQ(cod->lr, 5e-4);
  EXPECT_DOUBLE_EQ(cod->beta2, 0.9999);
  EXPECT_EQ(cod->schedule, "cosine");
  const auto mora = builtin_methods().make(MethodConfig("mora", {}))->recipe();
  ASSERT_TRUE(mora.has_value());
  EXPECT_DOUBLE_EQ(mora->lr, 5e-4);
  EXPECT_EQ(mora->schedule, "cosine");
  const auto olora = builtin_methods().make(MethodConfig("olora", {}))->recipe();
  ASSERT_TRUE(olora.has_value());
  EXPECT_DOUBLE_EQ(olora->lr, 1e-3);
  EXPECT_EQ(olora->schedule, "constant");
  EXPECT_FALSE(builtin_methods().make(MethodConfig("lora", {}))->recipe().has_value());
  EXPECT_FALSE(builtin_methods().make(MethodConfig("naive", {}))->recipe().has_value());

  const auto t = with_recipe(TrainOptions().batch_size(7), *cod);
  EXPECT_EQ(t.optimizer(), "adamw");
  EXPECT_DOUBLE_EQ(t.beta2(), 0.9999);
  EXPECT_EQ(t.batch_size(), 7);  // not an optimizer setting: kept
  // The recipe's betas reach the optimizer.
  auto p = torch::zeros({2}, torch::requires_grad());
  auto opt = make_optimizer(t, {p});
  auto& ao = static_cast<torch::optim::AdamWOptions&>(opt->param_groups()[0].options());
  EXPECT_DOUBLE_EQ(std::get<1>(ao.betas()), 0.9999);
}

TEST(Recipe, CosineScheduleReachesTheOptimizerEachTask) {
  // SGD without momentum: the step of a constant gradient is lr_s * g, so W's trajectory reads back
  // the schedule.
  auto s = strata::tasks::make_stream(strata::tasks::StreamOptions().name("synthetic").num_tasks(2).seed(5));
  for (const std::string sched : {"constant", "cosine"}) {
    torch::manual_seed(0);
    auto model = strata::models::make_model(
        strata::models::ModelOptions().input_shape(s.input_shape).num_classes(s.num_classes).hidden({8}));
    struct Watch : Method {
      std::string name() const override { return "watch"; }
      void after_step(StepContext& st) override {
        for (auto& [n, l] : st.task->model->linear_layers())
          if (n == "head") {
            if (prev.defined()) moves.push_back((l->weight - prev).norm().item<double>());
            prev = l->weight.detach().clone();
          }
      }
      torch::Tensor prev;
      std::vector<double> moves;
    } m;
    TrainOptions o = TrainOptions().lr(0.05).batch_size(32).epochs(2).seed(1).schedule(sched);
    TaskContext ctx{model, &s, 0, &o};
    train_task(ctx, m, o);
    ASSERT_GT(m.moves.size(), 10u);
    const double first = m.moves.front(), last = m.moves.back();
    if (sched == "cosine")
      EXPECT_LT(last, 0.05 * first);  // lr near 0 at the end of the task
    else
      EXPECT_GT(last, 0.1 * first);
  }
}

TEST(Recipe, MaskSeenClassesKeepsOldClassLogitsOutOfTheLoss) {
  auto s = strata::tasks::make_stream(
      strata::tasks::StreamOptions().name("synthetic").num_tasks(2).seed(5).scenario("class"));
  ASSERT_EQ(s.scenario, strata::tasks::Scenario::kClassIncremental);
  const auto& old_classes = s.tasks[0].classes;
  const auto& new_classes = s.tasks[1].classes;
  for (bool mask : {true, false}) {
    torch::manual_seed(0);
    auto model = strata::models::make_model(
        strata::models::ModelOptions().input_shape(s.input_shape).num_classes(s.num_classes).hidden({8}));
    GradProbe m(mask);
    TrainOptions o = TrainOptions().lr(0.01).batch_size(32).epochs(1).seed(1);
    TaskContext ctx{model, &s, 1, &o};
    train_task(ctx, m, o);
    ASSERT_FALSE(m.grad_abs.empty());
    double old_grad = 0, new_grad = 0;
    for (const auto& g : m.grad_abs) {
      for (int64_t c : old_classes) old_grad += g[c].item<double>();
      for (int64_t c : new_classes) new_grad += g[c].item<double>();
    }
    EXPECT_GT(new_grad, 0);
    if (mask)
      EXPECT_EQ(old_grad, 0) << "task 0's head rows got a gradient from task 1's loss";
    else
      EXPECT_GT(old_grad, 0);
  }
  // The methods' defaults: on for codyra and mora, off for lora and olora; an option turns it off.
  EXPECT_TRUE(builtin_methods().make(MethodConfig("codyra", {}))->mask_seen_classes());
  EXPECT_TRUE(builtin_methods().make(MethodConfig("mora", {}))->mask_seen_classes());
  EXPECT_FALSE(builtin_methods().make(MethodConfig("codyra", {{"mask_seen", "false"}}))->mask_seen_classes());
  EXPECT_FALSE(builtin_methods().make(MethodConfig("lora", {}))->mask_seen_classes());
  EXPECT_FALSE(builtin_methods().make(MethodConfig("olora", {}))->mask_seen_classes());
}
