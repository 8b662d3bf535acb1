#include "harness/runner/device_guard.h"

#include <fmt/format.h>

#include <cstdlib>
#include <string_view>

#if FUSEBENCH_WITH_CUDA
#include <cuda_runtime_api.h>

#include "kernels/common/cuda_check.h"
#endif

namespace fb {

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

std::optional<uint64_t> env_u64(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return std::nullopt;
  char* end = nullptr;
  const unsigned long long x = std::strtoull(v, &end, 10);
  if (*end != '\0') return std::nullopt;
  return static_cast<uint64_t>(x);
}

}  // namespace

// GiB as the contract's message has it, but a tiny case or an almost full device would read
// "0.0 GiB": below a tenth of a GiB the size is given in MiB, below a tenth of a MiB in bytes.
std::string readable_size(uint64_t bytes) {
  if (bytes >= kGiB / 10) return fmt::format("{:.1f} GiB", bytes / kGiB);
  if (bytes >= (1 << 20) / 10) return fmt::format("{:.1f} MiB", bytes / double(1 << 20));
  return fmt::format("{} byte{}", bytes, bytes == 1 ? "" : "s");
}

std::string device_memory_shortfall(uint64_t needed, uint64_t free_bytes) {
  if (needed <= free_bytes) return {};
  return fmt::format("needs {} of device memory, {} free", readable_size(needed), readable_size(free_bytes));
}

std::optional<uint64_t> device_free_bytes() {
  if (auto fake = env_u64("FUSEBENCH_FAKE_FREE_DEVICE_BYTES")) return fake;
#if FUSEBENCH_WITH_CUDA
  size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) return static_cast<uint64_t>(free_b);
  (void)cudaGetLastError();
#endif
  return std::nullopt;
}

bool cuda_error_injection_selects(const std::string& kernel, const std::string& variant) {
  const char* v = std::getenv("FUSEBENCH_INJECT_CUDA_ERROR");
  if (v == nullptr || *v == '\0') return false;
  const std::string_view spec(v);
  const size_t colon = spec.find(':');
  if (spec.substr(0, colon) != kernel) return false;
  return colon == std::string_view::npos || spec.substr(colon + 1) == variant;
}

void maybe_inject_cuda_error(const std::string& kernel, const std::string& variant, cudaStream_t stream) {
  if (!cuda_error_injection_selects(kernel, variant)) return;
#if FUSEBENCH_WITH_CUDA
  // A null destination is rejected by the runtime up front (cudaErrorInvalidValue): a real error
  // text from CUDA, and not sticky, so the context survives for the next case.
  const cudaError_t err = cudaMemcpyAsync(nullptr, nullptr, 1, cudaMemcpyDeviceToDevice, stream);
  (void)cudaGetLastError();
  if (err != cudaSuccess) {
    detail::throw_cuda_error(err, "cudaMemcpyAsync (injected by FUSEBENCH_INJECT_CUDA_ERROR)", __FILE__,
                             __LINE__);
  }
  throw std::runtime_error("FUSEBENCH_INJECT_CUDA_ERROR: the invalid copy unexpectedly succeeded");
#else
  (void)stream;
#endif
}

void clear_cuda_error_after_failure() noexcept {
#if FUSEBENCH_WITH_CUDA
  (void)cudaGetLastError();
#endif
}

}  // namespace fb
