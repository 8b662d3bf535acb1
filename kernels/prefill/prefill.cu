#include <algorithm>
#include <climits>
#include <stdexcept>
#include <string>

#include "kernels/common/cuda_check.h"
#include "kernels/dequant/dequantize.cuh"
#include "kernels/prefill/prefill.cuh"
#include "reference/formats/blocks.h"

namespace fb::cuda {
namespace {

void require(bool ok, const char* fn, const std::string& what) {
  if (!ok) throw std::invalid_argument(std::string("fb::cuda::") + fn + ": " + what);
}

bool aligned(const void* p, size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

// Bytes of one row of k elements, from the block structs: kernels depend on the POD headers only
// (ggml_row_bytes lives in the reference library). 0 for a type the dequantizer does not handle.
size_t row_bytes_of(GgmlType type, int64_t k) {
  switch (type) {
    case GgmlType::F32:
      return static_cast<size_t>(k) * 4;
    case GgmlType::F16:
    case GgmlType::BF16:
      return static_cast<size_t>(k) * 2;
    case GgmlType::Q8_0:
      return static_cast<size_t>(k / kQK8_0) * sizeof(BlockQ8_0);
    case GgmlType::Q4_K:
      return static_cast<size_t>(k / kQK_K) * sizeof(BlockQ4K);
    case GgmlType::Q5_K:
      return static_cast<size_t>(k / kQK_K) * sizeof(BlockQ5K);
    case GgmlType::Q6_K:
      return static_cast<size_t>(k / kQK_K) * sizeof(BlockQ6K);
    default:
      return 0;
  }
}

}  // namespace

void cublas_check(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string(what) + " failed: " + cublasGetStatusString(st));
}

CublasHandle::CublasHandle() {
  cublas_check(cublasCreate(&m_handle), "cublasCreate");
  try {
    FB_CUDA_CHECK(cudaMalloc(&m_workspace, kWorkspaceBytes));
    cublas_check(cublasSetWorkspace(m_handle, m_workspace, kWorkspaceBytes), "cublasSetWorkspace");
  } catch (...) {
    if (m_workspace) cudaFree(m_workspace);
    cublasDestroy(m_handle);
    throw;
  }
}

CublasHandle::~CublasHandle() {
  cublasDestroy(m_handle);
  if (m_workspace) FB_CUDA_CHECK_NOEXCEPT(cudaFree(m_workspace));
}

void gemm_bf16(cublasHandle_t handle, const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y,
               int64_t m, int64_t n, int64_t k, int64_t ldy, cudaStream_t stream) {
  require(handle != nullptr && x != nullptr && w != nullptr && y != nullptr, "gemm_bf16", "null argument");
  require(
      m >= 0 && n >= 0 && k > 0 && m <= INT_MAX && n <= INT_MAX && k <= INT_MAX && ldy >= n && ldy <= INT_MAX,
      "gemm_bf16", "sizes must fit int and ldy >= n");
  if (m == 0 || n == 0) return;
  cublas_check(cublasSetStream(handle, stream), "cublasSetStream");
  const float alpha = 1.0f, beta = 0.0f;
  cublas_check(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
                            static_cast<int>(k), &alpha, w, CUDA_R_16BF, static_cast<int>(k), x, CUDA_R_16BF,
                            static_cast<int>(k), &beta, y, CUDA_R_16BF, static_cast<int>(ldy),
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
               "cublasGemmEx");
}

void linear_dequant_gemm(cublasHandle_t handle, GgmlType type, const void* wq, int64_t n, int64_t k,
                         const __nv_bfloat16* x, int64_t m, __nv_bfloat16* y, __nv_bfloat16* w_scratch,
                         cudaStream_t stream) {
  require(w_scratch != nullptr && aligned(w_scratch, 16), "linear_dequant_gemm",
          "null or misaligned scratch");
  dequantize(type, wq, w_scratch, n, k, stream);
  gemm_bf16(handle, x, w_scratch, y, m, n, k, n, stream);
}

namespace {

void check_lm_head(const char* fn, GgmlType type, const void* wq, int64_t n, int64_t k, int64_t chunk_rows,
                   const void* buf) {
  require(wq != nullptr && buf != nullptr && aligned(buf, 256), fn,
          "null weights or a buffer not 256-byte aligned");
  require(n > 0 && k > 0 && chunk_rows > 0, fn, "n, k and chunk_rows must be positive");
  // Every chunk's bf16 slice must start 256-byte aligned (cuBLAS picks kernels by alignment too).
  require((chunk_rows * k * 2) % 256 == 0, fn, "chunk_rows * k * 2 must be a multiple of 256");
  require(dequantize_supported(type) && row_bytes_of(type, k) > 0, fn, "unsupported type");
}

}  // namespace

void lm_head_chunked(cublasHandle_t handle, GgmlType type, const void* wq, int64_t n, int64_t k,
                     const __nv_bfloat16* x, int64_t m, __nv_bfloat16* y, __nv_bfloat16* chunk_buf,
                     int64_t chunk_rows, cudaStream_t stream) {
  check_lm_head("lm_head_chunked", type, wq, n, k, chunk_rows, chunk_buf);
  const size_t row_bytes = row_bytes_of(type, k);
  for (int64_t c0 = 0; c0 < n; c0 += chunk_rows) {
    const int64_t rows = std::min(chunk_rows, n - c0);
    dequantize(type, static_cast<const uint8_t*>(wq) + static_cast<size_t>(c0) * row_bytes, chunk_buf, rows,
               k, stream);
    gemm_bf16(handle, x, chunk_buf, y + c0, m, rows, k, n, stream);
  }
}

void lm_head_unchunked(cublasHandle_t handle, GgmlType type, const void* wq, int64_t n, int64_t k,
                       const __nv_bfloat16* x, int64_t m, __nv_bfloat16* y, __nv_bfloat16* full_buf,
                       int64_t chunk_rows, cudaStream_t stream) {
  check_lm_head("lm_head_unchunked", type, wq, n, k, chunk_rows, full_buf);
  dequantize(type, wq, full_buf, n, k, stream);
  for (int64_t c0 = 0; c0 < n; c0 += chunk_rows) {
    const int64_t rows = std::min(chunk_rows, n - c0);
    gemm_bf16(handle, x, full_buf + c0 * k, y + c0, m, rows, k, n, stream);
  }
}

}  // namespace fb::cuda
