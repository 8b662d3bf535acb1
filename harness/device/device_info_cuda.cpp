// Device facts from the CUDA runtime, clocks and clock-event reasons from NVML.
//
// NVML is loaded with dlopen, not linked: the toolkit here ships neither nvml.h nor the
// libnvidia-ml stub, and the library itself comes with the driver, so it exists exactly where
// there is a GPU to ask. Without it every NVML field stays 0/empty and read_sm_clock() says nullopt.
// The few declarations below are NVML's stable C ABI (nvml.h, NVML_API_VERSION 12/13).
#include <dlfcn.h>

#include <cstdio>
#include <map>
#include <mutex>

#include <cuda_runtime_api.h>

#include "harness/device/device_info.h"
#include "kernels/common/cuda_check.h"

namespace fb {

namespace {

namespace nvml {
using Return = int;  // nvmlReturn_t; NVML_SUCCESS == 0
struct DeviceSt;
using Device = DeviceSt*;  // nvmlDevice_t
constexpr Return kSuccess = 0;
enum ClockType : int { kGraphics = 0, kSm = 1, kMem = 2 };  // nvmlClockType_t

// nvmlClocksEventReason* bits. Idle and application-clock settings are the GPU doing what it was
// told, not slowing down under load; display-clock settings do not touch the SM clock. Every other
// bit (power cap, thermal, HW slowdown, sync boost, ...) means the SM clock is below what the
// work would otherwise get.
constexpr unsigned long long kReasonGpuIdle = 0x1;
constexpr unsigned long long kReasonApplicationsClocksSetting = 0x2;
constexpr unsigned long long kReasonDisplayClockSetting = 0x100;
constexpr unsigned long long kNotThrottling =
    kReasonGpuIdle | kReasonApplicationsClocksSetting | kReasonDisplayClockSetting;

struct Api {
  Return (*init)() = nullptr;
  Return (*handle_by_pci_bus_id)(const char*, Device*) = nullptr;
  Return (*clock_info)(Device, ClockType, unsigned*) = nullptr;
  Return (*max_clock_info)(Device, ClockType, unsigned*) = nullptr;
  Return (*driver_version)(char*, unsigned) = nullptr;
  Return (*clock_reasons)(Device, unsigned long long*) = nullptr;
};

template <class F>
bool load(void* lib, const char* name, F& out) {
  out = reinterpret_cast<F>(dlsym(lib, name));
  return out != nullptr;
}

// Loaded and initialised once; never shut down, since other threads may still read clocks while
// the process exits.
const Api* api() {
  static const Api* loaded = []() -> const Api* {
    void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) return nullptr;
    static Api a;
    bool ok = load(lib, "nvmlInit_v2", a.init) &&
              load(lib, "nvmlDeviceGetHandleByPciBusId_v2", a.handle_by_pci_bus_id) &&
              load(lib, "nvmlDeviceGetClockInfo", a.clock_info) &&
              load(lib, "nvmlDeviceGetMaxClockInfo", a.max_clock_info) &&
              load(lib, "nvmlSystemGetDriverVersion", a.driver_version);
    // Renamed in NVML 12.x (CUDA 12.2 drivers); older drivers only have the "Throttle" name, and
    // both have the same signature and bits.
    if (ok && !load(lib, "nvmlDeviceGetCurrentClocksEventReasons", a.clock_reasons)) {
      load(lib, "nvmlDeviceGetCurrentClocksThrottleReasons", a.clock_reasons);
    }
    if (!ok || a.init() != kSuccess) return nullptr;
    return &a;
  }();
  return loaded;
}

// CUDA device index -> NVML handle, matched by PCI bus id: NVML enumerates all GPUs and ignores
// CUDA_VISIBLE_DEVICES, so the indices alone may name different boards.
std::optional<Device> handle_for(int cuda_device) {
  const Api* a = api();
  if (a == nullptr) return std::nullopt;
  static std::mutex mutex;
  static std::map<int, std::optional<Device>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  if (auto it = cache.find(cuda_device); it != cache.end()) return it->second;
  std::optional<Device> found;
  char bus_id[32] = {};
  if (cudaDeviceGetPCIBusId(bus_id, sizeof bus_id, cuda_device) == cudaSuccess) {
    Device d = nullptr;
    if (a->handle_by_pci_bus_id(bus_id, &d) == kSuccess) found = d;
  } else {
    cudaGetLastError();
  }
  cache[cuda_device] = found;
  return found;
}

}  // namespace nvml

std::string uuid_string(const cudaUUID_t& u) {
  // nvidia-smi's form: GPU-8-4-4-4-12 hex digits.
  const auto* b = reinterpret_cast<const unsigned char*>(u.bytes);
  char s[64];
  std::snprintf(s, sizeof s, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
                b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
                b[15]);
  return s;
}

DeviceInfo query_device_or_throw() {
  DeviceInfo d;
  if (auto why = cuda_device_unavailable_reason()) {
    d.unavailable_reason = *why;
    return d;
  }
  FB_CUDA_CHECK(cudaGetDevice(&d.index));
  cudaDeviceProp p{};
  FB_CUDA_CHECK(cudaGetDeviceProperties(&p, d.index));
  d.name = p.name;
  d.uuid = uuid_string(p.uuid);
  d.sm_count = p.multiProcessorCount;
  d.cc_major = p.major;
  d.cc_minor = p.minor;
  d.total_memory_bytes = p.totalGlobalMem;
  d.l2_bytes = static_cast<uint64_t>(p.l2CacheSize);
  d.memory_bus_width_bits = p.memoryBusWidth;
  FB_CUDA_CHECK(cudaDriverGetVersion(&d.driver_version));
  FB_CUDA_CHECK(cudaRuntimeGetVersion(&d.runtime_version));

  // CUDA 13 dropped clockRate/memoryClockRate from cudaDeviceProp; the attributes remain (kHz) and
  // serve when NVML is missing.
  int khz = 0;
  if (cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, d.index) == cudaSuccess) {
    d.sm_clock_max_mhz = static_cast<uint32_t>(khz / 1000);
  }
  if (cudaDeviceGetAttribute(&khz, cudaDevAttrMemoryClockRate, d.index) == cudaSuccess) {
    d.mem_clock_max_mhz = static_cast<uint32_t>(khz / 1000);
  }
  cudaGetLastError();

  if (const nvml::Api* a = nvml::api()) {
    char version[96] = {};
    if (a->driver_version(version, sizeof version) == nvml::kSuccess) d.driver_string = version;
    if (auto h = nvml::handle_for(d.index)) {
      unsigned mhz = 0;
      if (a->max_clock_info(*h, nvml::kSm, &mhz) == nvml::kSuccess) d.sm_clock_max_mhz = mhz;
      if (a->max_clock_info(*h, nvml::kMem, &mhz) == nvml::kSuccess) d.mem_clock_max_mhz = mhz;
      if (a->clock_info(*h, nvml::kSm, &mhz) == nvml::kSuccess) d.sm_clock_now_mhz = mhz;
    }
  }
  // HBM and GDDR transfer twice per memory clock (what cudaDevAttrMemoryClockRate and NVML report).
  d.theoretical_dram_gbps = 2.0 * d.mem_clock_max_mhz * 1e6 * (d.memory_bus_width_bits / 8.0) / 1e9;
  d.available = true;
  return d;
}

}  // namespace

DeviceInfo query_device() {
  try {
    return query_device_or_throw();
  } catch (const std::exception& e) {
    DeviceInfo d;
    d.unavailable_reason = e.what();
    return d;
  }
}

std::optional<ClockReading> read_sm_clock(int device_index) {
  const nvml::Api* a = nvml::api();
  if (a == nullptr) return std::nullopt;
  const auto h = nvml::handle_for(device_index);
  if (!h) return std::nullopt;
  ClockReading r;
  unsigned mhz = 0;
  if (a->clock_info(*h, nvml::kSm, &mhz) != nvml::kSuccess) return std::nullopt;
  r.sm_clock_mhz = mhz;
  unsigned long long reasons = 0;
  if (a->clock_reasons != nullptr && a->clock_reasons(*h, &reasons) == nvml::kSuccess) {
    r.throttled = (reasons & ~nvml::kNotThrottling) != 0;
  }
  return r;
}

}  // namespace fb
