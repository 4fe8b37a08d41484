#pragma once
// Shared by the benchmark programs: one-thread BLAS, and running a Python reference loop whose
// output lines carry "key=value" fields, so C++ and Python rounds can alternate in one run.
#include "core/threads.h"
#include "run/config.h"

#include <ATen/record_function.h>
#include <boost/program_options.hpp>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <ctime>
#include <iomanip>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace strata::bench {

// One thread for LibTorch and OpenBLAS alike (core/threads.h says why), and the BLAS kernel set
// printed once: OPENBLAS_CORETYPE in the environment changes the small GEMMs' cost 2-3 fold. A
// reference loop run by run_reference() inherits the environment, so it runs the same kernels.
inline bool set_blas_threads(int threads) {
  const std::string kernels = core::blas_kernels();
  std::cerr << "bench: BLAS kernels " << (kernels.empty() ? std::string("(not OpenBLAS)") : kernels) << "\n";
  return core::set_num_threads(threads);
}

// CPU time of the calling thread, which runs the whole step (one BLAS thread; LibTorch's CPU
// autograd runs backward on the caller's thread): on a shared machine it leaves out the time the
// thread waited for a core, which wall time counts.
inline double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// Counts LibTorch operator calls (RecordFunction scopes: ATen operators and autograd nodes, nested
// calls included) while on(); with `by_name`, per operator or node name too. Its global callback
// lives as long as the counter: every operator pays for it, so no timed run should see one.
class OpCounter {
 public:
  explicit OpCounter(bool by_name) : by_name_(by_name) {
    handle_ = at::addGlobalCallback(at::RecordFunctionCallback(
                              [](const at::RecordFunction& fn) -> std::unique_ptr<at::ObserverContext> {
                                OpCounter* self = active().load(std::memory_order_relaxed);
                                if (self != nullptr) self->count(fn.name());
                                return nullptr;
                              })
                              .scopes({at::RecordScope::FUNCTION, at::RecordScope::BACKWARD_FUNCTION}));
  }
  ~OpCounter() {
    off();
    at::removeCallback(handle_);
  }
  OpCounter(const OpCounter&) = delete;
  OpCounter& operator=(const OpCounter&) = delete;
  void on() { active() = this; }
  void off() { active() = nullptr; }
  void reset() {
    std::lock_guard<std::mutex> lock(mutex_);
    calls_ = 0;
    names_.clear();
  }
  int64_t calls() const { return calls_.load(); }
  // "  <calls per step>  <name>" lines, most frequent first (nothing without by_name).
  void print_by_name(std::ostream& os, double steps) const {
    std::vector<std::pair<int64_t, std::string>> sorted;
    for (const auto& [name, n] : names_) sorted.emplace_back(-n, name);
    std::sort(sorted.begin(), sorted.end());
    for (const auto& [n, name] : sorted)
      os << "  " << std::fixed << std::setw(7) << std::setprecision(2) << static_cast<double>(-n) / steps << "  "
         << name << "\n";
  }

 private:
  static std::atomic<OpCounter*>& active() {
    static std::atomic<OpCounter*> a{nullptr};
    return a;
  }
  void count(const char* name) {
    calls_.fetch_add(1, std::memory_order_relaxed);
    if (!by_name_) return;
    std::lock_guard<std::mutex> lock(mutex_);
    ++names_[name];
  }
  bool by_name_;
  at::CallbackHandle handle_;
  std::atomic<int64_t> calls_{0};
  std::mutex mutex_;
  std::map<std::string, int64_t> names_;
};

// Parses argv into `vm`. Returns -1 to go on, else the exit code: 0 after printing --help, 2 after one
// line naming the bad option. Every argument is first checked by run::reject_option_placeholders, as
// the CLI's are (a "%value%" in an argument makes boost's error message loop forever).
inline int parse_options(int argc, char** argv, const boost::program_options::options_description& desc,
                         const char* program, boost::program_options::variables_map& vm) {
  namespace po = boost::program_options;
  try {
    for (int i = 1; i < argc; ++i) run::reject_option_placeholders(argv[i], "command line");
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const c10::Error& e) {
    std::cerr << program << ": " << e.what_without_backtrace() << "\n";
    return 2;
  } catch (const po::error& e) {
    std::cerr << program << ": " << e.what() << "\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  return -1;
}

// The numeric "key=value" fields of one output line ("python batch=10 seconds=1.2" -> {batch: 10,
// seconds: 1.2}); non-numeric fields are skipped.
inline std::map<std::string, double> parse_fields(const std::string& line) {
  std::map<std::string, double> out;
  std::istringstream ss(line);
  for (std::string tok; ss >> tok;) {
    const auto eq = tok.find('=');
    if (eq == std::string::npos) continue;
    try {
      size_t used = 0;
      const double v = std::stod(tok.substr(eq + 1), &used);
      if (used == tok.size() - eq - 1) out[tok.substr(0, eq)] = v;
    } catch (const std::exception&) {
    }
  }
  return out;
}

// Runs `command` (OPENBLAS_NUM_THREADS set to `threads` for it, as set_blas_threads does here),
// echoes its output, and calls on_line(fields) for every line. Returns false when it failed.
template <typename OnLine>
bool run_reference(const std::string& command, int threads, OnLine on_line) {
  const std::string cmd = "OPENBLAS_NUM_THREADS=" + std::to_string(threads) + " " + command;
  FILE* p = popen(cmd.c_str(), "r");
  char line[1024];
  while (p && fgets(line, sizeof line, p)) {
    std::cout << line << std::flush;
    on_line(parse_fields(line));
  }
  const bool ok = p && pclose(p) == 0;
  if (!ok) std::cerr << "bench: reference loop failed (" << cmd << ")\n";
  return ok;
}

}  // namespace strata::bench
