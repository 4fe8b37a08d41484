// Stream options of the run config: the dataset/recipe options parse from the command line and
// survive the config.ini round trip.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "run/config.h"

using namespace strata::run;
namespace fs = std::filesystem;

namespace {

TEST(RunConfigStream, DatasetAndSplitOptionsRoundTripThroughIni) {
  const char* argv[] = {"train",          "--stream",           "split", "--dataset", "/tmp/none.h5",
                        "--classes-per-task", "10", "--first-task-classes", "50", "--class-order",
                        "3,1,2,0",        "--class-order-seed", "4",     "--tasks",   "6"};
  const RunConfig c = parse_run_config(int(sizeof(argv) / sizeof(argv[0])), argv);
  EXPECT_EQ(c.stream.name(), "split");
  EXPECT_EQ(c.stream.dataset(), "/tmp/none.h5");
  EXPECT_EQ(c.stream.classes_per_task(), 10);
  EXPECT_EQ(c.stream.first_task_classes(), 50);
  EXPECT_EQ(c.stream.class_order(), (std::vector<int64_t>{3, 1, 2, 0}));
  EXPECT_EQ(c.stream.class_order_seed(), 4);
  const fs::path ini = fs::temp_directory_path() / ("strata_config_stream_" + std::to_string(::getpid()) + ".ini");
  std::ofstream(ini) << c.to_ini();
  const RunConfig back = read_run_config(ini.string());
  fs::remove(ini);
  EXPECT_EQ(back.stream.dataset(), c.stream.dataset());
  EXPECT_EQ(back.stream.classes_per_task(), 10);
  EXPECT_EQ(back.stream.first_task_classes(), 50);
  EXPECT_EQ(back.stream.class_order(), c.stream.class_order());
  EXPECT_EQ(back.stream.class_order_seed(), 4);
  EXPECT_EQ(back.to_ini(), c.to_ini());
  // Defaults: the built-in dataset, natural class order, and an empty class-order line that reads back.
  const char* plain[] = {"train"};
  const RunConfig d = parse_run_config(1, plain);
  EXPECT_EQ(d.stream.dataset(), "fmnist");
  EXPECT_TRUE(d.stream.class_order().empty());
  std::ofstream(ini) << d.to_ini();
  EXPECT_EQ(read_run_config(ini.string()).to_ini(), d.to_ini());
  fs::remove(ini);
}

TEST(RunConfigStream, BadStreamOptionsNameTheOption) {
  const char* argv[] = {"train", "--stream", "permuted-fmnist", "--dataset", "x.h5"};
  try {
    parse_run_config(5, argv);
    ADD_FAILURE() << "no error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("is built in"), std::string::npos);
  }
  const char* bad_order[] = {"train", "--class-order", "1,x"};
  EXPECT_THROW(parse_run_config(3, bad_order), c10::Error);
}

}  // namespace

namespace {

TEST(RunConfigStream, RelativeFilePathsAreStoredAbsolute) {
  // config.ini is read again by --resume, eval and compare, possibly from another directory.
  const char* argv[] = {"train", "--stream", "split", "--dataset", "data/my.h5", "--data-dir", "fm"};
  const RunConfig c = parse_run_config(7, argv);
  EXPECT_EQ(c.stream.dataset(), (fs::current_path() / "data" / "my.h5").string());
  EXPECT_EQ(c.stream.data_dir(), (fs::current_path() / "fm").string());
  const char* builtin[] = {"train", "--stream", "split-fmnist"};
  EXPECT_EQ(parse_run_config(3, builtin).stream.dataset(), "fmnist");
}

}  // namespace
