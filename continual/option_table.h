#pragma once
// OptionTable: the one binding between a method's options struct and its registered options.
//
// A method's defaults live in exactly one place, its options struct (TORCH_ARG members with
// initialisers). The table names each option once (key, help, which member) and derives from it
// both the registry entry (MethodOption, default printed as a user would type it) and the parse of
// a MethodConfig into the struct. Before it, every method listed its defaults twice (struct and a
// hand-written MethodOption list) and the two had drifted apart.
//
//   const OptionTable<GpmOptions>& gpm_table() {
//     static const auto t = OptionTable<GpmOptions>()
//         .add("samples", "training samples per representation matrix",
//              [](GpmOptions& o) -> int64_t& { return o.samples(); });
//     return t;
//   }
//   registry: {"gpm", "...", gpm_table().options(), [](const MethodConfig& c) {
//               return std::make_unique<Gpm>(gpm_table().parse(c)); }}
//
// The accessor returns the TORCH_ARG member by reference (TORCH_ARG's non-const getter). Member
// types: bool, int64_t, double, std::string, std::vector<double>, std::vector<int64_t>
// (comma-separated). A table can include another's entries (`include`) when an options struct
// embeds a shared one, e.g. the adapter methods' common options.
#include "continual/method.h"

#include <cmath>
#include <cstdio>
#include <functional>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

namespace strata::continual {

namespace option_text {

/// The shortest decimal text that reads back to exactly `v` (0.95 -> "0.95", 4e-4 -> "0.0004").
inline std::string format(double v) {
  char buf[64];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}
inline std::string format(int64_t v) { return std::to_string(v); }
inline std::string format(bool v) { return v ? "true" : "false"; }
inline std::string format(const std::string& v) { return v; }
template <class T>
std::string format(const std::vector<T>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ",") + format(x);
  return s;
}

inline void read(const MethodConfig& c, const std::string& key, double& out) { out = c.get_double(key); }
inline void read(const MethodConfig& c, const std::string& key, int64_t& out) { out = c.get_int(key); }
inline void read(const MethodConfig& c, const std::string& key, bool& out) { out = c.get_bool(key); }
inline void read(const MethodConfig& c, const std::string& key, std::string& out) { out = c.get_string(key); }
inline void read(const MethodConfig& c, const std::string& key, std::vector<double>& out) {
  out = c.get_doubles(key);
}
inline void read(const MethodConfig& c, const std::string& key, std::vector<int64_t>& out) {
  out.clear();
  for (double d : c.get_doubles(key)) {
    TORCH_CHECK(std::floor(d) == d, "strata: option ", c.method(), ".", key, ": '", c.get_string(key),
                "' is not a list of integers");
    out.push_back(static_cast<int64_t>(d));
  }
}

}  // namespace option_text

template <class Options>
class OptionTable {
 public:
  /// Binds `key` to the member `get(options)` returns by reference.
  template <class Get>
  OptionTable& add(std::string key, std::string help, Get get) {
    using T = std::remove_reference_t<decltype(get(std::declval<Options&>()))>;
    static_assert(std::is_lvalue_reference_v<decltype(get(std::declval<Options&>()))>,
                  "OptionTable::add(): the accessor must return the member by reference");
    for (const auto& e : entries_)
      TORCH_INTERNAL_ASSERT(e.key != key, "OptionTable::add(): option '", key, "' bound twice");
    entries_.push_back({std::move(key), std::move(help),
                        [get](Options& o) { return option_text::format(static_cast<const T&>(get(o))); },
                        [get](Options& o, const MethodConfig& c, const std::string& k) { option_text::read(c, k, get(o)); }});
    return *this;
  }

  /// Appends every entry of `other`, whose options struct is reached through `member(options)`.
  template <class Inner, class Member>
  OptionTable& include(const OptionTable<Inner>& other, Member member) {
    for (const auto& e : other.entries()) {
      auto show = e.show;
      auto read = e.read;
      for (const auto& mine : entries_)
        TORCH_INTERNAL_ASSERT(mine.key != e.key, "OptionTable::include(): option '", e.key, "' bound twice");
      entries_.push_back({e.key, e.help, [show, member](Options& o) { return show(member(o)); },
                          [read, member](Options& o, const MethodConfig& c, const std::string& k) {
                            read(member(o), c, k);
                          }});
    }
    return *this;
  }

  /// The registry entries; each default is the member's value in a default-constructed Options.
  std::vector<MethodOption> options() const {
    Options defaults{};
    std::vector<MethodOption> out;
    for (const auto& e : entries_) out.push_back({e.key, e.show(defaults), e.help});
    return out;
  }

  /// Default-constructed Options with every key present in `config` read into its member.
  Options parse(const MethodConfig& config) const {
    Options o{};
    for (const auto& e : entries_)
      if (config.has(e.key)) e.read(o, config, e.key);
    return o;
  }

  struct Entry {
    std::string key, help;
    std::function<std::string(Options&)> show;
    std::function<void(Options&, const MethodConfig&, const std::string&)> read;
  };
  const std::vector<Entry>& entries() const { return entries_; }

 private:
  std::vector<Entry> entries_;
};

}  // namespace strata::continual
