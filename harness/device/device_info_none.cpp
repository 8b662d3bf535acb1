// CPU-only build: there is no device to describe, and saying so is the answer, not an error.
#include <stdexcept>

#include "harness/device/device_info.h"

namespace fb {

DeviceInfo query_device() {
  DeviceInfo d;
  d.unavailable_reason = "built without CUDA";
  return d;
}

DeviceBaselines measure_baselines() {
  throw std::runtime_error("measure_baselines: fusebench was built without CUDA");
}

std::optional<ClockReading> read_sm_clock(int) { return std::nullopt; }

}  // namespace fb
