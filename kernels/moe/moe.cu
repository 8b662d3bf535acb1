#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/common/cuda_check.h"
#include "kernels/moe/moe.cuh"
#include "reference/formats/blocks.h"

namespace fb::cuda {

namespace {

constexpr int kWarps = 8;         // warps per block of every matvec kernel here
constexpr int kMaxUnits = 4;      // 32-weight units per lane: K <= 32 * 32 * kMaxUnits = 4096
constexpr int kSlotChunk = 9;     // GEMM2 slots whose weights are loaded before the first is used
                                  // (qwen: top 8 + shared = 9, one round trip)
constexpr int kMaxExperts = 256;  // router: logits per lane <= 8

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("moe: " + what);
}
bool aligned(const void* p, uintptr_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }
unsigned blocks_for(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

__device__ __forceinline__ uint4 ld_stream16(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}
__device__ __forceinline__ float bf16_bits(uint32_t b) { return __uint_as_float(b << 16); }
__device__ __forceinline__ float round_bf16(float v) { return __bfloat162float(__float2bfloat16_rn(v)); }
__device__ __forceinline__ float silu(float v) { return __fdiv_rn(v, __fadd_rn(1.0f, expf(-v))); }
// The activation of GEMM2's input as the unfused chain materialises it: bf16(silu(gate) * up).
__device__ __forceinline__ float silu_mul(float g, float u) { return round_bf16(__fmul_rn(silu(g), u)); }
__device__ __forceinline__ uint32_t word_of(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// Row strides and the group shift are precomputed on the host: a runtime 64-bit division per
// fragment address was most of the decode GEMMs' instructions.
struct WArgs {
  const uint8_t* q;
  const uint16_t* scale;
  int64_t experts, n, k;
  int group_units;     // sym_int4: 32-weight units per scale
  int group_shift;     // log2(group_units)
  int64_t row_qbytes;  // bytes of one row's quants (sym_int4: k / 2; q4_k: k / 256 blocks)
  int64_t row_scales;  // sym_int4: scales per row (k / 32 / group_units)
};

template <ExpertFormat F>
struct Unit;

// Symmetric INT4: 16 bytes = 32 weights = one Q8 block; w = (u - 8) s: s d_a (dp - 8 asum).
template <>
struct Unit<ExpertFormat::sym_int4> {
  struct Frag {
    uint4 q;
    float s;
  };
  static __device__ __forceinline__ Frag load(const WArgs& w, int64_t e, int64_t row, int u) {
    const int64_t r = e * w.n + row;
    return {ld_stream16(w.q + r * w.row_qbytes + u * 16),
            bf16_bits(__ldg(w.scale + r * w.row_scales + (u >> w.group_shift)))};
  }
  static __device__ __forceinline__ float dot(const Frag& f, const Q8Block* act, int u) {
    const uint4* p = reinterpret_cast<const uint4*>(act + u);
    const uint4 ev = p[0], ov = p[1], meta = p[2];
    int dp = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t wq = word_of(f.q, i);
      dp = __dp4a(static_cast<int>(wq & 0x0F0F0F0Fu), static_cast<int>(word_of(ev, i)), dp);
      dp = __dp4a(static_cast<int>((wq >> 4) & 0x0F0F0F0Fu), static_cast<int>(word_of(ov, i)), dp);
    }
    const int corr = dp - 8 * (static_cast<int>(meta.y) + static_cast<int>(meta.z));  // exact
    return __fmul_rn(__fmul_rn(f.s, __uint_as_float(meta.x)), static_cast<float>(corr));
  }
};

// ggml Q4_K in place. Unit u of a row: super-block u/8, 64-chunk c = (u%8)/2, half hh = u%2: qs
// bytes [32c + 16hh, +16) whose low nibbles are elements 16hh.. of sub-block 2c and high nibbles
// the same elements of sub-block 2c+1. ggml's weight d*sc*q - dmin*m gives d_a (S dp - M asum).
template <>
struct Unit<ExpertFormat::q4_k> {
  struct Frag {
    uint4 q;
    float sa, ma, sb, mb;
  };
  static __device__ __forceinline__ Frag load(const WArgs& w, int64_t e, int64_t row, int u) {
    const uint8_t* blk = w.q + (e * w.n + row) * w.row_qbytes + (u >> 3) * int{sizeof(BlockQ4K)};
    const int c = (u & 7) >> 1, hh = u & 1;
    Frag f;
    f.q = ld_stream16(blk + 16 + 32 * c + 16 * hh);
    const uint4 hd = __ldg(reinterpret_cast<const uint4*>(blk));  // d, dmin, scales[12]
    const float d = __half2float(__ushort_as_half(static_cast<uint16_t>(hd.x & 0xFFFF)));
    const float dmin = __half2float(__ushort_as_half(static_cast<uint16_t>(hd.x >> 16)));
    auto sb = [&](int j) { return (word_of(hd, 1 + j / 4) >> (8 * (j % 4))) & 0xFFu; };
    float sc[2], mn[2];
#pragma unroll
    for (int s = 0; s < 2; ++s) {
      const int j = 2 * c + s;
      const uint32_t scv = j < 4 ? (sb(j) & 63) : ((sb(j + 4) & 0xF) | ((sb(j - 4) >> 6) << 4));
      const uint32_t mnv = j < 4 ? (sb(j + 4) & 63) : ((sb(j + 4) >> 4) | ((sb(j) >> 6) << 4));
      sc[s] = __fmul_rn(d, static_cast<float>(scv));
      mn[s] = __fmul_rn(dmin, static_cast<float>(mnv));
    }
    f.sa = sc[0], f.ma = mn[0], f.sb = sc[1], f.mb = mn[1];
    return f;
  }
  static __device__ __forceinline__ float dot(const Frag& f, const Q8Block* act, int u) {
    const int c = (u & 7) >> 1, hh = u & 1;
    const Q8Block* A = act + (u >> 3) * 8 + 2 * c;
    const Q8Block* B = A + 1;
    const uint2 ea = *reinterpret_cast<const uint2*>(A->qs_even + 8 * hh);
    const uint2 oa = *reinterpret_cast<const uint2*>(A->qs_odd + 8 * hh);
    const uint2 eb = *reinterpret_cast<const uint2*>(B->qs_even + 8 * hh);
    const uint2 ob = *reinterpret_cast<const uint2*>(B->qs_odd + 8 * hh);
    int dpa = 0, dpb = 0;
#pragma unroll
    for (int pr = 0; pr < 2; ++pr) {
      const uint32_t w0 = word_of(f.q, 2 * pr), w1 = word_of(f.q, 2 * pr + 1);
      const uint32_t l0 = w0 & 0x0F0F0F0Fu, l1 = w1 & 0x0F0F0F0Fu;
      const uint32_t h0 = (w0 >> 4) & 0x0F0F0F0Fu, h1 = (w1 >> 4) & 0x0F0F0F0Fu;
      const int ae = static_cast<int>(pr ? ea.y : ea.x), ao = static_cast<int>(pr ? oa.y : oa.x);
      const int be = static_cast<int>(pr ? eb.y : eb.x), bo = static_cast<int>(pr ? ob.y : ob.x);
      dpa = __dp4a(static_cast<int>(__byte_perm(l0, l1, 0x6420)), ae, dpa);
      dpa = __dp4a(static_cast<int>(__byte_perm(l0, l1, 0x7531)), ao, dpa);
      dpb = __dp4a(static_cast<int>(__byte_perm(h0, h1, 0x6420)), be, dpb);
      dpb = __dp4a(static_cast<int>(__byte_perm(h0, h1, 0x7531)), bo, dpb);
    }
    const int suma = hh ? A->sum_hi : A->sum_lo, sumb = hh ? B->sum_hi : B->sum_lo;
    const float ta =
        __fmul_rn(A->d, __fmaf_rn(-f.ma, static_cast<float>(suma), __fmul_rn(f.sa, static_cast<float>(dpa))));
    const float tb =
        __fmul_rn(B->d, __fmaf_rn(-f.mb, static_cast<float>(sumb), __fmul_rn(f.sb, static_cast<float>(dpb))));
    return __fadd_rn(ta, tb);
  }
};

// Group of L lanes (L a power of 2 <= 32) computing one row: lane gl takes units gl, gl + L, ...
// (all loaded first), fp32 sum in that order, then a fixed xor reduction inside the group. Every lane
// of the warp must call it (the shuffles); `valid` == false skips the loads and the result.
template <ExpertFormat F>
__device__ __forceinline__ float row_dot(const WArgs& w, int64_t e, int64_t row, const Q8Block* act, int gl,
                                         int L, int64_t units, bool valid) {
  using U = Unit<F>;
  typename U::Frag f[kMaxUnits];
#pragma unroll
  for (int i = 0; i < kMaxUnits; ++i) {
    const int64_t u = gl + int64_t{i} * L;
    if (valid && u < units) f[i] = U::load(w, e, row, u);
  }
  float acc = 0.0f;
#pragma unroll
  for (int i = 0; i < kMaxUnits; ++i) {
    const int64_t u = gl + int64_t{i} * L;
    if (valid && u < units) acc = __fadd_rn(acc, U::dot(f[i], act, u));
  }
  for (int off = L / 2; off > 0; off >>= 1) acc = __fadd_rn(acc, __shfl_xor_sync(0xFFFFFFFFu, acc, off));
  return acc;
}

int lanes_per_row(int64_t k) { return static_cast<int>(k / 32 < 32 ? k / 32 : 32); }

// ---- activation quantization: 4 lanes per 32-block, 8 elements each -----------------------------
// amax is order-free, d/inv/q the fb::quantize_activations_q8 expressions, the half sums integers:
// the block equals the per-warp quantizer's bit for bit however the lanes are arranged.
__device__ __forceinline__ void quantize8(const float v[8], bool valid, Q8Block* blk, int part) {
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < 8; ++i) amax = fmaxf(amax, fabsf(v[i]));
  amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, 1));
  amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, 2));
  const float d = __fdiv_rn(amax, 127.0f);
  const float inv = d != 0.0f ? __frcp_rn(d) : 0.0f;
  int q[8], s = 0;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    q[i] = max(-128, min(127, __float2int_rn(__fmul_rn(v[i], inv))));
    s += q[i];
  }
  s += __shfl_xor_sync(0xFFFFFFFFu, s, 1);  // parts {0,1} -> elements 0..15, {2,3} -> 16..31
  if (!valid) return;
  uint32_t ev = 0, ov = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    ev |= (static_cast<uint32_t>(q[2 * i]) & 0xFFu) << (8 * i);
    ov |= (static_cast<uint32_t>(q[2 * i + 1]) & 0xFFu) << (8 * i);
  }
  reinterpret_cast<uint32_t*>(blk->qs_even)[part] = ev;
  reinterpret_cast<uint32_t*>(blk->qs_odd)[part] = ov;
  if (part == 0) {
    blk->d = d;
    blk->sum_lo = s;
    blk->pad = 0;
  }
  if (part == 2) blk->sum_hi = s;
}

__device__ __forceinline__ void unpack8(const uint4& raw, float v[8]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint32_t w = word_of(raw, i);
    v[2 * i] = __uint_as_float(w << 16);
    v[2 * i + 1] = __uint_as_float(w & 0xFFFF0000u);
  }
}

__global__ void __launch_bounds__(256)
    quantize_kernel(const __nv_bfloat16* __restrict__ x, int64_t chunks, Q8Block* __restrict__ q8) {
  const int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x;
  const int64_t c = base + threadIdx.x;
  const bool valid = c < chunks;
  float v[8] = {};
  if (valid) unpack8(*reinterpret_cast<const uint4*>(x + c * 8), v);
  quantize8(v, valid, q8 + c / 4, static_cast<int>(c % 4));
}

// ---- GEMM1 for decode, activation quantize folded in -------------------------------------------
// Why this shape: at T = 1 GEMM1 is 9 pairs x 1024 rows of 1 KB, L2-resident when hot, so the time is
// latency, not bytes. A warp owns R rows of one pair (R * kUpl = kFrags 16-byte loads per lane, all
// issued before anything waits), the grid covers every row in one wave, and each block quantizes
// the token vectors it needs into shared memory while its weight loads are in flight (no separate
// quantize launch). Per (pair, row) it is row_dot's arithmetic: lane gl sums units gl, gl + L, ... in
// that order from 0, then the same xor reduction, and quantize8 is the quantize kernel's, so the
// output equals quantize + pairs_matvec_kernel (the gate/up twin) bit for bit.
constexpr int kFrags = 8;

template <ExpertFormat F, int kUpl>
__global__ void __launch_bounds__(kWarps * 32)
    gemm1_quant_kernel(WArgs w, const __nv_bfloat16* __restrict__ x, const int32_t* __restrict__ ids,
                       unsigned pairs, unsigned slots, unsigned tiles, int L, __nv_bfloat16* __restrict__ out,
                       int64_t ldo, int64_t col0) {
  constexpr int R = kFrags / kUpl;  // rows per lane group
  extern __shared__ Q8Block sx[];   // [tokens this block spans][k / 32]
  using U = Unit<F>;
  // 32-bit index math (the launcher checks pairs * tiles < 2^31): divisions here run once per thread.
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int gl = lane % L, gi = lane / L, gpw = 32 / L;
  const int units = static_cast<int>(w.k / 32);
  const unsigned total = pairs * tiles, task = blockIdx.x * kWarps + warp;
  const bool task_ok = task < total;
  const unsigned p = task_ok ? task / tiles : 0;
  const int64_t row0 = static_cast<int64_t>(task_ok ? task % tiles : 0) * (R * gpw) + gi;
  const int32_t e = task_ok ? __ldg(ids + p) : 0;
  const bool bad = task_ok && (e < 0 || e >= w.experts);  // corrupt id: NaN, no out-of-bounds read
  const bool ok = task_ok && !bad;
  typename U::Frag f[R][kUpl];
#pragma unroll
  for (int j = 0; j < R; ++j)
#pragma unroll
    for (int uu = 0; uu < kUpl; ++uu) {
      const int64_t row = row0 + int64_t{j} * gpw;
      const int u = gl + uu * L;
      if (ok && row < w.n && u < units) f[j][uu] = U::load(w, e, row, u);
    }

  // The tokens of this block's pairs, quantized while the weights arrive.
  const unsigned first = blockIdx.x * kWarps;
  const unsigned last = (first + kWarps < total ? first + kWarps : total) - 1;
  const unsigned t0 = first / tiles / slots, t1 = last / tiles / slots;
  const int chunks = static_cast<int>((t1 - t0 + 1) * (w.k / 8));
  const __nv_bfloat16* xt = x + static_cast<int64_t>(t0) * w.k;
  for (int base = 0; base < chunks; base += blockDim.x) {
    const int c = base + threadIdx.x;
    const bool valid = c < chunks;  // chunks % 4 == 0: a 4-lane quad is all valid or all not
    float v[8] = {};
    if (valid) unpack8(__ldg(reinterpret_cast<const uint4*>(xt) + c), v);
    quantize8(v, valid, sx + (c >> 2), c & 3);
  }
  __syncthreads();

  const Q8Block* a = sx + (task_ok ? (p / slots - t0) * units : 0);
  float acc[R];
#pragma unroll
  for (int j = 0; j < R; ++j) {
    acc[j] = 0.0f;
#pragma unroll
    for (int uu = 0; uu < kUpl; ++uu) {
      const int64_t row = row0 + int64_t{j} * gpw;
      const int u = gl + uu * L;
      if (ok && row < w.n && u < units) acc[j] = __fadd_rn(acc[j], U::dot(f[j][uu], a, u));
    }
  }
#pragma unroll
  for (int j = 0; j < R; ++j)
    for (int off = L / 2; off > 0; off >>= 1)
      acc[j] = __fadd_rn(acc[j], __shfl_xor_sync(0xFFFFFFFFu, acc[j], off));
  if (!task_ok) return;
#pragma unroll
  for (int j = 0; j < R; ++j) {
    const int64_t row = row0 + int64_t{j} * gpw;
    if (gl == (j % L) && row < w.n)  // the sum is in every lane of the group: spread the stores
      out[static_cast<int64_t>(p) * ldo + col0 + row] =
          __float2bfloat16_rn(bad ? __int_as_float(0x7FC00000) : acc[j]);
  }
}

// ---- GEMM1 / down: one row of one pair per lane group --------------------------------------------

template <ExpertFormat F, bool kF32Out>
__global__ void __launch_bounds__(kWarps * 32)
    pairs_matvec_kernel(WArgs w, const Q8Block* __restrict__ act, bool act_per_pair,
                        const int32_t* __restrict__ ids, int64_t pairs, int slots, void* out, int64_t ldo,
                        int64_t col0, int L) {
  const int lane = threadIdx.x & 31, gl = lane % L, gi = lane / L, gpw = 32 / L;
  const int64_t units = w.k / 32, total = pairs * w.n;
  const int64_t step = static_cast<int64_t>(gridDim.x) * kWarps * gpw;
  for (int64_t base = (static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32) * gpw; base < total;
       base += step) {
    const int64_t task = base + gi;
    bool valid = task < total;
    const int64_t p = valid ? task / w.n : 0, row = valid ? task % w.n : 0;
    const int32_t e = ids[p];
    const bool bad = e < 0 || e >= w.experts;  // a corrupt id writes NaN, never reads out of bounds
    valid = valid && !bad;
    const Q8Block* a = act + (act_per_pair ? p : p / slots) * units;
    const float acc = row_dot<F>(w, valid ? e : 0, row, a, gl, L, units, valid);
    if (task < total && gl == 0) {
      const float v = bad ? __int_as_float(0x7FC00000) : acc;
      if constexpr (kF32Out)
        static_cast<float*>(out)[p * w.n + row] = v;
      else
        static_cast<__nv_bfloat16*>(out)[p * ldo + col0 + row] = __float2bfloat16_rn(v);
    }
  }
}

// ---- GEMM2 with SiLU, routing weight and slot sum ------------------------------------------------

// Block = (token t, kWarps * 32 / L rows); lane group = one row, lane gl = unit gl of every slot.
// Why this order: the weight loads of all slots (up to kSlotChunk) are issued first, then the
// prologue builds bf16(silu(gate) * up) of this token's slots only, quantized into shared memory,
// while they arrive; a block never touches another token's activations (at T = 4 the old kernel
// redid all 36 pairs in every block). Per slot: 0 + dot, the xor reduction over L lanes,
// bf16(acc * w_s) summed in fp32 in slot order: moe_down + moe_weighted_sum bit for bit.
// sym_int4 fits 2 blocks per SM (128 registers) without spilling; q4_k's fragments are twice as big.
template <ExpertFormat F>
__global__ void __launch_bounds__(kWarps * 32, F == ExpertFormat::sym_int4 ? 2 : 1)
    gemm2_silu_kernel(WArgs w, const __nv_bfloat16* __restrict__ h, const int32_t* __restrict__ ids,
                      const float* __restrict__ weights, int slots, unsigned tiles,
                      __nv_bfloat16* __restrict__ y, int L) {
  extern __shared__ Q8Block sact[];  // [slots][inter/32]
  using U = Unit<F>;
  // 32-bit index math: a runtime 64-bit division costs tens of instructions.
  const int inter = static_cast<int>(w.k), units = inter / 32, chunks_per_slot = inter / 8;
  const int64_t t = blockIdx.x / tiles;
  const int lane = threadIdx.x & 31, gl = lane % L, gi = lane / L, gpw = 32 / L;
  const int64_t row =
      static_cast<int64_t>(blockIdx.x % tiles) * (kWarps * gpw) + (threadIdx.x >> 5) * gpw + gi;
  const bool in_range = row < w.n;
  const int32_t* tids = ids + t * slots;
  const float* tw = weights + t * slots;

  typename U::Frag f[kSlotChunk];
  unsigned okm = 0;  // bit i: slot s0 + i exists and has a valid id
  bool bad = false;
  auto load_chunk = [&](int s0) {
    okm = 0;
#pragma unroll
    for (int i = 0; i < kSlotChunk; ++i) {
      const bool here = s0 + i < slots;
      const int32_t e = here ? __ldg(tids + s0 + i) : 0;
      const bool ok = here && e >= 0 && e < w.experts;
      bad |= here && !ok;
      okm |= static_cast<unsigned>(ok) << i;
      if (in_range && ok && gl < units) f[i] = U::load(w, e, row, gl);
    }
  };
  load_chunk(0);

  // Prologue over this token's slots. Loads of 4 chunks are issued before the first is used.
  const __nv_bfloat16* ht = h + t * slots * 2 * inter;
  const int chunks = slots * chunks_per_slot;
  for (int base = 0; base < chunks; base += 4 * blockDim.x) {
    uint4 g[4], u[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int c = base + i * blockDim.x + threadIdx.x;
      if (c < chunks) {
        const int s = c / chunks_per_slot, j = (c - s * chunks_per_slot) * 8;
        g[i] = __ldg(reinterpret_cast<const uint4*>(ht + s * 2 * inter + j));
        u[i] = __ldg(reinterpret_cast<const uint4*>(ht + s * 2 * inter + inter + j));
      }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int c = base + i * blockDim.x + threadIdx.x;
      const bool valid = c < chunks;
      float v[8] = {};
      if (valid) {
        float gf[8], uf[8];
        unpack8(g[i], gf);
        unpack8(u[i], uf);
#pragma unroll
        for (int j = 0; j < 8; ++j) v[j] = silu_mul(gf[j], uf[j]);
      }
      quantize8(v, valid, sact + (c >> 2), c & 3);
    }
  }
  __syncthreads();

  float sum = 0.0f;
  for (int s0 = 0; s0 < slots; s0 += kSlotChunk) {
    if (s0 > 0) load_chunk(s0);
    float ws[kSlotChunk];  // loaded here, not with the weights: fewer registers live in the prologue
#pragma unroll
    for (int i = 0; i < kSlotChunk; ++i) ws[i] = s0 + i < slots ? __ldg(tw + s0 + i) : 0.0f;
#pragma unroll
    for (int i = 0; i < kSlotChunk; ++i) {
      if (s0 + i >= slots) break;  // warp-uniform
      const bool ok = in_range && (okm >> i & 1u) && gl < units;
      float acc = 0.0f;  // 0 + dot, as row_dot sums (keeps the sign of a zero identical to the twin)
      if (ok) acc = __fadd_rn(acc, U::dot(f[i], sact + (s0 + i) * units, gl));
      for (int off = L / 2; off > 0; off >>= 1) acc = __fadd_rn(acc, __shfl_xor_sync(0xFFFFFFFFu, acc, off));
      sum = __fadd_rn(sum, round_bf16(__fmul_rn(acc, ws[i])));
    }
  }
  if (in_range && gl == 0) y[t * w.n + row] = __float2bfloat16_rn(bad ? __int_as_float(0x7FC00000) : sum);
}

__global__ void __launch_bounds__(256) silu_mul_kernel(const __nv_bfloat16* __restrict__ h, int64_t pairs,
                                                       int64_t inter, __nv_bfloat16* __restrict__ act) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= pairs * inter) return;
  const int64_t p = i / inter, j = i % inter;
  act[i] = __float2bfloat16_rn(
      silu_mul(__bfloat162float(h[p * 2 * inter + j]), __bfloat162float(h[p * 2 * inter + inter + j])));
}

__global__ void __launch_bounds__(256)
    weighted_sum_kernel(const float* __restrict__ acc, const float* __restrict__ weights, int64_t tokens,
                        int slots, int64_t n, __nv_bfloat16* __restrict__ y) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= tokens * n) return;
  const int64_t t = i / n, row = i % n;
  float sum = 0.0f;
  for (int s = 0; s < slots; ++s) {
    const int64_t p = t * slots + s;
    sum = __fadd_rn(sum, round_bf16(__fmul_rn(acc[p * n + row], weights[p])));
  }
  y[i] = __float2bfloat16_rn(sum);
}

// ---- router ----------------------------------------------------------------------------------------

// One warp per weight row (routed experts, then the shared gate row), every token.
__global__ void __launch_bounds__(256)
    router_logits_kernel(const __nv_bfloat16* __restrict__ x, const float* __restrict__ w_router,
                         const float* __restrict__ w_shared, int64_t tokens, int64_t hidden, int experts,
                         float* __restrict__ logits) {
  const int64_t r = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int rows = experts + (w_shared ? 1 : 0);
  if (r >= rows) return;
  const int lane = threadIdx.x & 31;
  const float* wr = r < experts ? w_router + r * hidden : w_shared;
  for (int64_t t = 0; t < tokens; ++t) {
    const __nv_bfloat16* xt = x + t * hidden;
    float acc = 0.0f;
    for (int64_t i = lane * 4; i < hidden; i += 128) {
      const float4 wv = __ldg(reinterpret_cast<const float4*>(wr + i));
      const uint2 xv = __ldg(reinterpret_cast<const uint2*>(xt + i));
      acc = __fmaf_rn(wv.x, __uint_as_float(xv.x << 16), acc);
      acc = __fmaf_rn(wv.y, __uint_as_float(xv.x & 0xFFFF0000u), acc);
      acc = __fmaf_rn(wv.z, __uint_as_float(xv.y << 16), acc);
      acc = __fmaf_rn(wv.w, __uint_as_float(xv.y & 0xFFFF0000u), acc);
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) acc = __fadd_rn(acc, __shfl_xor_sync(0xFFFFFFFFu, acc, off));
    if (lane == 0) logits[t * (experts + 1) + r] = acc;
  }
}

// One warp per token: top_k rounds of a warp argmax (ties: lower id), then softmax over the picks.
__global__ void __launch_bounds__(256)
    router_topk_kernel(const float* __restrict__ logits, int64_t tokens, int experts, int top_k, bool shared,
                       int32_t* __restrict__ ids, float* __restrict__ weights) {
  constexpr int kPer = kMaxExperts / 32;
  const int64_t t = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (t >= tokens) return;
  const int lane = threadIdx.x & 31;
  const float* lt = logits + t * (experts + 1);
  float v[kPer];
#pragma unroll
  for (int i = 0; i < kPer; ++i) v[i] = lane + 32 * i < experts ? lt[lane + 32 * i] : -INFINITY;
  unsigned taken = 0;
  float top_v[16];
  int top_i[16];
  for (int s = 0; s < top_k; ++s) {
    float bv = -INFINITY;
    int bi = 0x7FFFFFFF;
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int id = lane + 32 * i;
      if (id < experts && !(taken >> i & 1u) && (v[i] > bv || bi == 0x7FFFFFFF)) bv = v[i], bi = id;
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
      const float ov = __shfl_xor_sync(0xFFFFFFFFu, bv, off);
      const int oi = __shfl_xor_sync(0xFFFFFFFFu, bi, off);
      if (ov > bv || (ov == bv && oi < bi)) bv = ov, bi = oi;
    }
    if (bi % 32 == lane) taken |= 1u << (bi / 32);
    top_v[s & 15] = bv;
    top_i[s & 15] = bi;
  }
  if (lane != 0) return;
  const int slots = top_k + (shared ? 1 : 0);
  float ex[16], sum = 0.0f;
  for (int s = 0; s < top_k; ++s) {
    ex[s] = expf(__fsub_rn(top_v[s], top_v[0]));
    sum = __fadd_rn(sum, ex[s]);
  }
  for (int s = 0; s < top_k; ++s) {
    ids[t * slots + s] = top_i[s];
    weights[t * slots + s] = __fdiv_rn(ex[s], sum);
  }
  if (shared) {
    ids[t * slots + top_k] = experts;
    weights[t * slots + top_k] = __frcp_rn(__fadd_rn(1.0f, expf(-lt[experts])));
  }
}

WArgs check_weights(const ExpertWeights& w, bool gemm2) {
  require(w.experts >= 1 && w.n >= 1 && w.k > 0 && w.k % 256 == 0, "need experts, n >= 1 and k % 256 == 0");
  const int64_t units = w.k / 32;
  require(units >= 32 || (units & (units - 1)) == 0, "k / 32 must be a power of 2 below 32 lanes");
  require(units <= 32 * kMaxUnits, "k <= 4096");
  if (gemm2) require(units <= 32, "GEMM2 needs k <= 1024 (one unit per lane)");
  require(w.qdata != nullptr && aligned(w.qdata, 16), "null or misaligned qdata");
  if (w.format == ExpertFormat::sym_int4) {
    require(w.group == 32 || w.group == 64 || w.group == 128, "group must be 32, 64 or 128");
    require(w.scale != nullptr && aligned(w.scale, 2), "null or misaligned scale");
  }
  const bool sym = w.format == ExpertFormat::sym_int4;
  const int gu = sym ? w.group / 32 : 1;
  return {static_cast<const uint8_t*>(w.qdata),
          static_cast<const uint16_t*>(w.scale),
          w.experts,
          w.n,
          w.k,
          gu,
          gu == 2   ? 1
          : gu == 4 ? 2
                    : 0,
          sym ? w.k / 2 : w.k / 256 * static_cast<int64_t>(sizeof(BlockQ4K)),
          sym ? w.k / w.group : 0};
}

int grid_cap() {
  static const int cap = [] {
    int dev = 0, sms = 0;
    FB_CUDA_CHECK(cudaGetDevice(&dev));
    FB_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    return sms * 4;  // 4 resident blocks of 8 warps per SM
  }();
  return cap;
}

template <ExpertFormat F, bool kF32Out>
void launch_pairs(const WArgs& a, const Q8Block* act, bool per_pair, const int32_t* ids, int64_t pairs,
                  int slots, void* out, int64_t ldo, int64_t col0, cudaStream_t stream) {
  const int L = lanes_per_row(a.k);
  const int64_t tasks = pairs * a.n, per_block = int64_t{kWarps} * (32 / L);
  const int64_t blocks = (tasks + per_block - 1) / per_block;
  const int grid = static_cast<int>(blocks < grid_cap() ? blocks : grid_cap());
  pairs_matvec_kernel<F, kF32Out>
      <<<grid, kWarps * 32, 0, stream>>>(a, act, per_pair, ids, pairs, slots, out, ldo, col0, L);
  FB_CUDA_CHECK_LAUNCH();
}

}  // namespace

const char* to_string(ExpertFormat f) { return f == ExpertFormat::sym_int4 ? "sym_int4" : "q4_k"; }

void moe_quantize_q8(const __nv_bfloat16* x, int64_t rows, int64_t k, Q8Block* q8, cudaStream_t stream) {
  require(rows >= 1 && k > 0 && k % 32 == 0, "quantize: need rows >= 1 and k % 32 == 0");
  require(x && q8 && aligned(x, 16) && aligned(q8, 16), "quantize: null or misaligned pointer");
  const int64_t chunks = rows * k / 8;
  quantize_kernel<<<blocks_for(chunks, 256), 256, 0, stream>>>(x, chunks, q8);
  FB_CUDA_CHECK_LAUNCH();
}

void moe_router(const __nv_bfloat16* x, const float* w_router, const float* w_shared, int64_t tokens,
                int64_t hidden, int experts, int top_k, float* logits, int32_t* ids, float* weights,
                cudaStream_t stream) {
  require(tokens >= 1 && hidden >= 4 && hidden % 4 == 0, "router: need tokens >= 1 and hidden % 4 == 0");
  require(experts >= 1 && experts <= kMaxExperts && top_k >= 1 && top_k <= 16 && top_k <= experts,
          "router: need 1 <= top_k <= min(16, experts), experts <= 256");
  require(x && w_router && logits && ids && weights && aligned(x, 8) && aligned(w_router, 16) &&
              (!w_shared || aligned(w_shared, 16)),
          "router: null or misaligned pointer");
  const int rows = experts + (w_shared ? 1 : 0);
  router_logits_kernel<<<blocks_for(int64_t{rows} * 32, 256), 256, 0, stream>>>(x, w_router, w_shared, tokens,
                                                                                hidden, experts, logits);
  FB_CUDA_CHECK_LAUNCH();
  router_topk_kernel<<<blocks_for(tokens * 32, 256), 256, 0, stream>>>(logits, tokens, experts, top_k,
                                                                       w_shared != nullptr, ids, weights);
  FB_CUDA_CHECK_LAUNCH();
}

void moe_gemm1(const ExpertWeights& w, const Q8Block* q8x, const int32_t* ids, int64_t tokens, int slots,
               __nv_bfloat16* out, int64_t ldo, int64_t col0, cudaStream_t stream) {
  const WArgs a = check_weights(w, false);
  require(tokens >= 1 && slots >= 1 && col0 >= 0 && ldo >= col0 + w.n, "gemm1: bad tokens/slots/ldo");
  require(q8x && aligned(q8x, 16) && ids && out, "gemm1: null pointer");
  if (w.format == ExpertFormat::sym_int4)
    launch_pairs<ExpertFormat::sym_int4, false>(a, q8x, false, ids, tokens * slots, slots, out, ldo, col0,
                                                stream);
  else
    launch_pairs<ExpertFormat::q4_k, false>(a, q8x, false, ids, tokens * slots, slots, out, ldo, col0,
                                            stream);
}

namespace {
// The GEMM1-with-quantize instantiation for units per lane 1, 2 or 4 (kupl).
template <ExpertFormat F>
auto gemm1_quant_fn(int kupl) {
  return kupl == 1   ? &gemm1_quant_kernel<F, 1>
         : kupl == 2 ? &gemm1_quant_kernel<F, 2>
                     : &gemm1_quant_kernel<F, 4>;
}
}  // namespace

void moe_gemm1_quant(const ExpertWeights& w, const __nv_bfloat16* x, const int32_t* ids, int64_t tokens,
                     int slots, __nv_bfloat16* out, int64_t ldo, int64_t col0, cudaStream_t stream) {
  const WArgs a = check_weights(w, false);
  require(tokens >= 1 && slots >= 1 && col0 >= 0 && ldo >= col0 + w.n, "gemm1: bad tokens/slots/ldo");
  require(x && aligned(x, 16) && ids && out, "gemm1: null or misaligned pointer");
  const int L = lanes_per_row(w.k);
  const int64_t units = w.k / 32, upl = (units + L - 1) / L;  // 1..4 (units <= 32 * kMaxUnits)
  const int kupl = upl == 1 ? 1 : upl == 2 ? 2 : 4;
  const int64_t rows_per_warp = int64_t{kFrags / kupl} * (32 / L);
  const int64_t tiles = (w.n + rows_per_warp - 1) / rows_per_warp, pairs = tokens * slots;
  const int64_t blocks = (pairs * tiles + kWarps - 1) / kWarps;
  require(pairs * tiles + kWarps < (int64_t{1} << 31), "gemm1: too many tokens");
  // Tokens one block can span: its kWarps consecutive warp tasks cover at most span_p pairs.
  const int64_t span_p = (kWarps - 1) / tiles + 2;
  const int64_t span_t = std::min<int64_t>(tokens, (span_p + slots - 1) / slots + 1);
  const size_t smem = static_cast<size_t>(span_t * units) * sizeof(Q8Block);
  require(smem <= 48 * 1024, "gemm1: the tokens one block spans exceed 48 KB of shared memory");
  const auto grid = static_cast<unsigned>(blocks);
  const auto up = static_cast<unsigned>(pairs), us = static_cast<unsigned>(slots),
             ut = static_cast<unsigned>(tiles);
  // Every instantiation has the same parameter list: pick one, launch it once.
  const auto kernel = w.format == ExpertFormat::sym_int4 ? gemm1_quant_fn<ExpertFormat::sym_int4>(kupl)
                                                         : gemm1_quant_fn<ExpertFormat::q4_k>(kupl);
  kernel<<<grid, kWarps * 32, smem, stream>>>(a, x, ids, up, us, ut, L, out, ldo, col0);
  FB_CUDA_CHECK_LAUNCH();
}

void moe_down(const ExpertWeights& w, const Q8Block* q8act, const int32_t* ids, int64_t pairs, float* acc,
              cudaStream_t stream) {
  const WArgs a = check_weights(w, false);
  require(pairs >= 1 && q8act && aligned(q8act, 16) && ids && acc, "down: bad arguments");
  if (w.format == ExpertFormat::sym_int4)
    launch_pairs<ExpertFormat::sym_int4, true>(a, q8act, true, ids, pairs, 1, acc, w.n, 0, stream);
  else
    launch_pairs<ExpertFormat::q4_k, true>(a, q8act, true, ids, pairs, 1, acc, w.n, 0, stream);
}

void moe_gemm2_silu(const ExpertWeights& w, const __nv_bfloat16* h, const int32_t* ids, const float* weights,
                    int64_t tokens, int slots, __nv_bfloat16* y, cudaStream_t stream) {
  const WArgs a = check_weights(w, true);
  require(tokens >= 1 && slots >= 1 && slots * w.k <= 32768, "gemm2: need slots * k <= 32768");
  require(h && aligned(h, 16) && ids && weights && y, "gemm2: null or misaligned pointer");
  const int L = lanes_per_row(w.k);
  const int64_t rows_per_block = int64_t{kWarps} * (32 / L);
  const int64_t tiles = (w.n + rows_per_block - 1) / rows_per_block;
  require(tokens * tiles < (int64_t{1} << 31), "gemm2: too many tokens");
  const auto grid = static_cast<unsigned>(tokens * tiles);
  const size_t smem = static_cast<size_t>(slots * (w.k / 32)) * sizeof(Q8Block);
  // <= 48 KB of dynamic shared memory (the slots * k <= 32768 limit): no opt-in attribute needed, so
  // nothing but the launch happens here (safe inside a stream capture).
  if (w.format == ExpertFormat::sym_int4) {
    gemm2_silu_kernel<ExpertFormat::sym_int4>
        <<<grid, kWarps * 32, smem, stream>>>(a, h, ids, weights, slots, static_cast<unsigned>(tiles), y, L);
  } else {
    gemm2_silu_kernel<ExpertFormat::q4_k>
        <<<grid, kWarps * 32, smem, stream>>>(a, h, ids, weights, slots, static_cast<unsigned>(tiles), y, L);
  }
  FB_CUDA_CHECK_LAUNCH();
}

void moe_silu_mul(const __nv_bfloat16* h, int64_t pairs, int64_t inter, __nv_bfloat16* act,
                  cudaStream_t stream) {
  require(pairs >= 1 && inter >= 1 && h && act, "silu_mul: bad arguments");
  silu_mul_kernel<<<blocks_for(pairs * inter, 256), 256, 0, stream>>>(h, pairs, inter, act);
  FB_CUDA_CHECK_LAUNCH();
}

void moe_weighted_sum(const float* acc, const float* weights, int64_t tokens, int slots, int64_t n,
                      __nv_bfloat16* y, cudaStream_t stream) {
  require(tokens >= 1 && slots >= 1 && n >= 1 && acc && weights && y, "weighted_sum: bad arguments");
  weighted_sum_kernel<<<blocks_for(tokens * n, 256), 256, 0, stream>>>(acc, weights, tokens, slots, n, y);
  FB_CUDA_CHECK_LAUNCH();
}

}  // namespace fb::cuda
