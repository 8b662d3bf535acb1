// GPU timing with CUDA events (DESIGN §5). One sample = [gate] [L2 flush] start, work, stop; the
// stream is synchronized after every sample so each sample is one isolated execution, and the SM
// clock is read through NVML right after it. Back-to-back (launches_per_sample N > 1): the work is
// enqueued N times between the events and the sample is elapsed / N, so the fixed cost of the event
// pair and of starting the first launch is spread over N.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <type_traits>
#include <vector>

#include <cuda_runtime_api.h>

#include "harness/device/device_info.h"
#include "harness/timing/inject_slowdown.h"
#include "harness/timing/timing.h"
#include "kernels/common/cuda_check.h"

namespace fb {

namespace {

// Owns a buffer twice the L2 size; memsetting it before a sample leaves L2 holding only its lines,
// so the timed work starts with a cold cache (nvbench's l2flush uses 1x; 2x leaves no doubt under
// any replacement policy). One per device, created on first cold measurement and kept (allocation is
// slow); freed by an atexit handler registered after the CUDA runtime initialised, so it runs before
// the runtime's own teardown (atexit runs in reverse order) and compute-sanitizer's leak check stays
// clean.
class L2Flusher {
 public:
  explicit L2Flusher(int device) {
    int l2 = 0;
    FB_CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device));
    m_buffer = DeviceBuffer<unsigned char>(2 * static_cast<size_t>(l2 > 0 ? l2 : (64 << 20)));
  }
  void flush(cudaStream_t stream) {
    FB_CUDA_CHECK(cudaMemsetAsync(m_buffer.get(), 0, m_buffer.bytes(), stream));
  }

 private:
  DeviceBuffer<unsigned char> m_buffer;
};

L2Flusher& l2_flusher(int device) {
  static std::mutex mutex;
  static auto* flushers = new std::map<int, L2Flusher*>;
  std::lock_guard<std::mutex> lock(mutex);
  L2Flusher*& f = (*flushers)[device];
  if (f == nullptr) {
    f = new L2Flusher(device);
    static const bool registered = [] {
      std::atexit([] {
        std::lock_guard<std::mutex> l(mutex);
        for (auto& [dev, fl] : *flushers) {
          if (cudaSetDevice(dev) == cudaSuccess) delete fl;  // a failing free at exit is not worth a crash
          fl = nullptr;
        }
        (void)cudaGetLastError();
      });
      return true;
    }();
    (void)registered;
  }
  return *f;
}

// Holds the stream until the host has enqueued the whole sample, so the start event fires when the
// work is already queued and the events measure GPU execution, not the CPU's launch latency. A host
// function rather than nvbench's spinning kernel keeps this file free of device code. It opens by
// itself after kTimeout: if the launcher waits on the stream (a hidden synchronize, a full launch
// queue), that would otherwise deadlock.
class HostGate {
 public:
  static constexpr auto kTimeout = std::chrono::milliseconds(20);

  void close(cudaStream_t stream) {
    m_open.store(false, std::memory_order_relaxed);
    m_timed_out.store(false, std::memory_order_relaxed);
    m_armed = true;
    FB_CUDA_CHECK(cudaLaunchHostFunc(stream, &HostGate::wait, this));
  }
  void open() noexcept {
    m_open.store(true, std::memory_order_release);
    m_armed = false;
  }
  bool armed() const noexcept { return m_armed; }
  // Only meaningful once the stream has passed the gate.
  bool timed_out() const noexcept { return m_timed_out.load(std::memory_order_acquire); }

 private:
  static void CUDART_CB wait(void* self) {
    auto* g = static_cast<HostGate*>(self);
    const auto deadline = std::chrono::steady_clock::now() + kTimeout;
    while (!g->m_open.load(std::memory_order_acquire)) {
      if (std::chrono::steady_clock::now() > deadline) {
        g->m_timed_out.store(true, std::memory_order_release);
        return;
      }
    }
  }

  std::atomic<bool> m_open{true};
  std::atomic<bool> m_timed_out{false};
  bool m_armed = false;
};

// If the launcher throws while the gate is closed, open it and drain the stream before the gate's
// storage goes away: the host function still points at it.
struct GateGuard {
  HostGate& gate;
  cudaStream_t stream;
  ~GateGuard() {
    if (gate.armed()) {
      gate.open();
      FB_CUDA_CHECK_NOEXCEPT(cudaStreamSynchronize(stream));
    }
  }
};

int current_device() {
  int device = 0;
  FB_CUDA_CHECK(cudaGetDevice(&device));
  return device;
}

// TEST-ONLY (FUSEBENCH_INJECT_SLOWDOWN): the spin, in cycles, that makes each sample that fraction
// slower than the work alone; -1 when off. Measured here, per measurement: the work's median over a
// few samples, the cost of appending an empty spin launch (subtracted, so small kernels are not
// slowed by more than asked unless that cost alone exceeds it), and the spin rate.
template <class Enqueue>
long long injected_spin_cycles(const Enqueue& enqueue, cudaStream_t stream, HostGate* gate,
                               L2Flusher* flusher) {
  const auto fraction = injected_slowdown_fraction();
  if (!fraction) return -1;
  Event start, stop;
  auto median_ms = [&](bool with_spin) {
    std::vector<double> ms;
    for (int i = 0; i < 15; ++i) {
      if (gate) gate->close(stream);
      if (flusher) flusher->flush(stream);
      start.record(stream);
      enqueue();
      if (with_spin) launch_spin(stream, 0);
      stop.record(stream);
      if (gate) gate->open();
      stop.synchronize();
      ms.push_back(stop.elapsed_ms_since(start));
    }
    std::nth_element(ms.begin(), ms.begin() + 7, ms.end());
    return ms[7];
  };
  const double work = median_ms(false);
  const double launch_cost = std::max(0.0, median_ms(true) - work);
  const double spin_ms = std::max(0.0, *fraction * work - launch_cost);
  // One line per measurement for scripts/calibrate-gate: the slowdown actually injected is larger
  // than asked when the launch cost alone exceeds it (microsecond kernels).
  std::fprintf(stderr, "inject: work %.3f us, launch cost %.3f us, spin %.3f us, effective fraction %.4f\n",
               work * 1e3, launch_cost * 1e3, spin_ms * 1e3, work > 0 ? (launch_cost + spin_ms) / work : 0.0);
  return static_cast<long long>(spin_ms * spin_cycles_per_ms(stream));
}

template <class Enqueue>
void sample_loop(Timing& t, const Enqueue& enqueue, cudaStream_t stream, const TimingOptions& opt) {
  const int device = current_device();
  L2Flusher* flusher = opt.cold ? &l2_flusher(device) : nullptr;
  Event start, stop;
  HostGate gate;
  GateGuard guard{gate, stream};
  bool gating = opt.gate_launches;

  for (int i = 0; i < opt.warmup; ++i) enqueue();
  FB_CUDA_CHECK(cudaStreamSynchronize(stream));
  const long long spin_cycles = injected_spin_cycles(enqueue, stream, gating ? &gate : nullptr, flusher);

  const int launches = opt.launches_per_sample;
  double total_ms = 0;
  const double min_ms = opt.min_seconds * 1e3;
  while (static_cast<int>(t.samples.size()) < opt.max_samples &&
         (static_cast<int>(t.samples.size()) < opt.min_samples || total_ms < min_ms)) {
    if (gating) gate.close(stream);
    if (flusher != nullptr) flusher->flush(stream);
    start.record(stream);
    // Behind the gate all N launches are queued before the start event fires, so the GPU runs
    // them back to back and the CPU's enqueue rate cannot leak into the figure.
    for (int i = 0; i < launches; ++i) {
      enqueue();
      if (spin_cycles >= 0) launch_spin(stream, spin_cycles);  // test-only (inject_slowdown.h)
    }
    stop.record(stream);
    if (gating) gate.open();
    // Read the clock while the work is in flight as well as after it, so a throttle that happens
    // during a long sample is seen; a short sample may finish before the first read.
    const auto during = read_sm_clock(device);
    stop.synchronize();
    const auto after = read_sm_clock(device);
    // A timed-out gate means the launcher blocked on the stream: this sample's start event may
    // include launch latency, so it is dropped; later samples would wait out the timeout, so
    // gating stops.
    if (gating && gate.timed_out()) {
      gating = false;
      continue;
    }
    const double elapsed_ms = stop.elapsed_ms_since(start);
    Sample s;
    s.ms = elapsed_ms / launches;
    if (during || after) {
      s.sm_clock_mhz = during ? during->sm_clock_mhz : after->sm_clock_mhz;
      s.throttled = (during && during->throttled) || (after && after->throttled);
    }
    total_ms += elapsed_ms;
    t.samples.push_back(s);
  }
  t.launch_gated = gating;  // starts as opt.gate_launches; false once the gate ever timed out
  t.launches_per_sample = launches;
  t.summary = summarize(t.samples);
}

struct GraphDeleter {
  void operator()(cudaGraph_t g) const noexcept { FB_CUDA_CHECK_NOEXCEPT(cudaGraphDestroy(g)); }
};
struct GraphExecDeleter {
  void operator()(cudaGraphExec_t g) const noexcept { FB_CUDA_CHECK_NOEXCEPT(cudaGraphExecDestroy(g)); }
};
using GraphPtr = std::unique_ptr<std::remove_pointer_t<cudaGraph_t>, GraphDeleter>;
using GraphExecPtr = std::unique_ptr<std::remove_pointer_t<cudaGraphExec_t>, GraphExecDeleter>;

}  // namespace

Timing time_cuda(const std::function<void(cudaStream_t)>& launch, cudaStream_t stream,
                 const TimingOptions& opt) {
  check_timing_options(opt);
  Timing t;
  t.method = method_name("cuda-events", opt.launches_per_sample);
  t.cold = opt.cold;
  sample_loop(
      t,
      [&] {
        launch(stream);
        FB_CUDA_CHECK_LAUNCH();
      },
      stream, opt);
  return t;
}

Timing time_cuda_graph(const std::function<void(cudaStream_t)>& launch, cudaStream_t stream,
                       const TimingOptions& opt) {
  check_timing_options(opt);
  Timing t;
  t.method = method_name("cuda-graph-replay", opt.launches_per_sample);
  t.cold = opt.cold;

  // Capture once. Global mode makes any unsafe CUDA call from another thread during capture an
  // error instead of a silently wrong graph. The L2 flush is not captured: it stays a separate
  // memset before each replay, outside the events.
  GraphPtr graph;
  {
    FB_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    try {
      launch(stream);
    } catch (...) {
      cudaGraph_t partial = nullptr;
      cudaStreamEndCapture(stream, &partial);  // leave the stream usable; the launcher's error wins
      if (partial != nullptr) cudaGraphDestroy(partial);
      cudaGetLastError();
      throw;
    }
    cudaGraph_t captured = nullptr;
    FB_CUDA_CHECK(cudaStreamEndCapture(stream, &captured));
    graph.reset(captured);
  }
  cudaGraphExec_t exec_raw = nullptr;
  FB_CUDA_CHECK(cudaGraphInstantiate(&exec_raw, graph.get(), 0));
  GraphExecPtr exec(exec_raw);
  // Upload now so the first replay's one-off upload cost is not a sample (warm-up would absorb it
  // too; this makes it explicit).
  FB_CUDA_CHECK(cudaGraphUpload(exec.get(), stream));

  sample_loop(
      t, [&] { FB_CUDA_CHECK(cudaGraphLaunch(exec.get(), stream)); }, stream, opt);
  return t;
}

}  // namespace fb
