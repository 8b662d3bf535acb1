#include "harness/gate/stats.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace fb::gate {

namespace {

// P(U <= u) under the null for untied samples of sizes m and n: counts of arrangements by U
// (Mann & Whitney 1947 recurrence f(m,n,u) = f(m-1,n,u-n) + f(m,n-1,u)), as doubles: C(50,25)
// is about 1.3e14, exact in a double.
double exact_cdf(size_t m, size_t n, double u) {
  const size_t umax = m * n;
  // f[i][j] over u, built up to (m, n) one dimension at a time.
  std::vector<std::vector<std::vector<double>>> f(m + 1, std::vector<std::vector<double>>(n + 1));
  for (size_t i = 0; i <= m; ++i) {
    for (size_t j = 0; j <= n; ++j) {
      f[i][j].assign(i * j + 1, 0.0);
      if (i == 0 || j == 0) {
        f[i][j][0] = 1.0;
        continue;
      }
      for (size_t k = 0; k <= i * j; ++k) {
        double v = 0;
        if (k >= j && k - j <= (i - 1) * j) v += f[i - 1][j][k - j];  // largest value is an a: +j pairs
        if (k <= i * (j - 1)) v += f[i][j - 1][k];                    // largest value is a b
        f[i][j][k] = v;
      }
    }
  }
  const auto& dist = f[m][n];
  const double total = std::accumulate(dist.begin(), dist.end(), 0.0);
  double below = 0;
  for (size_t k = 0; k <= umax && static_cast<double>(k) <= u + 1e-9; ++k) below += dist[k];
  return below / total;
}

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double resampled_median(const std::vector<double>& v, std::vector<double>& scratch, uint64_t& rng) {
  scratch.resize(v.size());
  for (auto& x : scratch) x = v[splitmix64(rng) % v.size()];
  return median(std::move(scratch));
}

double quantile_sorted(const std::vector<double>& s, double q) {
  if (s.empty()) return std::numeric_limits<double>::quiet_NaN();
  const double pos = q * static_cast<double>(s.size() - 1);
  const size_t i = static_cast<size_t>(pos);
  const double frac = pos - static_cast<double>(i);
  return i + 1 < s.size() ? s[i] + frac * (s[i + 1] - s[i]) : s[i];
}

}  // namespace

double median(std::vector<double> v) {
  if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
  const size_t mid = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid), v.end());
  const double hi = v[mid];
  if (v.size() % 2) return hi;
  return 0.5 * (hi + *std::max_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid)));
}

MannWhitney mann_whitney(const std::vector<double>& a, const std::vector<double>& b) {
  MannWhitney r;
  const size_t n1 = a.size(), n2 = b.size(), n = n1 + n2;
  if (n1 == 0 || n2 == 0) return r;
  std::vector<std::pair<double, int>> all;
  all.reserve(n);
  for (double x : a) all.emplace_back(x, 0);
  for (double x : b) all.emplace_back(x, 1);
  std::sort(all.begin(), all.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
  double rank_sum_a = 0, tie_term = 0;
  bool ties = false;
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j < n && all[j].first == all[i].first) ++j;
    const double t = static_cast<double>(j - i);
    const double avg_rank = 0.5 * static_cast<double>(i + 1 + j);  // ranks i+1 .. j
    for (size_t k = i; k < j; ++k)
      if (all[k].second == 0) rank_sum_a += avg_rank;
    if (t > 1) {
      ties = true;
      tie_term += t * t * t - t;
    }
    i = j;
  }
  r.u = rank_sum_a - static_cast<double>(n1) * static_cast<double>(n1 + 1) / 2.0;
  const double mean = static_cast<double>(n1) * static_cast<double>(n2) / 2.0;
  if (!ties && n1 <= kExactMaxN && n2 <= kExactMaxN) {
    r.exact = true;
    const double lower = exact_cdf(n1, n2, r.u);
    const double upper = 1.0 - exact_cdf(n1, n2, r.u - 1.0);  // P(U >= u)
    r.p = std::min(1.0, 2.0 * std::min(lower, upper));
    return r;
  }
  const double nn = static_cast<double>(n);
  const double var =
      static_cast<double>(n1) * static_cast<double>(n2) / 12.0 * ((nn + 1.0) - tie_term / (nn * (nn - 1.0)));
  if (var <= 0) {  // every value tied: no evidence of a difference
    r.p = 1.0;
    return r;
  }
  const double z = std::max(0.0, std::abs(r.u - mean) - 0.5) / std::sqrt(var);
  r.p = std::min(1.0, std::erfc(z / std::sqrt(2.0)));
  return r;
}

Interval bootstrap_relative_change(const std::vector<double>& a, const std::vector<double>& b,
                                   double confidence, int resamples, uint64_t seed) {
  Interval iv;
  iv.estimate = median(b) / median(a) - 1.0;
  iv.lo = iv.hi = iv.estimate;
  if (a.size() < 2 || b.size() < 2 || resamples < 2) return iv;
  uint64_t rng = seed;
  std::vector<double> scratch, changes;
  changes.reserve(static_cast<size_t>(resamples));
  for (int i = 0; i < resamples; ++i) {
    const double ma = resampled_median(a, scratch, rng);
    const double mb = resampled_median(b, scratch, rng);
    changes.push_back(mb / ma - 1.0);
  }
  std::sort(changes.begin(), changes.end());
  const double tail = (1.0 - confidence) / 2.0;
  iv.lo = quantile_sorted(changes, tail);
  iv.hi = quantile_sorted(changes, 1.0 - tail);
  return iv;
}

const char* to_string(Change c) {
  switch (c) {
    case Change::faster:
      return "FASTER";
    case Change::slower:
      return "SLOWER";
    case Change::same:
      return "SAME";
    case Change::unsure:
      return "UNSURE";
  }
  return "?";
}

Decision decide(const std::vector<double>& base, const std::vector<double>& next, const GateOptions& o) {
  Decision d;
  if (base.size() < o.min_samples || next.size() < o.min_samples) {
    d.why = fmt::format("too few samples ({} vs {}; need {})", base.size(), next.size(), o.min_samples);
    d.change_interval.estimate = median(next) / median(base) - 1.0;
    return d;
  }
  d.test = mann_whitney(base, next);
  d.change_interval = bootstrap_relative_change(base, next, o.confidence, o.resamples, o.seed);
  const Interval& iv = d.change_interval;
  d.lo = std::min(iv.lo, iv.estimate - o.noise_floor);
  d.hi = std::max(iv.hi, iv.estimate + o.noise_floor);
  const bool significant = d.test.p < o.alpha;
  // A shift the timer cannot resolve is not evidence of a code change, however tight the samples:
  // run-to-run it moves whole microsecond kernels by several percent.
  const double delta = median(next) - median(base);
  d.below_resolution = std::abs(delta) < o.resolution_ms;
  if (!d.below_resolution && significant && iv.lo > 0 && d.hi >= o.min_effect) {
    d.change = Change::slower;
    d.why = fmt::format("p={:.2g} < {:g} and a slowdown of {:.1f}% is within [{:+.2f}%, {:+.2f}%]", d.test.p,
                        o.alpha, 100 * o.min_effect, 100 * d.lo, 100 * d.hi);
  } else if (!d.below_resolution && significant && iv.hi < 0 && d.lo <= -o.min_effect) {
    d.change = Change::faster;
    d.why = fmt::format("p={:.2g} < {:g}, interval [{:+.2f}%, {:+.2f}%]", d.test.p, o.alpha, 100 * d.lo,
                        100 * d.hi);
  } else if (d.lo > -o.min_effect && d.hi < o.min_effect) {
    d.change = Change::same;
    d.why = fmt::format("interval [{:+.2f}%, {:+.2f}%] within +-{:.1f}%", 100 * d.lo, 100 * d.hi,
                        100 * o.min_effect);
  } else if (d.below_resolution) {
    d.change = Change::unsure;
    // Times are in ms: "us" reads right for the timing rows (the cycle view scales the floor).
    d.why = fmt::format(
        "change {:+.3g} us is below the timer resolution ({:g} us); interval [{:+.2f}%, {:+.2f}%], p={:.2g}",
        1e3 * delta, 1e3 * o.resolution_ms, 100 * d.lo, 100 * d.hi, d.test.p);
  } else {
    d.change = Change::unsure;
    d.why = fmt::format("p={:.2g}, interval [{:+.2f}%, {:+.2f}%] spans the +-{:.1f}% threshold", d.test.p,
                        100 * d.lo, 100 * d.hi, 100 * o.min_effect);
  }
  return d;
}

}  // namespace fb::gate
