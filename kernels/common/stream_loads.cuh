#pragma once
// Device loads shared by the weight-streaming kernels (matvec, MoE).
#include <cuda_runtime.h>

namespace fb::cuda {

// 16 bytes read once: non-coherent and not allocated in L1, so weights streamed past do not evict
// the activations every warp re-reads. volatile: issued where written, not sunk to first use.
__device__ __forceinline__ uint4 ld_stream16(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

}  // namespace fb::cuda
