#include "core/isolate.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>

// Sanitizer builds: a report in the child would run the parent's death callback (libFuzzer writes
// a crash artifact for the parent's input from it). Weak: absent from ordinary builds.
extern "C" void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

namespace strata::core {

std::string IsolatedResult::describe() const {
  switch (outcome) {
    case Outcome::kFinished:
      return "";
    case Outcome::kNotRun:
      return "could not be started (fork failed)";
    case Outcome::kTimedOut:
      return "did not finish in time";
    case Outcome::kCrashed:
      if (signal != 0) return "crashed (signal " + std::to_string(signal) + ", " + ::strsignal(signal) + ")";
      return "crashed (exit status " + std::to_string(exit_code) + ")";
  }
  return "";
}

IsolatedResult run_isolated(const std::function<void()>& body, double timeout_seconds) {
  IsolatedResult r;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return r;
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return r;
  }
  if (pid == 0) {
    // The child: the write end stays open until it exits, which is how the parent sees the end.
    ::close(fds[0]);
    if (__sanitizer_set_death_callback) __sanitizer_set_death_callback(nullptr);
    for (int sig : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT}) ::signal(sig, SIG_DFL);
    if (int devnull = ::open("/dev/null", O_WRONLY); devnull >= 0) ::dup2(devnull, STDERR_FILENO);
    try {
      body();
    } catch (...) {
      // Exceptions are clean answers; only a crash or a hang is what the parent asks about.
    }
    ::_exit(0);
  }
  ::close(fds[1]);
  using clock = std::chrono::steady_clock;
  const bool bounded = std::isfinite(timeout_seconds);
  const auto deadline =
      clock::now() + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(
                         bounded ? std::max(0.0, timeout_seconds) : 0.0));
  bool timed_out = false;
  for (;;) {
    int wait_ms = -1;
    if (bounded) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
      if (left <= 0) {
        timed_out = true;
        break;
      }
      wait_ms = static_cast<int>(std::min<long long>(left, std::numeric_limits<int>::max()));
    }
    pollfd p{fds[0], POLLIN, 0};
    const int n = ::poll(&p, 1, wait_ms);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) continue;  // re-check the deadline
    break;                 // POLLHUP: the child exited (or poll failed: waitpid below tells)
  }
  ::close(fds[0]);
  if (timed_out) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    r.outcome = IsolatedResult::Outcome::kTimedOut;
  } else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    r.outcome = IsolatedResult::Outcome::kFinished;
  } else {
    r.outcome = IsolatedResult::Outcome::kCrashed;
    r.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 0;
  }
  return r;
}

}  // namespace strata::core
