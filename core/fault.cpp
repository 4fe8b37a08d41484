#include "core/fault.h"

#include <c10/util/Exception.h>

#include <signal.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <vector>

namespace strata::core {

namespace {

struct FaultSpec {
  std::string text, action;
  bool at_task = false;
  std::string pattern;  // file faults
  int64_t count = 0;    // file faults: the N-th matching commit
  int64_t task = 0;     // task faults: 1-based
  int64_t rank = -1;    // task faults: -1 = every process
};

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t end = s.find(sep, start);
    out.push_back(s.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) return out;
    start = end + 1;
  }
}

// A whole non-negative decimal number, or -1.
int64_t number(const std::string& s) {
  if (s.empty() || s.size() > 9 || s.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::stoll(s);
}

std::vector<FaultSpec> parse_faults(const std::string& env) {
  std::vector<FaultSpec> specs;
  for (const std::string& text : split(env, ';')) {
    if (text.empty()) continue;
    const auto f = split(text, ':');
    FaultSpec s;
    s.text = text;
    s.action = f[0];
    bool ok = false;
    if (f.size() >= 2 && f[1].rfind("task=", 0) == 0) {
      s.at_task = true;
      s.task = number(f[1].substr(5));
      ok = (s.action == "kill" || s.action == "stop") && s.task >= 1;
      if (f.size() == 3) {
        s.rank = f[2].rfind("rank=", 0) == 0 ? number(f[2].substr(5)) : -1;
        ok = ok && s.rank >= 0;
      } else {
        ok = ok && f.size() == 2;
      }
    } else if (f.size() == 3) {
      s.pattern = f[1];
      s.count = number(f[2]);
      ok = (s.action == "enospc" || s.action == "kill") && !s.pattern.empty() && s.count >= 1;
    }
    TORCH_CHECK(ok, "strata::core: STRATA_FAULT: '", text, "' is not ACTION:PATTERN:N (enospc|kill at the N-th write of a "
                "file whose path contains PATTERN) or ACTION:task=T[:rank=R] (kill|stop as task T starts)");
    specs.push_back(std::move(s));
  }
  return specs;
}

}  // namespace

std::string injected_fault(const std::string& path) {
  const char* env = std::getenv("STRATA_FAULT");
  if (!env || !*env) return "";
  static std::mutex mu;
  static std::map<std::string, int64_t> counts;  // per fault spec: matching commits so far
  std::lock_guard<std::mutex> lock(mu);
  std::string action;
  for (const auto& s : parse_faults(env)) {
    if (s.at_task || path.find(s.pattern) == std::string::npos) continue;
    if (++counts[s.text] == s.count && action.empty()) action = s.action;
  }
  return action;
}

void fault_at_task_start(int64_t task_index, int64_t rank) {
  const char* env = std::getenv("STRATA_FAULT");
  if (!env || !*env) return;
  for (const auto& s : parse_faults(env)) {
    if (!s.at_task || s.task != task_index + 1 || (s.rank >= 0 && s.rank != rank)) continue;
    ::raise(s.action == "kill" ? SIGKILL : SIGSTOP);
  }
}

}  // namespace strata::core
