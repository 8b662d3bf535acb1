#include <stdexcept>
#include <string>

#include <cuda_fp16.h>

#include "kernels/common/cuda_check.h"
#include "kernels/prefill/int4_dequant_rule.h"
#include "kernels/prefill/int4_gemm.cuh"

namespace fb::cuda {

namespace {

constexpr int kBK = 64;  // k per tile: two 32-weight groups, one 128-byte bf16 row

// ---- small PTX wrappers -------------------------------------------------------------------------
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16-byte async copy; src_bytes 0 zero-fills (rows past M or N).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3,
                                            uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}
__device__ __forceinline__ void mma_bf16(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// D[64 x 128] (fp32, 64 registers per thread) += A[64 x 16] * B[128 x 16]^T, both from shared memory
// (K-major, 128-byte swizzle descriptors). Asynchronous: see wgmma_commit / wgmma_wait.
__device__ __forceinline__ void wgmma_m64n128k16(float* d, uint64_t desc_a, uint64_t desc_b) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%"
      "27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%"
      "52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, %64, %65, p, 1, 1, 0, 0;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]),
        "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]),
        "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]),
        "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]),
        "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]),
        "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]),
        "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(desc_a), "l"(desc_b), "r"(1));
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_wait0() {
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
}
// Shared memory written by the generic proxy (cp.async, st.shared) is read by wgmma (async proxy).
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// sm90 shared-memory matrix descriptor: K-major, 128-byte swizzle (the swz() layout on a 1024-byte
// aligned tile), 8-row core groups 1024 bytes apart (stride byte offset); the leading byte offset is
// unused for swizzled K-major operands. A k16 step inside the 64-wide tile adds 32 bytes to the start.
__device__ __forceinline__ uint64_t sw128_desc(uint32_t smem_byte_addr) {
  uint64_t d = 0;
  d |= static_cast<uint64_t>((smem_byte_addr & 0x3FFFF) >> 4);
  d |= static_cast<uint64_t>(1) << 16;          // leading byte offset (unused), encoded 1
  d |= static_cast<uint64_t>(1024 >> 4) << 32;  // stride byte offset
  d |= static_cast<uint64_t>(1) << 62;          // layout: 128-byte swizzle
  return d;
}

// A [rows][64] bf16 tile: 8 16-byte units per 128-byte row, unit XOR (row & 7) so the 8 rows an
// ldmatrix phase reads (and the units a dequant/copy phase writes) fall in distinct banks.
__device__ __forceinline__ uint32_t swz(int row, int unit) { return row * 128 + ((unit ^ (row & 7)) << 4); }

// ---- the dequantization of one 32-weight group ---------------------------------------------------
struct GroupSZ {
  float s, z;
};
__device__ __forceinline__ GroupSZ load_group(const Int4GemmWeights& w, int64_t row, int64_t group) {
  const int64_t i = row * (w.k / 32) + group;
  if (!w.u8) {
    return {__bfloat162float(static_cast<const __nv_bfloat16*>(w.scale)[i]),
            __bfloat162float(static_cast<const __nv_bfloat16*>(w.zero)[i])};
  }
  const int64_t si = row * (w.k / 256) + group / 8;
  const float ss = __half2float(__ushort_as_half(w.scale_step[si]));
  const float zs = __half2float(__ushort_as_half(w.zero_step[si]));
  return {__fmul_rn(static_cast<float>(static_cast<const uint8_t*>(w.scale)[i]), ss),
          __fmul_rn(static_cast<float>(static_cast<const uint8_t*>(w.zero)[i]), zs)};
}
// 8 nibbles (k = 8j .. 8j+7, even k in low nibbles) -> 4 bf16x2 words in k order.
// q as fp32 without I2F: the bits 0x4B000000 | q are 2^23 + q, minus 2^23 is q exactly.
__device__ __forceinline__ void dequant_word(uint32_t v, float s, float z, uint32_t* out) {
#pragma unroll
  for (int p = 0; p < 4; ++p) {
    const float q0 = __fsub_rn(__uint_as_float(0x4B000000u | ((v >> (8 * p)) & 0xFu)), 8388608.0f);
    const float q1 = __fsub_rn(__uint_as_float(0x4B000000u | ((v >> (8 * p + 4)) & 0xFu)), 8388608.0f);
    // int4_dequant_fp32 with q already in fp32 (same two IEEE operations).
    const float w0 = __fmul_rn(__fsub_rn(q0, z), s), w1 = __fmul_rn(__fsub_rn(q1, z), s);
    const __nv_bfloat162 b = __floats2bfloat162_rn(w0, w1);
    out[p] = *reinterpret_cast<const uint32_t*>(&b);
  }
}

// ---- the fused GEMM ------------------------------------------------------------------------------
template <int BM, int BN, int STAGES>
struct TileCfg {
  static constexpr int kWarpsM = BM / 64, kWarpsN = BN / 64, kThreads = 32 * kWarpsM * kWarpsN;
  static constexpr int kXStage = BM * kBK * 2;  // bf16 token tile
  static constexpr int kQStage = BN * kBK / 2;  // raw int4 weight tile, 32 bytes per row
  static constexpr int kStage = kXStage + kQStage;
  static constexpr int kWBuf = BN * kBK * 2;  // dequantized weight tile
  static constexpr int kSmem = STAGES * kStage + 2 * kWBuf;
  static constexpr int kGroupsPerThread = (2 * BN + kThreads - 1) / kThreads;
};

template <int BM, int BN, int STAGES>
__global__ void __launch_bounds__(TileCfg<BM, BN, STAGES>::kThreads, 1)
    int4_gemm_kernel(const Int4GemmWeights w, const __nv_bfloat16* __restrict__ x, int m,
                     __nv_bfloat16* __restrict__ y, int64_t ldy) {
  using C = TileCfg<BM, BN, STAGES>;
  static_assert(STAGES >= 3, "the weight tile runs one k-tile ahead of the mma");
  extern __shared__ __align__(128) uint8_t smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int warp_m = warp % C::kWarpsM, warp_n = warp / C::kWarpsM;
  const int m0 = blockIdx.x * BM;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * BN;
  const int64_t n = w.n, k = w.k;
  const int kt_count = static_cast<int>(k / kBK);
  const uint32_t s_base = smem_addr(smem);
  const uint32_t s_wbuf = s_base + STAGES * C::kStage;

  auto x_stage = [&](int s) { return s_base + s * C::kStage; };
  auto q_stage = [&](int s) { return s_base + s * C::kStage + C::kXStage; };

  auto load_stage = [&](int kt) {
    const int s = kt % STAGES;
    const int64_t k0 = static_cast<int64_t>(kt) * kBK;
    for (int c = tid; c < BM * 8; c += C::kThreads) {
      const int row = c >> 3, unit = c & 7;
      const bool ok = m0 + row < m;
      const __nv_bfloat16* src = ok ? x + static_cast<int64_t>(m0 + row) * k + k0 + unit * 8 : x;
      cp_async16(x_stage(s) + swz(row, unit), src, ok);
    }
    for (int c = tid; c < BN * 2; c += C::kThreads) {
      const int row = c >> 1, half = c & 1;
      const bool ok = n0 + row < n;
      const uint8_t* src = ok ? w.qdata + (n0 + row) * (k / 2) + k0 / 2 + half * 16 : w.qdata;
      cp_async16(q_stage(s) + row * 32 + half * 16, src, ok);
    }
  };

  // Dequantize k-tile kt (raw stage kt % STAGES, visible) into bf16 buffer kt & 1, in pieces that
  // interleave with the mma of tile kt-1: the raw words are read at the top of the iteration, and
  // word u of every group is converted and stored after the mma of k16-step u, so the conversion
  // ALU work issues while the tensor cores run (a separate dequant phase between barriers would
  // leave one unit idle at a time). The group scale/zero come from global memory one tile earlier.
  constexpr int G = C::kGroupsPerThread;
  uint4 raw[G];
  GroupSZ sz[G], sz_next[G];
  auto sz_load = [&](int kt, GroupSZ* dst) {
#pragma unroll
    for (int i = 0; i < G; ++i) {
      const int g = tid + i * C::kThreads;
      const int row = g >> 1, half = g & 1;
      dst[i] = (g < 2 * BN && n0 + row < n) ? load_group(w, n0 + row, static_cast<int64_t>(kt) * 2 + half)
                                            : GroupSZ{0.f, 0.f};
    }
  };
  auto raw_load = [&](int kt) {
    const uint32_t q = q_stage(kt % STAGES) - s_base;
#pragma unroll
    for (int i = 0; i < G; ++i) {
      const int g = tid + i * C::kThreads;
      if (g < 2 * BN) raw[i] = *reinterpret_cast<const uint4*>(smem + q + (g >> 1) * 32 + (g & 1) * 16);
    }
  };
  auto dq_store_word = [&](int kt, int u) {  // u: which 8-weight word of each group
    const uint32_t buf = (s_wbuf - s_base) + (kt & 1) * C::kWBuf;
#pragma unroll
    for (int i = 0; i < G; ++i) {
      const int g = tid + i * C::kThreads;
      if (g < 2 * BN) {
        const uint32_t word = u == 0 ? raw[i].x : u == 1 ? raw[i].y : u == 2 ? raw[i].z : raw[i].w;
        uint32_t o[4];
        dequant_word(word, sz[i].s, sz[i].z, o);
        *reinterpret_cast<uint4*>(smem + buf + swz(g >> 1, (g & 1) * 4 + u)) =
            make_uint4(o[0], o[1], o[2], o[3]);
      }
    }
  };

  float acc[4][8][4];
#pragma unroll
  for (int a = 0; a < 4; ++a)
#pragma unroll
    for (int b = 0; b < 8; ++b)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[a][b][c] = 0.0f;

#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < kt_count) load_stage(s);
    cp_async_commit();
  }
  sz_load(0, sz);
  if (kt_count > 1) sz_load(1, sz_next);
  cp_async_wait<STAGES - 3>();
  __syncthreads();
  raw_load(0);
#pragma unroll
  for (int u = 0; u < 4; ++u) dq_store_word(0, u);
  __syncthreads();

  // Invariant at the top of iteration kt: bf16 buffer kt&1 holds k-tile kt, raw stage kt+1 and x
  // stage kt are complete and visible, stages up to kt+STAGES-2 have been issued, sz_next holds the
  // scale/zero of tile kt+1.
  for (int kt = 0; kt < kt_count; ++kt) {
    if (kt + STAGES - 1 < kt_count) load_stage(kt + STAGES - 1);  // slot last read in kt-1
    cp_async_commit();
    const bool next = kt + 1 < kt_count;
    if (next) {
#pragma unroll
      for (int i = 0; i < G; ++i) sz[i] = sz_next[i];
      raw_load(kt + 1);
      if (kt + 2 < kt_count) sz_load(kt + 2, sz_next);
    }

    const uint32_t xs = x_stage(kt % STAGES);
    const uint32_t wb = s_wbuf + (kt & 1) * C::kWBuf;
#pragma unroll
    for (int ks = 0; ks < kBK / 16; ++ks) {
      uint32_t af[4][4], bfr[8][2];
#pragma unroll
      for (int mi = 0; mi < 4; ++mi) {
        const int row = warp_m * 64 + mi * 16 + (lane & 15);
        ldmatrix_x4(af[mi][0], af[mi][1], af[mi][2], af[mi][3], xs + swz(row, ks * 2 + (lane >> 4)));
      }
#pragma unroll
      for (int nj = 0; nj < 4; ++nj) {
        const int row = warp_n * 64 + nj * 16 + (lane & 7) + ((lane >> 4) << 3);
        ldmatrix_x4(bfr[2 * nj][0], bfr[2 * nj][1], bfr[2 * nj + 1][0], bfr[2 * nj + 1][1],
                    wb + swz(row, ks * 2 + ((lane >> 3) & 1)));
      }
#pragma unroll
      for (int mi = 0; mi < 4; ++mi)
#pragma unroll
        for (int ni = 0; ni < 8; ++ni) mma_bf16(acc[mi][ni], af[mi], bfr[ni][0], bfr[ni][1]);
      // Into buffer (kt+1)&1, last read by the mma of kt-1 (before the previous barrier).
      if (next) dq_store_word(kt + 1, ks);
    }

    cp_async_wait<STAGES - 3>();  // raw stage kt+2 complete for this thread
    __syncthreads();
  }

  // Epilogue: accumulator pairs are adjacent weight rows = adjacent output columns.
  const bool pair_ok = (ldy & 1) == 0 && (reinterpret_cast<uintptr_t>(y) & 3) == 0;
#pragma unroll
  for (int mi = 0; mi < 4; ++mi) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = m0 + warp_m * 64 + mi * 16 + (lane >> 2) + h * 8;
      if (row >= m) continue;
      __nv_bfloat16* yr = y + static_cast<int64_t>(row) * ldy;
#pragma unroll
      for (int ni = 0; ni < 8; ++ni) {
        const int64_t col = n0 + warp_n * 64 + ni * 8 + 2 * (lane & 3);
        const float v0 = acc[mi][ni][2 * h], v1 = acc[mi][ni][2 * h + 1];
        if (col + 1 < n && pair_ok) {
          *reinterpret_cast<__nv_bfloat162*>(yr + col) = __floats2bfloat162_rn(v0, v1);
        } else {
          if (col < n) yr[col] = __float2bfloat16_rn(v0);
          if (col + 1 < n) yr[col + 1] = __float2bfloat16_rn(v1);
        }
      }
    }
  }
}

// The same pipeline with Hopper warpgroup MMA: 256 tokens x 128 weight rows per CTA, two
// warpgroups of 128 tokens each (two m64n128k16 per k16 step). wgmma runs asynchronously, so the
// dequantization of tile kt+1 is issued right after the wgmma batch of tile kt and overlaps it;
// both tiles use the swz() layout, which is the hardware 128-byte swizzle on 1024-aligned tiles.
constexpr int kWgBM = 256, kWgBN = 128, kWgStages = 4;
using WgCfg = TileCfg<kWgBM, kWgBN, kWgStages>;

__global__ void __launch_bounds__(256, 1)
    int4_gemm_wgmma_kernel(const Int4GemmWeights w, const __nv_bfloat16* __restrict__ x, int m,
                           __nv_bfloat16* __restrict__ y, int64_t ldy) {
  using C = WgCfg;
  constexpr int BN = kWgBN, STAGES = kWgStages, kThreads = 256;
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = warp >> 2;
  const int m0 = blockIdx.x * kWgBM;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * BN;
  const int64_t n = w.n, k = w.k;
  const int kt_count = static_cast<int>(k / kBK);
  const uint32_t raw_base = smem_addr(smem_raw);
  const uint32_t s_base = (raw_base + 1023u) & ~1023u;  // swizzle atoms need 1024-byte alignment
  uint8_t* const smem = smem_raw + (s_base - raw_base);
  const uint32_t s_wbuf = s_base + STAGES * C::kStage;
  auto x_stage = [&](int st) { return s_base + st * C::kStage; };
  auto q_stage = [&](int st) { return s_base + st * C::kStage + C::kXStage; };

  auto load_stage = [&](int kt) {
    const int st = kt % STAGES;
    const int64_t k0 = static_cast<int64_t>(kt) * kBK;
    for (int c = tid; c < kWgBM * 8; c += kThreads) {
      const int row = c >> 3, unit = c & 7;
      const bool ok = m0 + row < m;
      const __nv_bfloat16* src = ok ? x + static_cast<int64_t>(m0 + row) * k + k0 + unit * 8 : x;
      cp_async16(x_stage(st) + swz(row, unit), src, ok);
    }
    for (int c = tid; c < BN * 2; c += kThreads) {
      const int row = c >> 1, half = c & 1;
      const bool ok = n0 + row < n;
      const uint8_t* src = ok ? w.qdata + (n0 + row) * (k / 2) + k0 / 2 + half * 16 : w.qdata;
      cp_async16(q_stage(st) + row * 32 + half * 16, src, ok);
    }
  };
  // One 32-weight group per thread (2 * 128 groups per k-tile, 256 threads).
  const int grow = tid >> 1, ghalf = tid & 1;
  const bool gvalid = n0 + grow < n;
  uint4 raw;
  GroupSZ sz, sz_next;
  auto sz_load = [&](int kt) {
    return gvalid ? load_group(w, n0 + grow, static_cast<int64_t>(kt) * 2 + ghalf) : GroupSZ{0.f, 0.f};
  };
  auto raw_load = [&](int kt) {
    raw = *reinterpret_cast<const uint4*>(smem + (q_stage(kt % STAGES) - s_base) + grow * 32 + ghalf * 16);
  };
  auto dq_store = [&](int kt) {
    const uint32_t buf = (s_wbuf - s_base) + (kt & 1) * C::kWBuf;
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      uint32_t o[4];
      dequant_word(words[u], sz.s, sz.z, o);
      *reinterpret_cast<uint4*>(smem + buf + swz(grow, ghalf * 4 + u)) = make_uint4(o[0], o[1], o[2], o[3]);
    }
  };

  float acc[2][64];
#pragma unroll
  for (int j = 0; j < 2; ++j)
#pragma unroll
    for (int i = 0; i < 64; ++i) acc[j][i] = 0.0f;

#pragma unroll
  for (int st = 0; st < STAGES - 1; ++st) {
    if (st < kt_count) load_stage(st);
    cp_async_commit();
  }
  sz = sz_load(0);
  if (kt_count > 1) sz_next = sz_load(1);
  cp_async_wait<STAGES - 3>();
  __syncthreads();
  raw_load(0);
  dq_store(0);
  fence_proxy_async();
  __syncthreads();

  for (int kt = 0; kt < kt_count; ++kt) {
    if (kt + STAGES - 1 < kt_count) load_stage(kt + STAGES - 1);
    cp_async_commit();
    const bool next = kt + 1 < kt_count;
    if (next) {
      sz = sz_next;
      raw_load(kt + 1);
      if (kt + 2 < kt_count) sz_next = sz_load(kt + 2);
    }
    const uint32_t xs = x_stage(kt % STAGES) + wg * 128 * 128;  // this warpgroup's 128 tokens
    const uint32_t wb = s_wbuf + (kt & 1) * C::kWBuf;
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < kBK / 16; ++ks) {
      const uint64_t db = sw128_desc(wb + ks * 32);
#pragma unroll
      for (int j = 0; j < 2; ++j) wgmma_m64n128k16(acc[j], sw128_desc(xs + j * 64 * 128 + ks * 32), db);
    }
    wgmma_commit();
    if (next) dq_store(kt + 1);  // overlaps the asynchronous wgmma batch
    wgmma_wait0();
    cp_async_wait<STAGES - 3>();
    fence_proxy_async();
    __syncthreads();
  }

  // Accumulator layout of m64nN: warp (w % 4) owns rows 16(w%4) .. +15; register 4c+{0,1} is row
  // lane/4, columns 8c + 2(lane%4) + {0,1}; 4c+{2,3} the same columns 8 rows down.
  const bool pair_ok = (ldy & 1) == 0 && (reinterpret_cast<uintptr_t>(y) & 3) == 0;
#pragma unroll
  for (int j = 0; j < 2; ++j) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = m0 + wg * 128 + j * 64 + (warp & 3) * 16 + (lane >> 2) + h * 8;
      if (row >= m) continue;
      __nv_bfloat16* yr = y + static_cast<int64_t>(row) * ldy;
#pragma unroll
      for (int c = 0; c < 16; ++c) {
        const int64_t col = n0 + c * 8 + 2 * (lane & 3);
        const float v0 = acc[j][4 * c + 2 * h], v1 = acc[j][4 * c + 2 * h + 1];
        if (col + 1 < n && pair_ok) {
          *reinterpret_cast<__nv_bfloat162*>(yr + col) = __floats2bfloat162_rn(v0, v1);
        } else {
          if (col < n) yr[col] = __float2bfloat16_rn(v0);
          if (col + 1 < n) yr[col + 1] = __float2bfloat16_rn(v1);
        }
      }
    }
  }
}

void launch_wgmma(const Int4GemmWeights& w, const __nv_bfloat16* x, int64_t m, __nv_bfloat16* y, int64_t ldy,
                  cudaStream_t stream) {
  constexpr int kSmem = WgCfg::kSmem + 1024;  // + alignment slack
  FB_CUDA_CHECK(
      cudaFuncSetAttribute(int4_gemm_wgmma_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  const dim3 grid(static_cast<unsigned>((m + kWgBM - 1) / kWgBM),
                  static_cast<unsigned>((w.n + kWgBN - 1) / kWgBN));
  int4_gemm_wgmma_kernel<<<grid, 256, kSmem, stream>>>(w, x, static_cast<int>(m), y, ldy);
  FB_CUDA_CHECK(cudaGetLastError());
}

template <int BM, int BN>
void launch(const Int4GemmWeights& w, const __nv_bfloat16* x, int64_t m, __nv_bfloat16* y, int64_t ldy,
            cudaStream_t stream) {
  constexpr int kStages = 4;
  using C = TileCfg<BM, BN, kStages>;
  auto* kernel = int4_gemm_kernel<BM, BN, kStages>;
  FB_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmem));
  const dim3 grid(static_cast<unsigned>((m + BM - 1) / BM), static_cast<unsigned>((w.n + BN - 1) / BN));
  kernel<<<grid, C::kThreads, C::kSmem, stream>>>(w, x, static_cast<int>(m), y, ldy);
  FB_CUDA_CHECK(cudaGetLastError());
}

struct TileShape {
  Int4GemmTile tile;
  int bm, bn, ctas_per_sm;
};
constexpr TileShape kShapes[] = {{Int4GemmTile::t128_w128, 128, 128, 2},
                                 {Int4GemmTile::t128_w256, 128, 256, 1},
                                 {Int4GemmTile::t256_w128, 256, 128, 1}};

// Measured on H200, 43008 x 5376, bf16 scales (fb_int4_gemm_gpu_test / fusebench bench): the 256-token
// tiles win wherever M fills them (the dequantized weight tile serves 256 tokens, half the
// conversion work per MAC of 128-token tiles): mma.sync t256_w128 199 / 231 TFLOP/s at M = 512 / 2048
// (before the conversion was interleaved with the mma), wgmma wg256_w128 242 / 287 TFLOP/s. Small M:
// among the 128-token mma.sync tiles, fewest SM-time units (waves x tile area x co-resident CTAs).
Int4GemmTile pick_tile(int64_t m, int64_t n) {
  if (m > 128) return Int4GemmTile::wg256_w128;
  int dev = 0, sms = 0;
  FB_CUDA_CHECK(cudaGetDevice(&dev));
  FB_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  Int4GemmTile best = Int4GemmTile::t128_w128;
  double best_cost = 1e300;
  for (const TileShape& s : kShapes) {
    if (s.bm != 128) continue;
    const int64_t tiles = ((m + s.bm - 1) / s.bm) * ((n + s.bn - 1) / s.bn);
    const int64_t slots = static_cast<int64_t>(sms) * s.ctas_per_sm;
    const double cost = static_cast<double>((tiles + slots - 1) / slots) * s.bm * s.bn * s.ctas_per_sm;
    if (cost < best_cost) best_cost = cost, best = s.tile;
  }
  return best;
}

void validate(const Int4GemmWeights& w, const void* x, int64_t m, const void* y, int64_t ldy) {
  auto bad = [](const std::string& what) { throw std::invalid_argument("int4_gemm: " + what); };
  if (m < 1 || w.n < 1) bad("m and n must be >= 1");
  if (w.k <= 0 || w.k % 256 != 0) bad("k must be a positive multiple of 256");
  if (m > (int64_t{1} << 30) || w.n > int64_t{65535} * 128) bad("m or n too large for the grid");
  if (ldy < w.n) bad("ldy must be >= n");
  if (!w.qdata || !w.scale || !w.zero || !x || !y) bad("null pointer");
  if (w.u8 && (!w.scale_step || !w.zero_step)) bad("u8 encoding needs scale_step and zero_step");
  if (reinterpret_cast<uintptr_t>(w.qdata) % 16 || reinterpret_cast<uintptr_t>(x) % 16)
    bad("qdata and x must be 16-byte aligned");
  if (!w.u8 && (reinterpret_cast<uintptr_t>(w.scale) % 2 || reinterpret_cast<uintptr_t>(w.zero) % 2))
    bad("bf16 scale/zero must be 2-byte aligned");
  if (reinterpret_cast<uintptr_t>(y) % 2) bad("y must be 2-byte aligned");
}

// One thread per 32-weight group: the same dequant_word as the GEMM's shared-memory tiles.
__global__ void int4_dequant_kernel(const Int4GemmWeights w, __nv_bfloat16* __restrict__ out) {
  const int64_t groups = w.n * (w.k / 32);
  const int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (g >= groups) return;
  const int64_t row = g / (w.k / 32), grp = g % (w.k / 32);
  const GroupSZ sz = load_group(w, row, grp);
  const uint4 raw = *reinterpret_cast<const uint4*>(w.qdata + g * 16);
  const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
  uint4* dst = reinterpret_cast<uint4*>(out + g * 32);
#pragma unroll
  for (int u = 0; u < 4; ++u) {
    uint32_t o[4];
    dequant_word(words[u], sz.s, sz.z, o);
    dst[u] = make_uint4(o[0], o[1], o[2], o[3]);
  }
}

}  // namespace

const char* to_string(Int4GemmTile t) {
  switch (t) {
    case Int4GemmTile::automatic:
      return "auto";
    case Int4GemmTile::t128_w128:
      return "t128_w128";
    case Int4GemmTile::t128_w256:
      return "t128_w256";
    case Int4GemmTile::t256_w128:
      return "t256_w128";
    case Int4GemmTile::wg256_w128:
      return "wg256_w128";
  }
  return "?";
}

void int4_gemm(const Int4GemmWeights& w, const __nv_bfloat16* x, int64_t m, __nv_bfloat16* y, int64_t ldy,
               Int4GemmTile tile, cudaStream_t stream) {
  validate(w, x, m, y, ldy);
  if (tile == Int4GemmTile::automatic) tile = pick_tile(m, w.n);
  switch (tile) {
    case Int4GemmTile::t128_w128:
      return launch<128, 128>(w, x, m, y, ldy, stream);
    case Int4GemmTile::t128_w256:
      return launch<128, 256>(w, x, m, y, ldy, stream);
    case Int4GemmTile::t256_w128:
      return launch<256, 128>(w, x, m, y, ldy, stream);
    case Int4GemmTile::wg256_w128:
      return launch_wgmma(w, x, m, y, ldy, stream);
    case Int4GemmTile::automatic:
      break;
  }
  throw std::invalid_argument("int4_gemm: unknown tile");
}

void int4_dequantize_bf16(const Int4GemmWeights& w, __nv_bfloat16* out, cudaStream_t stream) {
  if (w.n < 1 || w.k <= 0 || w.k % 256 != 0) throw std::invalid_argument("int4_dequantize_bf16: bad shape");
  if (!w.qdata || !w.scale || !w.zero || !out || (w.u8 && (!w.scale_step || !w.zero_step)))
    throw std::invalid_argument("int4_dequantize_bf16: null pointer");
  if (reinterpret_cast<uintptr_t>(w.qdata) % 16 || reinterpret_cast<uintptr_t>(out) % 16)
    throw std::invalid_argument("int4_dequantize_bf16: qdata and out must be 16-byte aligned");
  const int64_t groups = w.n * (w.k / 32);
  constexpr int kThreads = 256;
  int4_dequant_kernel<<<static_cast<unsigned>((groups + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      w, out);
  FB_CUDA_CHECK(cudaGetLastError());
}

}  // namespace fb::cuda
