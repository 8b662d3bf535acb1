// The spin kernel behind FUSEBENCH_INJECT_SLOWDOWN (inject_slowdown.h): test-only delay inside the
// timed region.
#include <algorithm>
#include <vector>

#include <cuda_runtime.h>

#include "harness/timing/inject_slowdown.h"
#include "kernels/common/cuda_check.h"

namespace fb {

namespace {

__global__ void spin_kernel(long long cycles) {
  const long long start = clock64();
  while (clock64() - start < cycles) {
  }
}

double median_event_ms(cudaStream_t stream, long long cycles, int reps) {
  Event start, stop;
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    start.record(stream);
    launch_spin(stream, cycles);
    stop.record(stream);
    stop.synchronize();
    ms.push_back(stop.elapsed_ms_since(start));
  }
  std::nth_element(ms.begin(), ms.begin() + reps / 2, ms.end());
  return ms[reps / 2];
}

}  // namespace

void launch_spin(cudaStream_t stream, long long cycles) {
  spin_kernel<<<1, 1, 0, stream>>>(cycles);
  FB_CUDA_CHECK_LAUNCH();
}

double spin_cycles_per_ms(cudaStream_t stream) {
  constexpr long long kCycles = 4'000'000;  // about 2 ms at H100/H200 boost clocks
  median_event_ms(stream, kCycles, 2);      // warm-up (module load, clocks up)
  const double full = median_event_ms(stream, kCycles, 5);
  const double empty = median_event_ms(stream, 0, 5);
  return static_cast<double>(kCycles) / std::max(full - empty, 1e-6);
}

}  // namespace fb
