// Gate statistics on synthetic samples: exact Mann-Whitney p against hand-counted and tabulated
// values, tie handling, known-shift detection, A/A false-flag rate, tiny samples.
#include "harness/gate/stats.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace fb::gate {
namespace {

std::vector<double> noisy(std::mt19937_64& rng, size_t n, double center, double rel_sd) {
  std::normal_distribution<double> d(center, center * rel_sd);
  std::vector<double> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

TEST(MannWhitney, ExactSmallSamplesByHand) {
  // a = {1,2}, b = {3,4}: U(a) = 0; of C(4,2) = 6 arrangements one has U = 0, so P(U <= 0) = 1/6 and
  // the two-sided p is 1/3.
  const auto r = mann_whitney({1, 2}, {3, 4});
  EXPECT_TRUE(r.exact);
  EXPECT_DOUBLE_EQ(r.u, 0);
  EXPECT_NEAR(r.p, 1.0 / 3.0, 1e-12);
  // Fully separated 5 vs 5: p = 2 / C(10,5) = 2/252 (two-sided).
  const auto s = mann_whitney({1, 2, 3, 4, 5}, {6, 7, 8, 9, 10});
  EXPECT_NEAR(s.p, 2.0 / 252.0, 1e-12);
  // Symmetric in the arguments.
  EXPECT_NEAR(mann_whitney({6, 7, 8, 9, 10}, {1, 2, 3, 4, 5}).p, s.p, 1e-12);
}

TEST(MannWhitney, ExactMatchesTable) {
  // U and the two-sided p by brute-force enumeration of all C(14,6) = 3003 splits (Python, once):
  // U = 15, p = 2 * P(U <= 15) = 0.282384...
  const auto r = mann_whitney({1, 3, 5, 7, 9, 11}, {2, 4, 6, 8, 10, 12, 14, 16});
  EXPECT_TRUE(r.exact);
  EXPECT_DOUBLE_EQ(r.u, 15);
  EXPECT_NEAR(r.p, 0.28238428238428237, 1e-12);
}

TEST(MannWhitney, TiesUseNormalApproximationWithCorrection) {
  // Every value tied: no evidence at all.
  const auto all_tied = mann_whitney({1, 1, 1}, {1, 1, 1});
  EXPECT_FALSE(all_tied.exact);
  EXPECT_DOUBLE_EQ(all_tied.u, 4.5);
  EXPECT_DOUBLE_EQ(all_tied.p, 1.0);
  // Quantized timings (many exact ties, as CUDA events at 0.5 us steps give) still separate.
  std::vector<double> a(200), b(200);
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = 10.0 + 0.5 * static_cast<double>(i % 3);
    b[i] = 10.5 + 0.5 * static_cast<double>(i % 3);
  }
  const auto r = mann_whitney(a, b);
  EXPECT_FALSE(r.exact);
  EXPECT_LT(r.p, 1e-6);
  // The tie correction shrinks the variance: p is smaller than without it would be.
}

TEST(MannWhitney, EmptyInputIsNoEvidence) { EXPECT_DOUBLE_EQ(mann_whitney({}, {1, 2}).p, 1.0); }

TEST(Bootstrap, IntervalCoversTheShift) {
  std::mt19937_64 rng(7);
  const auto a = noisy(rng, 400, 100.0, 0.02), b = noisy(rng, 400, 105.0, 0.02);
  const auto iv = bootstrap_relative_change(a, b, 0.9, 500, 3);
  EXPECT_NEAR(iv.estimate, 0.05, 0.01);
  EXPECT_LT(iv.lo, iv.estimate);
  EXPECT_GT(iv.hi, iv.estimate);
  EXPECT_LT(iv.lo, 0.05 + 0.01);
  EXPECT_GT(iv.hi, 0.05 - 0.01);
  // Deterministic for a seed.
  const auto again = bootstrap_relative_change(a, b, 0.9, 500, 3);
  EXPECT_DOUBLE_EQ(iv.lo, again.lo);
  EXPECT_DOUBLE_EQ(iv.hi, again.hi);
}

TEST(Decide, KnownShiftIsSlowerAndFaster) {
  std::mt19937_64 rng(11);
  GateOptions o;
  const auto a = noisy(rng, 300, 50.0, 0.01);
  EXPECT_EQ(decide(a, noisy(rng, 300, 50.0 * 1.05, 0.01), o).change, Change::slower);
  EXPECT_EQ(decide(a, noisy(rng, 300, 50.0 * 0.95, 0.01), o).change, Change::faster);
}

TEST(Decide, ThreePercentSlowdownCaughtAtLeast95Percent) {
  // The calibration target (issue 6): a true 3 % slowdown with 1 % sample noise and 0.4 % run-to-run
  // drift of the median is flagged in >= 95 % of trials.
  std::mt19937_64 rng(13);
  std::normal_distribution<double> drift(0.0, 0.004);
  GateOptions o;
  o.resamples = 200;
  int caught = 0;
  const int trials = 200;
  for (int t = 0; t < trials; ++t) {
    const auto a = noisy(rng, 200, 20.0 * (1 + drift(rng)), 0.01);
    const auto b = noisy(rng, 200, 20.0 * 1.03 * (1 + drift(rng)), 0.01);
    o.seed = static_cast<uint64_t>(t);
    caught += decide(a, b, o).change == Change::slower;
  }
  EXPECT_GE(caught, trials * 95 / 100);
}

TEST(Decide, AAFlagsAtMostOnePercent) {
  std::mt19937_64 rng(17);
  std::normal_distribution<double> drift(0.0, 0.004);
  GateOptions o;
  o.resamples = 200;
  int flagged = 0;
  const int trials = 300;
  for (int t = 0; t < trials; ++t) {
    const auto a = noisy(rng, 200, 20.0 * (1 + drift(rng)), 0.01);
    const auto b = noisy(rng, 200, 20.0 * (1 + drift(rng)), 0.01);
    o.seed = static_cast<uint64_t>(t);
    const Change c = decide(a, b, o).change;
    flagged += c == Change::slower || c == Change::faster;
  }
  EXPECT_LE(flagged, trials / 100);
}

TEST(Decide, TinySamplesAreUnsure) {
  GateOptions o;
  EXPECT_EQ(decide({1, 1, 1}, {2, 2, 2}, o).change, Change::unsure);  // below min_samples
  // Five each, fully separated and 10 % apart: exact p = 2/252 = 0.0079 < 0.01 -> SLOWER.
  EXPECT_EQ(decide({10, 10.1, 10.2, 10.3, 10.4}, {11, 11.1, 11.2, 11.3, 11.4}, o).change, Change::slower);
  // Four each cannot reach p < 0.01 (min two-sided exact p = 2/70): UNSURE, not SAME.
  o.min_samples = 4;
  EXPECT_EQ(decide({10, 10.1, 10.2, 10.3}, {11, 11.1, 11.2, 11.3}, o).change, Change::unsure);
}

TEST(Decide, IdenticalSamplesAreSame) {
  std::vector<double> a(50, 3.0);
  EXPECT_EQ(decide(a, a, GateOptions{}).change, Change::same);
}

TEST(Decide, ShiftBelowTimerResolutionIsNeverFlagged) {
  // Samples in ms, as the gate gets them. A 3 % shift of a 4 us kernel is 0.12 us, below the CUDA
  // event timer's ~0.5 us: however tight the samples, not SLOWER. The widened interval reaches +3 %,
  // so not SAME either: UNSURE, saying why.
  std::mt19937_64 rng(23);
  GateOptions o;
  const auto a4 = noisy(rng, 500, 0.004, 0.002), b4 = noisy(rng, 500, 0.004 * 1.03, 0.002);
  const Decision d4 = decide(a4, b4, o);
  EXPECT_LT(d4.test.p, 1e-6);  // the samples alone would call it
  EXPECT_TRUE(d4.below_resolution);
  EXPECT_EQ(d4.change, Change::unsure) << d4.why;
  EXPECT_NE(d4.why.find("below the timer resolution (0.5 us)"), std::string::npos) << d4.why;
  // Without the floor the same samples are SLOWER: the floor is what decides.
  GateOptions no_floor = o;
  no_floor.resolution_ms = 0;
  EXPECT_EQ(decide(a4, b4, no_floor).change, Change::slower);
  // A sub-resolution shift well inside +-3 % stays SAME.
  EXPECT_EQ(decide(a4, noisy(rng, 500, 0.004 * 1.002, 0.002), o).change, Change::same);
  // Faster mirrors it.
  EXPECT_EQ(decide(a4, noisy(rng, 500, 0.004 * 0.97, 0.002), o).change, Change::unsure);
  // The same 3 % on a 40 us kernel is 1.2 us: resolved, SLOWER.
  const auto a40 = noisy(rng, 500, 0.040, 0.002), b40 = noisy(rng, 500, 0.040 * 1.03, 0.002);
  const Decision d40 = decide(a40, b40, o);
  EXPECT_FALSE(d40.below_resolution);
  EXPECT_EQ(d40.change, Change::slower) << d40.why;
}

TEST(Decide, SignificantButTinyChangeIsSame) {
  std::mt19937_64 rng(19);
  const auto a = noisy(rng, 2000, 100.0, 0.002), b = noisy(rng, 2000, 100.5, 0.002);
  const auto d = decide(a, b, GateOptions{});
  EXPECT_LT(d.test.p, 1e-6);
  EXPECT_EQ(d.change, Change::same);
}

}  // namespace
}  // namespace fb::gate
