#pragma once
// Error checking and RAII owners for the CUDA runtime. Every CUDA call in fusebench goes through
// FB_CUDA_CHECK so a failure names the call site instead of surfacing later as a sticky error.
// Destructors must not throw, so they only report failures (FB_CUDA_CHECK_NOEXCEPT).
#include <cstddef>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include <cuda_runtime_api.h>

namespace fb {

class CudaError : public std::runtime_error {
 public:
  CudaError(cudaError_t code, const char* expr, const char* file, int line);
  cudaError_t code() const noexcept { return m_code; }

 private:
  cudaError_t m_code;
};

namespace detail {
[[noreturn]] void throw_cuda_error(cudaError_t code, const char* expr, const char* file, int line);
void report_cuda_error(cudaError_t code, const char* expr, const char* file, int line) noexcept;
}  // namespace detail

}  // namespace fb

#define FB_CUDA_CHECK(expr)                                                       \
  do {                                                                            \
    const cudaError_t fb_cuda_status_ = (expr);                                   \
    if (fb_cuda_status_ != cudaSuccess) {                                         \
      ::fb::detail::throw_cuda_error(fb_cuda_status_, #expr, __FILE__, __LINE__); \
    }                                                                             \
  } while (0)

#define FB_CUDA_CHECK_NOEXCEPT(expr)                                               \
  do {                                                                             \
    const cudaError_t fb_cuda_status_ = (expr);                                    \
    if (fb_cuda_status_ != cudaSuccess) {                                          \
      ::fb::detail::report_cuda_error(fb_cuda_status_, #expr, __FILE__, __LINE__); \
    }                                                                              \
  } while (0)

// Launches return no status; this picks up a bad configuration right at the launch site.
#define FB_CUDA_CHECK_LAUNCH() FB_CUDA_CHECK(cudaGetLastError())

namespace fb {

// Why no kernel of this build can run here, or nullopt when one can. The kernels are built for
// sm_90a only, whose code runs on compute capability 9.0 exactly. Cached after the first call;
// never throws, so tests can call it to decide to skip.
std::optional<std::string> cuda_device_unavailable_reason();

// Set (FUSEBENCH_UNDER_SANITIZER) by scripts/gpu-sanitize: every launch runs instrumented, 10-100x
// slower, so tests keep exercising their timing code but drop bounds on measured durations.
inline bool under_compute_sanitizer() { return std::getenv("FUSEBENCH_UNDER_SANITIZER") != nullptr; }

template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t count) : m_count(count) {
    if (count != 0) FB_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&m_ptr), count * sizeof(T)));
  }
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : m_ptr(std::exchange(other.m_ptr, nullptr)), m_count(std::exchange(other.m_count, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      reset();
      m_ptr = std::exchange(other.m_ptr, nullptr);
      m_count = std::exchange(other.m_count, 0);
    }
    return *this;
  }

  T* get() const noexcept { return m_ptr; }
  size_t size() const noexcept { return m_count; }
  size_t bytes() const noexcept { return m_count * sizeof(T); }

  void reset() noexcept {
    if (m_ptr != nullptr) FB_CUDA_CHECK_NOEXCEPT(cudaFree(m_ptr));
    m_ptr = nullptr;
    m_count = 0;
  }

 private:
  T* m_ptr = nullptr;
  size_t m_count = 0;
};

class Stream {
 public:
  // Non-blocking so the legacy default stream never serialises fusebench work behind it.
  Stream() { FB_CUDA_CHECK(cudaStreamCreateWithFlags(&m_stream, cudaStreamNonBlocking)); }
  ~Stream() {
    if (m_stream != nullptr) FB_CUDA_CHECK_NOEXCEPT(cudaStreamDestroy(m_stream));
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  Stream(Stream&& other) noexcept : m_stream(std::exchange(other.m_stream, nullptr)) {}
  Stream& operator=(Stream&& other) noexcept {
    if (this != &other) {
      if (m_stream != nullptr) FB_CUDA_CHECK_NOEXCEPT(cudaStreamDestroy(m_stream));
      m_stream = std::exchange(other.m_stream, nullptr);
    }
    return *this;
  }

  cudaStream_t get() const noexcept { return m_stream; }
  void synchronize() const { FB_CUDA_CHECK(cudaStreamSynchronize(m_stream)); }

 private:
  cudaStream_t m_stream = nullptr;
};

class Event {
 public:
  explicit Event(unsigned flags = cudaEventDefault) {
    FB_CUDA_CHECK(cudaEventCreateWithFlags(&m_event, flags));
  }
  ~Event() {
    if (m_event != nullptr) FB_CUDA_CHECK_NOEXCEPT(cudaEventDestroy(m_event));
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  Event(Event&& other) noexcept : m_event(std::exchange(other.m_event, nullptr)) {}
  Event& operator=(Event&& other) noexcept {
    if (this != &other) {
      if (m_event != nullptr) FB_CUDA_CHECK_NOEXCEPT(cudaEventDestroy(m_event));
      m_event = std::exchange(other.m_event, nullptr);
    }
    return *this;
  }

  cudaEvent_t get() const noexcept { return m_event; }
  void record(cudaStream_t stream) const { FB_CUDA_CHECK(cudaEventRecord(m_event, stream)); }
  void synchronize() const { FB_CUDA_CHECK(cudaEventSynchronize(m_event)); }
  // Milliseconds from `start` to this event; both must have completed.
  float elapsed_ms_since(const Event& start) const {
    float ms = 0.0f;
    FB_CUDA_CHECK(cudaEventElapsedTime(&ms, start.m_event, m_event));
    return ms;
  }

 private:
  cudaEvent_t m_event = nullptr;
};

}  // namespace fb
