#pragma once
// Two-sample statistics for the regression gate (DESIGN §6): Mann-Whitney U on the kept timing
// samples (exact distribution for small untied samples, normal approximation with tie and
// continuity correction otherwise) and a percentile-bootstrap interval of the relative change of
// the median. Pure C++ so the gate and its calibration run and are tested without a GPU.
#include <cstdint>
#include <string>
#include <vector>

namespace fb::gate {

struct MannWhitney {
  double u = 0;        // U of the first sample: pairs (a, b) with a > b, ties counting 1/2
  double p = 1;        // two-sided p-value
  bool exact = false;  // exact null distribution (no ties, both n <= kExactMaxN) vs normal approx
};
inline constexpr size_t kExactMaxN = 25;

// Two-sided test of "a and b come from the same distribution". Empty input gives p = 1.
MannWhitney mann_whitney(const std::vector<double>& a, const std::vector<double>& b);

double median(std::vector<double> v);  // by value: partially sorts its copy; NaN when empty

struct Interval {
  double estimate = 0;  // median(b) / median(a) - 1
  double lo = 0, hi = 0;
};

// Percentile bootstrap of median(b)/median(a) - 1: `resamples` resamplings of each sample with
// replacement; [lo, hi] holds the central `confidence` share of the resampled changes.
// Deterministic for a seed.
Interval bootstrap_relative_change(const std::vector<double>& a, const std::vector<double>& b,
                                   double confidence, int resamples, uint64_t seed);

enum class Change { faster, slower, same, unsure };
const char* to_string(Change c);

struct GateOptions {
  double alpha = 0.01;          // Mann-Whitney significance level
  double min_effect = 0.03;     // smallest relative slowdown the gate must catch
  double noise_floor = 0.0125;  // run-to-run drift the within-run bootstrap cannot see: the interval
                                // is widened to at least +-noise_floor around the estimate
  double confidence = 0.90;     // two-sided bootstrap interval (one-sided 95 % per side)
  int resamples = 500;          // 5 % / 95 % quantiles of 500 resamples: enough for a yes/no gate
  size_t min_samples = 5;       // fewer kept samples on either side: UNSURE
  // Smallest change of the median the timer resolves, in the samples' unit (ms for times). CUDA
  // events measure "in milliseconds with a resolution of around 0.5 microseconds" (CUDA Runtime API,
  // cudaEventElapsedTime, https://docs.nvidia.com/cuda/cuda-runtime-api/group__CUDART__EVENT.html).
  // On an H200 the gate's A/A flags were all run-to-run shifts of 0.1-0.35 us on 4-15 us kernels
  // (results/nvidia-h200/2026-11-22-calibration): relatively large, absolutely below the timer.
  double resolution_ms = 0.0005;
  uint64_t seed = 1;
};

struct Decision {
  Change change = Change::unsure;
  MannWhitney test;
  Interval change_interval;       // bootstrap interval, before widening
  double lo = 0, hi = 0;          // after widening by the noise floor
  bool below_resolution = false;  // |median change| < GateOptions::resolution_ms
  std::string why;
};

// SLOWER: significant (p < alpha), the bootstrap interval lies above 0 and the widened interval
// reaches +min_effect, so a true slowdown of min_effect is caught even when this run's estimate
// lands a little below it. FASTER mirrors it. SAME: the widened interval lies inside
// (-min_effect, +min_effect). Everything else (too noisy or too few samples) is UNSURE.
// Timer floor: when |median(next) - median(base)| < resolution_ms the change is never SLOWER or
// FASTER, only SAME (interval inside +-min_effect) or UNSURE ("below the timer resolution").
Decision decide(const std::vector<double>& base, const std::vector<double>& next, const GateOptions& o);

}  // namespace fb::gate
