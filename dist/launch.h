#pragma once
// Local launch: N worker processes on this machine, each the same executable with the torchrun
// environment set (RANK = LOCAL_RANK = r, WORLD_SIZE = N, MASTER_ADDR, MASTER_PORT), watched until all
// finish. One failing worker (non-zero exit, signal) fails the launch: the others are terminated and
// the result names the worker and how it ended.
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace strata::dist {

struct LaunchOptions {
  TORCH_ARG(int64_t, nproc) = 2;
  TORCH_ARG(std::string, master_addr) = "127.0.0.1";
  /// 0 = a port free on master_addr when the launch starts.
  TORCH_ARG(int64_t, master_port) = 0;
  /// Seconds between SIGTERM and SIGKILL for the workers left when one fails.
  TORCH_ARG(double, grace) = 5;
};

struct LaunchResult {
  int exit_code = 0;  ///< 0 when every worker exited with 0; else the failing worker's status (128 + signal)
  int failed_rank = -1;
  std::string error;  ///< one line: which worker failed, how, and what happened to the others
};

/// Starts options.nproc() workers running `exe args...` (environment inherited, plus the variables
/// above) and waits for them. The workers die with the launcher (PR_SET_PDEATHSIG).
LaunchResult launch_local(const std::string& exe, const std::vector<std::string>& args, const LaunchOptions& options);

/// A TCP port that was free on `addr` a moment ago (bound to port 0, read back, released).
int64_t free_port(const std::string& addr = "127.0.0.1");

/// The running executable (/proc/self/exe resolved).
std::string self_executable();

}  // namespace strata::dist
