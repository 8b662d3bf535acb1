// The two ceilings every case is reported against (DESIGN §5, METHOD "Two numbers first"):
// device-to-device copy bandwidth and the cuBLAS bf16 GEMM rate, measured on this GPU now.
//
// Copy: cudaMemcpyAsync device-to-device rather than a hand-written kernel. The driver's copy is
// what any code on this device can count on reaching, it needs no device code in this library,
// and it does not change when our own kernels' style does. A tuned kernel can beat it by a few
// percent, so a case may report slightly over 100% of "copy"; that reads as "at the copy ceiling".
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "harness/device/device_info.h"
#include "harness/timing/nvtx.h"
#include "kernels/common/cuda_check.h"

namespace fb {

namespace {

void cublas_check(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS) {
    throw std::runtime_error(std::string("measure_baselines: ") + what +
                             " failed: " + cublasGetStatusString(st));
  }
}

class CublasHandle {
 public:
  CublasHandle() { cublas_check(cublasCreate(&m_handle), "cublasCreate"); }
  ~CublasHandle() { cublasDestroy(m_handle); }
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  cublasHandle_t get() const noexcept { return m_handle; }

 private:
  cublasHandle_t m_handle = nullptr;
};

// float -> bf16 bits, round to nearest even (inputs here are finite).
uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

// Non-zero random bf16 in [-1, 1] (METHOD: zeros run a GEMM measurably faster than real data).
// A 1 Mi-element random block is made on the host and doubled on the device until the buffer is
// full: generating 64 Mi values per matrix on the CPU would take longer than the measurement.
void fill_random_bf16(uint16_t* dst, size_t count, uint32_t seed, cudaStream_t stream) {
  const size_t block = std::min<size_t>(count, size_t{1} << 20);
  std::vector<uint16_t> host(block);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (uint16_t& v : host) {
    float x = dist(rng);
    if (x > -1e-3f && x < 1e-3f) x = 0.5f;
    v = to_bf16(x);
  }
  FB_CUDA_CHECK(cudaMemcpyAsync(dst, host.data(), block * sizeof(uint16_t), cudaMemcpyHostToDevice, stream));
  for (size_t filled = block; filled < count;) {
    const size_t n = std::min(filled, count - filled);
    FB_CUDA_CHECK(cudaMemcpyAsync(dst + filled, dst, n * sizeof(uint16_t), cudaMemcpyDeviceToDevice, stream));
    filled += n;
  }
  FB_CUDA_CHECK(cudaStreamSynchronize(stream));  // `host` dies with this scope
}

TimingOptions baseline_options() {
  // Long enough for a stable median, short enough that both take about a second in all.
  TimingOptions o;
  o.warmup = 5;
  o.min_samples = 20;
  o.min_seconds = 0.3;
  o.max_samples = 500;
  return o;
}

}  // namespace

DeviceBaselines measure_baselines() {
  if (auto why = cuda_device_unavailable_reason()) {
    throw std::runtime_error("measure_baselines: no usable CUDA device: " + *why);
  }
  DeviceBaselines b;
  Stream stream;
  const TimingOptions opt = baseline_options();

  {
    // 1 GiB each way: far beyond any L2, so this is DRAM bandwidth.
    FB_NVTX_RANGE("baseline copy");
    constexpr size_t kBytes = size_t{1} << 30;
    DeviceBuffer<unsigned char> src(kBytes), dst(kBytes);
    FB_CUDA_CHECK(cudaMemsetAsync(src.get(), 0x5a, kBytes, stream.get()));
    b.copy = time_cuda(
        [&](cudaStream_t s) {
          FB_CUDA_CHECK(cudaMemcpyAsync(dst.get(), src.get(), kBytes, cudaMemcpyDeviceToDevice, s));
        },
        stream.get(), opt);
    b.copy_gbps = 2.0 * kBytes / (b.copy.summary.median_ms * 1e-3) / 1e9;  // read + write
  }

  {
    FB_NVTX_RANGE("baseline bf16 gemm");
    constexpr int kN = 8192;
    constexpr size_t kElems = size_t{kN} * kN;
    DeviceBuffer<uint16_t> a(kElems), bm(kElems), c(kElems);
    fill_random_bf16(a.get(), kElems, 1, stream.get());
    fill_random_bf16(bm.get(), kElems, 2, stream.get());
    FB_CUDA_CHECK(cudaMemsetAsync(c.get(), 0, c.bytes(), stream.get()));
    CublasHandle handle;
    cublas_check(cublasSetStream(handle.get(), stream.get()), "cublasSetStream");
    const float alpha = 1.0f, beta = 0.0f;
    b.gemm = time_cuda(
        [&](cudaStream_t) {
          cublas_check(cublasGemmEx(handle.get(), CUBLAS_OP_N, CUBLAS_OP_N, kN, kN, kN, &alpha, a.get(),
                                    CUDA_R_16BF, kN, bm.get(), CUDA_R_16BF, kN, &beta, c.get(), CUDA_R_16BF,
                                    kN, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                       "cublasGemmEx");
        },
        stream.get(), opt);
    b.bf16_gemm_tflops = 2.0 * kN * kN * double{kN} / (b.gemm.summary.median_ms * 1e-3) / 1e12;
  }
  return b;
}

}  // namespace fb
