#pragma once
// Running the `strata` binary from a test (only tests/tools/ drive the CLI).
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace strata::testing {

struct CliResult {
  int code;            ///< exit status (128 + signal when killed)
  std::string output;  ///< stdout and stderr together
};

/// Runs `strata ARGS` through the shell (args are passed as written) and collects its output.
/// `env`: shell variable assignments for this run only ("NAME=value ...").
inline CliResult run_strata(const std::string& args, const std::string& env = "") {
  const std::string cmd = (env.empty() ? "" : env + " ") + std::string(STRATA_CLI_PATH) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  CliResult r{-1, ""};
  if (!p) return r;
  std::array<char, 4096> buf{};
  while (fgets(buf.data(), buf.size(), p)) r.output += buf.data();
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

}  // namespace strata::testing
