#pragma once
// The activation quantization of fb::Q8Block (reference/matvec/q8_block.h) done by 4 adjacent lanes
// that hold 8 consecutive values each of one 32-value block (lane & 3 = which eighth): amax over the
// block, d = amax / 127 (__fdiv_rn), inv = 1/d (__frcp_rn), q = rn(v * inv) clamped to int8, and the
// integer sums of each 16-value half. Every step is elementwise or an order-free max / integer sum,
// so the bits equal those of quantize_activations_q8's one-lane-per-value kernel. Shared by the
// kernels that quantize on the fly (the fused norm in kernels/ops, the staged matvec in kernels/gemv).
#include <cstdint>

#include <cuda_runtime.h>

namespace fb::cuda {

struct Q8Eighth {
  uint32_t even = 0, odd = 0;  // quants of this lane's even / odd values, one byte each, in order:
                               // the block's qs_even / qs_odd word number (lane & 3)
  float d = 0.0f;              // the block's scale
  int32_t half_sum = 0;        // the sum of the quants of this lane's half (lanes 0-1: values 0..15)
};

// All 32 lanes of the warp must call it (shuffles); lanes without data pass zeros.
__device__ __forceinline__ Q8Eighth quantize_q8_eighth(const float v[8]) {
  // Seeded with |v[0]| rather than 0, as the one-lane kernel's amax is: an all-NaN block keeps a NaN
  // scale there too.
  float amax = fabsf(v[0]);
#pragma unroll
  for (int j = 1; j < 8; ++j) amax = fmaxf(amax, fabsf(v[j]));
  amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, 1));
  amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, 2));
  Q8Eighth r;
  r.d = __fdiv_rn(amax, 127.0f);
  const float inv = r.d != 0.0f ? __frcp_rn(r.d) : 0.0f;
  int sum = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int q = max(-128, min(127, __float2int_rn(__fmul_rn(v[j], inv))));
    sum += q;
    const uint32_t byte = static_cast<uint32_t>(q) & 0xFFu;
    if (j % 2 == 0)
      r.even |= byte << (8 * (j / 2));
    else
      r.odd |= byte << (8 * (j / 2));
  }
  r.half_sum = sum + __shfl_xor_sync(0xFFFFFFFFu, sum, 1);
  return r;
}

}  // namespace fb::cuda
