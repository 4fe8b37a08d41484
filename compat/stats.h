#pragma once
// Statistics for paired model comparison. Only <cmath> is needed: the binomial tails
// are summed in log space with lgamma, so counts in the millions neither overflow nor underflow.
#include <cstdint>
#include <vector>

namespace strata::compat {

/// Bounds of a proportion ([low, high] ⊂ [0, 1]) or of a difference of two proportions (⊂ [−1, 1]).
struct Interval {
  double low = 0.0;
  double high = 1.0;
};

/// Standard normal quantile Φ⁻¹(p), p ∈ (0, 1). Acklam's rational approximation refined by one Halley
/// step on erfc, accurate to ~1e-15 relative.
double normal_quantile(double p);

/// Wilson score interval for k successes in n trials at normal critical value z:
///   center = (p̂ + z²/(2n)) / (1 + z²/n),  half = z/(1 + z²/n) · sqrt(p̂(1−p̂)/n + z²/(4n²)).
/// n = 0 gives the uninformative [0, 1]. Requires 0 ≤ k ≤ n, z ≥ 0.
Interval wilson_interval(int64_t k, int64_t n, double z);

/// Two-sided (1 − alpha) Wilson interval: z = Φ⁻¹(1 − alpha/2).
Interval wilson_interval_alpha(int64_t k, int64_t n, double alpha);

/// One-sided (1 − alpha) Wilson upper bound, z = Φ⁻¹(1 − alpha) (1.645 at alpha = 0.05): the bound a
/// flip budget is checked against. For k = 0 it equals z²/(n + z²). n = 0 gives 1.
double wilson_upper(int64_t k, int64_t n, double alpha);

/// Exact McNemar test on the discordant pairs b = NF (old right, new wrong) and c = PF (old wrong,
/// new right). Under H0 (equal accuracy) b | b+c ~ Binomial(b+c, 1/2).
struct McNemarResult {
  int64_t b = 0;
  int64_t c = 0;
  double p_one_sided = 1.0;  ///< P(X ≥ b): evidence that the new model is worse
  double p_two_sided = 1.0;  ///< min(1, 2·min(P(X ≤ b), P(X ≥ b)))
  double chi2_cc = 0.0;      ///< continuity-corrected χ² = (|b−c|−1)²/(b+c), reported as an extra only
};
McNemarResult mcnemar_exact(int64_t b, int64_t c);

/// log P(X ≥ k) for X ~ Binomial(n, 1/2), computed by log-sum-exp over lgamma terms. k ≤ 0 gives 0.
double log_binom_half_upper_tail(int64_t k, int64_t n);

/// Holm–Bonferroni step-down correction (family-wise error rate alpha).
struct HolmResult {
  std::vector<double> adjusted;  ///< adjusted p-values in the input order, monotone in the sorted order
  std::vector<bool> reject;      ///< adjusted[i] ≤ alpha
};
HolmResult holm_bonferroni(const std::vector<double>& p_values, double alpha);

/// Paired Wald interval for Δacc = acc_new − acc_old = (c − b)/N, with
/// var = [(b + c) − (c − b)²/N] / N². Large-N only.
Interval delta_acc_wald(int64_t b, int64_t c, int64_t n, double z);

/// Tango's score interval for a paired difference of proportions θ = (b − c)/n, where b and c are the
/// two discordant counts of n paired items (for acc_old − acc_new: b = NF, c = PF). The bounds solve
///   S(θ) = (b − c − nθ) / sqrt(n·(2q̂(θ) + θ(1 − θ))) = ∓z,
/// with q̂(θ) the maximum-likelihood probability of the c cell under the constraint p_b − p_c = θ, the
/// positive root of 2n·q² + [(2n + c − b)·θ − (b + c)]·q − c·θ(1 − θ) = 0. Unlike the Wald interval it
/// does not collapse to a point when b = c = 0 (then the upper bound is z²/(n + z²), as Wilson's) and
/// keeps its coverage for small discordant counts. Bounds found by bisection to 1e-12; ⊂ [−1, 1].
Interval tango_interval(int64_t b, int64_t c, int64_t n, double z);

/// One-sided (1 − alpha) upper bound of (b − c)/n by Tango's score method, z = Φ⁻¹(1 − alpha).
double tango_upper(int64_t b, int64_t c, int64_t n, double alpha);

}  // namespace strata::compat
