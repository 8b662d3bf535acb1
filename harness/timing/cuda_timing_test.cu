// The CUDA timers against a kernel of known duration: it sleeps until the global timer has advanced
// by a set amount, so the right answer is known without trusting any other clock.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <stdexcept>

#include <cuda_runtime_api.h>

#include "harness/device/device_info.h"
#include "harness/timing/timing.h"
#include "kernels/common/cuda_check.h"

namespace fb {
namespace {

__device__ uint64_t global_timer_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// __nanosleep alone is only approximate ([0, 2t] per the guide), so sleep in short steps and stop
// on %globaltimer, which counts real nanoseconds.
__global__ void sleep_kernel(uint64_t ns) {
  const uint64_t start = global_timer_ns();
  while (global_timer_ns() - start < ns) __nanosleep(1000);
}

constexpr double kSleepMs = 1.0;

// Reads every float of a buffer once (grid-stride, coalesced) and writes one sum per block, so its
// time is dominated by where the buffer lives: L2 (hot) or HBM (cold).
__global__ void read_kernel(const float4* __restrict__ p, size_t n, float* out) {
  float acc = 0.0f;
  for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float4 v = p[i];
    acc += v.x + v.y + v.z + v.w;
  }
  if (acc == 12345.678f) out[blockIdx.x] = acc;  // keeps the loads; never true for the data below
}

void launch_sleep(cudaStream_t s, double ms) {
  sleep_kernel<<<1, 1, 0, s>>>(static_cast<uint64_t>(ms * 1e6));
}

class CudaTiming : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = cuda_device_unavailable_reason()) GTEST_SKIP() << *why;
  }
  TimingOptions quick() const {
    TimingOptions o;
    o.min_samples = 20;
    o.min_seconds = 0.05;
    return o;
  }
};

void expect_sleep_timing(const Timing& t, double expect_ms) {
  EXPECT_GE(t.samples.size(), 20u);
  if (!under_compute_sanitizer()) {
    EXPECT_GE(t.summary.median_ms, 0.9 * expect_ms);
    EXPECT_LE(t.summary.median_ms, 1.5 * expect_ms);
  }
  EXPECT_GE(t.summary.p25_ms, 0.0);
  EXPECT_LE(t.summary.p25_ms, t.summary.median_ms);
  EXPECT_LE(t.summary.median_ms, t.summary.p75_ms);
}

TEST_F(CudaTiming, HotMedianMatchesKnownDuration) {
  Stream s;
  const Timing t = time_cuda([](cudaStream_t st) { launch_sleep(st, kSleepMs); }, s.get(), quick());
  EXPECT_EQ(t.method, "cuda-events");
  EXPECT_FALSE(t.cold);
  EXPECT_TRUE(t.launch_gated);
  expect_sleep_timing(t, kSleepMs);
}

// Back-to-back: each sample is the per-launch time of N sleeps, so it matches the known duration as
// a single launch does, with N and the method recorded. Loose bounds only (no flaky timing asserts).
TEST_F(CudaTiming, BackToBackPerLaunchMatchesKnownDurationAndRecordsN) {
  Stream s;
  TimingOptions o = quick();
  o.launches_per_sample = 4;
  int calls = 0;
  const Timing t = time_cuda(
      [&](cudaStream_t st) {
        ++calls;
        launch_sleep(st, kSleepMs);
      },
      s.get(), o);
  EXPECT_EQ(t.method, "cuda-events-b2b");
  EXPECT_EQ(t.launches_per_sample, 4);
  EXPECT_TRUE(t.launch_gated);
  EXPECT_FALSE(t.cold);
  // Warm-up launches once per round, every kept sample four times (the injected-slowdown probe is
  // off; a sample dropped for a timed-out gate would also clear launch_gated).
  if (t.launch_gated)
    EXPECT_EQ(static_cast<size_t>(calls), static_cast<size_t>(o.warmup) + 4 * t.samples.size());
  expect_sleep_timing(t, kSleepMs);
  // min_seconds counts all four launches: 50 ms of 4 ms samples is reached by min_samples already.
  EXPECT_EQ(t.samples.size(), 20u);
}

// A short kernel: the per-launch b2b time is no larger than the single-launch time (which carries the
// event + first-launch floor) beyond noise, and both are positive. Printed for the record.
TEST_F(CudaTiming, BackToBackOfAShortKernelIsNotSlowerThanOneLaunch) {
  Stream s;
  auto launch = [](cudaStream_t st) { launch_sleep(st, 0.002); };  // 2 us
  const Timing one = time_cuda(launch, s.get(), quick());
  TimingOptions o = quick();
  o.launches_per_sample = 50;
  const Timing b2b = time_cuda(launch, s.get(), o);
  EXPECT_EQ(b2b.launches_per_sample, 50);
  EXPECT_EQ(b2b.method, "cuda-events-b2b");
  EXPECT_GT(one.summary.median_ms, 0.0);
  EXPECT_GT(b2b.summary.median_ms, 0.0);
  if (!under_compute_sanitizer()) {
    // At least about the sleep itself (%globaltimer may tick in 1 us steps, so half of it).
    EXPECT_GE(b2b.summary.median_ms, 0.5 * 0.002);
    EXPECT_LE(b2b.summary.median_ms, 2.0 * one.summary.median_ms);
  }
  std::printf("2 us sleep: one launch %.2f us, back to back x50 %.2f us per launch\n",
              one.summary.median_ms * 1e3, b2b.summary.median_ms * 1e3);
}

TEST_F(CudaTiming, BackToBackRefusesColdAndGraphReplayRecordsN) {
  Stream s;
  TimingOptions o = quick();
  o.launches_per_sample = 3;
  o.cold = true;
  EXPECT_THROW(time_cuda([](cudaStream_t st) { launch_sleep(st, 0.01); }, s.get(), o), std::invalid_argument);
  o.cold = false;
  const Timing g = time_cuda_graph([](cudaStream_t st) { launch_sleep(st, kSleepMs); }, s.get(), o);
  EXPECT_EQ(g.method, "cuda-graph-replay-b2b");
  EXPECT_EQ(g.launches_per_sample, 3);
  expect_sleep_timing(g, kSleepMs);
}

TEST_F(CudaTiming, ColdFlushesAndStillTimesOnlyTheWork) {
  Stream s;
  TimingOptions o = quick();
  o.cold = true;
  const Timing t = time_cuda([](cudaStream_t st) { launch_sleep(st, kSleepMs); }, s.get(), o);
  EXPECT_TRUE(t.cold);
  expect_sleep_timing(t, kSleepMs);  // the flush memset is outside the events
}

// The sleep kernel above touches no memory, so it cannot tell a working flush from a no-op one:
// a buffer that fits in L2 must read measurably slower right after a flush than when warm.
TEST_F(CudaTiming, ColdIsSlowerThanHotForAnL2SizedRead) {
  const DeviceInfo d = query_device();
  ASSERT_GT(d.l2_bytes, 0u);
  const size_t bytes = d.l2_bytes / 4;  // well inside L2 (H100/H200 L2 is split in two halves)
  DeviceBuffer<float4> buf(bytes / sizeof(float4));
  DeviceBuffer<float> out(1024);
  FB_CUDA_CHECK(cudaMemset(buf.get(), 0x3F, bytes));  // 0.75f-ish values, not zeros
  Stream stream;
  auto launch = [&](cudaStream_t s) {
    read_kernel<<<4 * d.sm_count, 256, 0, s>>>(buf.get(), bytes / sizeof(float4), out.get());
  };
  TimingOptions hot;
  hot.min_samples = 50;
  hot.min_seconds = 0.05;
  TimingOptions cold = hot;
  cold.cold = true;
  const Timing th = time_cuda(launch, stream.get(), hot);
  const Timing tc = time_cuda(launch, stream.get(), cold);
  if (under_compute_sanitizer()) return;  // durations mean nothing under instrumentation
  EXPECT_LT(th.summary.median_ms, 0.9 * tc.summary.median_ms)
      << "hot " << th.summary.median_ms << " ms vs cold " << tc.summary.median_ms << " ms for " << bytes
      << " bytes: the L2 flush does not seem to evict the buffer";
}

TEST_F(CudaTiming, GraphReplayTimesTheWholeCapture) {
  Stream s;
  for (bool cold : {false, true}) {
    TimingOptions o = quick();
    o.cold = cold;
    const Timing t = time_cuda_graph(
        [](cudaStream_t st) {
          launch_sleep(st, kSleepMs / 2);
          launch_sleep(st, kSleepMs / 2);
        },
        s.get(), o);
    EXPECT_EQ(t.method, "cuda-graph-replay");
    EXPECT_EQ(t.cold, cold);
    expect_sleep_timing(t, kSleepMs);
  }
}

TEST_F(CudaTiming, LauncherThatSynchronizesDoesNotDeadlock) {
  Stream s;
  const Timing t = time_cuda(
      [](cudaStream_t st) {
        launch_sleep(st, kSleepMs);
        FB_CUDA_CHECK(cudaStreamSynchronize(st));
      },
      s.get(), quick());
  EXPECT_FALSE(t.launch_gated);  // the gate timed out once, then gating stopped
  expect_sleep_timing(t, kSleepMs);
}

TEST_F(CudaTiming, SmClockIsRecordedWhenNvmlIsThere) {
  int dev = 0;
  FB_CUDA_CHECK(cudaGetDevice(&dev));
  if (!read_sm_clock(dev)) GTEST_SKIP() << "NVML not available";
  Stream s;
  const Timing t = time_cuda([](cudaStream_t st) { launch_sleep(st, 0.1); }, s.get(), quick());
  for (const Sample& x : t.samples) EXPECT_GT(x.sm_clock_mhz, 0u);
}

TEST_F(CudaTiming, LauncherErrorPropagatesAndStreamStaysUsable) {
  Stream s;
  TimingOptions o = quick();
  o.warmup = 0;
  int calls = 0;
  auto failing = [&](cudaStream_t st) {
    launch_sleep(st, 0.01);
    if (++calls == 3) throw std::runtime_error("launcher failed");
  };
  EXPECT_THROW(time_cuda(failing, s.get(), o), std::runtime_error);
  calls = 0;
  EXPECT_THROW(time_cuda_graph([](cudaStream_t) { throw std::runtime_error("x"); }, s.get(), o),
               std::runtime_error);
  const Timing t = time_cuda([](cudaStream_t st) { launch_sleep(st, kSleepMs); }, s.get(), quick());
  expect_sleep_timing(t, kSleepMs);
}

}  // namespace
}  // namespace fb
