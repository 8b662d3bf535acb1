#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/common/cuda_check.h"
#include "kernels/common/launch.cuh"
#include "kernels/common/stream_loads.cuh"
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

// The fused kernels' first loads (activations, expert ids): volatile, so the compiler issues them
// where written, ahead of the weight loads (ld_stream16, also volatile), instead of sinking them to
// their first use behind tens of address instructions.
__device__ __forceinline__ uint4 ld_first16(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}
__device__ __forceinline__ uint2 ld_first8(const void* p) {
  uint2 v;
  asm volatile("ld.global.nc.v2.u32 {%0,%1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
  return v;
}
__device__ __forceinline__ int32_t ld_first4(const int32_t* p) {
  int32_t v;
  asm volatile("ld.global.nc.s32 %0, [%1];" : "=r"(v) : "l"(p));
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

// Shared-memory twin of Q8Block with the quants in natural order (element i at qs[i]). A Q4_K unit
// pairs 16 consecutive weights with 16 consecutive activations, so from this layout its dot needs no
// byte permutes; d and the half sums are the same fields, so the integer dot products and every
// float after them equal those computed from the even/odd layout the unfused twin reads.
struct alignas(16) Q8Nat {
  int8_t qs[32];
  float d;
  int32_t sum_lo, sum_hi, pad;
};
static_assert(sizeof(Q8Nat) == sizeof(Q8Block) && offsetof(Q8Nat, d) == offsetof(Q8Block, d));

// Row strides and the group shift are precomputed on the host: a runtime 64-bit division per
// fragment address was most of the decode GEMMs' instructions.
struct WArgs {
  const uint8_t* q;
  const uint16_t* scale;
  int64_t experts, n, k;
  int group_units;                       // sym_int4: 32-weight units per scale
  int group_shift;                       // log2(group_units)
  int64_t row_qbytes;                    // bytes of one row's quants (sym_int4: k / 2; q4_k: k / 256 blocks)
  int64_t row_scales;                    // sym_int4: scales per row (k / 32 / group_units)
  int64_t expert_qbytes, expert_scales;  // n * row_qbytes, n * row_scales
};

template <ExpertFormat F>
struct Unit;

// Symmetric INT4: 16 bytes = 32 weights = one Q8 block; w = (u - 8) s: s d_a (dp - 8 asum).
// Its nibbles pair with the even/odd layout directly, so shared memory uses that layout too.
template <>
struct Unit<ExpertFormat::sym_int4> {
  using Smem = Q8Block;
  struct Frag {
    uint4 q;
    float s;
  };
  // Unit u of the row whose quants start at q and scales at s.
  static __device__ __forceinline__ Frag load_at(const WArgs& w, const uint8_t* q, const uint16_t* s, int u) {
    return {ld_stream16(q + u * 16), bf16_bits(__ldg(s + (u >> w.group_shift)))};
  }
  static __device__ __forceinline__ Frag load(const WArgs& w, int64_t e, int64_t row, int u) {
    const int64_t r = e * w.n + row;
    return load_at(w, w.q + r * w.row_qbytes, w.scale + r * w.row_scales, u);
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
  static __device__ __forceinline__ float dot_smem(const Frag& f, const Smem* act, int u) {
    return dot(f, act, u);
  }
};

// ggml Q4_K in place. Unit u of a row: super-block u/8, 64-chunk c = (u%8)/2, half hh = u%2: qs
// bytes [32c + 16hh, +16) whose low nibbles are elements 16hh.. of sub-block 2c and high nibbles
// the same elements of sub-block 2c+1. ggml's weight d*sc*q - dmin*m gives d_a (S dp - M asum).
// The fragment keeps the raw 16-byte block head (d, dmin, scales[12]); the 6-bit scales are decoded
// where they are used, after the loads of every fragment are in flight.
template <>
struct Unit<ExpertFormat::q4_k> {
  using Smem = Q8Nat;
  struct Frag {
    uint4 q;
    uint4 hd;
  };
  struct Scales {
    float sa, ma, sb, mb;
  };
  static __device__ __forceinline__ Frag load_at(const WArgs&, const uint8_t* q, const uint16_t*, int u) {
    const uint8_t* blk = q + (u >> 3) * int{sizeof(BlockQ4K)};
    return {ld_stream16(blk + 16 + 16 * (u & 7)), __ldg(reinterpret_cast<const uint4*>(blk))};
  }
  static __device__ __forceinline__ Frag load(const WArgs& w, int64_t e, int64_t row, int u) {
    return load_at(w, w.q + (e * w.n + row) * w.row_qbytes, nullptr, u);
  }
  // Sub-blocks j = 2c and 2c + 1: their scale and min bytes sit at byte 2(c%2) + s of scales[0..3]
  // (hd.y), [4..7] (hd.z) and [8..11] (hd.w); for j >= 4 the low 4 bits come from [8..11] and the
  // top 2 from bits 6..7 of [0..3] (scale) or [4..7] (min). Two at a time, 8 bits apart.
  static __device__ __forceinline__ Scales scales(const uint4& hd, int c) {
    const float d = __half2float(__ushort_as_half(static_cast<uint16_t>(hd.x & 0xFFFF)));
    const float dmin = __half2float(__ushort_as_half(static_cast<uint16_t>(hd.x >> 16)));
    const int sh = 16 * (c & 1);
    const uint32_t w1 = hd.y >> sh, w2 = hd.z >> sh, w3 = hd.w >> sh;
    const uint32_t sc = c < 2 ? (w1 & 0x3F3Fu) : ((w3 & 0x0F0Fu) | ((w1 >> 2) & 0x3030u));
    const uint32_t mn = c < 2 ? (w2 & 0x3F3Fu) : (((w3 >> 4) & 0x0F0Fu) | ((w2 >> 2) & 0x3030u));
    return {__fmul_rn(d, static_cast<float>(sc & 0xFFu)), __fmul_rn(dmin, static_cast<float>(mn & 0xFFu)),
            __fmul_rn(d, static_cast<float>(sc >> 8)), __fmul_rn(dmin, static_cast<float>(mn >> 8))};
  }
  // The float part of a unit, shared by both activation layouts.
  static __device__ __forceinline__ float combine(const Scales& s, int dpa, int dpb, float da, float db,
                                                  int suma, int sumb) {
    const float ta =
        __fmul_rn(da, __fmaf_rn(-s.ma, static_cast<float>(suma), __fmul_rn(s.sa, static_cast<float>(dpa))));
    const float tb =
        __fmul_rn(db, __fmaf_rn(-s.mb, static_cast<float>(sumb), __fmul_rn(s.sb, static_cast<float>(dpb))));
    return __fadd_rn(ta, tb);
  }
  // Against the even/odd Q8Block layout (global memory, the unfused twin).
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
    return combine(scales(f.hd, c), dpa, dpb, A->d, B->d, hh ? A->sum_hi : A->sum_lo,
                   hh ? B->sum_hi : B->sum_lo);
  }
  // Against the natural-order layout (shared memory of the fused kernels): the same integers.
  static __device__ __forceinline__ float dot_smem(const Frag& f, const Q8Nat* act, int u) {
    const int c = (u & 7) >> 1, hh = u & 1;
    const Q8Nat* A = act + (u >> 3) * 8 + 2 * c;
    const uint4 qa = *reinterpret_cast<const uint4*>(A[0].qs + 16 * hh);
    const uint4 qb = *reinterpret_cast<const uint4*>(A[1].qs + 16 * hh);
    const uint4 ma = *reinterpret_cast<const uint4*>(&A[0].d);  // d, sum_lo, sum_hi, pad
    const uint4 mb = *reinterpret_cast<const uint4*>(&A[1].d);
    int dpa = 0, dpb = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t wq = word_of(f.q, i);
      dpa = __dp4a(static_cast<int>(wq & 0x0F0F0F0Fu), static_cast<int>(word_of(qa, i)), dpa);
      dpb = __dp4a(static_cast<int>((wq >> 4) & 0x0F0F0F0Fu), static_cast<int>(word_of(qb, i)), dpb);
    }
    return combine(scales(f.hd, c), dpa, dpb, __uint_as_float(ma.x), __uint_as_float(mb.x),
                   static_cast<int>(hh ? ma.z : ma.y), static_cast<int>(hh ? mb.z : mb.y));
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

// The fused kernels split a fragment's address into the expert's base (known only when its id
// arrives) and the row/unit part (computed while the id is in flight); 32-bit factors (the launcher
// checks an expert is < 4 GB) make each a single wide multiply-add.
__device__ __forceinline__ const uint8_t* qbase_of(const WArgs& w, unsigned e) {
  return w.q + static_cast<uint64_t>(e) * static_cast<uint32_t>(w.expert_qbytes);
}
__device__ __forceinline__ const uint16_t* sbase_of(const WArgs& w, unsigned e) {
  return w.scale + static_cast<uint64_t>(e) * static_cast<uint32_t>(w.expert_scales);
}
// The xor reduction over the L lanes of a group (offsets L/2, ..., 1, as row_dot), unrolled for any
// L <= 32: a loop on a runtime L was a branch per step.
__device__ __forceinline__ float reduce_lanes(float acc, int L) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1)
    if (off < L) acc = __fadd_rn(acc, __shfl_xor_sync(0xFFFFFFFFu, acc, off));
  return acc;
}

// ---- activation quantization: 32 / kPer lanes per 32-block, kPer elements each ------------------
// amax is order-free, d/inv/q the fb::quantize_activations_q8 expressions, the half sums integers:
// the block equals the per-warp quantizer's bit for bit however the lanes are arranged. The lanes
// of a block are consecutive and aligned; every lane of the warp must call it (the shuffles).
// kNat: write Q8Nat (natural order) instead of Q8Block (even/odd).
template <int kPer, bool kNat>
__device__ __forceinline__ void quantize_part(const float (&v)[kPer], bool valid, void* blk, int part) {
  static_assert(kPer == 4 || kPer == 8);
  constexpr int G = 32 / kPer;  // lanes per block
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < kPer; ++i) amax = fmaxf(amax, fabsf(v[i]));
#pragma unroll
  for (int off = 1; off < G; off <<= 1) amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, off));
  const float d = __fdiv_rn(amax, 127.0f);
  const float inv = d != 0.0f ? __frcp_rn(d) : 0.0f;
  int q[kPer], s = 0;
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    q[i] = max(-128, min(127, __float2int_rn(__fmul_rn(v[i], inv))));
    s += q[i];
  }
#pragma unroll
  for (int off = 1; off < G / 2; off <<= 1) s += __shfl_xor_sync(0xFFFFFFFFu, s, off);  // 16 elements
  if (!valid) return;
  auto byte = [&](int i) { return static_cast<uint32_t>(q[i]) & 0xFFu; };
  if constexpr (kNat) {
    uint32_t wd[kPer / 4];
#pragma unroll
    for (int j = 0; j < kPer / 4; ++j)
      wd[j] = byte(4 * j) | byte(4 * j + 1) << 8 | byte(4 * j + 2) << 16 | byte(4 * j + 3) << 24;
    int8_t* qs = static_cast<Q8Nat*>(blk)->qs + kPer * part;
    if constexpr (kPer == 8)
      *reinterpret_cast<uint2*>(qs) = make_uint2(wd[0], wd[1]);
    else
      *reinterpret_cast<uint32_t*>(qs) = wd[0];
  } else {
    Q8Block* b = static_cast<Q8Block*>(blk);
    uint32_t ev = 0, ov = 0;
#pragma unroll
    for (int i = 0; i < kPer / 2; ++i) {
      ev |= byte(2 * i) << (8 * i);
      ov |= byte(2 * i + 1) << (8 * i);
    }
    if constexpr (kPer == 8) {
      reinterpret_cast<uint32_t*>(b->qs_even)[part] = ev;
      reinterpret_cast<uint32_t*>(b->qs_odd)[part] = ov;
    } else {
      reinterpret_cast<uint16_t*>(b->qs_even)[part] = static_cast<uint16_t>(ev);
      reinterpret_cast<uint16_t*>(b->qs_odd)[part] = static_cast<uint16_t>(ov);
    }
  }
  Q8Block* m = static_cast<Q8Block*>(blk);  // d and the sums sit at the same offsets in both layouts
  if (part == 0) {
    m->d = d;
    m->sum_lo = s;
    m->pad = 0;
  }
  if (part == G / 2) m->sum_hi = s;
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
  quantize_part<8, false>(v, valid, q8 + c / 4, static_cast<int>(c % 4));
}

// ---- activations shared by a thread-block cluster -------------------------------------------------
// The fused kernels need a token's whole quantized activation in every block, but building it is a
// serial phase (GEMM2: silu of 9 x 512 gate/up pairs) that every block would redo. Launched as a
// cluster of `size` blocks, block `rank` builds blocks [b0, b1) of the nblk Q8 blocks in its own
// shared memory, and after a cluster barrier each block copies the others' shares from distributed
// shared memory. Without a cluster launch size is 1 and this is one __syncthreads.
struct ClusterShare {
  unsigned rank, size;
  int share, b0, b1;
};
__device__ __forceinline__ ClusterShare cluster_share(int nblk) {
  ClusterShare c;
  c.rank = __clusterRelativeBlockRank();
  c.size = __clusterSizeInBlocks();  // 1, 2, 4 or 8: a shift, not a division
  c.share = (nblk + static_cast<int>(c.size) - 1) >> (__ffs(static_cast<int>(c.size)) - 1);
  c.b0 = min(nblk, static_cast<int>(c.rank) * c.share);
  c.b1 = min(nblk, c.b0 + c.share);
  return c;
}
// After each block wrote its share: every block holds all nblk blocks. Then the block signals that it
// no longer reads its peers; cluster_done() waits for that signal from all before the block exits
// (a block's shared memory must outlive the peers' reads).
__device__ __forceinline__ void cluster_gather(uint4* smem, int nblk, const ClusterShare& c) {
  if (c.size == 1) {
    __syncthreads();
    return;
  }
  __cluster_barrier_arrive();  // release: this block's share
  __cluster_barrier_wait();    // acquire: the peers'
  constexpr int kPieces = sizeof(Q8Block) / sizeof(uint4), kMaxCluster = 8, kBatch = 4;
  const int pps = c.share * kPieces, total = nblk * kPieces;  // pieces per share, in all
  // Piece k of every peer's share per thread (no division); kBatch loads in flight before the stores.
  for (int k = threadIdx.x; k < pps; k += blockDim.x) {
#pragma unroll
    for (int r0 = 0; r0 < kMaxCluster; r0 += kBatch) {
      uint4 v[kBatch];
#pragma unroll
      for (int j = 0; j < kBatch; ++j) {
        const int r = r0 + j, i = r * pps + k;
        if (r < static_cast<int>(c.size) && r != static_cast<int>(c.rank) && i < total)
          v[j] = *static_cast<const uint4*>(__cluster_map_shared_rank(smem + i, r));
      }
#pragma unroll
      for (int j = 0; j < kBatch; ++j) {
        const int r = r0 + j, i = r * pps + k;
        if (r < static_cast<int>(c.size) && r != static_cast<int>(c.rank) && i < total) smem[i] = v[j];
      }
    }
  }
  __syncthreads();
  __cluster_barrier_arrive();
}
__device__ __forceinline__ void cluster_done(const ClusterShare& c) {
  if (c.size > 1) __cluster_barrier_wait();
}

// ---- GEMM1 for decode, activation quantize folded in -------------------------------------------
// Why this shape: at T = 1 GEMM1 is 9 pairs x 1024 rows of 1 KB, L2-resident when hot; its time is
// each warp's instruction stream (at ~10 cycles an instruction), not bytes. So: grid (row tiles,
// slot, token) leaves no division in the kernel; the token's x and the expert id are the first
// loads; rows and units past the end are clamped so every load is unconditional (only stores are
// skipped); a warp owns R rows of one pair (R * kUpl 16-byte loads per lane, all issued before
// anything waits), R chosen so the grid is one even wave (K = 2048: R = 3, 43 x 9 blocks of 8 warps
// at 3 per SM on 132 SMs). The token is quantized into shared memory (Q4_K: natural order, Q8Nat)
// while the weights arrive. Per (pair, row) it is row_dot's arithmetic: lane gl sums units gl,
// gl + L, ... in that order from 0, then the same xor reduction, and quantize_part is the quantize
// kernel's, so the output equals quantize + pairs_matvec_kernel (the gate/up twin) bit for bit.
template <ExpertFormat F, int kUpl, int R>
__global__ void __launch_bounds__(kWarps * 32, (kUpl * R <= 6) ? 3 : 2)
    gemm1_quant_kernel(WArgs w, const __nv_bfloat16* __restrict__ x, const int32_t* __restrict__ ids,
                       int slots, int L, __nv_bfloat16* __restrict__ out, int64_t ldo, int64_t col0) {
  using U = Unit<F>;
  using Act = typename U::Smem;
  constexpr bool kNat = F == ExpertFormat::q4_k;
  constexpr int kPer = 8, G = 32 / kPer, kPass = kWarps * 32 / G;  // quantize: Q8 blocks per pass
  extern __shared__ uint4 smem[];                                  // [k / 32] Act: this token
  Act* sx = reinterpret_cast<Act*>(smem);
  // First the token's x (pass 0: Q8 block tid / G; clamped, so unconditional) and the expert id.
  const unsigned p = blockIdx.z * static_cast<unsigned>(slots) + blockIdx.y;
  const int units = static_cast<int>(w.k) >> 5;
  const uint4* xt = reinterpret_cast<const uint4*>(x) + static_cast<uint64_t>(blockIdx.z) * (w.k >> 3);
  const uint4 x0 = ld_first16(xt + min(static_cast<int>(threadIdx.x), units * G - 1));
  const int32_t e = ld_first4(ids + p);
  const int part = static_cast<int>(threadIdx.x) % G;

  // While they are in flight: the row and unit parts of every fragment's address.
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int lsh = __ffs(L) - 1;  // L is a power of 2: shifts, not divisions
  const int gl = lane & (L - 1), gi = lane >> lsh, gpw = 32 >> lsh;
  const int row0 = (blockIdx.x * kWarps + warp) * (R * gpw) + gi;
  const int last = static_cast<int>(w.n) - 1;
  uint32_t qoff[R], soff[R];
#pragma unroll
  for (int j = 0; j < R; ++j) {
    const auto row = static_cast<uint32_t>(min(row0 + j * gpw, last));
    qoff[j] = row * static_cast<uint32_t>(w.row_qbytes);
    soff[j] = row * static_cast<uint32_t>(w.row_scales);
  }
  int uo[kUpl];
#pragma unroll
  for (int uu = 0; uu < kUpl; ++uu) uo[uu] = min(gl + uu * L, units - 1);

  const bool bad = e < 0 || e >= w.experts;  // corrupt id: NaN, and expert 0 is read instead
  const unsigned ee = bad ? 0u : static_cast<unsigned>(e);
  const uint8_t* qb = qbase_of(w, ee);
  const uint16_t* sb = nullptr;
  if constexpr (F == ExpertFormat::sym_int4) sb = sbase_of(w, ee);
  typename U::Frag f[R][kUpl];
#pragma unroll
  for (int j = 0; j < R; ++j)
#pragma unroll
    for (int uu = 0; uu < kUpl; ++uu) f[j][uu] = U::load_at(w, qb + qoff[j], sb + soff[j], uo[uu]);

  // Quantize while the weights arrive: pass 0 in line (one pass at K <= 2048), then the rest.
  for (int base = 0; base < units; base += kPass) {
    const int b = base + static_cast<int>(threadIdx.x) / G;
    const bool valid = b < units;  // uniform over the G lanes of a block
    float v[kPer];
    unpack8(base == 0 ? x0 : __ldg(xt + min(b, units - 1) * G + part), v);
    quantize_part<kPer, kNat>(v, valid, sx + b, part);
  }
  __syncthreads();

  float acc[R];
#pragma unroll
  for (int j = 0; j < R; ++j) {
    acc[j] = 0.0f;
#pragma unroll
    for (int uu = 0; uu < kUpl; ++uu) {
      const int u = gl + uu * L;
      const float d = U::dot_smem(f[j][uu], sx, uo[uu]);
      if (u < units) acc[j] = __fadd_rn(acc[j], d);
    }
  }
#pragma unroll
  for (int j = 0; j < R; ++j) acc[j] = reduce_lanes(acc[j], L);
#pragma unroll
  for (int j = 0; j < R; ++j) {
    const int row = row0 + j * gpw;
    if (gl == (j & (L - 1)) && row <= last)  // the sum is in every lane of the group: spread the stores
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

// Block = (tile of kWarps * 32 / L rows, token); lane group = one row, lane gl = unit gl (L = k / 32)
// of every slot. At T = 1 it is launched in clusters of 8 blocks (tiles padded to a multiple): each
// block builds 1/8 of the token's bf16(silu(gate) * up), quantized (Q4_K: natural order), and the
// cluster shares it through distributed shared memory, so the serial silu phase and the reads of h
// shrink 8-fold (before, every block built all 9 x 512 activations). The gate/up and id loads go
// first, then the weight loads of all slots (up to kSlotChunk; clamped row and slot indices, so no
// load is conditional), which arrive during the silu phase. Per slot: 0 + dot, the xor reduction
// over L lanes, bf16(acc * w_s) summed in fp32 in slot order: moe_down + moe_weighted_sum bit for
// bit. kPer activations per lane in the silu phase: 4 when the work is split over a cluster, else 8.
// At most 128 registers: 2 blocks per SM, so a cluster of 8 always fits in a GPC (768-thread blocks
// splitting the slots over 3 warp groups, one per SM, measured slower on an H200: their clusters
// did not all fit at once).
template <ExpertFormat F, int kPer>
__global__ void __launch_bounds__(kWarps * 32, 2)
    gemm2_silu_kernel(WArgs w, const __nv_bfloat16* __restrict__ h, const int32_t* __restrict__ ids,
                      const float* __restrict__ weights, int slots, __nv_bfloat16* __restrict__ y, int L) {
  using U = Unit<F>;
  using Act = typename U::Smem;
  constexpr bool kNat = F == ExpertFormat::q4_k;
  constexpr int G = 32 / kPer, kPass = kWarps * 32 / G;  // lanes per Q8 block, Q8 blocks per pass
  extern __shared__ uint4 smem[];                        // [slots][inter / 32] Act
  Act* sact = reinterpret_cast<Act*>(smem);
  const int inter = static_cast<int>(w.k), units = inter >> 5, nblk = slots * units;
  const unsigned t = blockIdx.y;
  const int32_t* tids = ids + t * static_cast<unsigned>(slots);
  const float* tw = weights + t * static_cast<unsigned>(slots);
  const __nv_bfloat16* ht = h + static_cast<uint64_t>(t) * static_cast<unsigned>(slots * 2 * inter);

  // This block's share of the token's Q8 blocks; its first pass's gate/up loaded before anything else.
  const ClusterShare cs = cluster_share(nblk);
  const int part = static_cast<int>(threadIdx.x) % G;
  const int ush = __ffs(units) - 1;  // units (<= 32) and L are powers of 2: shifts, not divisions
  auto gate_of = [&](int b) {        // the lane's gate elements of Q8 block b; up is inter further on
    const int s = b >> ush;
    return ht + s * 2 * inter + (b & (units - 1)) * 32 + part * kPer;
  };
  using Raw = std::conditional_t<kPer == 8, uint4, uint2>;  // kPer bf16
  auto ld_raw = [](const __nv_bfloat16* p) {
    if constexpr (kPer == 8)
      return ld_first16(p);
    else
      return ld_first8(p);
  };
  const __nv_bfloat16* p0 = gate_of(min(cs.b0 + static_cast<int>(threadIdx.x) / G, nblk - 1));  // clamped
  const Raw g0 = ld_raw(p0), u0 = ld_raw(p0 + inter);

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int gl = lane & (L - 1), gi = lane >> ush, gpw = 32 >> ush;
  const int row = static_cast<int>(blockIdx.x) * (kWarps * gpw) + warp * gpw + gi;
  const bool in_range = row < w.n;
  const auto rowc = static_cast<uint32_t>(min(row, static_cast<int>(w.n) - 1));
  const int uc = min(gl, units - 1);
  const uint32_t qoff = rowc * static_cast<uint32_t>(w.row_qbytes),
                 soff = rowc * static_cast<uint32_t>(w.row_scales);
  typename U::Frag f[kSlotChunk];
  bool bad = false;
  auto load_chunk = [&](int s0) {  // slots s0 .. s0 + kSlotChunk - 1 (clamped)
    int32_t e[kSlotChunk];
#pragma unroll
    for (int i = 0; i < kSlotChunk; ++i) e[i] = ld_first4(tids + min(s0 + i, slots - 1));
#pragma unroll
    for (int i = 0; i < kSlotChunk; ++i) {
      const bool ok = e[i] >= 0 && e[i] < w.experts;
      bad |= !ok;
      const unsigned ee = ok ? static_cast<unsigned>(e[i]) : 0u;
      const uint16_t* sb = nullptr;
      if constexpr (F == ExpertFormat::sym_int4) sb = sbase_of(w, ee) + soff;
      f[i] = U::load_at(w, qbase_of(w, ee) + qoff, sb, uc);
    }
  };
  load_chunk(0);

  for (int base = cs.b0; base < cs.b1; base += kPass) {
    const int b = base + static_cast<int>(threadIdx.x) / G;
    const bool valid = b < cs.b1;  // uniform over the G lanes of a block
    Raw g = g0, u = u0;
    if (base != cs.b0) {
      const __nv_bfloat16* p = gate_of(min(b, nblk - 1));
      g = __ldg(reinterpret_cast<const Raw*>(p));
      u = __ldg(reinterpret_cast<const Raw*>(p + inter));
    }
    float v[kPer];  // computed on clamped inputs when !valid: only the stores depend on it
#pragma unroll
    for (int i = 0; i < kPer / 2; ++i) {
      const uint32_t gw = reinterpret_cast<const uint32_t*>(&g)[i],
                     uw = reinterpret_cast<const uint32_t*>(&u)[i];
      v[2 * i] = silu_mul(__uint_as_float(gw << 16), __uint_as_float(uw << 16));
      v[2 * i + 1] = silu_mul(__uint_as_float(gw & 0xFFFF0000u), __uint_as_float(uw & 0xFFFF0000u));
    }
    quantize_part<kPer, kNat>(v, valid, sact + b, part);
  }
  float ws[kSlotChunk];  // loaded here, not with the weights: fewer registers live in the silu phase
#pragma unroll
  for (int i = 0; i < kSlotChunk; ++i) ws[i] = __ldg(tw + min(i, slots - 1));
  cluster_gather(smem, nblk, cs);

  float sum = 0.0f;
  for (int s0 = 0; s0 < slots; s0 += kSlotChunk) {
    if (s0 > 0) {
      load_chunk(s0);
#pragma unroll
      for (int i = 0; i < kSlotChunk; ++i) ws[i] = __ldg(tw + min(s0 + i, slots - 1));
    }
#pragma unroll
    for (int i = 0; i < kSlotChunk; ++i) {
      const int s = s0 + i;
      float acc = 0.0f;  // 0 + dot, as row_dot sums (keeps the sign of a zero identical to the twin)
      const float d = U::dot_smem(f[i], sact + min(s, slots - 1) * units, uc);
      if (gl < units) acc = __fadd_rn(acc, d);
      acc = reduce_lanes(acc, L);
      if (s < slots) sum = __fadd_rn(sum, round_bf16(__fmul_rn(acc, ws[i])));
    }
  }
  if (in_range && gl == 0) y[t * w.n + row] = __float2bfloat16_rn(bad ? __int_as_float(0x7FC00000) : sum);
  cluster_done(cs);
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
  const int64_t row_qbytes = sym ? w.k / 2 : w.k / 256 * static_cast<int64_t>(sizeof(BlockQ4K));
  const int64_t row_scales = sym ? w.k / w.group : 0;
  // The fused kernels index experts and rows with 32-bit factors into 64-bit offsets.
  require(w.experts < (int64_t{1} << 32) && w.n < (int64_t{1} << 31) && w.n * row_qbytes < (int64_t{1} << 32),
          "an expert must have < 2^31 rows and < 4 GB of quants");
  return {static_cast<const uint8_t*>(w.qdata),
          static_cast<const uint16_t*>(w.scale),
          w.experts,
          w.n,
          w.k,
          gu,
          gu == 2   ? 1
          : gu == 4 ? 2
                    : 0,
          row_qbytes,
          row_scales,
          w.n * row_qbytes,
          w.n * row_scales};
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
using Gemm1Kernel = void (*)(WArgs, const __nv_bfloat16*, const int32_t*, int, int, __nv_bfloat16*, int64_t,
                             int64_t);
// The GEMM1-with-quantize instantiation for units per lane 1, 2 or 4 (kupl) and its rows per warp:
// K = 2048 (kupl 2) takes 3 rows, which fills 132 SMs in one wave at 3 blocks per SM.
template <ExpertFormat F>
Gemm1Kernel gemm1_quant_fn(int kupl) {
  return kupl == 1   ? &gemm1_quant_kernel<F, 1, 8>
         : kupl == 2 ? &gemm1_quant_kernel<F, 2, 3>
                     : &gemm1_quant_kernel<F, 4, 2>;
}
int gemm1_rows(int kupl) { return kupl == 1 ? 8 : kupl == 2 ? 3 : 2; }
}  // namespace

void moe_gemm1_quant(const ExpertWeights& w, const __nv_bfloat16* x, const int32_t* ids, int64_t tokens,
                     int slots, __nv_bfloat16* out, int64_t ldo, int64_t col0, cudaStream_t stream) {
  const WArgs a = check_weights(w, false);
  require(tokens >= 1 && slots >= 1 && col0 >= 0 && ldo >= col0 + w.n, "gemm1: bad tokens/slots/ldo");
  require(tokens <= 65535 && slots <= 65535, "gemm1: tokens and slots must be <= 65535 (grid z, y)");
  require(x && aligned(x, 16) && ids && out, "gemm1: null or misaligned pointer");
  const int L = lanes_per_row(w.k);
  const int64_t units = w.k / 32, upl = (units + L - 1) / L;  // 1..4 (units <= 32 * kMaxUnits)
  const int kupl = upl == 1 ? 1 : upl == 2 ? 2 : 4;
  const int64_t rows_per_block = int64_t{kWarps} * gemm1_rows(kupl) * (32 / L);
  const auto tiles = static_cast<unsigned>((w.n + rows_per_block - 1) / rows_per_block);
  const size_t smem = static_cast<size_t>(units) * sizeof(Q8Block);  // one token, <= 6 KB (k <= 4096)
  // Every instantiation has the same parameter list: pick one, launch it once.
  const Gemm1Kernel kernel = w.format == ExpertFormat::sym_int4 ? gemm1_quant_fn<ExpertFormat::sym_int4>(kupl)
                                                                : gemm1_quant_fn<ExpertFormat::q4_k>(kupl);
  kernel<<<dim3(tiles, static_cast<unsigned>(slots), static_cast<unsigned>(tokens)), kWarps * 32, smem,
           stream>>>(a, x, ids, slots, L, out, ldo, col0);
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

namespace {
using Gemm2Kernel = void (*)(WArgs, const __nv_bfloat16*, const int32_t*, const float*, int, __nv_bfloat16*,
                             int);
// Blocks per cluster sharing the activation build. T = 1 (decode): 8, measured best on an H200 (vs 1
// and 4). T > 1: none; at T = 4 the 2 waves of 8-block clusters were slower than plain blocks.
constexpr unsigned kGemm2Cluster = 8;
template <ExpertFormat F>
Gemm2Kernel gemm2_fn(bool clustered) {
  return clustered ? &gemm2_silu_kernel<F, 4> : &gemm2_silu_kernel<F, 8>;
}
}  // namespace

void moe_gemm2_silu(const ExpertWeights& w, const __nv_bfloat16* h, const int32_t* ids, const float* weights,
                    int64_t tokens, int slots, __nv_bfloat16* y, cudaStream_t stream) {
  const WArgs a = check_weights(w, true);
  require(tokens >= 1 && slots >= 1 && slots * w.k <= 32768, "gemm2: need slots * k <= 32768");
  require(tokens <= 65535, "gemm2: tokens must be <= 65535 (grid y)");
  require(h && aligned(h, 16) && ids && weights && y, "gemm2: null or misaligned pointer");
  const int L = lanes_per_row(w.k);
  const int64_t rows_per_block = int64_t{kWarps} * (32 / L);
  const bool clustered = tokens == 1;
  const int64_t cluster = clustered ? kGemm2Cluster : 1;
  // Tiles per token padded to whole clusters.
  const int64_t tiles = ((w.n + rows_per_block - 1) / rows_per_block + cluster - 1) / cluster * cluster;
  // <= 48 KB of dynamic shared memory (the slots * k <= 32768 limit): no opt-in attribute needed, so
  // nothing but the launch happens here (safe inside a stream capture).
  const size_t smem = static_cast<size_t>(slots * (w.k / 32)) * sizeof(Q8Block);
  const Gemm2Kernel kernel = w.format == ExpertFormat::sym_int4 ? gemm2_fn<ExpertFormat::sym_int4>(clustered)
                                                                : gemm2_fn<ExpertFormat::q4_k>(clustered);
  launch_kernel(kernel, dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(tokens), 1),
                dim3(kWarps * 32), smem, stream, LaunchAttrs{clustered ? static_cast<unsigned>(cluster) : 0u},
                a, h, ids, weights, slots, y, L);
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
