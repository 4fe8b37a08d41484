// OptionTable: one binding gives the registry's defaults and the parse into the options struct.
#include "continual/option_table.h"

#include <gtest/gtest.h>

namespace strata::continual {
namespace {

struct Inner {
  TORCH_ARG(int64_t, rank) = 4;
};

struct Outer {
  TORCH_ARG(double, lr) = 4e-4;
  TORCH_ARG(std::vector<double>, thresholds) = std::vector<double>{0.95, 0.99};
  TORCH_ARG(std::vector<int64_t>, ranks) = std::vector<int64_t>{2, 8};
  TORCH_ARG(bool, on) = true;
  TORCH_ARG(std::string, target) = "auto";
  TORCH_ARG(Inner, inner) = Inner{};
};

OptionTable<Inner> inner_table() {
  return OptionTable<Inner>().add("rank", "rank", [](Inner& o) -> auto& { return o.rank(); });
}

OptionTable<Outer> outer_table() {
  return OptionTable<Outer>()
      .add("lr", "learning rate", [](Outer& o) -> auto& { return o.lr(); })
      .add("thresholds", "per layer", [](Outer& o) -> auto& { return o.thresholds(); })
      .add("ranks", "per layer", [](Outer& o) -> auto& { return o.ranks(); })
      .add("on", "switch", [](Outer& o) -> auto& { return o.on(); })
      .add("target", "layers", [](Outer& o) -> auto& { return o.target(); })
      .include(inner_table(), [](Outer& o) -> Inner& { return o.inner(); });
}

TEST(OptionTable, DefaultsComeFromTheStructAsAUserWouldTypeThem) {
  const auto options = outer_table().options();
  ASSERT_EQ(options.size(), 6u);
  std::map<std::string, std::string> d;
  for (const auto& o : options) d[o.key] = o.default_value;
  EXPECT_EQ(d["lr"], "0.0004");
  EXPECT_EQ(d["thresholds"], "0.95,0.99");
  EXPECT_EQ(d["ranks"], "2,8");
  EXPECT_EQ(d["on"], "true");
  EXPECT_EQ(d["target"], "auto");
  EXPECT_EQ(d["rank"], "4");
  EXPECT_EQ(options[0].help, "learning rate");
}

TEST(OptionTable, ShortestTextReadsBackExactly) {
  for (double v : {0.1, 1.0 / 3.0, 1e-6, 0.98, 123456.789, 0.0, -2.5}) {
    const auto s = option_text::format(v);
    EXPECT_EQ(std::stod(s), v) << s;
  }
  EXPECT_EQ(option_text::format(0.1), "0.1");
  EXPECT_EQ(option_text::format(3.0), "3");
}

TEST(OptionTable, ParseReadsGivenKeysAndKeepsDefaults) {
  const auto o = outer_table().parse(MethodConfig("m", {{"lr", "0.01"}, {"ranks", "1,2,3"}, {"on", "off"}, {"rank", "16"}}));
  EXPECT_EQ(o.lr(), 0.01);
  EXPECT_EQ(o.ranks(), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_FALSE(o.on());
  EXPECT_EQ(o.inner().rank(), 16);
  EXPECT_EQ(o.thresholds(), (std::vector<double>{0.95, 0.99}));  // default kept
  EXPECT_EQ(o.target(), "auto");
}

TEST(OptionTable, BadValuesNameTheOption) {
  try {
    outer_table().parse(MethodConfig("m", {{"ranks", "1,2.5"}}));
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("m.ranks"), std::string::npos) << e.what();
  }
  EXPECT_THROW(outer_table().parse(MethodConfig("m", {{"lr", "fast"}})), c10::Error);
}

TEST(OptionTable, RegisteredDefaultsParseBackToTheStruct) {
  // The registry fills every default in as text before a method parses it: the round trip must be exact.
  std::map<std::string, std::string> values;
  for (const auto& o : outer_table().options()) values[o.key] = o.default_value;
  const auto o = outer_table().parse(MethodConfig("m", values));
  const Outer d;
  EXPECT_EQ(o.lr(), d.lr());
  EXPECT_EQ(o.thresholds(), d.thresholds());
  EXPECT_EQ(o.ranks(), d.ranks());
  EXPECT_EQ(o.on(), d.on());
  EXPECT_EQ(o.inner().rank(), d.inner().rank());
}

TEST(OptionTable, MethodTablesKeepTheirDefaults) {
  // The defaults every converted method had before its table (`strata methods`), plus the options
  // added since (osft.protect_start, codyra/mora.mask_seen) and osft.rank_rule, changed to progressive
  // by evidence (README).
  const std::map<std::string, std::map<std::string, std::string>> expected = {
      {"lora", {{"rank", "8"}, {"alpha", "32"}, {"dropout", "0.1"}, {"target", "auto"}, {"train_head", "true"}}},
      {"olora",
       {{"rank", "8"}, {"alpha", "32"}, {"dropout", "0.1"}, {"lambda1", "0.5"}, {"lambda2", "0"}, {"target", "auto"},
        {"train_head", "true"}}},
      {"codyra",
       {{"rank", "16"}, {"kappa_max", "0.005"}, {"dense_fraction", "0.5"}, {"num_kappas", "50"}, {"shrink", "paper"},
        {"dropout", "0"}, {"mask_seen", "true"}, {"target", "auto"}, {"train_head", "true"}}},
      {"mora",
       {{"rank", "16"}, {"top_k", "0"}, {"temperature", "0.01"}, {"threshold", "0.2"}, {"report_samples", "256"},
        {"mask_seen", "true"}, {"target", "auto"}, {"train_head", "true"}}},
      {"osft",
       {{"target", "auto"}, {"head", "head"}, {"rank_rule", "progressive"}, {"mrr", "0.1"}, {"trr", "0.8"},
        {"fraction", "0.5"}, {"importance_data", "previous"}, {"importance_samples", "128"}, {"train_other", "false"},
        {"protect_start", "auto"}}},
  };
  for (const auto& [method, keys] : expected) {
    std::map<std::string, std::string> got;
    for (const auto& o : builtin_methods().get(method).options) got[o.key] = o.default_value;
    EXPECT_EQ(got, keys) << method;
    // And the defaults parse back (the registry passes them as text).
    EXPECT_NO_THROW(builtin_methods().make(MethodConfig(method, {}))) << method;
  }
}

}  // namespace
}  // namespace strata::continual
