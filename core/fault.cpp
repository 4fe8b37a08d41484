#include "core/fault.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>

namespace strata::core {

std::string injected_fault(const std::string& path) {
  const char* env = std::getenv("STRATA_FAULT");
  if (!env || !*env) return "";
  static std::mutex mu;
  static std::map<std::string, int64_t> counts;  // per fault spec: matching commits so far
  std::lock_guard<std::mutex> lock(mu);
  std::string spec_list = env, action;
  size_t start = 0;
  while (start <= spec_list.size()) {
    const size_t end = std::min(spec_list.find(';', start), spec_list.size());
    const std::string spec = spec_list.substr(start, end - start);
    start = end + 1;
    const size_t a = spec.find(':'), b = spec.rfind(':');
    if (a == std::string::npos || b == a) continue;
    const std::string act = spec.substr(0, a), pattern = spec.substr(a + 1, b - a - 1);
    int64_t n = 0;
    try {
      n = std::stoll(spec.substr(b + 1));
    } catch (const std::exception&) {
      continue;
    }
    if (pattern.empty() || path.find(pattern) == std::string::npos) continue;
    if (++counts[spec] == n && action.empty()) action = act;
  }
  return action;
}


}  // namespace strata::core
