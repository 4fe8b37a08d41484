#pragma once
// Runs a piece of work in a child process, so that a crash or a hang inside a third-party library
// (HDF5 1.10.8 over-reads on some damaged files) becomes one clear error instead of the end of the
// process. POSIX only (fork).
#include <functional>
#include <string>

namespace strata::core {

struct IsolatedResult {
  enum class Outcome { kFinished, kCrashed, kTimedOut, kNotRun };
  Outcome outcome = Outcome::kNotRun;
  int signal = 0;     ///< kCrashed: the signal that ended the child (0 = it exited with `exit_code`)
  int exit_code = 0;  ///< kCrashed without a signal: the child's exit status (a sanitizer's report)
  /// "crashed (signal 11, Segmentation fault)", "did not finish within 30 s", ...; "" when finished.
  std::string describe() const;
};

/// Forks; the child runs `body` (its stderr sent to /dev/null, default signal dispositions, any
/// exception swallowed) and exits without running atexit handlers. The parent waits at most
/// `timeout_seconds` (then SIGKILLs the child). kNotRun when fork() fails (the caller decides
/// whether to go on without the check). `body` must not rely on threads of the parent: only the
/// calling thread exists in the child.
IsolatedResult run_isolated(const std::function<void()>& body, double timeout_seconds);

}  // namespace strata::core
