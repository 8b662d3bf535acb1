#pragma once
// Internal to kernels/attention/qwen_attn.cu and qwen_sdpa.cu (not a public header): the checks and
// device expressions both translation units use. The fused output gate (SDPA combine) and
// qwen_sigmoid_gate_mul must evaluate sigmoid and the roundings with the same expressions, compiled
// with the same flags (one library, --fmad=false), for the fused and unfused twins to match bit for bit.
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include <cuda_bf16.h>

#include "kernels/attention/qwen_attn.cuh"
#include "reference/formats/half.h"

namespace fb::cuda::qwen_detail {

using bf16 = __nv_bfloat16;

inline void require(bool ok, const char* fn, const std::string& what) {
  if (!ok) throw std::invalid_argument(std::string(fn) + ": " + what);
}

inline void check_dims(const char* fn, const QwenAttnDims& d) {
  require(d.head_dim == 64 || d.head_dim == 128 || d.head_dim == 256, fn, "head_dim must be 64, 128 or 256");
  require(d.n_kv_heads >= 1 && d.n_heads % d.n_kv_heads == 0, fn, "n_heads must be a multiple of n_kv_heads");
  const int g = d.n_heads / d.n_kv_heads;
  require(g == 1 || g == 2 || g == 4 || g == 8, fn, "GQA group must be 1, 2, 4 or 8");
}

__device__ __forceinline__ float round_bf(float f) {
  return __uint_as_float(uint32_t{fp32_to_bf16(f)} << 16);
}
__device__ __forceinline__ float bf_at(const bf16* p) {
  return __uint_as_float(uint32_t{*reinterpret_cast<const uint16_t*>(p)} << 16);
}
__device__ __forceinline__ float sigmoid_bf(float g) {
  return round_bf(__fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-g))));  // torch bf16 sigmoid: fp32 math, bf16 out
}

}  // namespace fb::cuda::qwen_detail
