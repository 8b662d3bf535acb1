#pragma once
// What the run executes on, and what that machine can do: queried once per run and recorded in the
// results (DESIGN §6). The baselines (copy bandwidth, bf16 GEMM rate) are measured, not looked up,
// so "% of roofline" is against this GPU at its current clocks.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "harness/timing/timing.h"

namespace fb {

struct DeviceInfo {
  bool available = false;
  std::string unavailable_reason;  // why not, when !available ("built without CUDA", "no device", ...)
  int index = 0;
  std::string name;
  std::string uuid;
  int sm_count = 0;
  int cc_major = 0, cc_minor = 0;
  uint64_t total_memory_bytes = 0;
  uint64_t l2_bytes = 0;
  int driver_version = 0;     // cudaDriverGetVersion, e.g. 13000
  int runtime_version = 0;    // cudaRuntimeGetVersion
  std::string driver_string;  // NVML, e.g. "580.159.04"
  uint32_t sm_clock_max_mhz = 0, mem_clock_max_mhz = 0, sm_clock_now_mhz = 0;
  int memory_bus_width_bits = 0;
  double theoretical_dram_gbps = 0;  // 2 * mem clock * bus width / 8 (DDR)
};

DeviceInfo query_device();  // never throws; CPU-only builds report unavailable
nlohmann::json to_json(const DeviceInfo& d);

struct DeviceBaselines {
  double copy_gbps = 0;         // device-to-device copy, bytes read + written per second (1e9)
  double bf16_gemm_tflops = 0;  // cuBLAS bf16 GEMM, fp32 accumulate, 8192^3
  Timing copy, gemm;
};

// Measures the baselines on the current device (CUDA builds only; throws std::runtime_error
// otherwise). Takes about a second.
DeviceBaselines measure_baselines();
nlohmann::json to_json(const DeviceBaselines& b);

// SM clock (MHz) and whether a throttle reason other than idle is active, via NVML; nullopt when
// NVML is unavailable. Cheap enough to call per sample.
struct ClockReading {
  uint32_t sm_clock_mhz = 0;
  bool throttled = false;
};
std::optional<ClockReading> read_sm_clock(int device_index);

}  // namespace fb
