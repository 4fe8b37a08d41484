// Compatibility-aware training (CompatMethod) and the Runner's "compat" report section.
#include "compat/flips.h"
#include "continual/compat_training.h"
#include "continual/gpm.h"
#include "continual/naive.h"
#include "run/runner.h"

#include "synthetic_fixture.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;
using namespace strata::continual;
using namespace strata::run;
namespace tasks = strata::tasks;
namespace compat = strata::compat;

namespace {

using Fixture = strata::continual::testing::SyntheticFixture;

CompatTrainingOptions focal() {
  return CompatTrainingOptions().loss(compat::CompatTrainOptions().mode(compat::CompatMode::kFocal));
}

fs::path temp_root(const std::string& name) {
  auto d = fs::temp_directory_path() / ("strata_compat_train_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  return d;
}

RunConfig synthetic(const fs::path& root, const std::string& name, const std::string& mode, int64_t tasks = 3) {
  RunConfig c;
  c.out = root.string();
  c.name = name;
  c.quiet = true;
  c.stream.name("synthetic").num_tasks(tasks).seed(7);  // config.ini keeps one seed for stream and training
  c.model.hidden({32});
  c.train.lr(0.05).batch_size(16).epochs(2).seed(7);
  c.method = MethodConfig("naive", {});
  c.compat.loss(compat::CompatTrainOptions().mode(compat::compat_mode_from_string(mode)));
  return c;
}

nlohmann::json read_json(const fs::path& p) {
  std::ifstream f(p);
  return nlohmann::json::parse(f);
}

}  // namespace

TEST(CompatTraining, FocalCachesThePreviousModelsLogitsAndGpmProjectionStillApplies) {
  Fixture f;
  CompatMethod cm(std::make_unique<Gpm>(GpmOptions().thresholds({0.8}).samples(100)), focal());
  EXPECT_EQ(cm.name(), "gpm");
  cm.attach(f.model);
  auto c0 = f.ctx(0);
  cm.on_task_start(c0);
  EXPECT_FALSE(cm.reference_logits().defined());  // no previous version on task 0
  train_task(c0, cm, f.train);
  cm.on_task_end(c0);
  auto& gpm = dynamic_cast<Gpm&>(cm.inner());
  const torch::Tensor M = gpm.basis("fc1").clone();  // forwarded on_task_end built the memory
  ASSERT_GT(M.size(1), 0);

  // The cache is the previous model's logits on the task's training data, row for row.
  torch::Tensor expected;
  {
    torch::NoGradGuard g;
    f.model->eval();
    expected = f.model->forward(f.stream.tasks[1].train.x);
    f.model->train();
  }
  const torch::Tensor w_before = f.model->linear_layers()[0].second->weight.detach().clone();
  auto c1 = f.ctx(1);
  cm.on_task_start(c1);
  ASSERT_TRUE(cm.reference_logits().defined());
  EXPECT_TRUE(torch::allclose(cm.reference_logits(), expected, 1e-5, 1e-5));
  train_task(c1, cm, f.train);
  cm.on_task_end(c1);
  // GPM (plain SGD) keeps fc1's update orthogonal to the old input space: dW·M = 0.
  const torch::Tensor dw = f.model->linear_layers()[0].second->weight.detach() - w_before;
  ASSERT_GT(dw.norm().item<double>(), 1e-4);
  EXPECT_LT(dw.matmul(M).norm().item<double>(), 1e-4 * dw.norm().item<double>() + 1e-6);
  // The focal term was active, and the report carries the inner report plus the settings.
  const auto r = cm.report();
  EXPECT_TRUE(r.contains("compat_training"));
  EXPECT_EQ(r["compat_training"]["mode"], "focal");
  EXPECT_EQ(r["compat_training"]["temperature"], 100.0);
  ASSERT_EQ(r["compat_training"]["tasks"].size(), 1u);
  EXPECT_GT(r["compat_training"]["tasks"][0]["mean_focal_term"].get<double>(), 0.0);
  // save/load forward to the inner method; the statistics travel in one extra meta key.
  auto state = cm.save();
  EXPECT_TRUE(state.meta.contains("compat_training"));
  CompatMethod other(std::make_unique<Gpm>(GpmOptions().thresholds({0.8}).samples(100)), focal());
  other.attach(f.model);
  other.load(state, f.model);
  EXPECT_TRUE(torch::equal(dynamic_cast<Gpm&>(other.inner()).basis("fc1"), gpm.basis("fc1")));
  EXPECT_EQ(other.report()["compat_training"]["tasks"], r["compat_training"]["tasks"]);
}

TEST(CompatTraining, FocalTermIsZeroWhenTheStudentIsTheReference) {
  // At the first step of task 1 the student equals the reference, so KL = 0 and the extra loss is 0.
  Fixture f;
  CompatMethod cm(std::make_unique<Naive>(), focal());
  cm.attach(f.model);
  auto c0 = f.ctx(0);
  train_task(c0, cm, f.train);
  auto c1 = f.ctx(1);
  cm.on_task_start(c1);
  const auto data = cm.training_data(c1);
  StepContext sc;
  sc.task = &c1;
  sc.batch_index = torch::arange(8, torch::kInt64);
  sc.x = data.x.index_select(0, sc.batch_index);
  sc.y = data.y.index_select(0, sc.batch_index);
  sc.logits = f.model->forward(sc.x);
  sc.loss = torch::nn::functional::cross_entropy(sc.logits, sc.y);
  EXPECT_NEAR(cm.extra_loss(sc).item<double>(), 0.0, 1e-4);
  // A perturbed student is penalised.
  sc.logits = sc.logits + torch::randn_like(sc.logits);
  EXPECT_GT(cm.extra_loss(sc).item<double>(), 1e-2);
}

TEST(CompatTraining, ConfigRoundTripAndValidation) {
  auto root = temp_root("cfg");
  RunConfig c = synthetic(root, "x", "muscle");
  c.compat.loss(c.compat.loss().weight(0.5).alpha(2).beta(3).temperature(4).drop_new_class_samples(false));
  c.compat.stage2_epochs(3);
  fs::create_directories(root);
  std::ofstream(root / "c.ini") << c.to_ini();
  const RunConfig back = read_run_config((root / "c.ini").string());
  EXPECT_EQ(back.compat.loss().mode(), compat::CompatMode::kMuscle);
  EXPECT_EQ(back.compat.loss().weight(), 0.5);
  EXPECT_EQ(back.compat.loss().alpha(), 2);
  EXPECT_EQ(back.compat.loss().beta(), 3);
  EXPECT_EQ(back.compat.loss().temperature(), 4);
  EXPECT_FALSE(back.compat.loss().drop_new_class_samples());
  EXPECT_EQ(back.compat.stage2_epochs(), 3);
  c.compat.loss(c.compat.loss().weight(1.5));  // MUSCLE's lambda must be in [0, 1]
  EXPECT_THROW(c.validate(), c10::Error);
  fs::remove_all(root);
}

TEST(CompatTraining, RunnerReportsConsistentFlipCountsAndFocalReducesNegativeFlips) {
  auto root = temp_root("runner");
  Runner plain(synthetic(root, "plain", "none")), fd(synthetic(root, "fd", "focal"));
  plain.run();
  fd.run();
  int64_t nf_total[2] = {0, 0};
  for (int which = 0; which < 2; ++which) {
    const fs::path dir = root / (which ? "fd" : "plain");
    const auto& stream = which ? fd.stream() : plain.stream();
    const auto r = read_json(dir / "report.json");
    ASSERT_TRUE(r.contains("compat"));
    const auto& c = r["compat"];
    ASSERT_EQ(c["pairs"].size(), 2u);
    for (const auto& p : c["pairs"]) {
      const int64_t v = p["new"].get<int64_t>();
      EXPECT_EQ(p["old"].get<int64_t>(), v - 1);
      int64_t n_seen = 0;
      ASSERT_EQ(p["seen_tasks"]["per_task"].size(), static_cast<size_t>(v));
      for (const auto& e : p["seen_tasks"]["per_task"]) {
        const auto& k = e["counts"];
        const int64_t n = stream.tasks[e["task"].get<int64_t>()].test.size();
        // NF + PF + both-correct + both-wrong = N per task.
        EXPECT_EQ(k["n10"].get<int64_t>() + k["n01"].get<int64_t>() + k["n11"].get<int64_t>() + k["n00"].get<int64_t>(), n);
        EXPECT_EQ(e["n"].get<int64_t>(), n);
        EXPECT_GE(e["nfr_wilson_upper"].get<double>(), e["metrics"]["nfr"]["value"].get<double>());
        n_seen += n;
      }
      const auto& o = p["seen_tasks"]["overall"];
      EXPECT_EQ(o["n"].get<int64_t>(), n_seen);
      nf_total[which] += o["counts"]["n10"].get<int64_t>();
      EXPECT_EQ(p["current_task"]["n"].get<int64_t>(), stream.tasks[v].test.size());
      // The matrix cell (v-1, v) is the same comparison as seen_tasks.
      const double cell = c["nfr_matrix"]["matrix"][v - 1][v].get<double>();
      EXPECT_NEAR(cell, o["counts"]["n10"].get<double>() / n_seen, 1e-12);
      EXPECT_EQ(c["nfr_matrix"]["n"][v - 1][v].get<int64_t>(), n_seen);
      // The accuracies in the counts are the Runner's accuracy-matrix entries.
      const auto& R = which ? fd.accuracy_matrix() : plain.accuracy_matrix();
      const auto& cur = p["current_task"]["counts"];
      EXPECT_NEAR((cur["n11"].get<double>() + cur["n01"].get<double>()) / stream.tasks[v].test.size(),
                  R[v][v].item<double>(), 1e-12);
    }
    EXPECT_TRUE(fs::exists(dir / "plots" / "nfr_heatmap.svg"));
    EXPECT_TRUE(fs::exists(dir / "plots" / "flips_per_task_v002.svg"));
  }
  EXPECT_EQ(read_json(root / "plain" / "report.json")["compat"]["training"], "none");
  EXPECT_EQ(read_json(root / "fd" / "report.json")["compat"]["training"]["mode"], "focal");
  // Measured on this stream: fewer negative flips on the seen tasks with focal distillation.
  EXPECT_LT(nf_total[1], nf_total[0]) << "focal NF " << nf_total[1] << " vs plain " << nf_total[0];

  // `strata compare vNNN.h5 vMMM.h5`: re-evaluating the stored versions reproduces the report's pair.
  {
    int64_t va = -1;
    const auto a = evaluate_version_file((root / "fd" / "versions" / "v001.h5").string(), 1, &va);
    const auto b = evaluate_version_file((root / "fd" / "versions" / "v002.h5").string(), 1);
    EXPECT_EQ(va, 1);
    const auto rep = compat::compare_predictions(compat::align_by_id(a, b));
    const auto fd_report = read_json(root / "fd" / "report.json");
    const auto& o = fd_report["compat"]["pairs"][1]["seen_tasks"]["overall"]["counts"];
    EXPECT_EQ(rep.overall.n10, o["n10"].get<int64_t>());
    EXPECT_EQ(rep.overall.n01, o["n01"].get<int64_t>());
    EXPECT_EQ(rep.overall.n11, o["n11"].get<int64_t>());
    EXPECT_EQ(rep.per_group.size(), 2u);
  }

  // Resume after losing the last version equals the uninterrupted focal run (caches are recomputed).
  fs::copy(root / "fd", root / "cut", fs::copy_options::recursive);
  fs::remove(root / "cut" / "versions" / "v002.h5");
  RunConfig c2 = read_run_config((root / "cut" / "config.ini").string());
  c2.out = root.string();
  c2.name = "cut";
  c2.quiet = true;
  EXPECT_EQ(c2.compat.loss().mode(), compat::CompatMode::kFocal);
  Runner cut(c2);
  cut.resume();
  EXPECT_TRUE(torch::equal(fd.accuracy_matrix(), cut.accuracy_matrix()));
  EXPECT_EQ(read_json(root / "cut" / "report.json")["compat"]["pairs"],
            read_json(root / "fd" / "report.json")["compat"]["pairs"]);
  fs::remove_all(root);
}

TEST(CompatTraining, MuscleRunsSecondStageAndLogsItsEpochs) {
  auto root = temp_root("muscle");
  RunConfig c = synthetic(root, "m", "muscle", 2);
  c.compat.stage2_epochs(1);
  Runner r(c);
  r.run();
  const auto rep = read_json(root / "m" / "report.json");
  const auto& t = rep["method_report"]["compat_training"]["tasks"];
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0]["task"], 1);
  EXPECT_EQ(t[0]["stage2_epochs"], 1);
  EXPECT_TRUE(std::isfinite(t[0]["mean_l_mcomp"].get<double>()));
  EXPECT_GE(t[0]["mean_l_mcomp"].get<double>(), 0.0);
  // metrics.csv: task 0 has epochs 0,1; task 1 has 0,1 (stage 1) and 2 (stage 2).
  std::ifstream csv(root / "m" / "metrics.csv");
  std::string line;
  std::vector<std::string> rows;
  std::getline(csv, line);
  while (std::getline(csv, line)) rows.push_back(line.substr(0, line.find(',', line.find(',') + 1)));
  EXPECT_EQ(rows, (std::vector<std::string>{"0,0", "0,1", "1,0", "1,1", "1,2"}));
  EXPECT_GT(r.accuracy_matrix()[1][1].item<double>(), 0.5);
  fs::remove_all(root);
}

TEST(CompatTraining, MuscleOldTeacherTermIsLiveOnTaskIncrementalStreams) {
  // Task-IL masks the old tasks' logits out of a current-task example's loss; the old-teacher term
  // compares the student's unmasked logits of those classes with the old model (as focal does), so
  // it is not the 0 that two masked rows would give.
  auto root = temp_root("muscle_til");
  RunConfig c = synthetic(root, "m", "muscle", 2);
  c.stream.scenario("task");
  c.compat.stage2_epochs(1);
  Runner r(c);
  r.run();
  const auto rep = read_json(root / "m" / "report.json");
  const auto& t = rep["method_report"]["compat_training"]["tasks"];
  ASSERT_EQ(t.size(), 1u);
  // Two all-masked rows gave ~1e-10 (float noise); the live term is orders of magnitude above it.
  EXPECT_GT(t[0]["mean_l_mcomp"].get<double>(), 1e-7);
  // The previous version never saw task 1's classes: the report says the old teacher is weak.
  EXPECT_EQ(t[0]["reference_train_acc"].get<double>(), 0.0);
  ASSERT_TRUE(t[0].contains("warnings"));
  EXPECT_NE(t[0]["warnings"][0].get<std::string>().find("less accurate"), std::string::npos);
  fs::remove_all(root);
}

namespace {

// The old per-step code path: the term from compat::focal_distillation_loss / muscle_loss on the
// step's rows, every teacher quantity recomputed from the cached logits.
struct KnownColumns {
  torch::Tensor columns, order, pos_focal, pos_order;
  int64_t k_old = 0;
};

KnownColumns known_columns(const tasks::TaskStream& stream, int64_t task) {
  KnownColumns k;
  const torch::Tensor known = stream.logit_mask(task - 1).slice(0, 0, task).any(0);
  k.columns = known.nonzero().flatten().to(torch::kInt64);
  k.k_old = k.columns.size(0);
  const int64_t c = known.size(0);
  k.pos_focal = torch::full({c}, k.k_old, torch::kInt64);
  k.pos_focal.index_put_({k.columns}, torch::arange(k.k_old, torch::kInt64));
  k.order = torch::cat({k.columns, known.logical_not().nonzero().flatten().to(torch::kInt64)});
  k.pos_order = torch::empty({c}, torch::kInt64);
  k.pos_order.index_put_({k.order}, torch::arange(c, torch::kInt64));
  return k;
}

}  // namespace

TEST(CompatTraining, CachedTeacherRowsGiveTheDirectLossesValuesAndGradients) {
  // The per-row teacher caches (built at task start and at next_stage) against the losses computed
  // from the cached logits at the step, on class-, task- and domain-incremental streams (domain: every
  // column known, no mask, MUSCLE's single-softmax path), for two different
  // tasks (the caches are rebuilt at the task switch).
  for (const std::string scenario : {"class", "task", "domain"}) {
    for (const std::string mode : {"focal", "muscle"}) {
      Fixture f;
      f.stream = tasks::make_stream(tasks::StreamOptions().name("synthetic").num_tasks(3).seed(1).scenario(scenario));
      f.model = strata::models::make_model(strata::models::ModelOptions()
                                               .input_shape(f.stream.input_shape)
                                               .num_classes(f.stream.num_classes)
                                               .hidden({16}));
      auto opts = compat::CompatTrainOptions().mode(compat::compat_mode_from_string(mode)).drop_new_class_samples(false);
      CompatMethod cm(std::make_unique<Naive>(), CompatTrainingOptions().loss(opts));
      cm.attach(f.model);
      auto c0 = f.ctx(0);
      train_task(c0, cm, f.train);
      for (int64_t t = 1; t < 3; ++t) {
        auto ct = f.ctx(t);
        cm.on_task_start(ct);
        train_task(ct, cm, f.train);
        if (mode == "muscle") {
          ASSERT_TRUE(cm.next_stage(ct, 1).has_value());
        }
        const auto data = cm.training_data(ct);
        const auto k = known_columns(f.stream, t);
        StepContext sc;
        sc.task = &ct;
        sc.batch_index = torch::randperm(data.size(), torch::kInt64).slice(0, 0, 12);
        sc.x = data.x.index_select(0, sc.batch_index);
        sc.y = data.y.index_select(0, sc.batch_index);
        const auto raw = (f.model->forward(sc.x).detach() + torch::randn({12, f.stream.num_classes})).requires_grad_(true);
        const torch::Tensor table = cm.training_logit_mask(ct);
        const torch::Tensor row_mask = table.defined() ? table.index_select(0, data.task.index_select(0, sc.batch_index))
                                                       : torch::Tensor();
        sc.raw_logits = raw;
        sc.logits = row_mask.defined() ? mask_logits(raw, row_mask) : raw;
        sc.loss = torch::nn::functional::cross_entropy(sc.logits, sc.y);
        const torch::Tensor ref = cm.reference_logits().index_select(0, sc.batch_index).index_select(1, k.columns);
        torch::Tensor expected;
        if (mode == "focal") {
          const auto student = raw.index_select(1, k.columns);
          const auto ext = torch::cat({student, torch::zeros({12, 1})}, 1);
          expected = compat::focal_distillation_loss(ext, ref, k.pos_focal.index_select(0, sc.y), opts).compat;
        } else {
          torch::Tensor student = sc.logits, neu = cm.plain_logits().index_select(0, sc.batch_index);
          if (row_mask.defined()) {
            student = student.masked_fill(row_mask.logical_not(), -1e9);
            neu = neu.masked_fill(row_mask.logical_not(), -1e9);
          }
          expected = compat::muscle_loss(student.index_select(1, k.order), ref, neu.index_select(1, k.order),
                                         k.pos_order.index_select(0, sc.y), opts, raw.index_select(1, k.columns))
                         .compat;
          // λ = 1: the Trainer's cross-entropy has weight 0 (extra_loss is λ·L_mcomp alone).
          EXPECT_EQ(cm.task_loss_weight(sc), 0.0);
        }
        const auto got = cm.extra_loss(sc);
        EXPECT_TRUE(torch::allclose(got, expected, 1e-5, 1e-6))
            << scenario << " " << mode << " task " << t << ": " << got.item<double>() << " vs " << expected.item<double>();
        const auto g_got = torch::autograd::grad({got}, {raw}, {}, /*retain_graph=*/true)[0];
        const auto g_expected = torch::autograd::grad({expected}, {raw})[0];
        EXPECT_TRUE(torch::allclose(g_got, g_expected, 1e-4, 1e-6))
            << scenario << " " << mode << " task " << t << ": max diff " << (g_got - g_expected).abs().max().item<double>();
        if (mode == "muscle") cm.next_stage(ct, 2);
        cm.on_task_end(ct);
      }
    }
  }
}

TEST(CompatTraining, MuscleWeightedTaskLossEqualsTheComposedLossValueAndGradients) {
  // Stage 2's step loss as the Trainer computes it (step_loss: (1 − λ)·CE through task_loss_weight,
  // λ·L_mcomp from extra_loss) against the composed λ·L_mcomp + (1 − λ)·CE(inner.training_logits(z)),
  // for naive and for CoSO (whose task loss is CE(z / T): the wrapper must forward training_logits),
  // class- and task-incremental, λ = 1 (no cross-entropy computed) and λ = 0.3.
  for (const std::string scenario : {"class", "task"}) {
    for (const std::string inner : {"naive", "coso"}) {
      for (const double lambda : {1.0, 0.3}) {
        const std::string what = scenario + " " + inner + " lambda " + std::to_string(lambda);
        Fixture f;
        f.stream = tasks::make_stream(tasks::StreamOptions().name("synthetic").num_tasks(2).seed(1).scenario(scenario));
        f.model = strata::models::make_model(strata::models::ModelOptions()
                                                 .input_shape(f.stream.input_shape)
                                                 .num_classes(f.stream.num_classes)
                                                 .hidden({16}));
        const auto opts = compat::CompatTrainOptions().mode(compat::CompatMode::kMuscle).weight(lambda);
        CompatMethod cm(builtin_methods().make(MethodConfig(inner, {})), CompatTrainingOptions().loss(opts));
        cm.attach(f.model);
        auto c0 = f.ctx(0);
        cm.on_task_start(c0);
        train_task(c0, cm, f.train);
        cm.on_task_end(c0);
        auto c1 = f.ctx(1);
        cm.on_task_start(c1);
        train_task(c1, cm, f.train);
        StepContext sc;
        sc.task = &c1;
        EXPECT_EQ(cm.task_loss_weight(sc), 1.0) << what << ": stage 1 is the inner method's training";
        ASSERT_TRUE(cm.next_stage(c1, 1).has_value()) << what;
        const auto data = cm.training_data(c1);
        const auto k = known_columns(f.stream, 1);
        sc.batch_index = torch::randperm(data.size(), torch::kInt64).slice(0, 0, 12);
        sc.x = data.x.index_select(0, sc.batch_index);
        sc.y = data.y.index_select(0, sc.batch_index);
        const auto raw = (f.model->forward(sc.x).detach() + torch::randn({12, f.stream.num_classes})).requires_grad_(true);
        const torch::Tensor row_mask =
            cm.training_logit_mask(c1).index_select(0, data.task.index_select(0, sc.batch_index));
        sc.raw_logits = raw;
        sc.logits = mask_logits(raw, row_mask);
        const auto got = step_loss(cm, sc);
        EXPECT_EQ(sc.loss.defined(), lambda != 1.0) << what;
        // The composed loss, every part from the cached logits.
        const torch::Tensor ref = cm.reference_logits().index_select(0, sc.batch_index).index_select(1, k.columns);
        const torch::Tensor student = sc.logits.masked_fill(row_mask.logical_not(), -1e9);
        const torch::Tensor neu =
            cm.plain_logits().index_select(0, sc.batch_index).masked_fill(row_mask.logical_not(), -1e9);
        const torch::Tensor l_mcomp =
            compat::muscle_loss(student.index_select(1, k.order), ref, neu.index_select(1, k.order),
                                k.pos_order.index_select(0, sc.y), opts, raw.index_select(1, k.columns))
                .compat;
        const torch::Tensor ce = torch::nn::functional::cross_entropy(cm.inner().training_logits(sc.logits), sc.y);
        const torch::Tensor expected = lambda * l_mcomp + (1 - lambda) * ce;
        if (inner == "coso") {  // the temperature reaches the task loss: CE(z / T) is not CE(z)
          EXPECT_GT((ce - torch::nn::functional::cross_entropy(sc.logits, sc.y)).abs().item<double>(), 1e-3) << what;
        }
        EXPECT_NEAR(got.item<double>(), expected.item<double>(), 1e-5) << what;
        // Both share the masked logits' graph.
        const auto g_got = torch::autograd::grad({got}, {raw}, {}, /*retain_graph=*/true)[0];
        const auto g_expected = torch::autograd::grad({expected}, {raw})[0];
        EXPECT_TRUE(torch::allclose(g_got, g_expected, 1e-4, 1e-6))
            << what << ": max diff " << (g_got - g_expected).abs().max().item<double>();
        cm.next_stage(c1, 2);
        EXPECT_EQ(cm.task_loss_weight(sc), 1.0) << what << ": past stage 2";
        cm.on_task_end(c1);
      }
    }
  }
}

namespace {
// A method with a fixed task-loss weight and an optional constant extra loss.
struct Weighted : public Naive {
  double w = 1;
  torch::Tensor extra;
  double task_loss_weight(const StepContext&) const override { return w; }
  torch::Tensor extra_loss(StepContext&) override { return extra; }
};
}  // namespace

TEST(StepLoss, WeightsTheTaskLossAndRefusesAStepWithoutALoss) {
  Weighted m;
  StepContext sc;
  sc.logits = torch::randn({6, 4}).requires_grad_(true);
  sc.y = torch::tensor({0, 1, 2, 3, 0, 1}, torch::kInt64);
  const double ce = torch::nn::functional::cross_entropy(sc.logits, sc.y).item<double>();
  m.w = 0.25;
  m.extra = torch::full({}, 2.0);
  EXPECT_NEAR(step_loss(m, sc).item<double>(), 0.25 * ce + 2.0, 1e-6);
  EXPECT_NEAR(sc.loss.item<double>(), ce, 1e-6);  // the unweighted task loss
  m.w = 0;
  sc.loss = torch::Tensor();
  EXPECT_NEAR(step_loss(m, sc).item<double>(), 2.0, 1e-6);
  EXPECT_FALSE(sc.loss.defined());
  m.extra = torch::Tensor();
  try {
    step_loss(m, sc);
    ADD_FAILURE() << "a step with weight 0 and no extra loss must be refused";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("no extra_loss"), std::string::npos) << e.what();
  }
  m.w = -1;
  EXPECT_THROW(step_loss(m, sc), c10::Error);
  m.w = std::nan("");
  EXPECT_THROW(step_loss(m, sc), c10::Error);
}
