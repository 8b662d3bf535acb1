#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>

#include "kernels/common/cuda_check.h"
#include "kernels/common/launch.cuh"
#include "kernels/common/q8_quantize.cuh"
#include "kernels/common/stream_loads.cuh"
#include "kernels/gemv/w4a8_matvec.cuh"
#include "kernels/gemv/w4a8_matvec_tuning.cuh"
#include "reference/formats/blocks.h"

namespace fb::cuda {

namespace {

constexpr int kWarps =
    4;  // per block (small blocks: finer occupancy steps); a warp owns a pair of rows at a time
constexpr int kUnroll = 2;  // 32-weight units per lane loaded before the first is used

__device__ __forceinline__ float bf16_bits_to_float(uint16_t b) {
  return __uint_as_float(static_cast<uint32_t>(b) << 16);
}
__device__ __forceinline__ float fp16_bits_to_float(uint16_t b) { return __half2float(__ushort_as_half(b)); }

// Four 2-bit fields of a byte -> bits 0-1 of each byte of a word.
__device__ __forceinline__ uint32_t spread2(uint32_t b) {
  const uint32_t t = (b | (b << 12)) & 0x000F000Fu;
  return (t | (t << 6)) & 0x03030303u;
}

struct Q8Meta {
  float d;
  int sum_lo, sum_hi;
};
__device__ __forceinline__ Q8Meta load_meta(const Q8Block* b) {
  const uint4 m = __ldg(reinterpret_cast<const uint4*>(b) + 2);
  return {__uint_as_float(m.x), static_cast<int>(m.y), static_cast<int>(m.z)};
}

// ---- per-format weight fragments: load() issues the global loads of one 32-weight unit of a row,
// dot() combines it with the unit's activations of one token into the fp32 contribution.

struct Args {
  const uint8_t* qdata;
  const uint8_t* qhigh;
  const void* scale;
  const void* zero;
  const uint16_t* scale_step;
  const uint16_t* zero_step;
  int64_t k;
};

template <MatvecFormat F>
struct Fmt;

// Coalesced int4: 16 bytes = 32 weights = one Q8 block. sum += s * d_a * (dp - z * asum).
template <bool kU8>
struct Int4 {
  struct Frag {
    uint4 q;
    float s, z;
  };
  struct Act {
    uint4 e, o;
    Q8Meta m;
  };
  static __device__ __forceinline__ Frag load(const Args& a, int64_t row, int64_t unit) {
    Frag f;
    f.q = ld_stream16(a.qdata + row * (a.k / 2) + unit * 16);
    const int64_t g = row * (a.k / 32) + unit;
    if constexpr (kU8) {
      const int64_t sb = row * (a.k / 256) + unit / 8;
      f.s = __fmul_rn(static_cast<float>(__ldg(static_cast<const uint8_t*>(a.scale) + g)),
                      fp16_bits_to_float(__ldg(a.scale_step + sb)));
      f.z = __fmul_rn(static_cast<float>(__ldg(static_cast<const uint8_t*>(a.zero) + g)),
                      fp16_bits_to_float(__ldg(a.zero_step + sb)));
    } else {
      f.s = bf16_bits_to_float(__ldg(static_cast<const uint16_t*>(a.scale) + g));
      f.z = bf16_bits_to_float(__ldg(static_cast<const uint16_t*>(a.zero) + g));
    }
    return f;
  }
  static __device__ __forceinline__ Act load_act(const Q8Block* q8, int64_t unit) {
    const uint4* p = reinterpret_cast<const uint4*>(q8 + unit);
    return {__ldg(p), __ldg(p + 1), load_meta(q8 + unit)};
  }
  static __device__ __forceinline__ float dot(const Frag& f, const Act& a) {
    const uint32_t w[4] = {f.q.x, f.q.y, f.q.z, f.q.w};
    const uint32_t e[4] = {a.e.x, a.e.y, a.e.z, a.e.w};
    const uint32_t o[4] = {a.o.x, a.o.y, a.o.z, a.o.w};
    int dp = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      dp = __dp4a(static_cast<int>(w[i] & 0x0F0F0F0Fu), static_cast<int>(e[i]), dp);
      dp = __dp4a(static_cast<int>((w[i] >> 4) & 0x0F0F0F0Fu), static_cast<int>(o[i]), dp);
    }
    const float inner = __fmaf_rn(-f.z, static_cast<float>(a.m.sum_lo + a.m.sum_hi), static_cast<float>(dp));
    return __fmul_rn(__fmul_rn(f.s, a.m.d), inner);
  }
};
template <>
struct Fmt<MatvecFormat::int4_bf16> : Int4<false> {};
template <>
struct Fmt<MatvecFormat::int4_u8> : Int4<true> {};

// Planar int6: ql 16 bytes + qh 8 bytes per 32 weights, a scale per 16.
template <bool kI8>
struct Int6 {
  struct Frag {
    uint4 q;
    uint2 h;
    float s0, s1;
  };
  using Act = typename Int4<false>::Act;
  static __device__ __forceinline__ Frag load(const Args& a, int64_t row, int64_t unit) {
    Frag f;
    f.q = ld_stream16(a.qdata + row * (a.k / 2) + unit * 16);
    f.h = __ldg(reinterpret_cast<const uint2*>(a.qhigh + row * (a.k / 4) + unit * 8));
    const int64_t g = row * (a.k / 16) + unit * 2;
    if constexpr (kI8) {
      const uint16_t c = __ldg(reinterpret_cast<const uint16_t*>(static_cast<const int8_t*>(a.scale) + g));
      const float st = fp16_bits_to_float(__ldg(a.scale_step + row * (a.k / 256) + unit / 8));
      f.s0 = __fmul_rn(static_cast<float>(static_cast<int8_t>(c & 0xFF)), st);
      f.s1 = __fmul_rn(static_cast<float>(static_cast<int8_t>(c >> 8)), st);
    } else {
      const uint32_t s = __ldg(reinterpret_cast<const uint32_t*>(static_cast<const uint16_t*>(a.scale) + g));
      f.s0 = bf16_bits_to_float(static_cast<uint16_t>(s & 0xFFFF));
      f.s1 = bf16_bits_to_float(static_cast<uint16_t>(s >> 16));
    }
    return f;
  }
  static __device__ __forceinline__ Act load_act(const Q8Block* q8, int64_t unit) {
    return Int4<false>::load_act(q8, unit);
  }
  static __device__ __forceinline__ float dot(const Frag& f, const Act& a) {
    const uint32_t w[4] = {f.q.x, f.q.y, f.q.z, f.q.w};
    const uint32_t e[4] = {a.e.x, a.e.y, a.e.z, a.e.w};
    const uint32_t o[4] = {a.o.x, a.o.y, a.o.z, a.o.w};
    int dp[2] = {0, 0};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t he = (f.h.x >> (8 * i)) & 0xFFu, ho = (f.h.y >> (8 * i)) & 0xFFu;
      const uint32_t ve = (w[i] & 0x0F0F0F0Fu) | (spread2(he) << 4);
      const uint32_t vo = ((w[i] >> 4) & 0x0F0F0F0Fu) | (spread2(ho) << 4);
      dp[i / 2] = __dp4a(static_cast<int>(ve), static_cast<int>(e[i]), dp[i / 2]);
      dp[i / 2] = __dp4a(static_cast<int>(vo), static_cast<int>(o[i]), dp[i / 2]);
    }
    // u = q + 32: subtracting 32 * (sum of activation quants) is exact in int.
    const float lo = static_cast<float>(dp[0] - 32 * a.m.sum_lo),
                hi = static_cast<float>(dp[1] - 32 * a.m.sum_hi);
    return __fmul_rn(a.m.d, __fmaf_rn(f.s1, hi, __fmul_rn(f.s0, lo)));
  }
};
template <>
struct Fmt<MatvecFormat::int6_bf16> : Int6<false> {};
template <>
struct Fmt<MatvecFormat::int6_i8> : Int6<true> {};

__device__ __forceinline__ uint32_t word_of(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// ggml Q4_K read in place. Unit u of a row: block u/8, 64-chunk c = (u%8)/2, half h = u%2: 16 qs
// bytes whose low nibbles are elements 16h..16h+15 of sub-block 2c and high nibbles the same
// elements of sub-block 2c+1 (consecutive k, so byte-permuted into the even/odd activation order).
template <>
struct Fmt<MatvecFormat::q4_k> {
  struct Frag {
    uint4 q;
    float sa, ma, sb, mb;  // d*sc and dmin*m of sub-blocks 2c and 2c+1 (exact in fp32)
  };
  struct Act {
    uint2 ea, oa, eb, ob;
    float da, db;
    int suma, sumb;
  };
  static __device__ __forceinline__ Frag load(const Args& a, int64_t row, int64_t unit) {
    const uint8_t* blk = a.qdata + (row * (a.k / 256) + unit / 8) * sizeof(BlockQ4K);
    const int c = static_cast<int>(unit % 8) / 2, h = static_cast<int>(unit % 2);
    Frag f;
    f.q = ld_stream16(blk + 16 + 32 * c + 16 * h);
    const uint4 hd = __ldg(reinterpret_cast<const uint4*>(blk));  // d, dmin, scales[12]
    const float d = fp16_bits_to_float(static_cast<uint16_t>(hd.x & 0xFFFF));
    const float dmin = fp16_bits_to_float(static_cast<uint16_t>(hd.x >> 16));
    auto sbyte = [&](int j) { return (word_of(hd, 1 + j / 4) >> (8 * (j % 4))) & 0xFFu; };
    float sc[2], mn[2];
#pragma unroll
    for (int s = 0; s < 2; ++s) {
      const int j = 2 * c + s;
      uint32_t scv, mnv;
      if (j < 4) {
        scv = sbyte(j) & 63;
        mnv = sbyte(j + 4) & 63;
      } else {
        scv = (sbyte(j + 4) & 0xF) | ((sbyte(j - 4) >> 6) << 4);
        mnv = (sbyte(j + 4) >> 4) | ((sbyte(j) >> 6) << 4);
      }
      sc[s] = __fmul_rn(d, static_cast<float>(scv));
      mn[s] = __fmul_rn(dmin, static_cast<float>(mnv));
    }
    f.sa = sc[0];
    f.ma = mn[0];
    f.sb = sc[1];
    f.mb = mn[1];
    return f;
  }
  static __device__ __forceinline__ Act load_act(const Q8Block* q8, int64_t unit) {
    const int64_t ga = (unit / 8) * 8 + ((unit % 8) / 2) * 2;
    const int h = static_cast<int>(unit % 2);
    const uint8_t* pa = reinterpret_cast<const uint8_t*>(q8 + ga);
    const uint8_t* pb = reinterpret_cast<const uint8_t*>(q8 + ga + 1);
    const Q8Meta ma = load_meta(q8 + ga), mb = load_meta(q8 + ga + 1);
    return {__ldg(reinterpret_cast<const uint2*>(pa + 8 * h)),
            __ldg(reinterpret_cast<const uint2*>(pa + 16 + 8 * h)),
            __ldg(reinterpret_cast<const uint2*>(pb + 8 * h)),
            __ldg(reinterpret_cast<const uint2*>(pb + 16 + 8 * h)),
            ma.d,
            mb.d,
            h ? ma.sum_hi : ma.sum_lo,
            h ? mb.sum_hi : mb.sum_lo};
  }
  static __device__ __forceinline__ float dot(const Frag& f, const Act& a) {
    int dpa = 0, dpb = 0;
    const uint32_t ea[2] = {a.ea.x, a.ea.y}, oa[2] = {a.oa.x, a.oa.y};
    const uint32_t eb[2] = {a.eb.x, a.eb.y}, ob[2] = {a.ob.x, a.ob.y};
#pragma unroll
    for (int p = 0; p < 2; ++p) {
      const uint32_t w0 = word_of(f.q, 2 * p), w1 = word_of(f.q, 2 * p + 1);
      const uint32_t l0 = w0 & 0x0F0F0F0Fu, l1 = w1 & 0x0F0F0F0Fu;
      const uint32_t h0 = (w0 >> 4) & 0x0F0F0F0Fu, h1 = (w1 >> 4) & 0x0F0F0F0Fu;
      dpa = __dp4a(static_cast<int>(__byte_perm(l0, l1, 0x6420)), static_cast<int>(ea[p]), dpa);
      dpa = __dp4a(static_cast<int>(__byte_perm(l0, l1, 0x7531)), static_cast<int>(oa[p]), dpa);
      dpb = __dp4a(static_cast<int>(__byte_perm(h0, h1, 0x6420)), static_cast<int>(eb[p]), dpb);
      dpb = __dp4a(static_cast<int>(__byte_perm(h0, h1, 0x7531)), static_cast<int>(ob[p]), dpb);
    }
    // ggml's weight is d*sc*q - dmin*m: sum = d_a * (S * dp - M * asum) per sub-block.
    const float ta = __fmul_rn(
        a.da, __fmaf_rn(-f.ma, static_cast<float>(a.suma), __fmul_rn(f.sa, static_cast<float>(dpa))));
    return __fmaf_rn(
        a.db, __fmaf_rn(-f.mb, static_cast<float>(a.sumb), __fmul_rn(f.sb, static_cast<float>(dpb))), ta);
  }
};

// ggml Q6_K read in place (210-byte blocks: only 2-byte alignment, so 16-bit loads). Unit u of a
// row: block u/8, half hf = (u%8)/4, j = u%4: ggml's l = 8j..8j+7 of that half, i.e. elements
// 8j..8j+7 of the four 32-groups 4hf+s (s = 0..3), whose quants come from ql[l], ql[l+32], qh[l].
template <>
struct Fmt<MatvecFormat::q6_k> {
  struct Frag {
    uint32_t a[2], b[2], h[2];
    float s[4];
  };
  struct Act {
    uint32_t e[4], o[4];
    float d[4];
  };
  static __device__ __forceinline__ uint32_t ld8x2(const uint8_t* p, int w) {
    const uint16_t* q = reinterpret_cast<const uint16_t*>(p) + 2 * w;
    return static_cast<uint32_t>(__ldg(q)) | (static_cast<uint32_t>(__ldg(q + 1)) << 16);
  }
  static __device__ __forceinline__ Frag load(const Args& a, int64_t row, int64_t unit) {
    const uint8_t* blk = a.qdata + (row * (a.k / 256) + unit / 8) * sizeof(BlockQ6K);
    const int hf = static_cast<int>(unit % 8) / 4, j = static_cast<int>(unit % 4);
    Frag f;
#pragma unroll
    for (int w = 0; w < 2; ++w) {
      f.a[w] = ld8x2(blk + 64 * hf + 8 * j, w);
      f.b[w] = ld8x2(blk + 64 * hf + 32 + 8 * j, w);
      f.h[w] = ld8x2(blk + 128 + 32 * hf + 8 * j, w);
    }
    const float d = fp16_bits_to_float(__ldg(reinterpret_cast<const uint16_t*>(blk + 208)));
    const int8_t* sc = reinterpret_cast<const int8_t*>(blk + 192 + 8 * hf + j / 2);
#pragma unroll
    for (int s = 0; s < 4; ++s) f.s[s] = __fmul_rn(d, static_cast<float>(__ldg(sc + 2 * s)));
    return f;
  }
  static __device__ __forceinline__ Act load_act(const Q8Block* q8, int64_t unit) {
    const int64_t g0 = (unit / 8) * 8 + ((unit % 8) / 4) * 4;
    const int j = static_cast<int>(unit % 4);
    Act a;
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      const uint32_t* p = reinterpret_cast<const uint32_t*>(q8 + g0 + s);
      a.e[s] = __ldg(p + j);
      a.o[s] = __ldg(p + 4 + j);
      a.d[s] = __ldg(reinterpret_cast<const float*>(p + 8));
    }
    return a;
  }
  static __device__ __forceinline__ float dot(const Frag& f, const Act& a) {
    float acc = 0.0f;
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      uint32_t u[2];
#pragma unroll
      for (int w = 0; w < 2; ++w) {
        const uint32_t src = (s & 1) ? f.b[w] : f.a[w];
        const uint32_t lo = (s < 2 ? src : src >> 4) & 0x0F0F0F0Fu;
        u[w] = lo | (((f.h[w] >> (2 * s)) & 0x03030303u) << 4);
      }
      int dp = __dp4a(static_cast<int>(__byte_perm(u[0], u[1], 0x6420)), static_cast<int>(a.e[s]), 0);
      dp = __dp4a(static_cast<int>(__byte_perm(u[0], u[1], 0x7531)), static_cast<int>(a.o[s]), dp);
      const int asum =
          __dp4a(0x01010101, static_cast<int>(a.e[s]), __dp4a(0x01010101, static_cast<int>(a.o[s]), 0));
      acc = __fmaf_rn(__fmul_rn(a.d[s], f.s[s]), static_cast<float>(dp - 32 * asum), acc);
    }
    return acc;
  }
};

__device__ __forceinline__ float glu_act(MatvecEpilogue ep, float g) {
  if (ep == MatvecEpilogue::glu_silu) return __fdiv_rn(g, __fadd_rn(1.0f, expf(-g)));
  const float inner = __fmul_rn(0.7978845608f, __fmaf_rn(__fmul_rn(0.044715f, __fmul_rn(g, g)), g, g));
  return __fmul_rn(__fmul_rn(0.5f, g), __fadd_rn(1.0f, tanhf(inner)));
}

__device__ __forceinline__ float round_bf16(float v) { return __bfloat162float(__float2bfloat16_rn(v)); }

// Resident blocks per SM the register budget must allow: M = 1 is pure streaming and wants the most
// warps; larger M hold more accumulators and activations (ggml Q4_K at M = 4 spills at 4 blocks).
template <MatvecFormat F, int M>
inline constexpr int kMinBlocks = M == 1                                ? 5
                                  : (F == MatvecFormat::q4_k && M == 4) ? 3
                                                                        : 4;

// Persistent grid of warps; warp task p covers rows (2p, 2p+1), or (p, p + n/2) with a GLU epilogue.
template <MatvecFormat F, int M>
__global__ void __launch_bounds__(kWarps * 32, kMinBlocks<F, M>)
    matvec_kernel(Args args, const Q8Block* __restrict__ q8, int64_t n, __nv_bfloat16* __restrict__ y,
                  MatvecEpilogue ep) {
  using W = Fmt<F>;
  const int lane = threadIdx.x & 31;
  const int64_t units = args.k / 32;
  const bool glu = ep != MatvecEpilogue::none;
  const int64_t half = n / 2;
  const int64_t tasks = glu ? half : (n + 1) / 2;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarps;
  for (int64_t task = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32; task < tasks;
       task += warps) {
    const int64_t row0 = glu ? task : 2 * task;
    const int64_t row1 = glu ? task + half : 2 * task + 1;
    const bool has1 = row1 < n;
    const int64_t r1 = has1 ? row1 : row0;  // an odd last row reads its own data twice, writes once
    float acc[2][M];
#pragma unroll
    for (int t = 0; t < M; ++t) acc[0][t] = acc[1][t] = 0.0f;
    for (int64_t u0 = lane; u0 < units; u0 += 32 * kUnroll) {
      typename W::Frag f[kUnroll][2];
#pragma unroll
      for (int i = 0; i < kUnroll; ++i) {
        const int64_t u = u0 + 32 * i < units ? u0 + 32 * i : u0;
        f[i][0] = W::load(args, row0, u);
        f[i][1] = W::load(args, r1, u);
      }
#pragma unroll
      for (int i = 0; i < kUnroll; ++i) {
        if (u0 + 32 * i >= units) break;
#pragma unroll
        for (int t = 0; t < M; ++t) {
          const typename W::Act a = W::load_act(q8 + t * units, u0 + 32 * i);
          acc[0][t] = __fadd_rn(acc[0][t], W::dot(f[i][0], a));
          acc[1][t] = __fadd_rn(acc[1][t], W::dot(f[i][1], a));
        }
      }
    }
#pragma unroll
    for (int t = 0; t < M; ++t) {
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) {
        acc[0][t] = __fadd_rn(acc[0][t], __shfl_xor_sync(0xFFFFFFFFu, acc[0][t], off));
        acc[1][t] = __fadd_rn(acc[1][t], __shfl_xor_sync(0xFFFFFFFFu, acc[1][t], off));
      }
    }
    if (lane < M) {
      // Lane t writes token t (registers indexed by constants only).
#pragma unroll
      for (int t = 0; t < M; ++t) {
        if (lane != t) continue;
        if (glu) {
          const float g = round_bf16(acc[0][t]), up = round_bf16(acc[1][t]);
          y[t * half + row0] = __float2bfloat16_rn(__fmul_rn(glu_act(ep, g), up));
        } else {
          y[t * n + row0] = __float2bfloat16_rn(acc[0][t]);
          if (has1) y[t * n + row1] = __float2bfloat16_rn(acc[1][t]);
        }
      }
    }
  }
}

// ---- Staged variant. The legacy kernel reads each lane's Q8 block (48-byte stride across lanes)
// straight from global: three 16-byte loads that touch 12 L1 lines per warp each, once per token
// and row pair, which saturates L1 before DRAM at M = 4. Here every block copies the activations
// once into shared memory as three planar arrays (quants even, quants odd, d + half sums), so a
// warp's read of one unit is 512 contiguous bytes per array, and R rows share it.
// Balance: a persistent grid where block b owns tasks [b*T/G, (b+1)*T/G) (equal within one task),
// and its warps take tasks from a shared counter, so no warp idles while its block has work. The
// first task's weights are requested before the wait on the preceding kernel (PDL) and a warp
// requests its next task's first chunk before reducing the current one.
// Per-row arithmetic is the legacy kernel's: lane l sums units l, l+32, ... in order, then the same
// xor tree; rows never mix, so any R, U and grid give the same bits.
constexpr int kWarps2 = 8;
constexpr int kSmemBudget2 = 100 * 1024;  // two blocks per SM still fit (228 KB)

__device__ __forceinline__ void griddep_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void griddep_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// The activation quantization done inside the staged kernel (w4a8_matvec_bf16 on the small-K class,
// see fuse_quantize): per Q8 block 4 lanes of 8 elements (one 16-byte load each) instead of a warp
// of 1 (quantize_q8_eighth, kernels/common/q8_quantize.cuh: bit-exact with quantize_q8_kernel).
// Writes the planar shared arrays; q8_out (block 0 only) gets the Q8Blocks, so the workspace holds
// the quantized activations afterwards exactly as with the separate kernel.
__device__ __forceinline__ void quantize_into_smem(const __nv_bfloat16* __restrict__ x, int64_t blocks,
                                                   uint4* s_e, uint4* s_o, uint4* s_m,
                                                   Q8Block* __restrict__ q8_out) {
  const int lane = threadIdx.x & 31, sub = lane & 3;
  const int64_t per_pass = static_cast<int64_t>(blockDim.x) / 4;
  for (int64_t base = (threadIdx.x >> 5) * 8; base < blocks; base += per_pass) {  // warp-uniform
    const int64_t b = base + (lane >> 2);
    float v[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (b < blocks) {
      const uint4 u = *reinterpret_cast<const uint4*>(x + b * 32 + sub * 8);
      const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        v[2 * j] = __uint_as_float(w[j] << 16);
        v[2 * j + 1] = __uint_as_float(w[j] & 0xFFFF0000u);
      }
    }
    const Q8Eighth e = quantize_q8_eighth(v);
    const int hi = __shfl_xor_sync(0xFFFFFFFFu, e.half_sum, 2);  // sub 0 gets the 16..31 sum
    if (b >= blocks) continue;
    const uint32_t we = e.even, wo = e.odd;
    reinterpret_cast<uint32_t*>(s_e + b)[sub] = we;
    reinterpret_cast<uint32_t*>(s_o + b)[sub] = wo;
    const uint4 meta =
        make_uint4(__float_as_uint(e.d), static_cast<uint32_t>(e.half_sum), static_cast<uint32_t>(hi), 0u);
    if (sub == 0) s_m[b] = meta;
    if (q8_out != nullptr) {
      uint32_t* qb = reinterpret_cast<uint32_t*>(q8_out + b);
      qb[sub] = we;
      qb[4 + sub] = wo;
      if (sub == 0) reinterpret_cast<uint4*>(q8_out + b)[2] = meta;
    }
  }
}

// Two resident blocks (128 registers) hold 12 fragments at M = 1; with M >= 2 tokens' activations
// live too, so the 12-fragment variants take the full register file at one block per SM instead of
// spilling.
template <int M, int R, int U>
inline constexpr int kMinBlocks2 = (M >= 2 && (R * U) >= 12) ? 1 : 2;

// kQuantX: the activations come as bf16 xq and are quantized here (the small-K class); a separate
// instantiation, so the kernels that copy q8 are the same code as without it.
template <MatvecFormat F, int M, int R, int U, bool kQuantX>
__global__ void __launch_bounds__(kWarps2 * 32, kMinBlocks2<M, R, U>)
    matvec_staged_kernel(Args args, const Q8Block* __restrict__ q8, int64_t n, __nv_bfloat16* __restrict__ y,
                         MatvecEpilogue ep, const __nv_bfloat16* __restrict__ xq,
                         Q8Block* __restrict__ q8_out) {
  static_assert(R % 2 == 0, "a task holds whole [gate, up] pairs");
  using W = Fmt<F>;
  extern __shared__ uint4 s_act[];  // [3][M * units]: even quants, odd quants, {d, sum_lo, sum_hi, pad}
  __shared__ int s_next;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t units = args.k / 32;
  const bool glu = ep != MatvecEpilogue::none;
  const int64_t half = n / 2;
  constexpr int H = R / 2;
  const int64_t tasks = glu ? (half + H - 1) / H : (n + R - 1) / R;
  const int64_t t_begin = tasks * blockIdx.x / gridDim.x;
  const int64_t t_end = tasks * (blockIdx.x + 1) / gridDim.x;
  // Row r of a task (GLU: r < H gate rows, r >= H the matching up rows); rows past the end read the
  // task's first row again and are not written.
  auto row_of = [&](int64_t task, int r) -> int64_t {
    if (glu) {
      const int64_t g = task * H + (r % H);
      return (g < half ? g : task * H) + (r >= H ? half : 0);
    }
    const int64_t row = task * R + r;
    return row < n ? row : task * R;
  };
  auto valid = [&](int64_t task, int r) { return glu ? task * H + (r % H) < half : task * R + r < n; };

  typename W::Frag f[U][R];
  auto load_chunk = [&](int64_t task, int64_t u0) {
#pragma unroll
    for (int i = 0; i < U; ++i) {
      // Slots past the row's end load a valid unit and are never used (K = 256 leaves lanes idle).
      int64_t u = u0 + 32 * i;
      if (u >= units) u = u0 < units ? u0 : 0;
#pragma unroll
      for (int r = 0; r < R; ++r) f[i][r] = W::load(args, row_of(task, r), u);
    }
  };

  int64_t task = t_begin + warp;
  if (task < t_end) load_chunk(task, lane);
  griddep_wait();  // q8 (and y) belong to the preceding kernel until here
  const int64_t total = M * units;
  uint4* s_e = s_act;
  uint4* s_o = s_act + total;
  uint4* s_m = s_act + 2 * total;
  if constexpr (kQuantX) {
    quantize_into_smem(xq, total, s_e, s_o, s_m, blockIdx.x == 0 ? q8_out : nullptr);
  } else {
    for (int64_t i = threadIdx.x; i < total; i += blockDim.x) {
      // Coherent loads: q8 is the PDL predecessor's output, which ld.global.nc (__ldg) may not see
      // (its contract is data read-only for the kernel's lifetime; see tq4_sdpa.cu load_as_float).
      const uint4* p = reinterpret_cast<const uint4*>(q8 + i);
      s_e[i] = __ldcg(p);
      s_o[i] = __ldcg(p + 1);
      s_m[i] = __ldcg(p + 2);
    }
  }
  if (threadIdx.x == 0) s_next = kWarps2;
  __syncthreads();

  while (task < t_end) {
    float acc[R][M];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int t = 0; t < M; ++t) acc[r][t] = 0.0f;
    for (int64_t u0 = lane; u0 < units; u0 += 32 * U) {
      if (u0 != lane) load_chunk(task, u0);  // the first chunk is already in flight
#pragma unroll
      for (int i = 0; i < U; ++i) {
        const int64_t u = u0 + 32 * i;
        if (u >= units) break;
#pragma unroll
        for (int t = 0; t < M; ++t) {
          const uint4 mm = s_m[t * units + u];
          const typename W::Act a{
              s_e[t * units + u], s_o[t * units + u],
              Q8Meta{__uint_as_float(mm.x), static_cast<int>(mm.y), static_cast<int>(mm.z)}};
#pragma unroll
          for (int r = 0; r < R; ++r) acc[r][t] = __fadd_rn(acc[r][t], W::dot(f[i][r], a));
        }
      }
    }
    const int64_t cur = task;
    int next = 0;
    if (lane == 0) next = atomicAdd(&s_next, 1);
    task = t_begin + __shfl_sync(0xFFFFFFFFu, next, 0);
    if (task < t_end) load_chunk(task, lane);  // in flight while this task reduces and writes
#pragma unroll
    for (int t = 0; t < M; ++t)
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int off = 16; off > 0; off >>= 1)
          acc[r][t] = __fadd_rn(acc[r][t], __shfl_xor_sync(0xFFFFFFFFu, acc[r][t], off));
    if (lane < M) {
#pragma unroll
      for (int t = 0; t < M; ++t) {
        if (lane != t) continue;
        if (glu) {
#pragma unroll
          for (int j = 0; j < H; ++j) {
            if (!valid(cur, j)) continue;
            const float g = round_bf16(acc[j][t]), up = round_bf16(acc[j + H][t]);
            y[t * half + row_of(cur, j)] = __float2bfloat16_rn(__fmul_rn(glu_act(ep, g), up));
          }
        } else {
#pragma unroll
          for (int r = 0; r < R; ++r)
            if (valid(cur, r)) y[t * n + row_of(cur, r)] = __float2bfloat16_rn(acc[r][t]);
        }
      }
    }
  }
}

// One warp per 32-element block: amax by shuffle, then the quants and half sums (bit-exact with
// fb::quantize_activations_q8: __fdiv_rn, __frcp_rn = 1.0f/d rounded once, __fmul_rn, _rn convert).
__global__ void __launch_bounds__(256)
    quantize_q8_kernel(const __nv_bfloat16* __restrict__ x, int64_t blocks, Q8Block* __restrict__ q8) {
  griddep_launch_dependents();  // a PDL-launched matvec may start its weight loads now
  const int lane = threadIdx.x & 31;
  const int64_t b = static_cast<int64_t>(blockIdx.x) * 8 + threadIdx.x / 32;
  if (b >= blocks) return;
  const float v = __bfloat162float(x[b * 32 + lane]);
  float amax = fabsf(v);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, off));
  const float d = __fdiv_rn(amax, 127.0f);
  const float inv = d != 0.0f ? __frcp_rn(d) : 0.0f;
  const int q = max(-128, min(127, __float2int_rn(__fmul_rn(v, inv))));
  int s = q;
#pragma unroll
  for (int off = 8; off > 0; off >>= 1) s += __shfl_xor_sync(0xFFFFFFFFu, s, off);  // within each 16
  Q8Block& out = q8[b];
  ((lane & 1) ? out.qs_odd : out.qs_even)[lane / 2] = static_cast<int8_t>(q);
  if (lane == 0) {
    out.d = d;
    out.sum_lo = s;
    out.pad = 0;
  }
  if (lane == 16) out.sum_hi = s;
}

__global__ void __launch_bounds__(256) glu_kernel(const __nv_bfloat16* __restrict__ y, int64_t m, int64_t i,
                                                  MatvecEpilogue ep, __nv_bfloat16* __restrict__ out) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= m * i) return;
  const int64_t t = idx / i, j = idx % i;
  const float g = __bfloat162float(y[t * 2 * i + j]), up = __bfloat162float(y[t * 2 * i + i + j]);
  out[idx] = __float2bfloat16_rn(__fmul_rn(glu_act(ep, g), up));
}

template <MatvecFormat F, int M>
void launch_matvec(const Args& args, const Q8Block* q8, int64_t n, __nv_bfloat16* y, MatvecEpilogue ep,
                   cudaStream_t stream) {
  // Enough resident warps to keep ~all SMs streaming, no more: extra blocks would only loop.
  static const int grid_cap = [] {
    int dev = 0, sms = 0, per_sm = 0;
    FB_CUDA_CHECK(cudaGetDevice(&dev));
    FB_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    FB_CUDA_CHECK(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, matvec_kernel<F, M>, kWarps * 32, 0));
    return sms * (per_sm > 0 ? per_sm : 1);
  }();
  const int64_t tasks = ep != MatvecEpilogue::none ? n / 2 : (n + 1) / 2;
  const int64_t blocks = (tasks + kWarps - 1) / kWarps;
  const int grid = static_cast<int>(blocks < grid_cap ? blocks : grid_cap);
  matvec_kernel<F, M><<<grid, kWarps * 32, 0, stream>>>(args, q8, n, y, ep);
  FB_CUDA_CHECK_LAUNCH();
}

// A software-pipelined form (two fragment buffers, the next chunk in flight during the dp4a work)
// was measured too and lost everywhere on H200 (1 block/SM at M = 4, 10-30 % slower at M = 1), so
// it was dropped; scripts/gpu-check.d/matvec.sh re-measures the variants kept here.
enum Variant { kAuto = 0, kLegacy, kR2U6, kR4U3, kR6U2, kVariantCount };
constexpr const char* kVariantNames[kVariantCount] = {"auto", "legacy", "r2u6", "r4u3", "r6u2"};

// How a launch gets its activations. bf16_entry: called from w4a8_matvec_bf16. pdl: q8 comes from
// our quantize kernel just before on the stream, so the staged kernel may be launched early and load
// weights before it waits (griddepcontrol.wait) for q8. xq: the staged kernel quantizes these bf16
// activations itself (no quantize kernel; q8_out receives the Q8Blocks); never with pdl.
struct Launch {
  bool bf16_entry = false, pdl = false;
  const __nv_bfloat16* xq = nullptr;
  Q8Block* q8_out = nullptr;
};
std::atomic<int> g_variant_override{-1};

int env_variant() {
  static const int v = [] {
    const char* s = std::getenv("FUSEBENCH_MATVEC_VARIANT");
    if (s == nullptr || *s == '\0') return -1;
    const int i = matvec_tuning::variant_index(s);
    if (i < 0) throw std::invalid_argument(std::string("FUSEBENCH_MATVEC_VARIANT: unknown variant ") + s);
    return i;
  }();
  return v;
}

constexpr bool staged_format(MatvecFormat f) { return f != MatvecFormat::q4_k && f != MatvecFormat::q6_k; }
constexpr bool int4_format(MatvecFormat f) {
  return f == MatvecFormat::int4_bf16 || f == MatvecFormat::int4_u8;
}
constexpr int kFuseMaxM = 2;  // the in-kernel quantization pays off up to M = 2 (see small_k_class)

// int4 rows of K <= 2048 (64 units: two per lane), e.g. the qwen3.5 GDN in_proj 12352 x 2048 and the
// attention q+k+v 9216 x 2048. r2u6 issues its 6 unit slots per lane there, 4 of them repeats of a
// valid unit (its clamp for short rows): 3x the weight traffic. H200, the in_proj through
// w4a8_matvec_bf16, hot median us at T = 1 / 4 (coalesced_u8; bf16 alike): quantize + r2u6 (PDL)
// 13.4 / 18.2, quantize + legacy 9.4 / 13.1, quantize + r6u2 (PDL) 9.3 / 14.1, r6u2 quantizing x
// itself (one launch) 8.2 / 13.6, r4u2 or r2u2 doing so 8.7 / 13.3-13.5. Hence: w4a8_matvec_bf16 at
// M <= 2 -> r6u2 with the in-kernel quantization, everything else in the class -> legacy.
bool small_k_class(MatvecFormat f, int64_t k) { return int4_format(f) && k <= 2048; }

// Any variant gives the same bits, so the choice may depend on every dimension, n included.
// auto, from the H200 sweep (fusebench_matvec_sweep, gemma4-31b decode shapes, T = 1 and 4):
//   r2u6 wherever the staged kernel applies: 11-19 % faster than legacy at T = 1 on 16K..262K rows
//     (ffn_gate 25.4 -> 22.5 us, [gate; up]+GELU 43.0 -> 37.5 us, lm_head Q6_K 342 -> 299 us) and
//     5-6 % at T = 4 (r4u3 within 2 % of it);
//   legacy for int4 with fewer than 8192 rows (attn_output 5376 x 8192: 12.0 vs 13.2 us, ffn_down
//     5376 x 21504: 23.8 vs 25.1 us): a row pair per warp over many short tasks balances better
//     there. Planar int6 i8 with few rows stays staged (ffn_down Q6_K: 36.3 -> 34.7 us);
//   legacy for planar int6 bf16 with fewer than 8192 rows: the sweep above had no int6_bf16 shape,
//     and the bench of ffn_down 5376 x 21504 Q6_K coalesced_bf16 at T = 1 went 30.8 us (legacy,
//     baseline c726853) -> 35.6 us (staged, 813458f) on H200 (`fusebench compare` SLOWER +15 %),
//     30.3 us again with this rule (09b154e);
//     attn_v 4096 x 5376 moved 11.4 -> 10.9 us, inside the 0.5 us timer resolution (why int6 bf16
//     and i8 differ under legacy, 30.8 vs 37.3 us, was not measured; the sweep now has both).
int resolve_variant(MatvecFormat f, int64_t m, int64_t n, int64_t k, bool bf16_entry) {
  int v = g_variant_override.load(std::memory_order_relaxed);
  if (v < 0) v = env_variant();
  const bool staged_ok = staged_format(f) && 48 * m * (k / 32) <= kSmemBudget2;
  if (v == kLegacy || !staged_ok) return kLegacy;
  if (v > kAuto) return v;
  const bool few_rows_legacy = int4_format(f) || f == MatvecFormat::int6_bf16;
  if (few_rows_legacy && n < 8192) return kLegacy;
  if (small_k_class(f, k)) return bf16_entry && m <= kFuseMaxM ? kR6U2 : kLegacy;
  return kR2U6;
}

// w4a8_matvec_bf16 on the small-K class with r6u2 (kFusable): one kernel that quantizes x itself.
bool fuse_quantize(MatvecFormat f, int64_t m, int64_t n, int64_t k, const void* x) {
  return small_k_class(f, k) && m <= kFuseMaxM && resolve_variant(f, m, n, k, true) == kR6U2 &&
         reinterpret_cast<uintptr_t>(x) % 16 == 0;
}

int staged_blocks_per_sm(const void* fn, size_t smem) {
  static std::mutex mu;
  static std::map<std::pair<const void*, size_t>, int> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto [it, inserted] = cache.try_emplace({fn, smem}, 1);
  if (inserted) {
    int b = 0;
    FB_CUDA_CHECK(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBudget2));
    FB_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, fn, kWarps2 * 32, smem));
    it->second = b > 0 ? b : 1;
  }
  return it->second;
}

template <MatvecFormat F, int M, int R, int U, bool kQuantX>
void launch_staged_kernel(const Args& args, const Q8Block* q8, int64_t n, __nv_bfloat16* y, MatvecEpilogue ep,
                          const Launch& l, cudaStream_t stream) {
  auto* kernel = &matvec_staged_kernel<F, M, R, U, kQuantX>;
  static const int sms = [] {
    int dev = 0, count = 0;
    FB_CUDA_CHECK(cudaGetDevice(&dev));
    FB_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, dev));
    return count;
  }();
  const size_t smem = static_cast<size_t>(48 * M * (args.k / 32));
  const int per_sm = staged_blocks_per_sm(reinterpret_cast<const void*>(kernel), smem);
  const int64_t tasks = ep != MatvecEpilogue::none ? (n / 2 + R / 2 - 1) / (R / 2) : (n + R - 1) / R;
  const int64_t want = (tasks + kWarps2 - 1) / kWarps2;
  const int64_t cap = static_cast<int64_t>(sms) * per_sm;
  const int grid = static_cast<int>(want < cap ? (want > 0 ? want : 1) : cap);
  launch_kernel(kernel, dim3(static_cast<unsigned>(grid)), dim3(kWarps2 * 32), smem, stream,
                LaunchAttrs{0, l.pdl}, args, q8, n, y, ep, l.xq, l.q8_out);
}

// The in-kernel quantization is instantiated only where fuse_quantize can pick it.
template <MatvecFormat F, int M, int R, int U>
inline constexpr bool kFusable = int4_format(F) && (M <= kFuseMaxM) && R == 6 && U == 2;

template <MatvecFormat F, int M, int R, int U>
void launch_staged(const Args& args, const Q8Block* q8, int64_t n, __nv_bfloat16* y, MatvecEpilogue ep,
                   const Launch& l, cudaStream_t stream) {
  if constexpr (kFusable<F, M, R, U>) {
    if (l.xq != nullptr) return launch_staged_kernel<F, M, R, U, true>(args, q8, n, y, ep, l, stream);
  } else {
    // fuse_quantize never picks this instantiation; should a caller, quantize first.
    if (l.xq != nullptr) quantize_activations_q8(l.xq, M, args.k, l.q8_out, stream);
  }
  launch_staged_kernel<F, M, R, U, false>(args, q8, n, y, ep, l, stream);
}

template <MatvecFormat F, int M>
void launch_variant(int variant, const Args& args, const Q8Block* q8, int64_t n, __nv_bfloat16* y,
                    MatvecEpilogue ep, const Launch& l, cudaStream_t stream) {
  if constexpr (staged_format(F)) {
    switch (variant) {
      case kR2U6:
        return launch_staged<F, M, 2, 6>(args, q8, n, y, ep, l, stream);
      case kR4U3:
        return launch_staged<F, M, 4, 3>(args, q8, n, y, ep, l, stream);
      case kR6U2:
        if constexpr (int4_format(F)) return launch_staged<F, M, 6, 2>(args, q8, n, y, ep, l, stream);
        break;
      default:
        break;
    }
  }
  // Legacy: a plain launch, never PDL, activations from q8 (quantized here if the caller chose fusion).
  if (l.xq != nullptr) quantize_activations_q8(l.xq, M, args.k, l.q8_out, stream);
  launch_matvec<F, M>(args, q8, n, y, ep, stream);
}

template <MatvecFormat F>
void launch_m(int64_t m, const Args& args, const Q8Block* q8, int64_t n, __nv_bfloat16* y, MatvecEpilogue ep,
              const Launch& l, cudaStream_t stream) {
  const int v = resolve_variant(F, m, n, args.k, l.bf16_entry);
  switch (m) {
    case 1:
      return launch_variant<F, 1>(v, args, q8, n, y, ep, l, stream);
    case 2:
      return launch_variant<F, 2>(v, args, q8, n, y, ep, l, stream);
    case 3:
      return launch_variant<F, 3>(v, args, q8, n, y, ep, l, stream);
    default:
      return launch_variant<F, 4>(v, args, q8, n, y, ep, l, stream);
  }
}

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("w4a8_matvec: " + what);
}
bool aligned(const void* p, uintptr_t a) { return (reinterpret_cast<uintptr_t>(p) % a) == 0; }

}  // namespace

const char* to_string(MatvecFormat f) {
  switch (f) {
    case MatvecFormat::int4_bf16:
      return "int4_bf16";
    case MatvecFormat::int4_u8:
      return "int4_u8";
    case MatvecFormat::int6_bf16:
      return "int6_bf16";
    case MatvecFormat::int6_i8:
      return "int6_i8";
    case MatvecFormat::q4_k:
      return "q4_k";
    case MatvecFormat::q6_k:
      return "q6_k";
  }
  return "?";
}

void quantize_activations_q8(const __nv_bfloat16* x, int64_t m, int64_t k, Q8Block* q8, cudaStream_t stream) {
  require(m >= 1 && k > 0 && k % 32 == 0, "quantize: need m >= 1 and k a positive multiple of 32");
  require(x != nullptr && q8 != nullptr && aligned(q8, 16) && aligned(x, 2),
          "quantize: null or misaligned pointer");
  const int64_t blocks = m * k / 32;
  quantize_q8_kernel<<<static_cast<unsigned>((blocks + 7) / 8), 256, 0, stream>>>(x, blocks, q8);
  FB_CUDA_CHECK_LAUNCH();
}

namespace {
void matvec_impl(const MatvecWeights& w, const Q8Block* q8, int64_t m, __nv_bfloat16* y, MatvecEpilogue ep,
                 const Launch& l, cudaStream_t stream) {
  const MatvecFormat f = w.format;
  require(m >= 1 && m <= 4, "m must be 1..4 (prefill takes the GEMM path)");
  require(w.n >= 1 && w.k > 0 && w.k % 256 == 0, "need n >= 1 and k a positive multiple of 256");
  require(ep == MatvecEpilogue::none || w.n % 2 == 0, "a GLU epilogue needs [gate; up] with even n");
  require(q8 != nullptr && aligned(q8, 16) && y != nullptr && w.qdata != nullptr, "null q8, y or qdata");
  require(aligned(w.qdata, f == MatvecFormat::q6_k ? 2 : 16), "qdata misaligned");
  const bool int4 = f == MatvecFormat::int4_bf16 || f == MatvecFormat::int4_u8;
  const bool int6 = f == MatvecFormat::int6_bf16 || f == MatvecFormat::int6_i8;
  if (int4 || int6) require(w.scale != nullptr, "null scale");
  if (int4) require(w.zero != nullptr, "null zero");
  if (int6) require(w.qhigh != nullptr && aligned(w.qhigh, 8), "null or misaligned qhigh");
  if (f == MatvecFormat::int4_bf16)
    require(aligned(w.scale, 2) && aligned(w.zero, 2), "bf16 scale/zero misaligned");
  if (f == MatvecFormat::int6_bf16) require(aligned(w.scale, 4), "int6 bf16 scales must be 4-byte aligned");
  if (f == MatvecFormat::int6_i8) require(aligned(w.scale, 2), "int6 codes must be 2-byte aligned");
  if (f == MatvecFormat::int4_u8 || f == MatvecFormat::int6_i8)
    require(w.scale_step != nullptr && aligned(w.scale_step, 2), "null or misaligned scale_step");
  if (f == MatvecFormat::int4_u8)
    require(w.zero_step != nullptr && aligned(w.zero_step, 2), "null zero_step");
  const Args args{static_cast<const uint8_t*>(w.qdata),
                  static_cast<const uint8_t*>(w.qhigh),
                  w.scale,
                  w.zero,
                  w.scale_step,
                  w.zero_step,
                  w.k};
  switch (f) {
    case MatvecFormat::int4_bf16:
      return launch_m<MatvecFormat::int4_bf16>(m, args, q8, w.n, y, ep, l, stream);
    case MatvecFormat::int4_u8:
      return launch_m<MatvecFormat::int4_u8>(m, args, q8, w.n, y, ep, l, stream);
    case MatvecFormat::int6_bf16:
      return launch_m<MatvecFormat::int6_bf16>(m, args, q8, w.n, y, ep, l, stream);
    case MatvecFormat::int6_i8:
      return launch_m<MatvecFormat::int6_i8>(m, args, q8, w.n, y, ep, l, stream);
    case MatvecFormat::q4_k:
      return launch_m<MatvecFormat::q4_k>(m, args, q8, w.n, y, ep, l, stream);
    case MatvecFormat::q6_k:
      return launch_m<MatvecFormat::q6_k>(m, args, q8, w.n, y, ep, l, stream);
  }
  require(false, "unknown format");
}
}  // namespace

void w4a8_matvec(const MatvecWeights& w, const Q8Block* q8, int64_t m, __nv_bfloat16* y, MatvecEpilogue ep,
                 cudaStream_t stream) {
  matvec_impl(w, q8, m, y, ep, Launch{}, stream);
}

void w4a8_matvec_bf16(const MatvecWeights& w, const __nv_bfloat16* x, int64_t m, Q8Block* workspace,
                      __nv_bfloat16* y, MatvecEpilogue ep, cudaStream_t stream) {
  if (fuse_quantize(w.format, m, w.n, w.k, x)) {
    require(x != nullptr, "quantize: null x");
    matvec_impl(w, workspace, m, y, ep, Launch{true, false, x, workspace}, stream);
    return;
  }
  quantize_activations_q8(x, m, w.k, workspace, stream);
  matvec_impl(w, workspace, m, y, ep, Launch{true, true, nullptr, nullptr}, stream);
}

void glu_bf16(const __nv_bfloat16* y, int64_t m, int64_t i, MatvecEpilogue ep, __nv_bfloat16* out,
              cudaStream_t stream) {
  require(ep != MatvecEpilogue::none && m >= 1 && i >= 1 && y != nullptr && out != nullptr,
          "glu: bad arguments");
  const int64_t total = m * i;
  glu_kernel<<<static_cast<unsigned>((total + 255) / 256), 256, 0, stream>>>(y, m, i, ep, out);
  FB_CUDA_CHECK_LAUNCH();
}

namespace matvec_tuning {
int variant_count() { return kVariantCount; }
const char* variant_name(int v) { return v >= 0 && v < kVariantCount ? kVariantNames[v] : nullptr; }
int variant_index(const char* name) {
  for (int i = 0; i < kVariantCount; ++i)
    if (name != nullptr && std::strcmp(name, kVariantNames[i]) == 0) return i;
  return -1;
}
void set_variant(int v) {
  if (v >= kVariantCount) throw std::invalid_argument("matvec_tuning::set_variant: no such variant");
  g_variant_override.store(v < 0 ? -1 : v, std::memory_order_relaxed);
}
}  // namespace matvec_tuning

}  // namespace fb::cuda
