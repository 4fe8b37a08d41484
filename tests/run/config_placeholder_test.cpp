// Found by fuzzing (fuzz_config): boost::program_options builds an error message by replacing
// placeholders such as "%value%" until none is left, so an unknown option named "x%canonical_option%"
// or a bad value "%value%" made the message loop forever (strata train hung). Such text is now
// refused first, with a message naming where it is. Before the fix these calls never returned.
#include <gtest/gtest.h>

#include "run/config.h"
#include "tests/support.h"

using namespace strata;
using strata::testing::error_of;

TEST(ConfigPlaceholders, IniKeyOrValueWithParserPlaceholderIsRefused) {
  const std::string key = error_of([] { run::parse_run_config_text("name = a\nx%canonical_option% = 1\n", "t.ini"); });
  EXPECT_NE(key.find("config file 't.ini' line 2"), std::string::npos) << key;
  EXPECT_NE(key.find("'%canonical_option%' cannot appear"), std::string::npos) << key;
  const std::string value = error_of([] { run::parse_run_config_text("lr = %value%\n", "t.ini"); });
  EXPECT_NE(value.find("line 1: '%value%' cannot appear"), std::string::npos) << value;
  const std::string arg = error_of([] { run::parse_run_config_text("", "t.ini", continual::builtin_methods(), {"--lr", "%value%"}); });
  EXPECT_NE(arg.find("arguments: '%value%'"), std::string::npos) << arg;
}

TEST(ConfigPlaceholders, CommandLineWithParserPlaceholderIsRefused) {
  const char* argv[] = {"train", "--tasks", "%value%x"};
  const std::string msg = error_of([&] { run::parse_run_config(3, argv); });
  EXPECT_NE(msg.find("command line: '%value%' cannot appear"), std::string::npos) << msg;
  // A lone '%' stays an ordinary character.
  const char* ok[] = {"train", "--name", "run%1"};
  EXPECT_EQ(run::parse_run_config(3, ok).name, "run%1");
}
