#include "compat/stats.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace strata::compat {

double normal_quantile(double p) {
  TORCH_CHECK(p > 0.0 && p < 1.0, "strata::compat::normal_quantile(): p must be in (0, 1), got ", p);
  // Acklam's rational approximation (relative error 1.15e-9) ...
  static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                             1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
  static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                             6.680131188771972e+01,  -1.328068155288572e+01};
  static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                             -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
  static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                             3.754408661907416e+00};
  const double p_low = 0.02425;
  double x;
  if (p < p_low) {
    const double q = std::sqrt(-2.0 * std::log(p));
    x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0);
  } else if (p <= 1.0 - p_low) {
    const double q = p - 0.5;
    const double r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0);
  } else {
    const double q = std::sqrt(-2.0 * std::log1p(-p));
    x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0);
  }
  // ... refined by one Halley step on the exact CDF, which brings it to full double precision.
  const double e = 0.5 * std::erfc(-x / std::sqrt(2.0)) - p;
  const double u = e * std::sqrt(2.0 * M_PI) * std::exp(x * x / 2.0);
  return x - u / (1.0 + x * u / 2.0);
}

Interval wilson_interval(int64_t k, int64_t n, double z) {
  TORCH_CHECK(n >= 0 && k >= 0 && k <= n, "strata::compat::wilson_interval(): need 0 <= k <= n, got k=", k,
              " n=", n);
  TORCH_CHECK(z >= 0.0, "strata::compat::wilson_interval(): z must be >= 0, got ", z);
  if (n == 0) return {0.0, 1.0};
  const double nn = static_cast<double>(n);
  const double p = static_cast<double>(k) / nn;
  const double z2 = z * z;
  const double denom = 1.0 + z2 / nn;
  const double center = (p + z2 / (2.0 * nn)) / denom;
  const double half = z / denom * std::sqrt(p * (1.0 - p) / nn + z2 / (4.0 * nn * nn));
  // Exact endpoints at k = 0 and k = n (the formula gives them up to rounding).
  const double low = k == 0 ? 0.0 : std::max(0.0, center - half);
  const double high = k == n ? 1.0 : std::min(1.0, center + half);
  return {low, high};
}

Interval wilson_interval_alpha(int64_t k, int64_t n, double alpha) {
  TORCH_CHECK(alpha > 0.0 && alpha < 1.0, "strata::compat::wilson_interval_alpha(): alpha must be in (0, 1), got ",
              alpha);
  return wilson_interval(k, n, normal_quantile(1.0 - alpha / 2.0));
}

double wilson_upper(int64_t k, int64_t n, double alpha) {
  TORCH_CHECK(alpha > 0.0 && alpha < 1.0, "strata::compat::wilson_upper(): alpha must be in (0, 1), got ", alpha);
  return wilson_interval(k, n, normal_quantile(1.0 - alpha)).high;
}

namespace {

// Loader's (2000) saddle-point pieces: log binomial probabilities without the catastrophic cancellation of
// lgamma(n+1) − lgamma(k+1) − lgamma(n−k+1) (which loses ~1e-8 absolute at n = 1e7).
// stirlerr(n) = log n! − log(sqrt(2πn)·(n/e)^n).
double stirlerr(double n) {
  if (n <= 15.0) return std::lgamma(n + 1.0) - (n + 0.5) * std::log(n) + n - 0.5 * std::log(2.0 * M_PI);
  const double s0 = 1.0 / 12, s1 = 1.0 / 360, s2 = 1.0 / 1260, s3 = 1.0 / 1680, s4 = 1.0 / 1188;
  const double nn = n * n;
  return (s0 - (s1 - (s2 - (s3 - s4 / nn) / nn) / nn) / nn) / n;
}

// bd0(x, m) = x·log(x/m) + m − x, by a series when x ≈ m.
double bd0(double x, double m) {
  if (std::abs(x - m) < 0.1 * (x + m)) {
    const double v = (x - m) / (x + m);
    double s = (x - m) * v;
    double ej = 2.0 * x * v;
    for (int j = 1; j < 1000; ++j) {
      ej *= v * v;
      const double s1 = s + ej / (2 * j + 1);
      if (s1 == s) return s1;
      s = s1;
    }
    return s;
  }
  return x * std::log(x / m) + m - x;
}

// log P(X = k), X ~ Binomial(n, 1/2).
double log_binom_half_pmf(int64_t k, int64_t n) {
  const double nn = static_cast<double>(n);
  if (k == 0 || k == n) return -nn * std::log(2.0);
  const double kk = static_cast<double>(k), rest = nn - kk, half = nn / 2.0;
  return stirlerr(nn) - stirlerr(kk) - stirlerr(rest) - bd0(kk, half) - bd0(rest, half) +
         0.5 * std::log(nn / (2.0 * M_PI * kk * rest));
}

}  // namespace

double log_binom_half_upper_tail(int64_t k, int64_t n) {
  TORCH_CHECK(n >= 0, "strata::compat::log_binom_half_upper_tail(): n must be >= 0, got ", n);
  if (k <= 0) return 0.0;
  if (k > n) return -std::numeric_limits<double>::infinity();
  // Later terms by the exact ratio P(j+1)/P(j) = (n−j)/(j+1); one rounded log per step, near 0 around
  // the mode, so the accumulated error stays ~1e-13 even for millions of terms.
  double l = log_binom_half_pmf(k, n);
  double m = l;  // online log-sum-exp: result = m + log(s)
  double s = 1.0;
  for (int64_t j = k; j < n; ++j) {
    l += std::log(static_cast<double>(n - j) / static_cast<double>(j + 1));
    if (l > m) {
      s = s * std::exp(m - l) + 1.0;
      m = l;
    } else {
      s += std::exp(l - m);
      // Past the mode the terms only decrease; once below 2^-60 of the running maximum they cannot
      // change s in double precision any more.
      if (2 * (j + 1) > n && l < m - 42.0) break;
    }
  }
  return m + std::log(s);
}

McNemarResult mcnemar_exact(int64_t b, int64_t c) {
  TORCH_CHECK(b >= 0 && c >= 0, "strata::compat::mcnemar_exact(): counts must be >= 0, got b=", b, " c=", c);
  McNemarResult r;
  r.b = b;
  r.c = c;
  const int64_t n = b + c;
  if (n == 0) return r;  // no discordant pairs: no evidence either way, p = 1
  const double upper = std::exp(log_binom_half_upper_tail(b, n));      // P(X ≥ b)
  const double lower = std::exp(log_binom_half_upper_tail(n - b, n));  // P(X ≤ b) by symmetry
  r.p_one_sided = std::min(1.0, upper);
  r.p_two_sided = std::min(1.0, 2.0 * std::min(upper, lower));
  const double diff = std::max(0.0, std::abs(static_cast<double>(b - c)) - 1.0);
  r.chi2_cc = diff * diff / static_cast<double>(n);
  return r;
}

HolmResult holm_bonferroni(const std::vector<double>& p_values, double alpha) {
  TORCH_CHECK(alpha > 0.0 && alpha < 1.0, "strata::compat::holm_bonferroni(): alpha must be in (0, 1), got ",
              alpha);
  const size_t m = p_values.size();
  for (size_t i = 0; i < m; ++i)
    TORCH_CHECK(p_values[i] >= 0.0 && p_values[i] <= 1.0,
                "strata::compat::holm_bonferroni(): p-value ", i, " is not in [0, 1]: ", p_values[i]);
  std::vector<size_t> order(m);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return p_values[a] < p_values[b]; });
  HolmResult r;
  r.adjusted.assign(m, 1.0);
  r.reject.assign(m, false);
  double running = 0.0;
  for (size_t rank = 0; rank < m; ++rank) {
    const size_t i = order[rank];
    running = std::max(running, std::min(1.0, static_cast<double>(m - rank) * p_values[i]));
    r.adjusted[i] = running;
    r.reject[i] = running <= alpha;
  }
  return r;
}

Interval delta_acc_wald(int64_t b, int64_t c, int64_t n, double z) {
  TORCH_CHECK(b >= 0 && c >= 0 && n > 0 && b + c <= n,
              "strata::compat::delta_acc_wald(): need b, c >= 0, n > 0, b + c <= n; got b=", b, " c=", c, " n=", n);
  const double nn = static_cast<double>(n);
  const double d = static_cast<double>(c - b);
  const double var = std::max(0.0, (static_cast<double>(b + c) - d * d / nn) / (nn * nn));
  const double half = z * std::sqrt(var);
  return {d / nn - half, d / nn + half};
}

namespace {

// Tango's score statistic at θ (decreasing in θ).
double tango_score(int64_t b, int64_t c, int64_t n, double theta) {
  const double nn = static_cast<double>(n), bb = static_cast<double>(b), cc = static_cast<double>(c);
  const double lin = (2.0 * nn + cc - bb) * theta - (bb + cc);
  const double t1 = theta * (1.0 - theta);
  const double q = (-lin + std::sqrt(std::max(0.0, lin * lin + 8.0 * nn * cc * t1))) / (4.0 * nn);
  const double var = nn * (2.0 * q + t1);
  const double num = bb - cc - nn * theta;
  if (var <= 0.0) return num == 0.0 ? 0.0 : (num > 0.0 ? HUGE_VAL : -HUGE_VAL);
  return num / std::sqrt(var);
}

}  // namespace

Interval tango_interval(int64_t b, int64_t c, int64_t n, double z) {
  TORCH_CHECK(b >= 0 && c >= 0 && n > 0 && b + c <= n,
              "strata::compat::tango_interval(): need b, c >= 0, n > 0, b + c <= n; got b=", b, " c=", c, " n=", n);
  TORCH_CHECK(z >= 0.0, "strata::compat::tango_interval(): z must be >= 0, got ", z);
  const double est = static_cast<double>(b - c) / static_cast<double>(n);
  // Upper: the largest θ ≥ est with S(θ) ≥ −z; lower: the smallest θ ≤ est with S(θ) ≤ z.
  double lo = est, hi = 1.0;
  while (hi - lo > 1e-13) {
    const double mid = 0.5 * (lo + hi);
    (tango_score(b, c, n, mid) >= -z ? lo : hi) = mid;
  }
  const double upper = hi;
  lo = -1.0;
  hi = est;
  while (hi - lo > 1e-13) {
    const double mid = 0.5 * (lo + hi);
    (tango_score(b, c, n, mid) <= z ? hi : lo) = mid;
  }
  return {lo, upper};
}

double tango_upper(int64_t b, int64_t c, int64_t n, double alpha) {
  TORCH_CHECK(alpha > 0.0 && alpha < 1.0, "strata::compat::tango_upper(): alpha must be in (0, 1), got ", alpha);
  return tango_interval(b, c, n, normal_quantile(1.0 - alpha)).high;
}

}  // namespace strata::compat
