#pragma once
// The bf16 weight that the fused int4 GEMM (int4_gemm.cuh) feeds to the tensor cores, written once
// for host and device so the CPU check and both GPU paths use the same expression:
//   w = bf16_rn( fp32( fp32(q) - zero ) * scale )      (coalesced int4, reference/layouts/layouts.h)
// scale/zero are the fp32 values of the layout (bf16 encoding: the bf16 value; u8 encoding:
// code * fp16 step, exact in fp32). For the bf16 encoding both fp32 operations are exact (q and the
// 8-bit zero fit in 24 bits; an 8-bit x <=13-bit significand product fits too), so w is the exact
// (q - zero) * scale rounded once to bf16. For u8 codes the two fp32 roundings are part of the rule;
// host and device perform the same two IEEE operations (no contraction is possible in (a - b) * c),
// so the bits agree either way.
#include <cstdint>

#if defined(__CUDACC__)
#define FB_INT4_HD __host__ __device__ __forceinline__
#else
#define FB_INT4_HD inline
#endif

namespace fb {

FB_INT4_HD float int4_dequant_fp32(uint32_t q, float scale, float zero) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(__fsub_rn(static_cast<float>(q), zero), scale);
#else
  const volatile float d = static_cast<float>(q) - zero;  // volatile: keep the two roundings apart
  return d * scale;
#endif
}

}  // namespace fb
