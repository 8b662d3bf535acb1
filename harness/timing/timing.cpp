// Statistics, JSON and CPU timing: no CUDA here, so every build has them (DESIGN §5).
#include "harness/timing/timing.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <stdexcept>

namespace fb {

namespace {

// numpy.percentile's default ("linear"): position q * (n - 1) in the sorted data, interpolated
// between its two neighbours. Matching numpy lets a reader recompute any summary from the samples.
double percentile_sorted(const std::vector<double>& sorted, double q) {
  const double pos = q * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double frac = pos - static_cast<double>(lo);
  return sorted[lo] + frac * (sorted[hi] - sorted[lo]);
}

}  // namespace

std::string method_name(const char* base, int launches_per_sample) {
  return launches_per_sample > 1 ? std::string(base) + "-b2b" : std::string(base);
}

void check_timing_options(const TimingOptions& opt) {
  if (opt.launches_per_sample < 1)
    throw std::invalid_argument("timing: launches_per_sample " + std::to_string(opt.launches_per_sample) +
                                " < 1");
  // Only the first of N launches would see the flushed L2: neither a cold nor a hot figure.
  if (opt.launches_per_sample > 1 && opt.cold)
    throw std::invalid_argument("timing: cold timing takes one launch per sample");
}

TimingSummary summarize(const std::vector<Sample>& samples) {
  TimingSummary s;
  std::vector<double> ms;
  ms.reserve(samples.size());
  for (const Sample& x : samples) {
    if (x.throttled) {
      ++s.throttled;
    } else {
      ms.push_back(x.ms);
    }
  }
  // A run where every sample was throttled still needs a number; the throttled count says how far
  // to trust it.
  if (ms.empty()) {
    for (const Sample& x : samples) ms.push_back(x.ms);
  }
  if (ms.empty()) return s;
  std::sort(ms.begin(), ms.end());
  s.n = ms.size();
  s.median_ms = percentile_sorted(ms, 0.50);
  s.p25_ms = percentile_sorted(ms, 0.25);
  s.p75_ms = percentile_sorted(ms, 0.75);
  s.iqr_ms = s.p75_ms - s.p25_ms;
  s.min_ms = ms.front();
  s.max_ms = ms.back();
  s.mean_ms = std::accumulate(ms.begin(), ms.end(), 0.0) / static_cast<double>(ms.size());
  return s;
}

nlohmann::json to_json(const Timing& t) {
  const TimingSummary& s = t.summary;
  nlohmann::json j;
  j["method"] = t.method;
  j["cold"] = t.cold;
  j["launches_per_sample"] = t.launches_per_sample;
  j["launch_gated"] = t.launch_gated;
  j["summary"] = {{"n", s.n},           {"throttled", s.throttled}, {"median_ms", s.median_ms},
                  {"p25_ms", s.p25_ms}, {"p75_ms", s.p75_ms},       {"iqr_ms", s.iqr_ms},
                  {"min_ms", s.min_ms}, {"max_ms", s.max_ms},       {"mean_ms", s.mean_ms}};
  // Columns rather than one object per sample: thousands of samples stay compact and load straight
  // into numpy/pandas.
  nlohmann::json ms = nlohmann::json::array(), clk = nlohmann::json::array(), thr = nlohmann::json::array();
  for (const Sample& x : t.samples) {
    ms.push_back(x.ms);
    clk.push_back(x.sm_clock_mhz);
    thr.push_back(x.throttled);
  }
  j["samples"] = {{"ms", std::move(ms)}, {"sm_clock_mhz", std::move(clk)}, {"throttled", std::move(thr)}};
  return j;
}

Timing time_cpu(const std::function<void()>& fn, const TimingOptions& opt) {
  using clock = std::chrono::steady_clock;
  check_timing_options(opt);
  Timing t;
  const int n = opt.launches_per_sample;
  t.method = method_name("cpu-steady-clock", n);
  t.cold = opt.cold;  // recorded as asked; there is no CPU cache flush, so cold means nothing here
  t.launches_per_sample = n;
  for (int i = 0; i < opt.warmup; ++i) fn();
  double total_ms = 0;
  const double min_ms = opt.min_seconds * 1e3;
  while (static_cast<int>(t.samples.size()) < opt.max_samples &&
         (static_cast<int>(t.samples.size()) < opt.min_samples || total_ms < min_ms)) {
    const auto t0 = clock::now();
    for (int i = 0; i < n; ++i) fn();
    const auto t1 = clock::now();
    const double ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
    total_ms += ms;
    t.samples.push_back(Sample{ms / n, 0, false});
  }
  t.summary = summarize(t.samples);
  return t;
}

}  // namespace fb
