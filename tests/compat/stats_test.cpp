// Reference values: exact rational arithmetic in python3 (fractions.Fraction sums of math.comb for the
// binomial tails; decimal with 50 digits for Wilson), since SciPy is not installed here. The Wilson
// intervals for 81/263, 15/148, 0/10 and 1/29 also match Newcombe (1998, Stat. Med. 17:857, Table I,
// method 3) to the 4 printed digits. Normal quantiles are the standard tabulated values.
#include <gtest/gtest.h>

#include "compat/stats.h"

#include <cmath>
#include <stdexcept>

using namespace strata::compat;

namespace {
constexpr double kZ975 = 1.959963984540054;
constexpr double kZ95 = 1.6448536269514722;
}  // namespace

TEST(CompatStats, NormalQuantile) {
  EXPECT_NEAR(normal_quantile(0.975), kZ975, 1e-13);
  EXPECT_NEAR(normal_quantile(0.95), kZ95, 1e-13);
  EXPECT_NEAR(normal_quantile(0.995), 2.5758293035489004, 1e-13);
  EXPECT_NEAR(normal_quantile(0.5), 0.0, 1e-15);
  EXPECT_NEAR(normal_quantile(0.025), -kZ975, 1e-13);
  EXPECT_NEAR(normal_quantile(1e-10), -6.361340902404056, 1e-9);
  EXPECT_THROW(normal_quantile(0.0), std::exception);
  EXPECT_THROW(normal_quantile(1.0), std::exception);
}

TEST(CompatStats, WilsonKnownValues) {
  struct Case {
    int64_t k, n;
    double z, low, high;
  };
  const Case cases[] = {
      {81, 263, kZ975, 0.25528851987827422, 0.36620957698280004},
      {15, 148, kZ975, 0.062386399530736283, 0.16048724172330803},
      {0, 10, kZ975, 0.0, 0.2775327998628892},
      {1, 29, kZ975, 0.0061132142927626618, 0.17175521879320285},
      {3, 1000, kZ95, 0.0011995624784162677, 0.0074824913019056905},
      {30, 1000, kZ95, 0.022316797647015992, 0.040219550998358902},
      {0, 500, kZ95, 0.0, 0.005381964629841942},
  };
  for (const auto& c : cases) {
    const Interval ci = wilson_interval(c.k, c.n, c.z);
    EXPECT_NEAR(ci.low, c.low, 1e-12) << c.k << "/" << c.n;
    EXPECT_NEAR(ci.high, c.high, 1e-12) << c.k << "/" << c.n;
  }
  // Newcombe's printed values (4 digits).
  EXPECT_NEAR(wilson_interval_alpha(81, 263, 0.05).low, 0.2553, 5e-5);
  EXPECT_NEAR(wilson_interval_alpha(81, 263, 0.05).high, 0.3662, 5e-5);
  // One-sided upper bound uses z = Φ⁻¹(1 − alpha); k = 0 closed form z²/(n + z²).
  EXPECT_NEAR(wilson_upper(30, 1000, 0.05), 0.040219550998358902, 1e-12);
  EXPECT_NEAR(wilson_upper(0, 500, 0.05), kZ95 * kZ95 / (500 + kZ95 * kZ95), 1e-14);
  EXPECT_EQ(wilson_upper(0, 0, 0.05), 1.0);
  EXPECT_EQ(wilson_interval(7, 7, kZ975).high, 1.0);
  EXPECT_THROW(wilson_interval(5, 4, kZ975), std::exception);
  EXPECT_THROW(wilson_upper(1, 10, 0.0), std::exception);
}

TEST(CompatStats, WilsonMonotoneInK) {
  double prev_low = -1.0, prev_high = -1.0;
  for (int64_t k = 0; k <= 200; ++k) {
    const Interval ci = wilson_interval(k, 200, kZ95);
    EXPECT_GT(ci.low, prev_low - (k == 0 ? 0.0 : 1e-300)) << k;
    EXPECT_GT(ci.high, prev_high) << k;
    EXPECT_LE(ci.low, static_cast<double>(k) / 200.0);
    EXPECT_GE(ci.high, static_cast<double>(k) / 200.0);
    prev_low = ci.low;
    prev_high = ci.high;
  }
}

TEST(CompatStats, McNemarExactKnownValues) {
  struct Case {
    int64_t b, c;
    double one, two;
  };
  const Case cases[] = {
      {10, 3, 0.046142578125, 0.09228515625},
      {3, 10, 0.98876953125, 0.09228515625},
      {5, 5, 0.623046875, 1.0},
      {0, 7, 1.0, 0.015625},
      {0, 1, 1.0, 1.0},
      {25, 40, 0.97682326283354437, 0.081681533941540055},
      {120, 80, 0.0028425779983751527, 0.0056851559967503055},
      {1000, 1100, 0.98624972024621216, 0.030720707864242296},
      {5000, 4700, 0.0011983016812888126, 0.0023966033625776252},
  };
  for (const auto& c : cases) {
    const McNemarResult r = mcnemar_exact(c.b, c.c);
    EXPECT_NEAR(r.p_one_sided, c.one, 1e-9 * c.one + 1e-15) << c.b << "," << c.c;
    EXPECT_NEAR(r.p_two_sided, c.two, 1e-9 * c.two + 1e-15) << c.b << "," << c.c;
  }
  const McNemarResult none = mcnemar_exact(0, 0);
  EXPECT_EQ(none.p_one_sided, 1.0);
  EXPECT_EQ(none.p_two_sided, 1.0);
  EXPECT_NEAR(mcnemar_exact(10, 3).chi2_cc, 36.0 / 13.0, 1e-15);
  EXPECT_THROW(mcnemar_exact(-1, 3), std::exception);
}

TEST(CompatStats, McNemarLargeCountsStayFinite) {
  // 10^7 discordant pairs: the direct product of binomial coefficients would overflow; the log-space
  // tail must give a proper probability, symmetric around b = c.
  const McNemarResult even = mcnemar_exact(5000000, 5000000);
  EXPECT_EQ(even.p_two_sided, 1.0);
  // P(X ≥ n/2) = 1/2 + P(X = n/2)/2, and P(X = n/2) = sqrt(2/(π n))·(1 + O(1/n)) (Stirling).
  EXPECT_NEAR(even.p_one_sided, 0.5 + 0.5 * std::sqrt(2.0 / (M_PI * 1e7)), 1e-9);
  const McNemarResult worse = mcnemar_exact(5010000, 4990000);  // z ≈ 6.3
  EXPECT_GT(worse.p_one_sided, 0.0);
  EXPECT_LT(worse.p_one_sided, 1e-8);
  EXPECT_NEAR(worse.p_two_sided, 2.0 * worse.p_one_sided, 1e-12);
  // Normal approximation with continuity correction: P(Z ≥ (b − n/2 − 0.5)/sqrt(n/4)).
  const double z = (5010000.0 - 5000000.0 - 0.5) / std::sqrt(10000000.0 / 4.0);
  EXPECT_NEAR(std::log(worse.p_one_sided), std::log(0.5 * std::erfc(z / std::sqrt(2.0))), 0.05);
}

TEST(CompatStats, HolmBonferroni) {
  // Hand-computed: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04 -> cummax.
  const HolmResult r = holm_bonferroni({0.01, 0.04, 0.03, 0.005}, 0.05);
  const std::vector<double> expected = {0.03, 0.06, 0.06, 0.02};
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(r.adjusted[i], expected[i], 1e-15) << i;
  EXPECT_EQ(r.reject, (std::vector<bool>{true, false, false, true}));
  const HolmResult capped = holm_bonferroni({0.5, 0.9}, 0.05);
  EXPECT_EQ(capped.adjusted, (std::vector<double>{1.0, 1.0}));
  EXPECT_TRUE(holm_bonferroni({}, 0.05).adjusted.empty());
  EXPECT_THROW(holm_bonferroni({1.5}, 0.05), std::exception);
}

TEST(CompatStats, DeltaAccWald) {
  // b = 10, c = 30, N = 1000: Δ = 0.02, var = (40 − 0.4)/1e6.
  const Interval ci = delta_acc_wald(10, 30, 1000, kZ975);
  const double half = kZ975 * std::sqrt(39.6 / 1e6);
  EXPECT_NEAR(ci.low, 0.02 - half, 1e-15);
  EXPECT_NEAR(ci.high, 0.02 + half, 1e-15);
}

TEST(CompatStats, TangoPairedDifference) {
  // References: restricted MLE by direct numeric maximisation of the multinomial likelihood (ternary
  // search, not the closed-form root used here), score by its definition, bounds by bisection (python3).
  // The ternary search is good to a few 1e-9 where the likelihood is flat; the closed form agrees with
  // the values below to 1e-12 where they differ.
  struct Case {
    int64_t b, c, n;
    double upper95, low975, high975;
  };
  const Case cases[] = {
      {0, 0, 100, 0.02634272078317433, -0.03699349820698569, 0.036993498206985685},
      {58, 12, 1000, 0.06041278294417935, 0.030576122555475774, 0.06340043129438284},
      {12, 2, 50, 0.32041338607671316, 0.06111240803421645, 0.34470874818507596},
      {3, 7, 200, 0.0068302052492293375, -0.05765393242155284, 0.0130854161113505},
      {20, 20, 500, 0.021382363217066196, -0.025757083693435334, 0.025757083426909647},
  };
  for (const auto& c : cases) {
    EXPECT_NEAR(tango_upper(c.b, c.c, c.n, 0.05), c.upper95, 5e-9) << c.b << "," << c.c << "/" << c.n;
    const Interval ci = tango_interval(c.b, c.c, c.n, kZ975);
    EXPECT_NEAR(ci.low, c.low975, 5e-9) << c.b << "," << c.c << "/" << c.n;
    EXPECT_NEAR(ci.high, c.high975, 5e-9) << c.b << "," << c.c << "/" << c.n;
  }
  // No discordant pairs: the bound is z²/(n + z²), where the paired Wald interval has zero width.
  EXPECT_NEAR(tango_upper(0, 0, 100, 0.05), kZ95 * kZ95 / (100 + kZ95 * kZ95), 1e-10);
  EXPECT_EQ(delta_acc_wald(0, 0, 100, kZ95).high, 0.0);
  EXPECT_NEAR(tango_upper(10, 0, 10, 0.05), 1.0, 1e-10);  // every item regressed
  EXPECT_THROW(tango_upper(6, 5, 10, 0.05), std::exception);
}
