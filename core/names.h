#pragma once
// Indexed HDF5 group names shared by the files that write and read them: "v007", "task03".
#include <cstdint>
#include <cstdio>
#include <string>

namespace strata::core {

/// prefix + index zero-padded to `width` digits: indexed_name("v", 7, 3) == "v007".
inline std::string indexed_name(const std::string& prefix, int64_t index, int width) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%0*lld", width, static_cast<long long>(index));
  return prefix + buf;
}

/// The inverse: parse_indexed_name("task03", "task") == 3; -1 when `name` is not prefix + digits.
inline int64_t parse_indexed_name(const std::string& name, const std::string& prefix) {
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return -1;
  int64_t v = 0;
  for (size_t i = prefix.size(); i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    v = v * 10 + (name[i] - '0');
  }
  return v;
}

}  // namespace strata::core
