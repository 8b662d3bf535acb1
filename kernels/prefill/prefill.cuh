#pragma once
// Prefill (M > 4) linear baseline, as the exported model runs it (notes/models.md §3.1): dequantize
// the ggml weight to bf16 (fb::cuda::dequantize, bit-exact to the CPU), then a cuBLAS bf16 GEMM with
// fp32 accumulation. And lm_head (N = 262144) the way the op's Python impl chunks it: 32768 rows at
// a time into ONE reusable bf16 buffer, so the full bf16 weight (2.8 GB for gemma) never exists.
//
// The decode lm_head (M <= 4) is the W4A8/int6 matvec of kernels/gemv, not here.
//
// Bit-exactness of chunked vs unchunked: cuBLAS's heuristic may pick a different algorithm (tile,
// split-K) for a different N, so one GEMM over N = 262144 need not reproduce 8 GEMMs over 32768.
// The unchunked twin therefore dequantizes the whole weight into a full buffer and runs the SAME
// per-chunk GEMMs (same m, n, k, lda, ldc, 256-byte aligned pointers, same handle and workspace)
// over slices of it. cuBLAS GEMMs are deterministic for a fixed configuration (no atomics mode), so
// the only difference left is where the bf16 weights live: the bits must match.
#include <cstddef>
#include <cstdint>

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "reference/formats/ggml_type.h"

namespace fb::cuda {

// Owns a cuBLAS handle and an explicit workspace: with a user workspace cuBLAS allocates nothing
// while a stream is captured into a CUDA graph, and the workspace is counted in the peak memory.
class CublasHandle {
 public:
  static constexpr size_t kWorkspaceBytes = size_t{32} << 20;
  CublasHandle();
  ~CublasHandle();
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  cublasHandle_t get() const noexcept { return m_handle; }

 private:
  cublasHandle_t m_handle = nullptr;
  void* m_workspace = nullptr;
};

// Throws std::runtime_error naming the call when a cuBLAS status is not success.
void cublas_check(cublasStatus_t st, const char* what);

// y[M, N] (row stride ldy) = x[M, K] * w[N, K]^T: bf16 in and out, fp32 accumulation
// (cublasGemmEx, CUBLAS_COMPUTE_32F). Row-major for us is column-major transposed for cuBLAS:
// y^T = w * x^T with w read transposed.
void gemm_bf16(cublasHandle_t handle, const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y,
               int64_t m, int64_t n, int64_t k, int64_t ldy, cudaStream_t stream);

// The prefill linear: dequantize `wq` (n rows of k, ggml blocks) into w_scratch (n * k bf16), then
// gemm_bf16. Two launches on `stream`; w_scratch is reused by the caller across layers.
void linear_dequant_gemm(cublasHandle_t handle, GgmlType type, const void* wq, int64_t n, int64_t k,
                         const __nv_bfloat16* x, int64_t m, __nv_bfloat16* y, __nv_bfloat16* w_scratch,
                         cudaStream_t stream);

inline constexpr int64_t kLmHeadChunkRows = 32768;  // _DEQUANT_N_CHUNK of int4_dispatch.py

// Chunked lm_head: for each block of chunk_rows weight rows, dequantize into chunk_buf
// (chunk_rows * k bf16) and GEMM into columns [c0, c0 + rows) of y[m, n] (row stride n).
// The last chunk may be shorter. Device memory beyond the inputs/outputs: chunk_buf only.
void lm_head_chunked(cublasHandle_t handle, GgmlType type, const void* wq, int64_t n, int64_t k,
                     const __nv_bfloat16* x, int64_t m, __nv_bfloat16* y, __nv_bfloat16* chunk_buf,
                     int64_t chunk_rows, cudaStream_t stream);
// The unchunked twin: one dequantize of all n rows into full_buf (n * k bf16), then the same
// per-chunk GEMMs over its slices (see the header comment for why not one GEMM).
void lm_head_unchunked(cublasHandle_t handle, GgmlType type, const void* wq, int64_t n, int64_t k,
                       const __nv_bfloat16* x, int64_t m, __nv_bfloat16* y, __nv_bfloat16* full_buf,
                       int64_t chunk_rows, cudaStream_t stream);

}  // namespace fb::cuda
