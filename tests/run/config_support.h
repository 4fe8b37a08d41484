#pragma once
// Helpers for the run-configuration tests.
#include "run/config.h"
#include "tests/support.h"

#include <string>
#include <vector>

namespace strata::testing {

/// The error parse_run_config gives for `strata train ARGS` ("" when it parses).
inline std::string parse_error(std::vector<std::string> args) {
  args.insert(args.begin(), "train");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  return error_of([&] { run::parse_run_config(static_cast<int>(argv.size()), argv.data()); });
}

}  // namespace strata::testing
