// Models, method registry, trainer determinism and an end-to-end run on a reduced stream.
#include "run/runner.h"
#include "tests/support.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;
using namespace strata::continual;
using namespace strata::run;

namespace {

fs::path temp_dir(const std::string& name) { return strata::testing::fresh_dir("test_" + name); }

RunConfig synthetic_config(const fs::path& out, const std::string& method = "naive") {
  RunConfig c;
  c.out = out.string();
  c.name = "run";
  c.quiet = true;
  c.stream.name("synthetic").num_tasks(3).seed(3);
  c.model.hidden({32});
  c.train.lr(0.05).batch_size(16).epochs(2).seed(7);
  c.method = MethodConfig(method, {});
  return c;
}

}  // namespace

TEST(Registry, UnknownMethodAndOptionAreClearErrors) {
  const auto& reg = builtin_methods();
  EXPECT_TRUE(reg.has("naive"));
  EXPECT_TRUE(reg.has("joint"));
  try {
    reg.make(MethodConfig("nope", {}));
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.msg()).find("naive"), std::string::npos) << e.msg();
  }
  EXPECT_THROW(reg.make(MethodConfig("naive", {{"bogus", "1"}})), c10::Error);
}

TEST(Runner, EndToEndSyntheticLearnsAndWritesRunFolder) {
  auto dir = temp_dir("e2e");
  Runner runner(synthetic_config(dir));
  auto m = runner.run();
  // Each task is learnable: the diagonal is well above chance (0.25).
  const auto& R = runner.accuracy_matrix();
  for (int64_t t = 0; t < 3; ++t) EXPECT_GT(R[t][t].item<double>(), 0.6) << "task " << t;
  EXPECT_GT(m.acc, 0.3);
  for (const char* f : {"config.ini", "report.json", "metrics.csv", "plots/accuracy_matrix.svg", "plots/nfr_heatmap.svg"})
    EXPECT_TRUE(fs::exists(dir / "run" / f)) << f;
  {
    // The accuracy heatmap shows the whole 3 x 3 matrix, every row trained (no grey cell).
    std::ifstream svg(dir / "run" / "plots" / "accuracy_matrix.svg");
    const std::string text((std::istreambuf_iterator<char>(svg)), std::istreambuf_iterator<char>());
    int64_t cells = 0;
    for (size_t p = text.find("<rect x="); p != std::string::npos; p = text.find("<rect x=", p + 1)) ++cells;
    EXPECT_EQ(cells, 9);
    EXPECT_EQ(text.find("rgb(220,220,220)"), std::string::npos);
  }
  // metrics.csv: header + tasks * epochs rows.
  std::ifstream csv(dir / "run" / "metrics.csv");
  int lines = 0;
  for (std::string l; std::getline(csv, l);) ++lines;
  EXPECT_EQ(lines, 1 + 3 * 2);
  // config.ini re-reads to the same configuration.
  auto again = read_run_config((dir / "run" / "config.ini").string());
  EXPECT_EQ(again.to_ini(), runner.config().to_ini());
  // An existing run folder is refused rather than overwritten.
  Runner second(synthetic_config(dir));
  EXPECT_THROW(second.run(), c10::Error);
  fs::remove_all(dir);
}

TEST(Runner, SameSeedSameMatrixAndJointBeatsNaiveOnOldTasks) {
  auto d1 = temp_dir("det1"), d2 = temp_dir("det2"), d3 = temp_dir("det3");
  Runner a(synthetic_config(d1)), b(synthetic_config(d2)), j(synthetic_config(d3, "joint"));
  a.run();
  b.run();
  j.run();
  EXPECT_TRUE(torch::equal(a.accuracy_matrix(), b.accuracy_matrix()));
  // Joint training keeps the first task; it should not be worse on it than naive at the end.
  EXPECT_GE(j.accuracy_matrix()[2][0].item<double>() + 0.02, a.accuracy_matrix()[2][0].item<double>());
  for (auto& d : {d1, d2, d3}) fs::remove_all(d);
}

TEST(Runner, NonFiniteLossIsAClearError) {
  auto dir = temp_dir("nan");
  auto c = synthetic_config(dir);
  c.train.lr(1e30);
  Runner r(c);
  try {
    r.run();
    FAIL() << "expected a non-finite loss error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.msg()).find("non-finite loss"), std::string::npos) << e.msg();
  }
  fs::remove_all(dir);
}

TEST(Runner, PermutedFashionMnistReducedLearns) {
  if (!fs::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")) GTEST_SKIP() << "no Fashion-MNIST";
  auto dir = temp_dir("fmnist");
  RunConfig c;
  c.out = dir.string();
  c.name = "run";
  c.quiet = true;
  c.stream.name("permuted-fmnist").num_tasks(2).train_limit(3000).test_limit(1000);
  c.train.lr(0.05).batch_size(32).epochs(1);
  Runner r(c);
  auto m = r.run();
  EXPECT_GT(r.accuracy_matrix()[0][0].item<double>(), 0.6);
  EXPECT_GT(r.accuracy_matrix()[1][1].item<double>(), 0.6);
  EXPECT_LT(r.initial_accuracy()[0].item<double>(), 0.3);  // an untrained model is near chance
  EXPECT_GT(m.acc, 0.45);
  fs::remove_all(dir);
}
