// Bounds before allocation: counts and sizes out of range are one line naming the option, and a run
// whose estimated memory exceeds what the machine has is refused before the stream or model exists.
#include "core/h5.h"
#include "run/limits.h"
#include "run/runner.h"
#include "tests/run/config_support.h"

#include <gtest/gtest.h>

#include <fstream>

using namespace strata::run;
using strata::testing::error_of;
using strata::testing::parse_error;
using strata::testing::TempDir;

namespace {

TEST(Limits, HugeCountsInAConfigAreOneLineNamingTheOption) {
  TempDir dir;
  std::ofstream(dir / "c.ini") << "tasks = 99999999999\n";
  EXPECT_EQ(error_of([&] { read_run_config(dir / "c.ini"); }), "option --tasks: 99999999999 is out of range 1..10000");
  EXPECT_EQ(parse_error({"--hidden", "100,1000000000"}), "option --hidden: 1000000000 is out of range 1..65536 (per layer)");
  EXPECT_EQ(parse_error({"--batch-size", "0"}), "option --batch-size: 0 is out of range 1..1048576");
  EXPECT_EQ(parse_error({"--epochs", "99999999999"}), "option --epochs: 99999999999 is out of range 1..1000000");
  EXPECT_EQ(parse_error({"--model", "vit", "--depth", "100000"}), "option --depth: 100000 is out of range 1..256");
  EXPECT_EQ(parse_error({"--model", "vit", "--heads", "0"}), "option --heads: 0 is out of range 1..1024");
  EXPECT_EQ(parse_error({"--model", "vit", "--patch", "5000"}), "option --patch: 5000 is out of range 1..1024");
  EXPECT_EQ(parse_error({"--method", "coso", "--coso.r2", "99999999999"}),
            "option --coso.r2: 99999999999 is out of range (at most 1048576)");
  EXPECT_EQ(parse_error({"--method", "lora", "--lora.rank", "2000000"}),
            "option --lora.rank: 2000000 is out of range (at most 1048576)");
  EXPECT_EQ(parse_error({"--threads", "100000"}), "option --threads: 100000 is out of range 1..1024");
}

TEST(Limits, EstimateIsModestForDefaultsAndHugeForSillyRuns) {
  RunConfig d;  // the default run: permuted-fmnist, 5 tasks, MLP 100,100, GPM
  const auto e = estimate_memory(d);
  EXPECT_GT(e.total(), 200ll << 20) << e.describe();  // the dataset alone is ~210 MiB as float32
  EXPECT_LT(e.total(), 1ll << 30) << e.describe();
  // Model term: MLP 784-100-100-10 without bias = 89400 parameters, x 4 bytes x (weights, gradients,
  // the version snapshot; plain SGD keeps no state).
  EXPECT_EQ(e.model, 89400 * 4 * 3);

  RunConfig many = d;
  many.stream.num_tasks(1000);  // 1000 versions x 1000 tasks x 10000 test predictions
  const auto m = estimate_memory(many);
  EXPECT_GT(m.predictions, 500ll << 30) << m.describe();
  const std::string err = error_of([&] { check_memory(m, 16ll << 30); });
  EXPECT_EQ(err.find("this run needs an estimated "), 0u) << err;
  EXPECT_NE(err.find("GiB"), std::string::npos) << err;
  EXPECT_NE(err.find("16.00 GiB available"), std::string::npos) << err;
  EXPECT_EQ(error_of([&] { check_memory(e, 16ll << 30); }), "");
  EXPECT_EQ(error_of([&] { check_memory(m, -1); }), "");  // unknown: no check

  RunConfig vit = d;
  vit.model.arch("vit").patch(1).dim(16384).depth(256).heads(16);
  EXPECT_GT(estimate_memory(vit).model, 1ll << 40);
  EXPECT_GT(available_memory(), 0);
}

TEST(Limits, RunnerRefusesAnOversizedRunBeforeBuildingAnything) {
  TempDir dir;
  RunConfig c;
  c.out = dir.path.string();
  c.stream.data_dir(dir / "no-such-folder");  // the data is never read
  c.stream.num_tasks(1000);
  EXPECT_EQ(error_of([&] { Runner r(c); }),
            "option --tasks: a run holds at most 100 tasks (predictions.h5 names them task00..task99), got 1000");
  c.stream.num_tasks(5);
  c.model.arch("vit").patch(1).dim(8192).depth(64).heads(8);
  const std::string err = error_of([&] { Runner r(c); });
  EXPECT_EQ(err.find("this run needs an estimated "), 0u) << err;
  EXPECT_FALSE(std::filesystem::exists(dir / "gpm-permuted-fmnist"));
  // 100 permuted tasks with limits: small enough to estimate under a GiB.
  c = RunConfig();
  c.stream.num_tasks(100).train_limit(10).test_limit(10);
  EXPECT_LT(estimate_memory(c).total(), 1ll << 30) << estimate_memory(c).describe();
}

TEST(Limits, ImageSizeOfAUserDatasetIsBoundedBeforeTheEstimate) {
  TempDir dir;
  const std::string path = dir / "wide.h5";
  {
    // Shapes only (no data written): what the estimate reads.
    H5::H5File f = strata::core::open_file(path, strata::core::FileMode::kTruncate);
    strata::core::open_group(f, "train", true);
    strata::core::open_group(f, "test", true);
    const hsize_t x[4] = {2, 1, 1, 70000}, y[1] = {2};
    f.createDataSet("train/x", H5::PredType::STD_U8LE, H5::DataSpace(4, x));
    f.createDataSet("train/y", H5::PredType::STD_I64LE, H5::DataSpace(1, y));
  }
  RunConfig c;
  c.stream.name("permuted").dataset(path).num_tasks(2);
  EXPECT_EQ(error_of([&] { estimate_memory(c); }),
            "dataset '" + path + "': 'train/x': shape [2, 1, 1, 70000]: width 70000 is out of range 1..65536");
}

}  // namespace
