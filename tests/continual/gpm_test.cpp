#include "continual/gpm.h"
#include "run/runner.h"
#include "subspaces/basis.h"
#include "subspaces/store.h"

#include "synthetic_fixture.h"

#include <gtest/gtest.h>

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
