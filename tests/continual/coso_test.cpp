// CoSO: orthogonality of the applied update to the historical basis, sketch feeding schedule,
// zero budgets, optimizer-memory accounting, mid-task save/load, and a Runner run vs naive.
#include "continual/coso.h"
#include "continual/compat_training.h"
#include "run/runner.h"
#include "subspaces/basis.h"
#include "subspaces/sketch.h"
#include "subspaces/store.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <filesystem>

namespace fs = std::filesystem;
using namespace strata::continual;
using namespace strata::run;
namespace ss = strata::subspaces;

namespace {

strata::models::ModelOptions small_mlp() { return strata::models::ModelOptions().input_shape({1, 8, 8}).hidden({24, 16}).num_classes(4).bias(true); }

CoSOOptions small_options() {
  return CoSOOptions().r1(4).r2(6).gap(2).threshold(0.9).lr(1e-2).temperature(1.0).others("all");
}

struct Harness {
  strata::models::Model model;
  CoSO method;
  TaskContext ctx;
  std::unique_ptr<torch::optim::Optimizer> opt;

  Harness(const strata::models::ModelOptions& mo, const CoSOOptions& co, uint64_t seed = 0) : method(co) {
    torch::manual_seed(seed);
    model = strata::models::make_model(mo);
    method.attach(model);
    ctx.model = model;
  }
  void start_task(int64_t t) {
    ctx.task_index = t;
    method.on_task_start(ctx);
    opt = method.make_optimizer(ctx, method.parameters(ctx));
  }
  // One training step on (x, y); `before_step` sees the gradients after backward.
  void step(const torch::Tensor& x, const torch::Tensor& y, const std::function<void()>& before_step = {}) {
    opt->zero_grad();
    auto loss = torch::nn::functional::cross_entropy(model->forward(x), y);
    loss.backward();
    StepContext sc;
    sc.task = &ctx;
    method.after_backward(sc);
    if (before_step) before_step();
    opt->step();
  }
  void end_task() { method.on_task_end(ctx); }
};

// Task t's data: a fixed random batch per (t, i).
std::pair<torch::Tensor, torch::Tensor> batch(int64_t t, int64_t i) {
  auto g = torch::make_generator<at::CPUGeneratorImpl>(1000 * t + i);
  auto x = torch::randn({32, 1, 8, 8}, g) + 0.5 * static_cast<double>(t);
  auto y = torch::randint(0, 4, {32}, g, torch::kInt64);
  return {x, y};
}

torch::Tensor weight_of(const strata::models::Model& m, const std::string& layer) {
  for (auto& [n, l] : m->linear_layers())
    if (n == layer) return l->weight;
  throw std::runtime_error("no layer " + layer);
}

void train_task(Harness& h, int64_t t, int64_t steps) {
  h.start_task(t);
  for (int64_t i = 0; i < steps; ++i) {
    auto [x, y] = batch(t, i);
    h.step(x, y);
  }
  h.end_task();
}

}  // namespace

TEST(CoSO, DefaultTargetsAndOptions) {
  Harness h(small_mlp(), small_options());
  ASSERT_EQ(h.method.layers().size(), 2u);
  EXPECT_EQ(h.method.layers()[0].name, "fc1");
  EXPECT_EQ(h.method.layers()[1].name, "fc2");
  // others = all: head weight + bias, fc1/fc2 biases: plain Adam.
  EXPECT_EQ(h.method.others().size(), 4u);
  {  // The default (the CoSO code's): the projected weights and the head only.
    Harness d(small_mlp(), small_options().others(CoSOOptions().others()));
    EXPECT_EQ(CoSOOptions().others(), "head");
    EXPECT_EQ(CoSOOptions().cil_loss(), "task");
    ASSERT_EQ(d.method.others().size(), 2u);
    EXPECT_EQ(d.method.others()[0].name, "head.weight");
    EXPECT_EQ(d.method.others()[1].name, "head.bias");
    for (auto& p : d.model->named_parameters())
      EXPECT_EQ(p.value().requires_grad(), p.key() == "fc1.weight" || p.key() == "fc2.weight" || p.key().rfind("head.", 0) == 0)
          << p.key();
  }
  torch::manual_seed(0);
  auto vit = strata::models::make_model(strata::models::ModelOptions().arch("vit").depth(2));
  CoSO v{CoSOOptions()};
  v.attach(vit);
  ASSERT_EQ(v.layers().size(), 2u);
  EXPECT_EQ(v.layers()[1].name, "blocks.1.attn.o");
  EXPECT_THROW(CoSO(MethodConfig("coso", {{"others", "some"}})), c10::Error);
  EXPECT_THROW(CoSO(MethodConfig("coso", {{"cil_loss", "all"}})), c10::Error);
  // The registry's defaults are the struct's (one table).
  for (const auto& o : builtin_methods().get("coso").options) {
    if (o.key == "others") { EXPECT_EQ(o.default_value, "head"); }
  }
  EXPECT_THROW(CoSO(MethodConfig("coso", {{"gap", "0"}})), c10::Error);
  EXPECT_TRUE(builtin_methods().has("coso"));
}

TEST(CoSO, UpdateIsOrthogonalToHistoricalBasisAcrossRefreshes) {
  Harness h(small_mlp(), small_options());
  train_task(h, 0, 6);
  for (const auto& l : h.method.layers()) ASSERT_GT(l.basis_rank(), 0) << l.name;
  // M has orthonormal columns.
  for (const auto& l : h.method.layers())
    EXPECT_TRUE(torch::allclose(l.M.t().mm(l.M), torch::eye(l.basis_rank()), 1e-5, 1e-5));
  h.start_task(1);
  for (int64_t i = 0; i < 5; ++i) {  // gap 2: refreshes at steps 0, 2, 4
    std::vector<torch::Tensor> before;
    for (const auto& l : h.method.layers()) before.push_back(l.weight.detach().clone());
    auto [x, y] = batch(1, i);
    h.step(x, y);
    for (size_t j = 0; j < before.size(); ++j) {
      const auto& l = h.method.layers()[j];
      auto dW = l.weight.detach() - before[j];
      const double norm = dW.norm().item<double>();
      ASSERT_GT(norm, 0) << l.name << " step " << i;
      EXPECT_LE(l.M.t().mm(dW).norm().item<double>(), 1e-5 * norm) << l.name << " step " << i;
      EXPECT_EQ(l.step, i + 1);
    }
  }
  EXPECT_EQ(h.method.layers()[0].refreshes, 3);
  // The second task's sketch adds directions orthogonal to the first task's.
  const auto M0 = h.method.layers()[0].M.clone();
  h.end_task();
  const auto& M1 = h.method.layers()[0].M;
  EXPECT_GE(M1.size(1), M0.size(1));
  EXPECT_TRUE(torch::allclose(M1.t().mm(M1), torch::eye(M1.size(1)), 1e-5, 1e-5));
  EXPECT_LE(ss::projector_distance(M0, M1.narrow(1, 0, M0.size(1))), 1e-4);  // old columns kept first
}

TEST(CoSO, SketchIsFedOnlyOnRefreshSteps) {
  // Exact refresh: the sketch is the FD sketch of the (refresh-step) gradients themselves.
  Harness h(small_mlp(), small_options().gap(3).refresh("exact"));
  ss::FrequentDirections ref(24, ss::SketchOptions(6));
  h.start_task(0);
  for (int64_t i = 0; i < 7; ++i) {
    auto [x, y] = batch(0, i);
    h.step(x, y, [&] {
      if (i % 3 == 0) ref.update_columns(weight_of(h.model, "fc1").grad().clone());
    });
  }
  const auto& l = h.method.layers()[0];
  EXPECT_EQ(l.refreshes, 3);
  EXPECT_EQ(l.step, 7);
  const auto& B = l.sketch->sketch();
  EXPECT_TRUE(torch::allclose(B.mm(B.t()), ref.sketch().mm(ref.sketch().t()), 1e-4, 1e-5));
  // Feeding every step would give a different sketch (the test can tell the schedules apart).
  ss::FrequentDirections every(24, ss::SketchOptions(6));
  Harness h2(small_mlp(), small_options().gap(3).refresh("exact"));
  h2.start_task(0);
  for (int64_t i = 0; i < 7; ++i) {
    auto [x, y] = batch(0, i);
    h2.step(x, y, [&] { every.update_columns(weight_of(h2.model, "fc1").grad().clone()); });
  }
  EXPECT_FALSE(torch::allclose(B.mm(B.t()), every.sketch().mm(every.sketch().t()), 1e-3, 1e-4));
}

TEST(CoSO, ZeroBudgetLayersAreUntouched) {
  {  // r1 = 0: projected layers frozen, the head still trains.
    Harness h(small_mlp(), small_options().r1(0));
    auto w1 = weight_of(h.model, "fc1").detach().clone(), wh = weight_of(h.model, "head").detach().clone();
    train_task(h, 0, 3);
    EXPECT_TRUE(torch::equal(weight_of(h.model, "fc1"), w1));
    EXPECT_FALSE(torch::equal(weight_of(h.model, "head"), wh));
  }
  {  // M spans the whole output space of fc1: fc1 frozen, fc2 still trains.
    Harness h(small_mlp(), small_options());
    auto st = h.method.save();
    st.tensors["layer/fc1/M"] = torch::eye(24);
    h.method.load(st, h.model);
    auto w1 = weight_of(h.model, "fc1").detach().clone(), w2 = weight_of(h.model, "fc2").detach().clone();
    h.start_task(1);
    for (int64_t i = 0; i < 3; ++i) {
      auto [x, y] = batch(1, i);
      h.step(x, y);
    }
    EXPECT_TRUE(torch::equal(weight_of(h.model, "fc1"), w1));
    EXPECT_FALSE(torch::equal(weight_of(h.model, "fc2"), w2));
  }
}

TEST(CoSO, MemoryAccountingMatchesTheTensors) {
 for (const std::string refresh : {"exact", "power"}) {
  Harness h(small_mlp(), small_options().refresh(refresh));
  train_task(h, 0, 4);
  h.start_task(1);
  for (int64_t i = 0; i < 3; ++i) {
    auto [x, y] = batch(1, i);
    h.step(x, y);
  }
  // fc1 [24, 64], fc2 [16, 24]; r1 = 4, r2 = 6; float32.
  const int64_t K1 = h.method.layers()[0].basis_rank(), K2 = h.method.layers()[1].basis_rank();
  auto layer_floats = [&](int64_t m, int64_t n, int64_t K) {
    // P, moments, sketch B and U_B, s (the power refresh fills its sketch at task end), M
    const bool merged = refresh == "exact";
    return m * 4 + 2 * 4 * n + (merged ? 2 * m * 6 + 6 : 0) + m * K;
  };
  for (const auto& l : h.method.layers()) EXPECT_EQ(l.sketch->empty(), refresh == "power") << l.name;
  // The power refresh's covariance [m, m]; complements where K > m/2.
  int64_t buffers = refresh == "power" ? 24 * 24 + 16 * 16 : 0;
  for (const auto& l : h.method.layers())
    if (2 * l.basis_rank() > l.rows()) buffers += l.rows() * (l.rows() - l.basis_rank());
  const int64_t other_numel = 24 + 16 + (4 * 16 + 4);  // fc1/fc2 biases, head weight + bias
  const auto mem = h.method.memory();
  EXPECT_EQ(mem.coso_bytes, 4 * (layer_floats(24, 64, K1) + layer_floats(16, 24, K2) + 2 * other_numel + buffers))
      << refresh;
  EXPECT_EQ(mem.basis_bytes, 4 * (24 * K1 + 16 * K2));
  EXPECT_EQ(mem.adamw_bytes, 4 * 2 * (24 * 64 + 16 * 24 + other_numel));
  auto rep = h.method.report();
  EXPECT_EQ(rep["optimizer_state_bytes_now"]["coso"].get<int64_t>(), mem.coso_bytes);
  EXPECT_EQ(rep["tasks"].size(), 1u);
  EXPECT_GT(rep["tasks"][0]["optimizer_state_bytes"]["adamw"].get<int64_t>(), 0);
 }
}

TEST(CoSO, SaveLoadMidTaskReproducesTheNextStep) {
  Harness a(small_mlp(), small_options());
  train_task(a, 0, 4);
  a.start_task(1);
  for (int64_t i = 0; i < 3; ++i) {  // gap 2: step 3 is not a refresh, so the saved P is used
    auto [x, y] = batch(1, i);
    a.step(x, y);
  }
  const MethodState st = a.method.save();
  Harness b(small_mlp(), small_options(), /*seed=*/123);
  {
    torch::NoGradGuard ng;
    auto pa = a.model->named_parameters();
    for (auto& p : b.model->named_parameters()) p.value().copy_(pa[p.key()]);
  }
  b.method.load(st, b.model);
  b.ctx.task_index = 1;
  b.opt = b.method.make_optimizer(b.ctx, b.method.parameters(b.ctx));
  for (int64_t i = 3; i < 5; ++i) {  // step 3 uses the loaded P, step 4 refreshes it
    auto [x, y] = batch(1, i);
    a.step(x, y);
    b.step(x, y);
    auto pa = a.model->named_parameters();
    for (auto& p : b.model->named_parameters())
      EXPECT_TRUE(torch::equal(p.value(), pa[p.key()])) << p.key() << " step " << i;
  }
  a.end_task();
  b.end_task();
  EXPECT_TRUE(torch::equal(a.method.layers()[0].M, b.method.layers()[0].M));
}

// One step as the Trainer takes it (step_loss: CE(training_logits(z), y), the temperature, +
// extra_loss), epoch for the schedule.
void trainer_step(Harness& h, const torch::Tensor& x, const torch::Tensor& y, int64_t epoch) {
  h.opt->zero_grad();
  StepContext sc;
  sc.task = &h.ctx;
  sc.epoch = epoch;
  sc.x = x;
  sc.y = y;
  sc.logits = h.model->forward(x);
  step_loss(h.method, sc).backward();
  h.method.after_backward(sc);
  h.opt->step();
}

TEST(CoSO, TemperatureTaskLossEqualsTheOldExtraLossForm) {
  // The task loss CE(training_logits(z), y) = CE(z / T, y) against the old extra-loss form
  // CE(z, y) + [CE(z / T, y) − CE(z, y)]: same value and gradients (1e-6), with a masked logit
  // (−inf stays −inf), directly and through the compatibility wrapper, which must forward it.
  auto mo = small_mlp();
  for (const double T : {1.0, 3.0}) {
    // gradient = dense: autograd::grad must see the weights' dense gradients.
    Harness h(mo, small_options().temperature(T).gradient("dense"));
    auto [x, y] = batch(0, 0);
    y = y.clamp_max(2);
    auto mask = torch::ones({32, 4}, torch::kBool);
    mask.select(1, 3).fill_(false);
    auto params = h.model->parameters();
    auto grads = [&](const torch::Tensor& loss) { return torch::autograd::grad({loss}, params); };
    auto z = strata::continual::mask_logits(h.model->forward(x), mask);
    const auto ce = torch::nn::functional::cross_entropy(z, y);
    const auto old_loss = ce + (torch::nn::functional::cross_entropy(z / T, y) - ce);
    const auto old_grads = grads(old_loss);
    CompatTrainingOptions focal;
    focal.loss(focal.loss().mode(strata::compat::CompatMode::kFocal));
    auto wrapped = with_compat_training(std::make_unique<CoSO>(small_options().temperature(T)), focal);
    for (Method* m : {static_cast<Method*>(&h.method), wrapped.get()}) {
      auto z2 = strata::continual::mask_logits(h.model->forward(x), mask);
      const auto loss = torch::nn::functional::cross_entropy(m->training_logits(z2), y);
      EXPECT_NEAR(loss.item<double>(), old_loss.item<double>(), 1e-6) << "T " << T;
      const auto g = grads(loss);
      for (size_t i = 0; i < g.size(); ++i)
        EXPECT_LT((g[i] - old_grads[i]).abs().max().item<double>(), 1e-6) << "T " << T << " parameter " << i;
    }
    StepContext sc;  // nothing left for the extra loss: no second cross-entropy
    sc.logits = z;
    sc.y = y;
    sc.loss = ce;
    EXPECT_FALSE(h.method.extra_loss(sc).defined());
  }
  // Every other built-in method trains on z itself.
  const auto z = torch::randn({5, 4});
  for (const auto& name : builtin_methods().names())
    if (name != "coso") {
      EXPECT_TRUE(builtin_methods().make(MethodConfig(name, {}))->training_logits(z).is_same(z)) << name;
    }
}

TEST(CoSO, FactoredGradientStepsMatchTheDenseGradient) {
  // gradient = auto (the layers' backward hands δ, X of G = δᵀX) against gradient = dense, over two
  // tasks (task 1 with a historical basis), gap 1 and 2: the same weights up to round-off. fc1
  // [24, 64] is factored at any batch; fc2 [16, 24] at gap 1 only up to
  // p·m·n·r / (p·r·(m + n) − m·n) = 3·384·4 / 96 = 48 rows. Steps with 64-row batches and with a
  // 32-row and a 64-row forward in one backward (fc2: factors and a dense part) are in the run.
  auto step = [](Harness& h, int64_t t, int64_t i) {
    h.opt->zero_grad();
    auto [x, y] = batch(t, i);
    torch::Tensor loss = torch::nn::functional::cross_entropy(h.model->forward(x), y);
    if (i % 3 >= 1) {
      auto [x2, y2] = batch(t, 100 + i);
      auto xx = torch::cat({x, x2}), yy = torch::cat({y, y2});
      if (i % 3 == 1) loss = torch::nn::functional::cross_entropy(h.model->forward(xx), yy);  // 64 rows
      else loss = loss + torch::nn::functional::cross_entropy(h.model->forward(xx), yy);     // 32 + 64 rows
    }
    loss.backward();
    StepContext sc;
    sc.task = &h.ctx;
    h.method.after_backward(sc);
    h.opt->step();
  };
  for (const int64_t gap : {1, 2}) {
    Harness a(small_mlp(), small_options().gap(gap).refresh("power"));
    Harness b(small_mlp(), small_options().gap(gap).refresh("power").gradient("dense"));
    ASSERT_TRUE(a.method.layers()[0].factors);
    EXPECT_EQ(a.method.layers()[0].factors->max_rows, std::numeric_limits<int64_t>::max());
    EXPECT_EQ(a.method.layers()[1].factors->max_rows, gap == 1 ? 48 : std::numeric_limits<int64_t>::max());
    EXPECT_FALSE(b.method.layers()[0].factors);
    for (int64_t t = 0; t < 2; ++t) {
      a.start_task(t);
      b.start_task(t);
      for (int64_t i = 0; i < 6; ++i) {
        step(a, t, i);
        step(b, t, i);
        if (t == 0 && i == 0) {  // fc1 took the factored path: no dense gradient was formed
          EXPECT_FALSE(weight_of(a.model, "fc1").grad().defined());
          EXPECT_TRUE(weight_of(b.model, "fc1").grad().defined());
        }
        auto pa = a.model->named_parameters();
        for (auto& p : b.model->named_parameters())
          EXPECT_LT((p.value() - pa[p.key()]).abs().max().item<double>(), 1e-5)
              << p.key() << " gap " << gap << " task " << t << " step " << i;
        for (size_t j = 0; j < a.method.layers().size(); ++j) {
          EXPECT_TRUE(a.method.layers()[j].factors->empty());  // consumed by the step
          EXPECT_LT((a.method.layers()[j].P - b.method.layers()[j].P).abs().max().item<double>(), 1e-4);
        }
      }
      a.end_task();
      b.end_task();
      ASSERT_EQ(a.method.layers()[0].basis_rank(), b.method.layers()[0].basis_rank());
    }
    EXPECT_GT(a.method.layers()[0].basis_rank(), 0);
  }
  // The method leaves the layers as it found them: no sink once it is gone, and the exact refresh
  // (an SVD of the dense G) installs none.
  auto model = strata::models::make_model(small_mlp());
  {
    CoSO m(small_options().refresh("power"));
    m.attach(model);
    EXPECT_TRUE(m.layers()[0].module->gradient_factors());
  }
  for (auto& [n, l] : model->linear_layers()) EXPECT_FALSE(l->gradient_factors()) << n;
  CoSO exact(small_options().refresh("exact"));
  exact.attach(model);
  for (auto& [n, l] : model->linear_layers()) EXPECT_FALSE(l->gradient_factors()) << n;
}

TEST(CoSO, StepsMatchAHandComputedProjectedAdam) {
  // MLP 64-12-4 without bias; fc1 [12, 64] is projected, nothing else trains. A historical basis
  // M [12, 3] is installed; 3 steps, gap 2 (refresh at steps 0 and 2: the moments must survive
  // the refresh), epochs 0, 1, 2 of E = 3 (cosine factors 1, cos(99π/400), cos(99π/200)), T = 2.
  const double T = 2.0, lr = 0.02, b1 = 0.9, b2 = 0.999, eps = 1e-6;
  const int64_t r1 = 3, E = 3;
  auto mo = strata::models::ModelOptions().input_shape({1, 8, 8}).hidden({12}).num_classes(4).bias(false);
  Harness h(mo, CoSOOptions().target("fc1").others("none").r1(r1).r2(5).gap(2).refresh("exact").temperature(T).lr(lr));
  auto gen = torch::make_generator<at::CPUGeneratorImpl>(77);
  const torch::Tensor M = std::get<0>(torch::linalg_qr(torch::randn({12, 3}, gen)));
  auto st = h.method.save();
  st.tensors["layer/fc1/M"] = M;
  h.method.load(st, h.model);
  TrainOptions train;
  train.epochs(E);
  h.ctx.train = &train;
  h.start_task(1);
  ASSERT_EQ(h.opt->param_groups()[0].params().size(), 1u);

  const torch::Tensor W = weight_of(h.model, "fc1");
  const torch::Tensor H = weight_of(h.model, "head").detach().clone();
  const torch::Tensor W0 = W.detach().clone();
  torch::Tensor Wref = W.detach().clone(), P, m = torch::zeros({r1, 64}), v = torch::zeros({r1, 64});
  for (int64_t i = 0; i < 3; ++i) {
    auto [x, y] = batch(1, i);
    // The reference gradient of CE(z / T, y) at Wref, from the model's formula.
    auto Wleaf = Wref.clone().requires_grad_(true);
    auto z = torch::relu(x.view({32, 64}).mm(Wleaf.t())).mm(H.t());
    auto G = torch::autograd::grad({torch::nn::functional::cross_entropy(z / T, y)}, {Wleaf})[0];
    auto Gp = G - M.mm(M.t().mm(G));
    if (i % 2 == 0) {
      auto U = std::get<0>(torch::linalg_svd(Gp, /*full_matrices=*/false));
      P = U.narrow(1, 0, r1);
    }
    auto R = P.t().mm(Gp);
    m = b1 * m + (1 - b1) * R;
    v = b2 * v + (1 - b2) * R * R;
    const double t = i + 1;
    const double factor = std::cos(99.0 * M_PI * i / (200.0 * (E - 1)));
    const double step = lr * factor * std::sqrt(1 - std::pow(b2, t)) / (1 - std::pow(b1, t));
    Wref = Wref - step * P.mm(m / (v.sqrt() + eps));

    trainer_step(h, x, y, i);
    EXPECT_NEAR(h.method.lr_factor(), factor, 1e-12) << "step " << i;
    const double change = (Wref - W.detach()).abs().max().item<double>();
    EXPECT_LT(change, 1e-6) << "step " << i;
    EXPECT_TRUE(torch::equal(weight_of(h.model, "head"), H));  // others = none
  }
  // The steps were not tiny: the 1e-6 comparison above tells a wrong factor apart.
  EXPECT_GT((W.detach() - W0).abs().max().item<double>(), 1e-2);
}

TEST(CoSO, ProjectorSpansTheTopLeftSubspaceOfTheProjectedGradient) {
  // An arbitrary P orthogonal to M would keep Mᵀ ΔW = 0; the method's P must be the top-r1 left
  // singular subspace of (I − M Mᵀ) G (exact refresh; the power refresh converges to it).
  for (const std::string refresh : {"exact", "power"}) {
    auto co = small_options().gap(1).refresh(refresh).power_iters(refresh == "power" ? 60 : 1);
    Harness h(small_mlp(), co);
    train_task(h, 0, 4);
    h.start_task(1);
    int64_t checked = 0;
    for (int64_t i = 0; i < 3; ++i) {
      auto [x, y] = batch(1, i);
      std::vector<torch::Tensor> top;
      std::vector<bool> gap;  // the power iteration converges only where σ_r1 > σ_r1+1
      h.step(x, y, [&] {
        for (const auto& l : h.method.layers()) {
          auto G = CoSO::dense_gradient(l);  // factored (gradient = auto) or dense
          auto Gp = G - l.M.mm(l.M.t().mm(G));
          auto [U, S, Vh] = torch::linalg_svd(Gp.to(torch::kFloat64), false);
          gap.push_back(S[co.r1() - 1].item<double>() > 1.2 * S[co.r1()].item<double>());
          top.push_back(U.narrow(1, 0, co.r1()));
        }
      });
      for (size_t j = 0; j < top.size(); ++j) {
        const auto& l = h.method.layers()[j];
        if (refresh == "power" && !gap[j]) continue;
        ++checked;
        EXPECT_LT(ss::projector_distance(l.P.to(torch::kFloat64), top[j]), refresh == "exact" ? 1e-4 : 1e-2)
            << refresh << " " << l.name << " step " << i;
      }
    }
    EXPECT_GE(checked, refresh == "exact" ? 6 : 2) << refresh;
  }
}

TEST(CoSO, HeadRowsOfOtherTasksAndClassILLossFollowTheCode) {
  // Class-IL synthetic stream (task t owns classes 2t, 2t+1): with the defaults only the current
  // task's logits enter the loss and only its head rows move; cil_loss = seen trains over every
  // class seen so far.
  auto stream = strata::tasks::make_stream(
      strata::tasks::StreamOptions().name("synthetic").num_tasks(3).seed(3).scenario("class"));
  for (const std::string cil : {"task", "seen"}) {
    auto mo = strata::models::ModelOptions().input_shape(stream.input_shape).num_classes(stream.num_classes).hidden({16}).bias(true);
    Harness h(mo, CoSOOptions().r1(2).r2(4).cil_loss(cil));
    h.ctx.stream = &stream;
    TrainOptions train;
    train.epochs(1).batch_size(32);
    h.ctx.train = &train;
    h.ctx.task_index = 1;
    auto mask = h.method.training_logit_mask(h.ctx);
    ASSERT_EQ(mask.sizes(), (std::vector<int64_t>{3, 6}));
    EXPECT_EQ(mask[1][0].item<bool>(), cil == "seen");  // class 0 belongs to task 0
    EXPECT_TRUE(mask[1][2].item<bool>() && mask[1][3].item<bool>());
    EXPECT_FALSE(mask[1][4].item<bool>());
    const auto head_before = weight_of(h.model, "head").detach().clone();
    const auto fc1_before = weight_of(h.model, "fc1").detach().clone();
    h.method.on_task_start(h.ctx);
    strata::continual::train_task(h.ctx, h.method, train);
    const auto dH = (weight_of(h.model, "head").detach() - head_before).abs().sum(1);
    for (int64_t c = 0; c < 6; ++c)
      EXPECT_EQ(dH[c].item<double>() > 0, c == 2 || c == 3) << cil << " class " << c;
    EXPECT_FALSE(torch::equal(weight_of(h.model, "fc1"), fc1_before));
  }
}

TEST(CoSO, RunnerKeepsLearningNewTasks) {
  // Task-IL synthetic stream (2 classes per task, chance 0.5); only fc1 trains, through CoSO, and
  // the head stays at its random initialisation (others = none), so a method that stopped
  // learning after task 0 (a zero update, a projector inside span(M), a saturated basis) stays
  // near chance on tasks 1 and 2. (With the head trainable the head alone learns the later tasks
  // on task 0's features, and the test could not tell.)
  auto root = fs::temp_directory_path() / ("strata_test_coso_learns_" + std::to_string(::getpid()));
  fs::remove_all(root);
  RunConfig c;
  c.out = root.string();
  c.name = "coso";
  c.quiet = true;
  c.stream.name("synthetic").num_tasks(3).seed(11).scenario("task");
  c.model.hidden({64});
  c.train.batch_size(16).epochs(2).seed(11);
  c.method = MethodConfig("coso", {{"lr", "1e-2"}, {"target", "fc1"}, {"others", "none"}, {"temperature", "1"},
                                   {"schedule", "constant"}, {"threshold", "0.9"}});
  Runner r(c);
  r.run();
  const auto& R = r.accuracy_matrix();
  std::cerr << "coso task-IL R=\n" << R << "\n";
  for (int64_t t = 0; t < 3; ++t) EXPECT_GT(R[t][t].item<double>(), 0.8) << "task " << t;
  EXPECT_GT(R[2][0].item<double>(), 0.7);  // and task 0 is kept
  fs::remove_all(root);
}

TEST(CoSO, RunnerSyntheticLearnsAndForgetsLessThanNaive) {
  auto root = fs::temp_directory_path() / ("strata_test_coso_" + std::to_string(::getpid()));
  fs::remove_all(root);
  auto config = [&](const std::string& method, std::map<std::string, std::string> opts) {
    RunConfig c;
    c.out = root.string();
    c.name = method;
    c.quiet = true;
    c.stream.name("synthetic").num_tasks(3).seed(7);
    c.model.hidden({64});
    c.train.lr(0.05).batch_size(16).epochs(2).seed(7);
    c.method = MethodConfig(method, std::move(opts));
    return c;
  };
  Runner naive(config("naive", {}));
  naive.run();
  // Domain-incremental synthetic tasks conflict (a task-0 model is below chance on task 1), so
  // every method forgets; CoSO protects fc1 and the shared head. Temperature 1 and a constant lr:
  // with 2 short epochs the code's cosine schedule (last epoch at 1.6 % lr) and T = 3 underfit.
  // Measured (this config): naive a00 79.5 -> a20 53.0; coso a00 68.0 -> a20 51.0; CoSO learns
  // later tasks less (a11 39 vs 79): the plasticity cost of protecting narrow layers.
  // These numbers are the exact refresh's; the power refresh is checked below.
  Runner coso(config("coso", {{"lr", "1e-2"}, {"target", "fc1|head"}, {"temperature", "1"}, {"schedule", "constant"},
                              {"refresh", "exact"}}));
  coso.run();
  const auto& Rn = naive.accuracy_matrix();
  const auto& Rc = coso.accuracy_matrix();
  std::cerr << "naive R=\n" << Rn << "\ncoso R=\n" << Rc << "\n";
  EXPECT_GT(Rc[0][0].item<double>(), 0.6);  // 4 classes: chance is 0.25
  EXPECT_GT(Rc[2][2].item<double>(), 0.35);
  const double fn = Rn[0][0].item<double>() - Rn[2][0].item<double>();
  const double fc = Rc[0][0].item<double>() - Rc[2][0].item<double>();
  EXPECT_LT(fc, fn);
  {
    // Power refresh, same config: it learns task 0 better than the exact refresh, so its drop is
    // not reliably smaller than naive's; the check is that it keeps more of task 0 than naive.
    auto cp = config("coso", {{"lr", "1e-2"}, {"target", "fc1|head"}, {"temperature", "1"}, {"schedule", "constant"}});
    cp.name = "coso-power";
    Runner power(cp);
    power.run();
    const auto& Rp = power.accuracy_matrix();
    EXPECT_GT(Rp[0][0].item<double>(), 0.6);
    EXPECT_GT(Rp[2][2].item<double>(), 0.35);
    EXPECT_GT(Rp[2][0].item<double>(), Rn[2][0].item<double>());
  }
  const auto store = ss::SubspaceStore::open((root / "coso" / "subspaces.h5").string());
  EXPECT_EQ(store.tasks().size(), 3u);
  const auto rec = store.get("task00", "fc1");
  EXPECT_EQ(rec.side, "output");
  EXPECT_EQ(rec.method, "coso");
  EXPECT_GT(rec.rank(), 0);
  fs::remove_all(root);
}

TEST(CoSO, ResumeAfterLastVersionLossMatchesUninterruptedRun) {
  auto root = fs::temp_directory_path() / ("strata_test_coso_resume_" + std::to_string(::getpid()));
  fs::remove_all(root);
  RunConfig c;
  c.out = root.string();
  c.name = "full";
  c.quiet = true;
  c.stream.name("synthetic").num_tasks(3).seed(5);
  c.model.hidden({32});
  c.train.batch_size(32).epochs(1).seed(5);
  c.method = MethodConfig("coso", {{"lr", "1e-2"}, {"r1", "4"}, {"r2", "8"}});
  Runner full(c);
  full.run();
  // A crash after task 3's subspaces.h5 record but before its version: resume redoes task 3 from
  // v001 (method state: M, counters) and keeps the existing store record.
  fs::copy(root / "full", root / "cut", fs::copy_options::recursive);
  fs::remove(root / "cut" / "versions" / "v002.h5");
  RunConfig c2 = read_run_config((root / "cut" / "config.ini").string());
  c2.out = root.string();
  c2.name = "cut";
  c2.quiet = true;
  Runner cut(c2);
  cut.resume();
  EXPECT_TRUE(torch::equal(full.accuracy_matrix(), cut.accuracy_matrix()));
  auto& a = dynamic_cast<CoSO&>(full.method());
  auto& b = dynamic_cast<CoSO&>(cut.method());
  for (size_t i = 0; i < a.layers().size(); ++i) EXPECT_TRUE(torch::equal(a.layers()[i].M, b.layers()[i].M));
  fs::remove_all(root);
}

// CoSO's fused Adam loops against the composed ATen operators (their fallback, taken here by
// float64 copies): the moments, the direction and the parameter after three steps, with and without
// a row mask over the head's rows; a transposed (non-contiguous) float32 input takes the composed
// path too and agrees; shapes that differ are one error naming the function.
TEST(CoSOAdam, FusedLoopsMatchTheComposedOperators) {
  torch::manual_seed(11);
  const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  auto close = [](const torch::Tensor& a, const torch::Tensor& b) {
    return torch::allclose(a.to(torch::kFloat64), b.to(torch::kFloat64), 1e-5, 1e-7);
  };
  {
    auto m = torch::zeros({8, 37}), v = torch::zeros({8, 37});
    auto md = m.to(torch::kFloat64), vd = v.to(torch::kFloat64);
    for (int step = 0; step < 3; ++step) {
      auto R = torch::randn({8, 37});
      auto Rd = R.to(torch::kFloat64);
      auto N = adam_direction_(m, v, R, b1, b2, eps);
      auto Nd = adam_direction_(md, vd, Rd, b1, b2, eps);
      EXPECT_TRUE(close(m, md) && close(v, vd)) << "step " << step;
      EXPECT_TRUE(close(N, Nd)) << "step " << step << ": max diff "
                                << (N.to(torch::kFloat64) - Nd).abs().max().item<double>();
    }
    auto mt = m.t().contiguous().t(), vt = v.t().contiguous().t();  // same values, column-major
    auto R = torch::randn({8, 37});
    auto Nt = adam_direction_(mt, vt, R, b1, b2, eps);
    auto N = adam_direction_(m, v, R, b1, b2, eps);
    EXPECT_FALSE(mt.is_contiguous());
    EXPECT_TRUE(close(Nt, N) && close(mt, m) && close(vt, v));
    auto wrong = torch::zeros({8, 36});
    EXPECT_THROW(adam_direction_(wrong, v, R, b1, b2, eps), c10::Error);
  }
  for (bool masked : {false, true}) {
    auto p = torch::randn({10, 6}), m = torch::zeros({10, 6}), v = torch::zeros({10, 6});
    auto pd = p.to(torch::kFloat64), md = m.to(torch::kFloat64), vd = v.to(torch::kFloat64);
    torch::Tensor mask, maskd;
    if (masked) {
      mask = torch::zeros({10, 1});
      mask.narrow(0, 4, 3).fill_(1.0f);
      maskd = mask.to(torch::kFloat64);
    }
    for (int step = 1; step <= 3; ++step) {
      auto g = torch::randn({10, 6});
      const double s = 0.01 * std::sqrt(1 - std::pow(b2, step)) / (1 - std::pow(b1, step));
      adam_step_(p, m, v, g, mask, b1, b2, eps, s);
      adam_step_(pd, md, vd, g.to(torch::kFloat64), maskd, b1, b2, eps, s);
      EXPECT_TRUE(close(p, pd) && close(m, md) && close(v, vd)) << "masked " << masked << " step " << step;
    }
    if (masked) {
      EXPECT_EQ(m.narrow(0, 0, 4).abs().max().item<float>(), 0.0f) << "masked rows keep zero moments";
    }
  }
}
