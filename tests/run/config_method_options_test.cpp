// Options of a method that is not selected are an error naming them (command line and INI), with a
// hint when the key is close to one of the selected method's options; the selected method's own
// options, the --compat options and a run's own config.ini still parse.
#include <gtest/gtest.h>

#include <fstream>

#include "run/config.h"
#include "tests/run/config_support.h"

using namespace strata::run;
using strata::testing::error_of;
using strata::testing::parse_error;
using strata::testing::TempDir;

namespace {

TEST(ConfigMethodOptions, OtherMethodsOptionOnTheCommandLineIsNamed) {
  EXPECT_EQ(parse_error({"--coso.r1", "-3", "--method", "gpm"}),
            "option --coso.r1 belongs to method coso, but --method is gpm");
  // Default method (gpm) too.
  EXPECT_EQ(parse_error({"--coso.r1", "-3"}), "option --coso.r1 belongs to method coso, but --method is gpm");
  // A key the selected method has under another method's prefix: hint at the selected one.
  EXPECT_EQ(parse_error({"--method", "coso", "--gpm.svd", "exact"}).find(
                "option --gpm.svd belongs to method gpm, but --method is coso"),
            0u);
  EXPECT_NE(parse_error({"--method", "gpm", "--osft.samples", "10"}).find("(did you mean --gpm.samples?)"),
            std::string::npos);
}

TEST(ConfigMethodOptions, MistypedKeyGetsAHint) {
  EXPECT_EQ(parse_error({"--gpm.thresold", "0.9"}), "unrecognised option --gpm.thresold (did you mean --gpm.thresholds?)");
  EXPECT_NE(parse_error({"--train-limt", "5"}).find("did you mean --train-limit?"), std::string::npos);
  EXPECT_EQ(parse_error({"--zzzzzzzzzz", "5"}), "unrecognised option --zzzzzzzzzz");
}

TEST(ConfigMethodOptions, SelectedMethodAndCompatOptionsStillParse) {
  std::vector<const char*> argv = {"train", "--method", "coso", "--coso.r1", "4", "--compat", "focal",
                                   "--compat-alpha", "0.5"};
  const RunConfig c = parse_run_config(static_cast<int>(argv.size()), argv.data());
  EXPECT_EQ(c.method.method(), "coso");
  EXPECT_EQ(c.method.values().at("r1"), "4");
  // The written config.ini reads back (resume reads it), and so does the text form (eval/compare).
  TempDir dir;
  std::ofstream(dir / "c.ini") << c.to_ini();
  EXPECT_EQ(read_run_config(dir / "c.ini").to_ini(), c.to_ini());
  EXPECT_EQ(parse_run_config_text(c.to_ini(), "stored", strata::continual::builtin_methods(), {"--test-limit", "7"})
                .stream.test_limit(),
            7);
}

TEST(ConfigMethodOptions, OtherMethodsSectionInIniIsNamed) {
  TempDir dir;
  std::ofstream(dir / "a.ini") << "method = gpm\n[coso]\nr1 = 3\n";
  EXPECT_EQ(error_of([&] { read_run_config(dir / "a.ini"); }),
            "config file '" + (dir / "a.ini") + "': option 'r1' in section [coso] belongs to method coso, but method is gpm");
  std::ofstream(dir / "b.ini") << "[gpm]\nthresold = 0.9\n";
  EXPECT_EQ(error_of([&] { read_run_config(dir / "b.ini"); }),
            "config file '" + (dir / "b.ini") +
                "': unrecognised option 'thresold' in section [gpm] (did you mean 'thresholds' in section [gpm]?)");
  // --config FILE with the method from the command line: the file's [gpm] section is then foreign.
  std::ofstream(dir / "c.ini") << "[gpm]\nsamples = 10\n";
  const std::string path = dir / "c.ini";
  EXPECT_EQ(parse_error({"--config", path, "--method", "naive"}),
            "config file '" + path + "': option 'samples' in section [gpm] belongs to method gpm, but method is naive");
  // The selected method's section is fine.
  std::ofstream(dir / "d.ini") << "method = coso\n[coso]\nr1 = 3\n";
  EXPECT_EQ(read_run_config(dir / "d.ini").method.values().at("r1"), "3");
}

}  // namespace
