// JSON for the device section of a results file; shared by CUDA and CPU-only builds so both write
// the same shape.
#include "harness/device/device_info.h"

namespace fb {

nlohmann::json to_json(const DeviceInfo& d) {
  nlohmann::json j;
  j["available"] = d.available;
  if (!d.available) {
    j["unavailable_reason"] = d.unavailable_reason;
    return j;
  }
  j["index"] = d.index;
  j["name"] = d.name;
  j["uuid"] = d.uuid;
  j["sm_count"] = d.sm_count;
  j["compute_capability"] = std::to_string(d.cc_major) + "." + std::to_string(d.cc_minor);
  j["total_memory_bytes"] = d.total_memory_bytes;
  j["l2_bytes"] = d.l2_bytes;
  j["driver_version"] = d.driver_version;
  j["runtime_version"] = d.runtime_version;
  j["driver_string"] = d.driver_string;
  j["sm_clock_max_mhz"] = d.sm_clock_max_mhz;
  j["mem_clock_max_mhz"] = d.mem_clock_max_mhz;
  j["sm_clock_now_mhz"] = d.sm_clock_now_mhz;
  j["memory_bus_width_bits"] = d.memory_bus_width_bits;
  j["theoretical_dram_gbps"] = d.theoretical_dram_gbps;
  return j;
}

nlohmann::json to_json(const DeviceBaselines& b) {
  return {{"copy_gbps", b.copy_gbps},
          {"bf16_gemm_tflops", b.bf16_gemm_tflops},
          {"copy", to_json(b.copy)},
          {"gemm", to_json(b.gemm)}};
}

}  // namespace fb
