#include "dist/launch.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

namespace strata::dist {

int64_t free_port(const std::string& addr) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  TORCH_CHECK(fd >= 0, "strata::dist::free_port(): socket() failed: ", std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = 0;
  if (::inet_pton(AF_INET, addr.c_str(), &a.sin_addr) != 1) a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  const int err = errno;
  ::close(fd);
  TORCH_CHECK(ok, "strata::dist::free_port(): cannot bind a port on ", addr, ": ", std::strerror(err));
  return ntohs(a.sin_port);
}

std::string self_executable() { return std::filesystem::read_symlink("/proc/self/exe").string(); }

namespace {

struct Worker {
  pid_t pid = -1;
  bool done = false, stopped = false;
  int status = 0;
};

std::string how(const Worker& w) {
  if (WIFSIGNALED(w.status)) {
    const int sig = WTERMSIG(w.status);
    return std::string("was killed by signal ") + std::to_string(sig) + " (" + ::strsignal(sig) + ")";
  }
  return "exited with status " + std::to_string(WEXITSTATUS(w.status));
}

bool failed(const Worker& w) { return w.done && !(WIFEXITED(w.status) && WEXITSTATUS(w.status) == 0); }

}  // namespace

LaunchResult launch_local(const std::string& exe, const std::vector<std::string>& args, const LaunchOptions& options) {
  const int64_t n = options.nproc();
  TORCH_CHECK(n >= 1, "option --nproc: must be >= 1, got ", n);
  const int64_t port = options.master_port() > 0 ? options.master_port() : free_port(options.master_addr());
  std::vector<Worker> workers(n);
  const pid_t parent = ::getpid();
  for (int64_t r = 0; r < n; ++r) {
    const pid_t pid = ::fork();
    TORCH_CHECK(pid >= 0, "strata::dist::launch_local(): fork failed: ", std::strerror(errno));
    if (pid == 0) {
      // A worker must not outlive the launcher (killed with SIGKILL, say).
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      ::setenv("RANK", std::to_string(r).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(n).c_str(), 1);
      ::setenv("MASTER_ADDR", options.master_addr().c_str(), 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      std::vector<std::string> copy = args;
      std::vector<char*> argv;
      std::string exe_copy = exe;
      argv.push_back(exe_copy.data());
      for (auto& a : copy) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(exe_copy.c_str(), argv.data());
      ::_exit(127);
    }
    workers[r].pid = pid;
  }

  LaunchResult result;
  auto poll = [&]() {
    for (int64_t r = 0; r < n; ++r) {
      auto& w = workers[r];
      if (w.done) continue;
      int status = 0;
      const pid_t got = ::waitpid(w.pid, &status, WNOHANG | WUNTRACED | WCONTINUED);
      if (got != w.pid) continue;
      if (WIFSTOPPED(status)) {
        w.stopped = true;
      } else if (WIFCONTINUED(status)) {
        w.stopped = false;
      } else {
        w.done = true;
        w.status = status;
        // A signal is the likelier cause than an error exit seen in the same round.
        if (failed(w) && (result.failed_rank < 0 ||
                          (WIFSIGNALED(status) && !WIFSIGNALED(workers[result.failed_rank].status) &&
                           !workers[result.failed_rank].stopped)))
          result.failed_rank = static_cast<int>(r);
      }
    }
  };
  auto all_done = [&] {
    for (const auto& w : workers)
      if (!w.done) return false;
    return true;
  };
  while (!all_done() && result.failed_rank < 0) {
    poll();
    if (result.failed_rank < 0 && !all_done()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (result.failed_rank < 0) return result;

  // One failed: stop the rest (a stopped worker cannot handle SIGTERM, so it gets SIGKILL at once).
  std::string stopped;
  for (int64_t r = 0; r < n; ++r) {
    auto& w = workers[r];
    if (w.done) continue;
    if (w.stopped) stopped += (stopped.empty() ? "" : ", ") + std::to_string(r);
    ::kill(w.pid, w.stopped ? SIGKILL : SIGTERM);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(options.grace());
  while (!all_done()) {
    if (std::chrono::steady_clock::now() > deadline)
      for (auto& w : workers)
        if (!w.done) ::kill(w.pid, SIGKILL);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    for (auto& w : workers) {
      if (w.done) continue;
      int status = 0;
      if (::waitpid(w.pid, &status, WNOHANG) == w.pid) {
        w.done = true;
        w.status = status;
      }
    }
  }
  const auto& f = workers[result.failed_rank];
  result.exit_code = WIFSIGNALED(f.status) ? 128 + WTERMSIG(f.status) : WEXITSTATUS(f.status);
  if (result.exit_code == 0) result.exit_code = 1;
  result.error = "worker rank " + std::to_string(result.failed_rank) + " of " + std::to_string(n) + " (pid " +
                 std::to_string(f.pid) + ") " + how(f) + "; the other workers were terminated";
  if (!stopped.empty()) result.error += " (rank(s) " + stopped + " had been stopped and did not answer)";
  return result;
}

}  // namespace strata::dist
