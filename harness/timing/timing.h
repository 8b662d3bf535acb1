#pragma once
// Timing contract (DESIGN §5): warm-up, then at least `min_samples` samples AND at least
// `min_seconds` of timed work (capped by max_samples), median + IQR with every sample kept; hot
// (same buffers) and cold (L2 flushed before each sample) are separate measurements; SM clock read
// per sample and throttled samples flagged. CPU timing uses the same statistics, labelled as such.
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

// cudaStream_t without including CUDA headers (CUDA declares it the same way), so harness code
// compiles in a CPU-only build.
struct CUstream_st;
using cudaStream_t = CUstream_st*;

namespace fb {

struct TimingOptions {
  int warmup = 3;
  int min_samples = 20;
  double min_seconds = 0.5;
  int max_samples = 2000;
  bool cold = false;  // flush L2 (write a buffer larger than L2) before every sample
  // GPU timing only: hold the stream behind a host-side gate while the sample's work is enqueued, so
  // the start event does not absorb the launch's CPU latency (nvbench's blocking kernel, done with a
  // host function). A launcher that synchronizes internally cannot be gated; the gate notices (it
  // opens by itself after 20 ms), then stops gating that measurement. Set false to skip it.
  bool gate_launches = true;
};

struct Sample {
  double ms = 0;
  uint32_t sm_clock_mhz = 0;  // 0 when unknown (no NVML / CPU timing)
  bool throttled = false;     // a clock-event reason other than idle/app-clocks was active
};

struct TimingSummary {
  size_t n = 0;          // samples the statistics below are over
  size_t throttled = 0;  // samples flagged throttled, of all taken
  double median_ms = 0, p25_ms = 0, p75_ms = 0, iqr_ms = 0, min_ms = 0, max_ms = 0, mean_ms = 0;
};

struct Timing {
  std::string method;  // "cuda-events" | "cuda-graph-replay" | "cpu-steady-clock"
  bool cold = false;
  bool launch_gated = false;  // every sample was enqueued behind the gate (TimingOptions::gate_launches)
  std::vector<Sample> samples;
  TimingSummary summary;  // over the samples not flagged throttled, unless all were throttled
};

// Order statistics with linear interpolation (numpy's default percentile method).
TimingSummary summarize(const std::vector<Sample>& samples);
nlohmann::json to_json(const Timing& t);

// CPU timing of fn() with std::chrono::steady_clock.
Timing time_cpu(const std::function<void()>& fn, const TimingOptions& opt);

// GPU timing of launch(stream) with CUDA events around each sample. Only in CUDA builds
// (harness/timing/cuda_timing.cpp); a CPU-only build has no definition and never calls it.
Timing time_cuda(const std::function<void(cudaStream_t)>& launch, cudaStream_t stream,
                 const TimingOptions& opt);
// Same, capturing launch(stream) once into a CUDA graph and timing graph replays.
Timing time_cuda_graph(const std::function<void(cudaStream_t)>& launch, cudaStream_t stream,
                       const TimingOptions& opt);

}  // namespace fb
