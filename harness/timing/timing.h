#pragma once
// Timing contract (DESIGN §5): warm-up, then at least `min_samples` samples AND at least
// `min_seconds` of timed work (capped by max_samples), median + IQR with every sample kept; hot
// (same buffers) and cold (L2 flushed before each sample) are separate measurements; SM clock read
// per sample and throttled samples flagged. CPU timing uses the same statistics, labelled as such.
// A third, back-to-back ("b2b") figure puts launches_per_sample launches between one pair of events
// and reports elapsed / N per sample: the per-launch time without the fixed event + launch floor,
// comparable to peers that report the mean of many back-to-back runs (llama.cpp test-backend-ops).
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
  // Launches of the work per sample (>= 1). With N > 1 a sample is [gate] start, N launches
  // back to back, stop, and its ms is elapsed / N; min_seconds still counts the whole elapsed time.
  // Hot only: cold with N > 1 would flush before the first launch only, so it is refused.
  int launches_per_sample = 1;
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
  // "cuda-events" | "cuda-graph-replay" | "cpu-steady-clock", with "-b2b" appended when
  // launches_per_sample > 1 (method_name).
  std::string method;
  bool cold = false;
  int launches_per_sample = 1;  // each sample's ms is the elapsed time over this many launches, / N
  bool launch_gated = false;    // every sample was enqueued behind the gate (TimingOptions::gate_launches)
  std::vector<Sample> samples;
  TimingSummary summary;  // over the samples not flagged throttled, unless all were throttled
};

// The method label for a timer ("cuda-events", ...) at N launches per sample: "<base>-b2b" when N > 1.
std::string method_name(const char* base, int launches_per_sample);
// Throws std::invalid_argument for options no timer accepts (launches_per_sample < 1, or > 1 with
// cold).
void check_timing_options(const TimingOptions& opt);

// Order statistics with linear interpolation (numpy's default percentile method).
TimingSummary summarize(const std::vector<Sample>& samples);
nlohmann::json to_json(const Timing& t);

// CPU timing of fn() with std::chrono::steady_clock (launches_per_sample calls of fn per sample).
Timing time_cpu(const std::function<void()>& fn, const TimingOptions& opt);

// GPU timing of launch(stream) with CUDA events around each sample. Only in CUDA builds
// (harness/timing/cuda_timing.cpp); a CPU-only build has no definition and never calls it.
Timing time_cuda(const std::function<void(cudaStream_t)>& launch, cudaStream_t stream,
                 const TimingOptions& opt);
// Same, capturing launch(stream) once into a CUDA graph and timing graph replays.
Timing time_cuda_graph(const std::function<void(cudaStream_t)>& launch, cudaStream_t stream,
                       const TimingOptions& opt);

}  // namespace fb
