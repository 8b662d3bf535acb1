#pragma once
// What keeps one GPU case from taking the run down with it (issue 7): a case that declares more
// device memory than is free is skipped with "needs X GiB, Y GiB free" instead of dying on an
// allocation; a CUDA error fails that case with the error text and the run goes on (runner.cpp
// catches it; clear_cuda_error_after_failure stops a non-sticky error being blamed on the next
// case). Test hooks, read from the environment so no CLI flag exists for them:
//   FUSEBENCH_FAKE_FREE_DEVICE_BYTES=N   pretend only N bytes of device memory are free
//   FUSEBENCH_INJECT_CUDA_ERROR=K[:V]    kernel K (variant V, or every variant) gets a real CUDA
//                                        runtime error right after its launch
#include <cstdint>
#include <optional>
#include <string>

#include "harness/timing/timing.h"

namespace fb {

// Empty when `needed` bytes fit in `free_bytes`; otherwise the skip reason, e.g.
// "needs 80.0 GiB of device memory, 12.5 GiB free".
std::string device_memory_shortfall(uint64_t needed, uint64_t free_bytes);

// Free device memory now ($FUSEBENCH_FAKE_FREE_DEVICE_BYTES when set); nullopt in CPU-only builds
// or when the query fails (the case then runs and an allocation failure fails it with its text).
std::optional<uint64_t> device_free_bytes();

// True when $FUSEBENCH_INJECT_CUDA_ERROR selects this kernel and variant.
bool cuda_error_injection_selects(const std::string& kernel, const std::string& variant);

// When selected: provoke a genuine, non-sticky CUDA runtime error on `stream` (an invalid async
// copy) and throw it as CudaError, exactly as FB_CUDA_CHECK would for a real failure.
void maybe_inject_cuda_error(const std::string& kernel, const std::string& variant, cudaStream_t stream);

// Drains the runtime's last-error slot after a failed case (no-op without CUDA).
void clear_cuda_error_after_failure() noexcept;

}  // namespace fb
