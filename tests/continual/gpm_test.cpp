#include "continual/gpm.h"
#include "run/runner.h"
#include "subspaces/basis.h"
#include "subspaces/store.h"

#include "synthetic_fixture.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

namespace fs = std::filesystem;
using namespace strata::continual;
using namespace strata::run;
namespace tasks = strata::tasks;

namespace {

using Fixture = strata::continual::testing::SyntheticFixture;

}  // namespace

TEST(Gpm, ProjectedGradientIsOrthogonalToTheBasisAndOldInputsKeepTheirOutputs) {
  Fixture f;
  Gpm gpm(GpmOptions().thresholds({0.97}).samples(100));
  gpm.attach(f.model);
  auto c0 = f.ctx(0);
  train_task(c0, gpm, f.train);
  gpm.on_task_end(c0);
  for (auto& [name, layer] : f.model->linear_layers()) {
    const auto& M = gpm.basis(name);
    ASSERT_TRUE(M.defined()) << name;
    EXPECT_GT(M.size(1), 0) << name;
    // Orthonormal columns.
    EXPECT_TRUE(torch::allclose(M.t().mm(M), torch::eye(M.size(1)), 1e-4, 1e-4)) << name;
  }
  // One step on task 1: the projected gradient satisfies G M = 0, and the weight change as well.
  auto c1 = f.ctx(1);
  const auto& data = f.stream.tasks[1].train;
  auto before = f.model->linear_layers()[0].second->weight.detach().clone();
  StepContext sc;
  sc.task = &c1;
  auto x = data.x.slice(0, 0, 32), y = data.y.slice(0, 0, 32);
  f.model->zero_grad();
  torch::nn::functional::cross_entropy(f.model->forward(x), y).backward();
  gpm.after_backward(sc);
  for (auto& [name, layer] : f.model->linear_layers()) {
    auto g = layer->weight.grad();
    const auto& M = gpm.basis(name);
    EXPECT_LT(g.mm(M).abs().max().item<double>(), 1e-5 * std::max(1.0, g.abs().max().item<double>())) << name;
    // Idempotent: projecting again changes nothing.
    auto again = strata::subspaces::project_out_input(g, M);
    EXPECT_TRUE(torch::allclose(again, g, 1e-6, 1e-6)) << name;
  }
  {
    torch::NoGradGuard ng;
    for (auto& p : f.model->parameters())
      if (p.grad().defined()) p.sub_(0.1 * p.grad());
  }
  auto delta = f.model->linear_layers()[0].second->weight.detach() - before;
  EXPECT_LT(delta.mm(gpm.basis("fc1")).abs().max().item<double>(), 1e-5);
}

TEST(Gpm, ForgetsLessThanNaiveAndStoresBases) {
  auto dir = fs::temp_directory_path() / ("strata_gpm_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  auto config = [&](const std::string& method, const std::string& name) {
    RunConfig c;
    c.out = dir.string();
    c.name = name;
    c.quiet = true;
    c.stream.name("synthetic").num_tasks(3).seed(5);
    c.model.hidden({32});
    c.train.lr(0.05).batch_size(16).epochs(3).seed(1);
    // The synthetic inputs have only 64 dimensions: GPM's PMNIST thresholds (0.95/0.99) would
    // reserve nearly all of them after one task and leave nothing to learn the next ones with.
    c.method = MethodConfig(method, method == "gpm" ? std::map<std::string, std::string>{{"thresholds", "0.8"}}
                                                    : std::map<std::string, std::string>{});
    return c;
  };
  Runner naive(config("naive", "naive")), gpm(config("gpm", "gpm"));
  auto mn = naive.run();
  auto mg = gpm.run();
  EXPECT_GT(mg.bwt, mn.bwt) << "gpm BWT " << mg.bwt << " vs naive " << mn.bwt;
  for (int64_t t = 0; t < 3; ++t) EXPECT_GT(gpm.accuracy_matrix()[t][t].item<double>(), 0.5);
  auto store = strata::subspaces::SubspaceStore::open((dir / "gpm" / "subspaces.h5").string());
  EXPECT_EQ(store.tasks().size(), 3u);
  auto r0 = store.get("task00", "fc1"), r2 = store.get("task02", "fc1");
  EXPECT_EQ(r0.side, "input");
  EXPECT_EQ(r0.method, "gpm");
  EXPECT_GE(r2.rank(), r0.rank());  // the memory only grows
  // The later basis contains the earlier one: principal angles are ~0.
  auto angles = strata::subspaces::principal_angles(r0.basis, r2.basis);
  EXPECT_LT(angles.max().item<double>(), 1e-3);
  fs::remove_all(dir);
}

TEST(Gpm, TaskIncrementalLeavesTheHeadFreeAndEveryTaskLearns) {
  // Task-IL: each task trains its own rows of the shared head (the others are masked), as GPM's
  // per-task heads; every other Linear layer is projected as usual.
  auto dir = fs::temp_directory_path() / ("strata_gpm_til_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  RunConfig c;
  c.out = dir.string();
  c.name = "til";
  c.quiet = true;
  c.stream.name("synthetic").num_tasks(3).seed(5).scenario("task");
  c.model.hidden({32, 32});
  c.train.lr(0.05).batch_size(16).epochs(2).seed(1);
  // The 64-dimensional synthetic inputs: lower thresholds than GPM's PMNIST ones (see above).
  c.method = MethodConfig("gpm", {{"thresholds", "0.8"}});
  Runner runner(c);
  runner.run();
  for (int64_t t = 0; t < 3; ++t) EXPECT_GT(runner.accuracy_matrix()[t][t].item<double>(), 0.7) << "task " << t;
  auto& gpm = dynamic_cast<Gpm&>(runner.method());
  EXPECT_TRUE(gpm.basis("fc1").defined());
  EXPECT_FALSE(gpm.basis("head").defined());  // no memory kept for the head
  auto store = strata::subspaces::SubspaceStore::open((dir / "til" / "subspaces.h5").string());
  EXPECT_FALSE(store.has("task00", "head"));
  EXPECT_TRUE(store.has("task00", "fc2"));
  fs::remove_all(dir);
}

TEST(Gpm, SaveLoadRoundTrip) {
  Fixture f;
  Gpm gpm(GpmOptions().samples(50));
  gpm.attach(f.model);
  auto c0 = f.ctx(0);
  train_task(c0, gpm, f.train);
  gpm.on_task_end(c0);
  auto state = gpm.save();
  Gpm other(GpmOptions().samples(50));
  other.load(state, f.model);
  for (auto& [name, layer] : f.model->linear_layers()) EXPECT_TRUE(torch::equal(gpm.basis(name), other.basis(name)));
  state.tensors["basis/fc1"] = torch::zeros({3, 2});
  EXPECT_THROW(other.load(state, f.model), c10::Error);
}

namespace {

// A model on the fixture's synthetic stream: MLP with biases, or the CNN (channels 4, 8).
strata::models::Model model_for(const Fixture& f, const std::string& arch) {
  torch::manual_seed(3);
  auto o = strata::models::ModelOptions().arch(arch).input_shape(f.stream.input_shape).num_classes(f.stream.num_classes);
  if (arch == "cnn") o.channels({4, 8});
  else o.hidden({16}).bias(true);
  return strata::models::make_model(o);
}

// A one-block ViT (patch 4, dim 16, 2 heads) on the fixture's stream.
strata::models::Model vit_for(const Fixture& f) {
  torch::manual_seed(3);
  return strata::models::make_model(strata::models::ModelOptions()
                                        .arch("vit")
                                        .patch(4)
                                        .dim(16)
                                        .depth(1)
                                        .heads(2)
                                        .mlp_dim(32)
                                        .input_shape(f.stream.input_shape)
                                        .num_classes(f.stream.num_classes));
}

// The rows of a weight ([out, in] or a conv's [out, C·kh·kw]) as a matrix.
torch::Tensor flat(const torch::Tensor& w) { return w.detach().reshape({w.size(0), -1}).clone(); }


// Trains task 0, ends it, snapshots every parameter, then trains task 1; returns the snapshot.
std::map<std::string, torch::Tensor> train_two_tasks(Fixture& f, Gpm& gpm) {
  gpm.attach(f.model);
  auto c0 = f.ctx(0);
  train_task(c0, gpm, f.train);
  gpm.on_task_end(c0);
  std::map<std::string, torch::Tensor> before;
  for (auto& p : f.model->named_parameters()) before[p.key()] = p.value().detach().clone();
  auto c1 = f.ctx(1);
  train_task(c1, gpm, f.train);
  return before;
}

}  // namespace

TEST(Gpm, FreezesOneDimensionalParametersFromTheSecondTask) {
  for (bool freeze : {true, false}) {
    Fixture f;
    f.model = model_for(f, "mlp");
    Gpm gpm(GpmOptions().thresholds({0.8}).samples(100).freeze_1d(freeze));
    const auto before = train_two_tasks(f, gpm);
    for (auto& p : f.model->named_parameters()) {
      if (p.value().dim() != 1) continue;
      EXPECT_EQ(torch::equal(p.value(), before.at(p.key())), freeze) << p.key() << " freeze_1d " << freeze;
    }
    EXPECT_EQ(gpm.frozen().size(), freeze ? 2u : 0u);  // fc1.bias, head.bias
  }
}

TEST(Gpm, FreezesTheVitClassTokenAndPositionEmbeddingFromTheSecondTask) {
  // Neither is a Linear weight, so no basis protects them; the position embedding is added to every
  // token of every old input. Before the fix they kept training (dim > 1) and moved old outputs.
  for (bool freeze : {true, false}) {
    Fixture f;
    f.model = vit_for(f);
    Gpm gpm(GpmOptions().thresholds({0.9}).samples(100).freeze_1d(freeze));
    const auto before = train_two_tasks(f, gpm);
    auto params = f.model->named_parameters();
    for (const std::string name : {"cls_token", "pos_embed"}) {
      ASSERT_TRUE(params.contains(name)) << name;
      EXPECT_EQ(torch::equal(params[name], before.at(name)), freeze) << name << " freeze_1d " << freeze;
    }
    // The Linear weights still train (projected), whatever freeze_1d says.
    EXPECT_FALSE(torch::equal(params["blocks.0.mlp.fc1.weight"], before.at("blocks.0.mlp.fc1.weight")));
    const auto& names = gpm.frozen();
    EXPECT_EQ(std::count(names.begin(), names.end(), "pos_embed"), freeze ? 1 : 0);
  }
}

TEST(Gpm, ConvolutionsKeepTheirOutputsOnOldPatches) {
  // CNN: conv1 [4, 1, 3, 3] (patch space 9), conv2 [8, 4, 3, 3] (36). After task 0 the conv
  // bases span the unfolded task-0 patches; training task 1 (SGD, then Adam with weight decay)
  // must leave W M unchanged (the responses to the protected patches), while W still moves.
  // Without the conv projection the same check fails, so it can tell.
  for (const std::string optimizer : {"sgd", "adam", "off"}) {
    Fixture f;
    f.model = model_for(f, "cnn");
    Gpm gpm(GpmOptions().thresholds({0.9}).samples(100).conv_samples(20).conv(optimizer != "off"));
    gpm.attach(f.model);
    auto c0 = f.ctx(0);
    train_task(c0, gpm, f.train);
    gpm.on_task_end(c0);
    if (optimizer == "off") {
      EXPECT_FALSE(gpm.basis("conv1").defined());
      continue;
    }
    const auto& M1 = gpm.basis("conv1");
    const auto& M2 = gpm.basis("conv2");
    ASSERT_TRUE(M1.defined() && M2.defined());
    EXPECT_EQ(M1.size(0), 9);
    EXPECT_EQ(M2.size(0), 36);
    EXPECT_GT(M2.size(1), 0);
    EXPECT_LT(M2.size(1), 36);
    // The basis captures the task-0 patches: their energy outside span(M) is small.
    auto train = f.model->named_parameters();
    std::map<std::string, torch::Tensor> before;
    for (auto& p : train) before[p.key()] = flat(p.value());
    auto opts = f.train;
    opts.optimizer(optimizer).lr(optimizer == "adam" ? 0.01 : 0.05).weight_decay(optimizer == "adam" ? 0.1 : 0.0);
    auto c1 = f.ctx(1);
    c1.train = &opts;  // what the Runner passes: the options the task trains with
    train_task(c1, gpm, opts);
    for (const std::string name : {"conv1", "conv2", "fc1", "head"}) {
      const auto& M = gpm.basis(name);
      ASSERT_TRUE(M.defined()) << name;
      auto W = flat(train[name + ".weight"]), W0 = before[name + ".weight"];
      if (M.size(1) < M.size(0)) {
        EXPECT_GT((W - W0).abs().max().item<double>(), 1e-4) << optimizer << " " << name;
      }
      EXPECT_LT((W - W0).mm(M).abs().max().item<double>(), 1e-5) << optimizer << " " << name;
    }
  }
  {  // Control: the same training with the conv projection off moves W M.
    Fixture f;
    f.model = model_for(f, "cnn");
    Gpm with(GpmOptions().thresholds({0.9}).samples(100).conv_samples(20));
    with.attach(f.model);
    auto c0 = f.ctx(0);
    train_task(c0, with, f.train);
    with.on_task_end(c0);
    const auto M2 = with.basis("conv2").clone();
    auto w = flat(f.model->named_parameters()["conv2.weight"]);
    Gpm off(GpmOptions().thresholds({0.9}).samples(100).conv(false));
    off.attach(f.model);
    auto c1 = f.ctx(1);
    train_task(c1, off, f.train);
    auto dw = flat(f.model->named_parameters()["conv2.weight"]) - w;
    EXPECT_GT(dw.mm(M2).abs().max().item<double>(), 1e-3);
  }
}

TEST(Gpm, AdamUpdatesAreReprojectedOnTheMlp) {
  // Adam's per-coordinate scaling of a projected gradient leaves span(M)^⊥; the re-projection
  // after the step keeps ΔW M = 0 on every Linear layer (the in-backward projection alone does not).
  Fixture f;
  Gpm gpm(GpmOptions().thresholds({0.8}).samples(100));
  gpm.attach(f.model);
  auto c0 = f.ctx(0);
  train_task(c0, gpm, f.train);
  gpm.on_task_end(c0);
  std::map<std::string, torch::Tensor> before;
  for (auto& [name, layer] : f.model->linear_layers()) before[name] = flat(layer->weight);
  auto opts = f.train;
  opts.optimizer("adamw").lr(0.01).weight_decay(0.05);
  auto c1 = f.ctx(1);
  c1.train = &opts;
  train_task(c1, gpm, opts);
  for (auto& [name, layer] : f.model->linear_layers()) {
    auto dW = flat(layer->weight) - before[name];
    EXPECT_GT(dW.abs().max().item<double>(), 1e-4) << name;
    EXPECT_LT(dW.mm(gpm.basis(name)).abs().max().item<double>(), 1e-5) << name;
  }
}

TEST(Gpm, EveryVitLinearIncludingThePatchEmbeddingIsProtected) {
  // The ViT's patch embedding is a Linear on flattened (C, p, p) patches: GPM's convolution rule
  // (representations from unfolded input patches) is then its Linear rule, applied to the patches
  // of each image. After task 0 every Linear, patch_embed and q/k/v included, has a basis, and
  // training task 1 leaves W M unchanged on all of them while W still moves.
  Fixture f;
  f.model = vit_for(f);
  Gpm gpm(GpmOptions().thresholds({0.9}).samples(100));
  const auto before = train_two_tasks(f, gpm);
  int64_t checked = 0;
  for (auto& [name, layer] : f.model->linear_layers()) {
    const auto& M = gpm.basis(name);
    if (name == "head") continue;  // task-IL: the head is left free (see Gpm.TaskIncremental...)
    ASSERT_TRUE(M.defined()) << name;
    const torch::Tensor dW = layer->weight.detach() - before.at(name + ".weight");
    if (M.size(1) < M.size(0)) {
      EXPECT_GT(dW.abs().max().item<double>(), 1e-4) << name;
    }
    EXPECT_LT(dW.mm(M).abs().max().item<double>(), 1e-5) << name;
    ++checked;
  }
  EXPECT_TRUE(gpm.basis("patch_embed").defined());
  EXPECT_GE(checked, 7);  // patch_embed, q, k, v, proj, fc1, fc2
}

TEST(Gpm, RandomizedAndAutoSvdRunEndToEnd) {
  auto dir = fs::temp_directory_path() / ("strata_gpm_svd_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  auto run = [&](const std::string& svd) {
    RunConfig c;
    c.out = dir.string();
    c.name = svd;
    c.quiet = true;
    c.stream.name("synthetic").num_tasks(2).seed(5);
    c.model.hidden({32});
    c.train.lr(0.05).batch_size(16).epochs(1).seed(1);
    c.method = MethodConfig("gpm", {{"thresholds", "0.9"}, {"svd", svd}});
    auto r = std::make_unique<Runner>(c);
    r->run();
    return r;
  };
  auto exact = run("exact"), randomized = run("randomized");
  auto& ge = dynamic_cast<Gpm&>(exact->method());
  auto& gr = dynamic_cast<Gpm&>(randomized->method());
  const auto rep = gr.report()["ranks_per_task"];
  ASSERT_EQ(rep.size(), 2u);
  // Each layer reports the method that ran: randomized, or exact where the energy rule needed
  // (nearly) the whole spectrum (the 64-dimensional synthetic inputs are nearly isotropic).
  for (const auto& task : rep)
    for (auto it = task.begin(); it != task.end(); ++it)
      EXPECT_TRUE(it.value()["svd"] == "randomized" || it.value()["svd"] == "exact") << it.key();
  for (const std::string name : {"fc1", "head"}) {
    const auto& A = ge.basis(name);
    const auto& B = gr.basis(name);
    EXPECT_LE(std::abs(A.size(1) - B.size(1)), 1) << name;
    // The randomized basis spans (nearly) the exact one's leading directions.
    const int64_t k = std::min(A.size(1), B.size(1));
    auto angles = strata::subspaces::principal_angles(A.narrow(1, 0, std::max<int64_t>(1, k / 2)), B);
    EXPECT_LT(angles.max().item<double>(), 0.05) << name;
  }
  fs::remove_all(dir);
}

TEST(Gpm, FactoredSgdTakesTheSameStepsAsTheProjectedInput) {
  // The same two tasks with factored_sgd off, on with the inputs-ahead chunks (the first layer's
  // input is the trainer's batch) and on without them, from the same start: the same weights after
  // each task up to float round-off, and the factored path really carried the first layer's updates.
  std::vector<std::map<std::string, torch::Tensor>> weights(3);
  for (int run = 0; run < 3; ++run) {
    const bool factored = run > 0;
    Fixture f;
    Gpm gpm(GpmOptions().thresholds({0.9}).samples(100).factored_sgd(factored).inputs_ahead(run == 1));
    gpm.attach(f.model);
    auto opts = f.train;
    opts.momentum(0.5);
    for (int64_t t = 0; t < 2; ++t) {
      auto c = f.ctx(t);
      c.train = &opts;
      bool active = false;
      train_task(c, gpm, opts, {}, [&](int64_t, int64_t, int64_t, double) {
        active = active || f.model->linear_layers()[0].second->deferred_projection_active();
      });
      EXPECT_EQ(active, factored && t > 0) << "task " << t;
      gpm.on_task_end(c);
      EXPECT_FALSE(f.model->linear_layers()[0].second->deferred_projection_active()) << "folded at task end";
    }
    for (auto& [name, layer] : f.model->linear_layers()) weights[run][name] = layer->weight.detach().clone();
  }
  for (int run = 1; run < 3; ++run)
    for (auto& [name, w] : weights[0])
      EXPECT_TRUE(torch::allclose(weights[run][name], w, 1e-4, 1e-5))
          << "run " << run << " " << name << ": max diff " << (weights[run][name] - w).abs().max().item<double>();
}
