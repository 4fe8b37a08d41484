#include <gtest/gtest.h>

#include "compat/distill.h"

using namespace strata::compat;

namespace {

torch::Tensor L(std::vector<int64_t> v) { return torch::tensor(v, torch::kLong); }

// Reference KL(p‖q)·scale computed independently with torch::kl_div.
torch::Tensor ref_kl(const torch::Tensor& student, const torch::Tensor& teacher, double t) {
  return torch::kl_div(torch::log_softmax(student / t, 1), torch::log_softmax(teacher / t, 1), at::Reduction::None,
                       /*log_target=*/true)
      .sum(1);
}

}  // namespace

TEST(CompatDistill, ModeParsingAndDefaults) {
  EXPECT_EQ(compat_mode_from_string("fd"), CompatMode::kFocal);
  EXPECT_EQ(compat_mode_from_string("muscle"), CompatMode::kMuscle);
  EXPECT_EQ(to_string(CompatMode::kNone), "none");
  EXPECT_THROW(compat_mode_from_string("pct"), c10::Error);
  EXPECT_EQ(CompatTrainOptions().mode(CompatMode::kFocal).resolved_temperature(), 100.0);
  EXPECT_EQ(CompatTrainOptions().mode(CompatMode::kMuscle).resolved_temperature(), 2.0);
  EXPECT_EQ(CompatTrainOptions().mode(CompatMode::kMuscle).temperature(3.0).resolved_temperature(), 3.0);
}

TEST(CompatDistill, FocalWeightsAndMask) {
  torch::manual_seed(0);
  const torch::Tensor student = torch::randn({4, 3});
  // Old model predicts 0, 1, 2, 0; labels 0, 2, 2, 1 -> old correct on items 0 and 2.
  const torch::Tensor old = torch::tensor({{5.f, 0.f, 0.f}, {0.f, 5.f, 0.f}, {0.f, 0.f, 5.f}, {5.f, 0.f, 0.f}});
  const torch::Tensor y = L({0, 2, 2, 1});
  const auto opt = CompatTrainOptions().mode(CompatMode::kFocal).alpha(1.0).beta(5.0).temperature(4.0);
  const CompatLoss l = focal_distillation_loss(student, old, y, opt);
  EXPECT_TRUE(l.mask.equal(torch::tensor({true, false, true, false})));
  EXPECT_TRUE(l.weights.allclose(torch::tensor({6.f, 1.f, 6.f, 1.f})));
  const torch::Tensor d = ref_kl(student, old, 4.0) * 16.0;  // T²·KL
  EXPECT_TRUE(l.per_example.allclose(d, 1e-5, 1e-6));
  const torch::Tensor ce = torch::nn::functional::cross_entropy(student, y);
  EXPECT_NEAR(l.total.item<double>(), (ce + (l.weights * d).mean()).item<double>(), 1e-5);
}

TEST(CompatDistill, FocalBetaZeroIsPlainKdAndAlphaZeroIgnoresOldWrong) {
  torch::manual_seed(1);
  const torch::Tensor student = torch::randn({6, 5}), old = torch::randn({6, 5}), y = torch::randint(5, {6});
  const auto kd = CompatTrainOptions().mode(CompatMode::kFocal).alpha(1.0).beta(0.0).temperature(2.0);
  const CompatLoss l = focal_distillation_loss(student, old, y, kd);
  EXPECT_NEAR(l.compat.item<double>(), (ref_kl(student, old, 2.0) * 4.0).mean().item<double>(), 1e-5);
  // alpha = 0: items the old model gets wrong contribute exactly zero.
  const torch::Tensor old_wrong = old.argmax(1).ne(y);
  const auto focus = CompatTrainOptions().mode(CompatMode::kFocal).alpha(0.0).beta(1.0).temperature(2.0);
  const CompatLoss f = focal_distillation_loss(student, old, y, focus);
  EXPECT_EQ((f.weights * old_wrong.to(torch::kFloat)).abs().sum().item<float>(), 0.f);
  EXPECT_TRUE(f.weights.equal((~old_wrong).to(torch::kFloat)));
  // All old-wrong: the FD term vanishes.
  const torch::Tensor wrong_y = (old.argmax(1) + 1) % 5;
  EXPECT_EQ(focal_distillation_loss(student, old, wrong_y, focus).compat.item<float>(), 0.f);
}

TEST(CompatDistill, FocalL2AndClassIncremental) {
  torch::manual_seed(2);
  const torch::Tensor student = torch::randn({4, 5});
  const torch::Tensor old = torch::randn({4, 3});  // old model knows classes 0..2
  const torch::Tensor y = L({0, 1, 3, 4});         // items 2 and 3 are new classes
  const auto opt = CompatTrainOptions().mode(CompatMode::kFocal).distance(DistillDistance::kL2).alpha(1).beta(0);
  const CompatLoss drop = focal_distillation_loss(student, old, y, opt);
  const torch::Tensor d = (student.slice(1, 0, 3) - old).pow(2).mean(1);
  EXPECT_TRUE(drop.per_example.allclose(d));
  EXPECT_TRUE(drop.weights.equal(torch::tensor({1.f, 1.f, 0.f, 0.f})));
  EXPECT_NEAR(drop.compat.item<double>(), (d[0] + d[1]).item<double>() / 2.0, 1e-6);  // mean over kept
  const CompatLoss keep = focal_distillation_loss(student, old, y, CompatTrainOptions(opt).drop_new_class_samples(false));
  EXPECT_TRUE(keep.weights.equal(torch::ones({4})));
  EXPECT_NEAR(keep.compat.item<double>(), d.mean().item<double>(), 1e-6);
}

TEST(CompatDistill, MuscleMaskSelectsTeacherByStudentCorrectness) {
  torch::manual_seed(3);
  const torch::Tensor old = torch::randn({5, 4}), neu = torch::randn({5, 4});
  // Student predicts class 1 everywhere.
  const torch::Tensor student = torch::zeros({5, 4}).index_put_({torch::indexing::Slice(), 1}, 3.0);
  const auto opt = CompatTrainOptions().mode(CompatMode::kMuscle);  // T = 2, λ = 1
  const torch::Tensor a_old = ref_kl(student, old, 2.0), a_new = ref_kl(student, neu, 2.0);

  // Student always wrong: pure KL to the old model (even where the old model is wrong too).
  const CompatLoss wrong = muscle_loss(student, old, neu, L({0, 2, 3, 0, 2}), opt);
  EXPECT_TRUE(wrong.mask.all().item<bool>());
  EXPECT_NEAR(wrong.total.item<double>(), a_old.mean().item<double>(), 1e-6);
  // Student always right: pure KL to the new model.
  const CompatLoss right = muscle_loss(student, old, neu, L({1, 1, 1, 1, 1}), opt);
  EXPECT_FALSE(right.mask.any().item<bool>());
  EXPECT_NEAR(right.total.item<double>(), a_new.mean().item<double>(), 1e-6);
  // Mixed: per item.
  const CompatLoss mixed = muscle_loss(student, old, neu, L({1, 0, 1, 3, 1}), opt);
  EXPECT_TRUE(mixed.mask.equal(torch::tensor({false, true, false, true, false})));
  EXPECT_TRUE(mixed.per_example.allclose(torch::where(mixed.mask, a_old, a_new), 1e-5, 1e-6));
  // λ < 1 adds (1 − λ)·CE.
  const CompatLoss with_ce = muscle_loss(student, old, neu, L({1, 0, 1, 3, 1}), CompatTrainOptions(opt).weight(0.7));
  EXPECT_NEAR(with_ce.total.item<double>(), (0.7 * mixed.compat + 0.3 * mixed.ce).item<double>(), 1e-6);
  EXPECT_THROW(muscle_loss(student, old, torch::randn({5, 3}), L({1, 1, 1, 1, 1}), opt), c10::Error);
  // student_old_view replaces the student's columns in a^old only: equal to the old logits, a^old = 0.
  const CompatLoss view = muscle_loss(student, old, neu, L({0, 2, 3, 0, 2}), opt, old);
  EXPECT_NEAR(view.total.item<double>(), 0.0, 1e-6);
  const CompatLoss view_right = muscle_loss(student, old, neu, L({1, 1, 1, 1, 1}), opt, old);
  EXPECT_NEAR(view_right.total.item<double>(), a_new.mean().item<double>(), 1e-6);
  EXPECT_THROW(muscle_loss(student, old, neu, L({1, 1, 1, 1, 1}), opt, torch::randn({5, 3})), c10::Error);
}

TEST(CompatDistill, GradientsReachOnlyTheStudentOnATinyMlp) {
  torch::manual_seed(4);
  torch::nn::Sequential mlp(torch::nn::Linear(3, 8), torch::nn::ReLU(), torch::nn::Linear(8, 4));
  const torch::Tensor x = torch::randn({16, 3}, torch::kDouble);
  mlp->to(torch::kDouble);
  const torch::Tensor y = torch::randint(4, {16});
  const torch::Tensor old = torch::randn({16, 4}, torch::kDouble).requires_grad_(true);
  const torch::Tensor neu = torch::randn({16, 4}, torch::kDouble);
  for (CompatMode mode : {CompatMode::kFocal, CompatMode::kMuscle}) {
    const auto opt = CompatTrainOptions().mode(mode).temperature(2.0).weight(0.5);
    mlp->zero_grad();
    const CompatLoss l = compat_loss(mlp->forward(x), y, old, neu, opt);
    l.total.backward();
    EXPECT_FALSE(old.grad().defined()) << to_string(mode);  // teachers are detached
    // Finite-difference check of d total / d (first bias) on one coordinate.
    auto params = mlp->parameters();
    torch::Tensor& bias = params[1];
    const double g = bias.grad()[0].item<double>();
    const double h = 1e-6;
    torch::NoGradGuard ng;
    bias[0] += h;
    const double up = compat_loss(mlp->forward(x), y, old, neu, opt).total.item<double>();
    bias[0] -= 2 * h;
    const double down = compat_loss(mlp->forward(x), y, old, neu, opt).total.item<double>();
    bias[0] += h;
    EXPECT_NEAR(g, (up - down) / (2 * h), 1e-5) << to_string(mode);
  }
  const CompatLoss none = compat_loss(mlp->forward(x), y, {}, {}, CompatTrainOptions());
  EXPECT_EQ(none.compat.item<double>(), 0.0);
  EXPECT_THROW(compat_loss(mlp->forward(x), y, {}, {}, CompatTrainOptions().mode(CompatMode::kFocal)), c10::Error);
}

TEST(CompatDistill, TermsAloneEqualTheLossesCompatParts) {
  // What the training wrapper adds at every step (no cross-entropy, no host sync) is exactly the
  // compat part of the full losses, kept, dropped and all-dropped samples included.
  torch::manual_seed(7);
  const torch::Tensor student = torch::randn({6, 5}, torch::requires_grad());
  const torch::Tensor old = torch::randn({6, 3});
  const torch::Tensor neu = torch::randn({6, 5});
  for (const auto& y : {L({0, 1, 3, 4, 2, 0}), L({3, 4, 3, 4, 4, 3})}) {  // some kept / none kept
    for (auto dist : {DistillDistance::kKL, DistillDistance::kL2})
      for (bool drop : {true, false}) {
        const auto opt = CompatTrainOptions().mode(CompatMode::kFocal).distance(dist).drop_new_class_samples(drop);
        const auto full = focal_distillation_loss(student, old, y, opt).compat;
        const auto term = focal_compat_term(student, old, y, opt);
        EXPECT_TRUE(torch::equal(full, term));
        auto g_full = torch::autograd::grad({full}, {student})[0];
        auto g_term = torch::autograd::grad({term}, {student})[0];
        EXPECT_TRUE(torch::equal(g_full, g_term));
      }
    const auto mopt = CompatTrainOptions().mode(CompatMode::kMuscle);
    const auto view = student.slice(1, 0, 3) * 2;
    EXPECT_TRUE(torch::equal(muscle_loss(student, old, neu, y, mopt, view).compat,
                             muscle_compat_term(student, old, neu, y, mopt, view)));
    EXPECT_TRUE(torch::equal(muscle_loss(student, old, neu, y, mopt).compat,
                             muscle_compat_term(student, old, neu, y, mopt)));
  }
}
