// OSFT: frozen singular directions stay fixed under AdamW, a fully frozen layer is
// untouched, the importance rule, exact mid-task save/load, and a short Runner run that learns.
#include "continual/osft.h"
#include "run/runner.h"
#include "subspaces/store.h"

#include <gtest/gtest.h>

#include <filesystem>

namespace fs = std::filesystem;
using namespace strata::continual;
using namespace strata::run;

namespace {

// Two tasks of random 8x8 images, 4 classes, labels from a fixed random linear teacher per task.
strata::tasks::TaskStream tiny_stream(int64_t n = 96) {
  strata::tasks::TaskStream s;
  s.name = "tiny";
  s.num_classes = 4;
  s.input_shape = {1, 8, 8};
  torch::manual_seed(11);
  for (int64_t t = 0; t < 2; ++t) {
    strata::tasks::Task task;
    task.index = t;
    task.name = "t" + std::to_string(t);
    task.classes = {0, 1, 2, 3};
    auto x = torch::randn({n, 1, 8, 8});
    auto teacher = torch::randn({64, 4});
    task.train.x = x;
    task.train.y = x.flatten(1).mm(teacher).argmax(1);
    task.train.ids = torch::arange(n);
    task.train.task = torch::full({n}, t, torch::kInt64);
    s.tasks.push_back(task);
  }
  return s;
}

strata::models::Model tiny_model(uint64_t seed = 0) {
  torch::manual_seed(seed);
  return strata::models::make_model(strata::models::ModelOptions().input_shape({1, 8, 8}).hidden({24, 16}).num_classes(4));
}

std::unique_ptr<Method> make_osft(std::map<std::string, std::string> opts) {
  return builtin_methods().make(MethodConfig("osft", opts));
}

// One Trainer-style step on rows [s, s+bs) of the task's training split.
void step(Method& m, TaskContext& ctx, torch::optim::Optimizer& opt, int64_t s, int64_t bs = 16) {
  StepContext sc;
  sc.task = &ctx;
  const auto& tr = ctx.task().train;
  sc.x = tr.x.slice(0, s, s + bs);
  sc.y = tr.y.slice(0, s, s + bs);
  sc.logits = ctx.model->forward(sc.x);
  sc.loss = torch::nn::functional::cross_entropy(sc.logits, sc.y);
  opt.zero_grad();
  sc.loss.backward();
  m.after_backward(sc);
  opt.step();
  m.after_step(sc);
}

std::vector<torch::Tensor> trainable(const strata::models::Model& model) {
  std::vector<torch::Tensor> p;
  for (auto& t : model->parameters())
    if (t.requires_grad()) p.push_back(t);
  return p;
}

torch::Tensor weight_of(const strata::models::Model& model, const std::string& name) {
  for (auto& [n, l] : model->linear_layers())
    if (n == name) return l->weight;
  return {};
}

double rel(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.norm() / b.norm().clamp_min(1e-30)).item<double>();
}

}  // namespace

TEST(OSFT, FrozenSingularDirectionsDoNotMoveUnderAdamW) {
  auto stream = tiny_stream();
  auto model = tiny_model();
  auto m = make_osft({{"rank_rule", "fixed"}, {"fraction", "0.5"}});
  TaskContext ctx;
  ctx.model = model;
  ctx.stream = &stream;
  ctx.task_index = 1;
  std::map<std::string, torch::Tensor> start;
  for (auto& [n, l] : model->linear_layers()) start[n] = l->weight.detach().clone();
  m->on_task_start(ctx);
  auto opt = torch::optim::AdamW(trainable(model), torch::optim::AdamWOptions(1e-2).weight_decay(0.1));
  for (int i = 0; i < 6; ++i) step(*m, ctx, opt, 16 * i);

  for (const char* name : {"fc1", "fc2"}) {
    const auto W0 = start[name];
    const auto W1 = weight_of(model, name).detach();
    const int64_t R = std::min(W0.size(0), W0.size(1)), k = R / 2;
    // Independent SVD of the start weight (not the method's bases).
    auto [U, S, Vh] = torch::linalg_svd(W0.to(torch::kFloat64), false);
    auto Uk = U.slice(1, 0, k), Vk = Vh.slice(0, 0, k).t();
    const auto dW = (W1 - W0).to(torch::kFloat64);
    ASSERT_GT(dW.norm().item<double>(), 1e-3) << name << " did not train";
    EXPECT_LT(rel(Uk.t().mm(dW), dW), 1e-4) << name;
    EXPECT_LT(rel(dW.mm(Vk), dW), 1e-4) << name;
    // The frozen triplets stay singular triplets of W: Uₖᵀ W Vₖ = diag(σₖ) before and after (the
    // trainable part may grow past σₖ, so "the top-k of W" is not the invariant).
    const auto D1 = Uk.t().mm(W1.to(torch::kFloat64)).mm(Vk);
    EXPECT_LT(rel(D1 - torch::diag(S.slice(0, 0, k)), S.slice(0, 0, k)), 1e-5) << name;
    EXPECT_EQ(m->report()["tasks"][0]["layers"][name]["k"].get<int64_t>(), k);
  }
  // The head is not decomposed and trains freely.
  EXPECT_GT((weight_of(model, "head") - start["head"]).norm().item<double>(), 1e-3);
}

TEST(OSFT, FullyFrozenLayerIsUntouched) {
  auto stream = tiny_stream();
  auto model = tiny_model(1);
  // fc1 [24, 64] fully frozen (k = R = 24); fc2 trains without constraint in this run.
  auto m = make_osft({{"rank_rule", "fixed"}, {"fraction", "1"}, {"target", "fc1"}});
  TaskContext ctx;
  ctx.model = model;
  ctx.stream = &stream;
  ctx.task_index = 1;
  const auto W0 = weight_of(model, "fc1").detach().clone();
  const auto F0 = weight_of(model, "fc2").detach().clone();
  m->on_task_start(ctx);
  EXPECT_EQ(m->report()["tasks"][0]["layers"]["fc1"]["k"].get<int64_t>(), 24);
  auto opt = torch::optim::AdamW(trainable(model), torch::optim::AdamWOptions(1e-2).weight_decay(0.1));
  for (int i = 0; i < 4; ++i) step(*m, ctx, opt, 16 * i);
  EXPECT_LT(rel(weight_of(model, "fc1").detach() - W0, W0), 1e-5);
  // fc2 is not a target here and task 1 is not the first task: frozen as a non-target parameter.
  EXPECT_TRUE(torch::equal(weight_of(model, "fc2").detach(), F0));
}

TEST(OSFT, ImportanceRuleOnHandMadeActivations) {
  auto x = torch::rand({50, 6});
  EXPECT_NEAR(osft_layer_importance(x, torch::eye(6)), 1.0, 1e-6);
  EXPECT_NEAR(osft_layer_importance(x, -torch::eye(6)), -1.0, 1e-6);
  torch::manual_seed(2);
  EXPECT_LT(osft_layer_importance(x, torch::randn({6, 6})), 0.9);
  // Non-square: uncentred linear CKA of inputs and outputs. W = [I 0] on inputs that live in its
  // first 4 coordinates passes them through: 1.
  auto x4 = torch::cat({torch::rand({50, 4}), torch::zeros({50, 2})}, 1);
  EXPECT_NEAR(osft_layer_importance(x4, torch::eye(6).slice(0, 0, 4)), 1.0, 1e-6);
  // Basis-free: rotating the output space and scaling W leave the score unchanged (the old
  // first-min(m, n)-coordinates score changed sign under such a rotation).
  auto W = torch::randn({4, 6});
  auto Q = std::get<0>(torch::linalg_qr(torch::randn({4, 4})));
  const double s0 = osft_layer_importance(x, W);
  EXPECT_NEAR(osft_layer_importance(x, 3.0 * Q.mm(W)), s0, 1e-6);
  EXPECT_GT(s0, 0.0);
  EXPECT_LE(s0, 1.0 + 1e-9);
  // An MNIST-sized first layer (784 -> 100) on non-negative images: in (0, 1], never negative.
  auto img = torch::rand({128, 784});
  const double s1 = osft_layer_importance(img, torch::randn({100, 784}) / 28.0);
  EXPECT_GT(s1, 0.0);
  EXPECT_LE(s1, 1.0 + 1e-9);
  // A layer that discards the inputs' span scores 0.
  EXPECT_NEAR(osft_layer_importance(x4, torch::eye(6).slice(0, 4, 6).contiguous()), 0.0, 1e-9);

  // I = {1.0, 0.5}: mean 0.75, I_n = {4/3, 2/3}; r = 0.1 + I_n * 0.7 = {1.033, 0.567}; R = 10.
  auto k = osft_importance_ranks({1.0, 0.5}, {10, 10}, 0.1, 0.8);
  EXPECT_EQ(k, (std::vector<int64_t>{9, 5}));  // 10.33 clamps to R - 1 = 9
  // Equal importance = every layer at trr.
  EXPECT_EQ(osft_importance_ranks({0.3, 0.3}, {10, 20}, 0.1, 0.8), (std::vector<int64_t>{8, 16}));
  // No usable signal (mean <= 0): average layer.
  EXPECT_EQ(osft_importance_ranks({-0.2, 0.1}, {10, 10}, 0.1, 0.5), (std::vector<int64_t>{5, 5}));
  // Groups are normalised by their own means: {1.0, 0.5} in one group, 0.9 alone in another (= trr).
  EXPECT_EQ(osft_importance_ranks({1.0, 0.5, 0.9}, {10, 10, 10}, 0.1, 0.8, {0, 0, 1}),
            (std::vector<int64_t>{9, 5, 8}));

  // Through the method: fc2 = identity (a pass-through layer on non-negative ReLU inputs) is
  // protected more than the random square fc3; fc1 (64 -> 16), alone of its kind, gets trr.
  auto stream = tiny_stream();
  auto model =
      strata::models::make_model(strata::models::ModelOptions().input_shape({1, 8, 8}).hidden({16, 16, 16}).num_classes(4));
  {
    torch::NoGradGuard g;
    weight_of(model, "fc2").copy_(torch::eye(16));
  }
  auto m = make_osft({{"rank_rule", "importance"}});
  TaskContext ctx;
  ctx.model = model;
  ctx.stream = &stream;
  ctx.task_index = 1;
  m->on_task_start(ctx);
  auto rep = m->report()["tasks"][0]["layers"];
  EXPECT_NEAR(rep["fc2"]["importance"].get<double>(), 1.0, 1e-5);
  EXPECT_LT(rep["fc3"]["importance"].get<double>(), 0.9);
  EXPECT_GT(rep["fc2"]["k"].get<int64_t>(), rep["fc3"]["k"].get<int64_t>());
  EXPECT_EQ(rep["fc1"]["k"].get<int64_t>(), 12);  // floor(0.8 * 16)
  EXPECT_GT(rep["fc1"]["importance"].get<double>(), 0.0);
  // Task 0 is plain full fine-tuning.
  ctx.task_index = 0;
  m->on_task_start(ctx);
  EXPECT_EQ(m->report()["tasks"][1]["layers"]["fc2"]["k"].get<int64_t>(), 0);
}

TEST(OSFT, SaveLoadMidTaskReproducesTheNextStep) {
  auto stream = tiny_stream();
  auto a = tiny_model(3);
  auto ma = make_osft({{"rank_rule", "importance"}});
  TaskContext ca;
  ca.model = a;
  ca.stream = &stream;
  ca.task_index = 1;
  ma->on_task_start(ca);
  torch::optim::SGD opt_a(trainable(a), torch::optim::SGDOptions(0.1));
  for (int i = 0; i < 3; ++i) step(*ma, ca, opt_a, 16 * i);

  // Fresh model (different init) and fresh method; copy the parameters, load the method state.
  auto b = tiny_model(99);
  {
    torch::NoGradGuard g;
    auto pa = a->named_parameters(), pb = b->named_parameters();
    for (const auto& p : pa) pb[p.key()].copy_(p.value());
  }
  auto mb = make_osft({{"rank_rule", "importance"}});
  mb->load(ma->save(), b);
  TaskContext cb = ca;
  cb.model = b;
  torch::optim::SGD opt_b(trainable(b), torch::optim::SGDOptions(0.1));
  ASSERT_EQ(trainable(a).size(), trainable(b).size());
  step(*ma, ca, opt_a, 48);
  step(*mb, cb, opt_b, 48);
  auto pa = a->named_parameters(), pb = b->named_parameters();
  for (const auto& p : pa) EXPECT_TRUE(torch::equal(p.value(), pb[p.key()])) << p.key();
  EXPECT_EQ(ma->report(), mb->report());
}

TEST(OSFT, RunnerOnSyntheticLearnsAndStoresBases) {
  auto dir = fs::temp_directory_path() / ("strata_test_osft_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  RunConfig c;
  c.out = dir.string();
  c.name = "run";
  c.quiet = true;
  c.stream.name("synthetic").num_tasks(3).seed(3);
  c.model.hidden({32});
  c.train.lr(0.05).batch_size(16).epochs(4).seed(7);
  c.method = MethodConfig("osft", {{"rank_rule", "importance"}});
  Runner runner(c);
  auto m = runner.run();
  const auto& R = runner.accuracy_matrix();
  // Chance is 0.25. Later tasks train only the unprotected directions (k = 0.8 R of the single
  // target layer here), so they learn less than naive fine-tuning would (≈ 0.8).
  EXPECT_GT(R[0][0].item<double>(), 0.6);
  for (int64_t t = 1; t < 3; ++t) EXPECT_GT(R[t][t].item<double>(), 0.45) << "task " << t;
  EXPECT_GT(m.acc, 0.3);
  auto store = strata::subspaces::SubspaceStore::open((dir / "run" / "subspaces.h5").string());
  EXPECT_EQ(store.tasks(), (std::vector<std::string>{"task01", "task02"}));
  auto rec = store.get("task01", "fc1");
  EXPECT_EQ(rec.method, "osft");
  EXPECT_EQ(rec.basis.size(1), rec.extra.at("U_h").size(1));
  EXPECT_LT((rec.basis.t().mm(rec.basis) - torch::eye(rec.rank())).abs().max().item<double>(), 1e-4);
  fs::remove_all(dir);
}

TEST(OSFT, PlainSgdSkipsTheRedundantGradientProjection) {
  // ctx.train = plain SGD: after_backward skips the projection; the re-projection after the step
  // must give the same weights as projecting the gradient too (no TrainOptions = always project).
  auto stream = tiny_stream();
  TrainOptions sgd;
  sgd.optimizer("sgd").momentum(0).weight_decay(0.01);
  strata::models::Model models[2] = {tiny_model(5), tiny_model(5)};
  for (int v = 0; v < 2; ++v) {
    auto m = make_osft({{"rank_rule", "fixed"}, {"fraction", "0.5"}});
    TaskContext ctx;
    ctx.model = models[v];
    ctx.stream = &stream;
    ctx.task_index = 1;
    ctx.train = v == 0 ? &sgd : nullptr;
    m->on_task_start(ctx);
    torch::optim::SGD opt(trainable(models[v]), torch::optim::SGDOptions(0.1).weight_decay(0.01));
    for (int i = 0; i < 4; ++i) step(*m, ctx, opt, 16 * i);
  }
  auto a = weight_of(models[0], "fc1"), b = weight_of(models[1], "fc1");
  EXPECT_LT(rel(a - b, b), 1e-5);
  EXPECT_FALSE(torch::equal(a, weight_of(tiny_model(5), "fc1")));
}

TEST(OSFT, PlainSgdFactoredGradientMatchesTheProjectedStep) {
  // Plain SGD without weight decay: the layers' backward writes P(G) from its factors and W is not
  // re-projected; the weights match the always-project path (no TrainOptions) within round-off,
  // and the frozen singular directions do not move.
  auto stream = tiny_stream();
  TrainOptions sgd;
  sgd.optimizer("sgd").momentum(0).weight_decay(0);
  strata::models::Model nets[2] = {tiny_model(5), tiny_model(5)};
  torch::Tensor U, V;
  for (int v = 0; v < 2; ++v) {
    auto m = make_osft({{"rank_rule", "fixed"}, {"fraction", "0.5"}});
    TaskContext ctx;
    ctx.model = nets[v];
    ctx.stream = &stream;
    ctx.task_index = 1;
    ctx.train = v == 0 ? &sgd : nullptr;
    m->on_task_start(ctx);
    const auto* osft = dynamic_cast<OSFTMethod*>(m.get());
    ASSERT_NE(osft, nullptr);
    for (const auto& l : osft->layers())
      EXPECT_EQ(l.layer->input_projection().defined(), v == 0 && l.k > 0) << l.name;
    if (v == 0) U = osft->layers()[0].U.clone(), V = osft->layers()[0].V.clone();
    torch::optim::SGD opt(trainable(nets[v]), torch::optim::SGDOptions(0.1));
    for (int i = 0; i < 4; ++i) step(*m, ctx, opt, 16 * i);
  }
  auto a = weight_of(nets[0], "fc1"), b = weight_of(nets[1], "fc1"), w0 = weight_of(tiny_model(5), "fc1");
  EXPECT_LT(rel(a - b, b), 1e-5);
  EXPECT_FALSE(torch::equal(a, w0));
  EXPECT_LT(U.t().mm(a - w0).abs().max().item<double>(), 1e-5);
  EXPECT_LT((a - w0).mm(V).abs().max().item<double>(), 1e-5);
}

TEST(OSFT, ProtectedStartFreezesThePretrainedDirectionsInTaskZero) {
  // ctx.pretrained (the Runner sets it for --init / --pretrain): task 0 already freezes the top
  // singular directions of the starting weights (progressive: k = floor(1/(T+1) R)), and the
  // non-target, non-head parameters stay frozen.
  auto stream = tiny_stream();
  for (const std::string protect : {"auto", "never"}) {
    auto model = tiny_model(4);
    auto m = make_osft({{"rank_rule", "progressive"}, {"target", "fc1"}, {"protect_start", protect}});
    TaskContext ctx;
    ctx.model = model;
    ctx.stream = &stream;
    ctx.task_index = 0;
    ctx.pretrained = true;
    const auto W0 = weight_of(model, "fc1").detach().clone();
    const auto F0 = weight_of(model, "fc2").detach().clone();
    m->on_task_start(ctx);
    const int64_t k = m->report()["tasks"][0]["layers"]["fc1"]["k"].get<int64_t>();
    auto opt = torch::optim::AdamW(trainable(model), torch::optim::AdamWOptions(1e-2).weight_decay(0.1));
    for (int i = 0; i < 4; ++i) step(*m, ctx, opt, 16 * i);
    const auto dW = (weight_of(model, "fc1").detach() - W0).to(torch::kFloat64);
    ASSERT_GT(dW.norm().item<double>(), 1e-3);
    if (protect == "never") {
      EXPECT_EQ(k, 0);
      EXPECT_FALSE(torch::equal(weight_of(model, "fc2").detach(), F0));  // task 0 trains everything
      continue;
    }
    EXPECT_EQ(k, 24 / 3);  // R = min(24, 64) = 24, T = 2: floor(1/3 * 24)
    EXPECT_TRUE(m->report()["tasks"][0]["protected_start"].get<bool>());
    auto [U, S, Vh] = torch::linalg_svd(W0.to(torch::kFloat64), false);
    EXPECT_LT(rel(U.slice(1, 0, k).t().mm(dW), dW), 1e-4);
    EXPECT_LT(rel(dW.mm(Vh.slice(0, 0, k).t()), dW), 1e-4);
    EXPECT_TRUE(torch::equal(weight_of(model, "fc2").detach(), F0));
    // Task 1 of the same run: k = floor(2/3 * 24).
    ctx.task_index = 1;
    m->on_task_start(ctx);
    EXPECT_EQ(m->report()["tasks"][1]["layers"]["fc1"]["k"].get<int64_t>(), 16);
  }
}

TEST(OSFT, ImportanceSamplesAreDrawnAtRandomFromTheWholeSplit) {
  // The previous task's first 128 examples are zeros and the rest random: the old first-128 draw saw
  // only zeros (score 0 everywhere); a random draw over the split sees real inputs. The draw is
  // seeded by the run seed: the same seed gives the same scores.
  auto stream = tiny_stream(512);
  {
    auto& x = stream.tasks[0].train.x;
    x.slice(0, 0, 128).zero_();
  }
  auto importance = [&](int64_t seed) {
    auto model = tiny_model(2);
    auto m = make_osft({{"rank_rule", "importance"}, {"importance_samples", "128"}});
    TrainOptions o;
    o.seed(seed);
    TaskContext ctx;
    ctx.model = model;
    ctx.stream = &stream;
    ctx.task_index = 1;
    ctx.train = &o;
    m->on_task_start(ctx);
    return m->report()["tasks"][0]["layers"]["fc1"]["importance"].get<double>();
  };
  const double a = importance(1), b = importance(1), c = importance(2);
  EXPECT_GT(a, 0.05);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}
