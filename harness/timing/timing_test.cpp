// Statistics against hand-computed values (numpy.percentile's default method), the stopping rule of
// time_cpu, and the JSON shape that results files and reports read.
#include "harness/timing/timing.h"

#include <gtest/gtest.h>

#include <chrono>
#include <numeric>
#include <stdexcept>

namespace fb {
namespace {

std::vector<Sample> samples_of(std::initializer_list<double> ms) {
  std::vector<Sample> out;
  for (double x : ms) out.push_back(Sample{x, 0, false});
  return out;
}

TEST(Summarize, OddCount) {
  // sorted 1 2 3 4 5: q*(n-1) lands on elements, no interpolation.
  const TimingSummary s = summarize(samples_of({5, 1, 3, 2, 4}));
  EXPECT_EQ(s.n, 5u);
  EXPECT_EQ(s.throttled, 0u);
  EXPECT_DOUBLE_EQ(s.median_ms, 3);
  EXPECT_DOUBLE_EQ(s.p25_ms, 2);
  EXPECT_DOUBLE_EQ(s.p75_ms, 4);
  EXPECT_DOUBLE_EQ(s.iqr_ms, 2);
  EXPECT_DOUBLE_EQ(s.min_ms, 1);
  EXPECT_DOUBLE_EQ(s.max_ms, 5);
  EXPECT_DOUBLE_EQ(s.mean_ms, 3);
}

TEST(Summarize, EvenCountInterpolates) {
  // sorted 10 20 30 40: positions 0.75, 1.5, 2.25 -> 17.5, 25, 32.5 (np.percentile agrees).
  const TimingSummary s = summarize(samples_of({40, 10, 30, 20}));
  EXPECT_EQ(s.n, 4u);
  EXPECT_DOUBLE_EQ(s.p25_ms, 17.5);
  EXPECT_DOUBLE_EQ(s.median_ms, 25);
  EXPECT_DOUBLE_EQ(s.p75_ms, 32.5);
  EXPECT_DOUBLE_EQ(s.iqr_ms, 15);
  EXPECT_DOUBLE_EQ(s.mean_ms, 25);
}

TEST(Summarize, SingleAndEmpty) {
  const TimingSummary one = summarize(samples_of({7}));
  EXPECT_EQ(one.n, 1u);
  EXPECT_DOUBLE_EQ(one.median_ms, 7);
  EXPECT_DOUBLE_EQ(one.p25_ms, 7);
  EXPECT_DOUBLE_EQ(one.iqr_ms, 0);
  const TimingSummary none = summarize({});
  EXPECT_EQ(none.n, 0u);
  EXPECT_DOUBLE_EQ(none.median_ms, 0);
}

TEST(Summarize, ExcludesThrottledSamples) {
  std::vector<Sample> s = samples_of({1, 2, 3, 100, 200});
  s[3].throttled = s[4].throttled = true;
  const TimingSummary sum = summarize(s);
  EXPECT_EQ(sum.n, 3u);
  EXPECT_EQ(sum.throttled, 2u);
  EXPECT_DOUBLE_EQ(sum.median_ms, 2);
  EXPECT_DOUBLE_EQ(sum.max_ms, 3);
}

TEST(Summarize, AllThrottledFallsBackToAll) {
  std::vector<Sample> s = samples_of({4, 2});
  for (Sample& x : s) x.throttled = true;
  const TimingSummary sum = summarize(s);
  EXPECT_EQ(sum.n, 2u);
  EXPECT_EQ(sum.throttled, 2u);
  EXPECT_DOUBLE_EQ(sum.median_ms, 3);
}

void spin_for(std::chrono::microseconds d) {
  const auto until = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < until) {
  }
}

TEST(TimeCpu, StopsAtMinSamplesWhenTimeIsMet) {
  int calls = 0;
  TimingOptions opt;
  opt.warmup = 2;
  opt.min_samples = 25;
  opt.min_seconds = 0;
  const Timing t = time_cpu([&] { ++calls; }, opt);
  EXPECT_EQ(t.method, "cpu-steady-clock");
  EXPECT_EQ(t.samples.size(), 25u);
  EXPECT_EQ(calls, 27);  // warm-up calls are not samples
  EXPECT_EQ(t.summary.n, 25u);
}

TEST(TimeCpu, RunsUntilMinSecondsOfTimedWork) {
  TimingOptions opt;
  opt.warmup = 0;
  opt.min_samples = 1;
  opt.min_seconds = 0.03;
  const Timing t = time_cpu([] { spin_for(std::chrono::microseconds(2000)); }, opt);
  double total = 0;
  for (const Sample& s : t.samples) total += s.ms;
  EXPECT_GE(total, 30.0);
  // It stops as soon as the bound is met: without the last sample it was still short.
  EXPECT_LT(total - t.samples.back().ms, 30.0);
  EXPECT_GE(t.samples.size(), 2u);
  EXPECT_LE(t.samples.size(), 16u);  // each sample is at least 2 ms
  EXPECT_GE(t.summary.min_ms, 2.0);
}

TEST(TimeCpu, MaxSamplesCaps) {
  TimingOptions opt;
  opt.warmup = 0;
  opt.min_samples = 20;
  opt.min_seconds = 100;
  opt.max_samples = 7;
  const Timing t = time_cpu([] {}, opt);
  EXPECT_EQ(t.samples.size(), 7u);
}

// Back-to-back: N calls per sample, each sample the per-call time, the total time (not the per-call
// time) counted against min_seconds. Structure only, no timed assertions beyond loose sanity.
TEST(TimeCpu, BackToBackCallsNTimesPerSampleAndRecordsN) {
  int calls = 0;
  TimingOptions opt;
  opt.warmup = 2;
  opt.min_samples = 10;
  opt.min_seconds = 0;
  opt.launches_per_sample = 5;
  const Timing t = time_cpu([&] { ++calls; }, opt);
  EXPECT_EQ(t.method, "cpu-steady-clock-b2b");
  EXPECT_EQ(t.launches_per_sample, 5);
  EXPECT_EQ(t.samples.size(), 10u);
  EXPECT_EQ(calls, 2 + 10 * 5);  // warm-up stays one call per round
  EXPECT_EQ(to_json(t).at("launches_per_sample"), 5);
}

TEST(TimeCpu, BackToBackSampleIsPerCallAndMinSecondsCountsAllCalls) {
  TimingOptions opt;
  opt.warmup = 0;
  opt.min_samples = 1;
  opt.min_seconds = 0.03;
  opt.launches_per_sample = 4;
  const Timing t = time_cpu([] { spin_for(std::chrono::microseconds(1000)); }, opt);
  // Each call takes >= 1 ms, so a sample (the mean call) does too, and 4 calls per sample reach
  // 30 ms within 8 samples; had min_seconds counted per-call time it would have taken ~30.
  EXPECT_GE(t.summary.min_ms, 1.0);
  EXPECT_LE(t.samples.size(), 8u);
  double total = 0;
  for (const Sample& s : t.samples) total += s.ms * 4;
  EXPECT_GE(total, 30.0);
}

TEST(TimeCpu, DefaultIsOneCallPerSample) {
  TimingOptions opt;
  opt.warmup = 0;
  opt.min_samples = 3;
  opt.min_seconds = 0;
  const Timing t = time_cpu([] {}, opt);
  EXPECT_EQ(t.method, "cpu-steady-clock");
  EXPECT_EQ(t.launches_per_sample, 1);
}

TEST(TimingOptionsCheck, RejectsZeroLaunchesAndColdBackToBack) {
  TimingOptions opt;
  opt.launches_per_sample = 0;
  EXPECT_THROW(time_cpu([] {}, opt), std::invalid_argument);
  opt.launches_per_sample = 2;
  opt.cold = true;
  EXPECT_THROW(check_timing_options(opt), std::invalid_argument);
  opt.launches_per_sample = 1;
  EXPECT_NO_THROW(check_timing_options(opt));
  EXPECT_EQ(method_name("cuda-events", 1), "cuda-events");
  EXPECT_EQ(method_name("cuda-events", 2), "cuda-events-b2b");
}

TEST(TimingJson, CarriesSummaryAndEverySample) {
  Timing t;
  t.method = "cuda-events";
  t.cold = true;
  t.launch_gated = true;
  t.samples = samples_of({1, 2, 3});
  t.samples[2].throttled = true;
  t.samples[0].sm_clock_mhz = 1980;
  t.summary = summarize(t.samples);
  const nlohmann::json j = to_json(t);
  EXPECT_EQ(j.at("method"), "cuda-events");
  EXPECT_EQ(j.at("cold"), true);
  EXPECT_EQ(j.at("launch_gated"), true);
  EXPECT_EQ(j.at("launches_per_sample"), 1);
  const auto& s = j.at("summary");
  for (const char* key :
       {"n", "throttled", "median_ms", "p25_ms", "p75_ms", "iqr_ms", "min_ms", "max_ms", "mean_ms"}) {
    EXPECT_TRUE(s.contains(key)) << key;
  }
  EXPECT_EQ(s.at("n"), 2);
  EXPECT_EQ(s.at("throttled"), 1);
  EXPECT_DOUBLE_EQ(s.at("median_ms").get<double>(), 1.5);
  const auto& cols = j.at("samples");
  EXPECT_EQ(cols.at("ms"), nlohmann::json({1.0, 2.0, 3.0}));
  EXPECT_EQ(cols.at("sm_clock_mhz"), nlohmann::json({1980, 0, 0}));
  EXPECT_EQ(cols.at("throttled"), nlohmann::json({false, false, true}));
}

}  // namespace
}  // namespace fb
