#pragma once
// CUPTI activity capture for `fusebench profile`: kernels, launch API calls, NVTX ranges and
// external correlation ids (one per profiled group). Built with CUPTI in CUDA builds
// (cupti_capture.cpp); elsewhere (cupti_capture_none.cpp) start() throws a std::runtime_error
// saying why.
#include <cstdint>
#include <memory>

#include "harness/profile/kernel_profile.h"

namespace fb::profile {

class Capture {
 public:
  Capture();
  ~Capture();
  Capture(const Capture&) = delete;
  Capture& operator=(const Capture&) = delete;

  // Enables the activity kinds. Call before any CUDA work or NVTX range of the run: it also points
  // NVTX at CUPTI (NVTX_INJECTION64_PATH) unless a tool already set it.
  void start();
  // Work launched on this thread from now on belongs to group `id` (until the next call).
  void begin_group(uint64_t id);
  // Flushes and disables; returns every record collected.
  ActivityLog stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> m_impl;
};

}  // namespace fb::profile
