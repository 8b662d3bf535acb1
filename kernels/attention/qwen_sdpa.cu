// qwen_sdpa: bf16-KV split-K attention (flash decoding) on mma.sync tensor cores.
//
// Partial: one warp per (split, kv head, group of 8 / G tokens). The warp's 8 "columns" are the
// (token, q head) pairs that share the kv head, so S^T = K Q^T is one m16n8k16 per 16 dims (16 keys
// x 8 columns: the GQA group of 8 needs no padding) and O^T += V^T P^T is one per 16 dims of the
// output. Each 16-key tile of K and V is copied with cp.async into a 3-stage ring of padded rows
// (row stride hd + 8 elements: ldmatrix rows fall in distinct banks); the warp computes tile i while
// tiles i+1 and i+2 are in flight. No block barriers: a warp owns its ring.
// Softmax in fp32 per column, in log2 units (scores scaled by log2(e)/sqrt(hd), ex2.approx; 3
// shuffles per 16 keys; the rescale of O is skipped while no column's max moves). P enters the PV mma
// as bf16 hi + lo halves (p - bf16(p) is exact in fp32 and its bf16 rounding leaves ~2^-17 relative):
// a single bf16 P would move a large fraction of outputs by one bf16 ulp against the fp64 truth.
// One split: the warp normalises and applies the gate itself (prefill). Several: fp32 partials
// (unnormalised acc, max, sum) go to the workspace and sdpa_combine_kernel merges them. Both kernels
// are programmatic dependent launches (griddepcontrol.wait before any global read).
// H200, qwen3.5 decode (16 q / 2 kv heads, hd 256), ncu: partial 5.3 us at 512 keys (one tile per
// warp: latency bound), 71-75 us at 128K (268 MB of KV, ~3.7 TB/s); combine 3.2-4.5 us.
#include <algorithm>
#include <cmath>

#include "kernels/attention/qwen_attn.cuh"
#include "kernels/attention/qwen_attn_device.cuh"
#include "kernels/common/cuda_check.h"
#include "kernels/common/launch.cuh"

namespace fb::cuda {
namespace {

using namespace qwen_detail;

constexpr int kTile = 16;  // keys per mma step (M of S^T)
constexpr int kCols = 8;   // (token, head) columns per warp (N of the mma)
// Split target: 4 one-warp blocks per SM (shared memory bound at hd 256) on a 132-SM H100/H200.
// H200: 2 stages with 6 warps per SM measured the same (within 2 %) at 512 .. 128K.
constexpr int kStages = 3;
constexpr int64_t kTargetWarps = 4 * 132;
constexpr int kMaxSplits = 512;  // the combine's weight table
// Combine block: 8 lanes x float4 = 32 dims of one head, 32 groups over the parts; each thread holds
// at most kCombinePer parts' slices in registers, loaded in one round trip before the weights exist.
constexpr int kCombineThreads = 256, kCombineDims = 32, kCombineLanes = kCombineDims / 4,
              kCombineGroups = kCombineThreads / kCombineLanes, kCombinePer = kMaxSplits / kCombineGroups;

// ---- PTX wrappers ----------------------------------------------------------------------------------
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16-byte async copy; valid false zero-fills (rows past the live keys: never NaN garbage in P V).
// Every 256-byte piece of a key row is consumed, so the L2 may fetch whole 256-byte sectors.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0)
               : "memory");
}
// Programmatic dependent launch: wait for the previous kernel of the stream (and its memory) before
// the first global read; let the next one (the combine) be scheduled early.
__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }
__device__ __forceinline__ void pdl_launch_dependents() {
  asm volatile("griddepcontrol.launch_dependents;\n" ::);
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void ldsm_x4(uint32_t r[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t r[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}
// 8x8 b16 transpose across the warp (fragment layout in, fragment layout out).
__device__ __forceinline__ uint32_t movmatrix_trans(uint32_t x) {
  uint32_t y;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x));
  return y;
}
__device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ float ex2(float x) {  // 2^x, ~2 ulp; -inf -> +0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}
// bf16x2 of (lo, hi), round to nearest even; `lo` in the low half (the smaller fragment index).
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}
__device__ __forceinline__ float bf_lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf_hi(uint32_t u) { return __uint_as_float(u & 0xFFFF0000u); }

struct SdpaArgs {
  const bf16 *q = nullptr, *kc = nullptr, *vc = nullptr;
  int64_t capacity = 0, T = 0;
  const int32_t* pos = nullptr;
  int nh = 0, nkv = 0, lg = 0, splits = 0, chunk = 0;  // lg: log2 of the GQA group
  float scale_log2 = 0.0f;  // 1/sqrt(hd) * log2(e): scores and maxima are kept in log2 units
  float* ws = nullptr;      // acc [T][nh][splits][hd], then (max, sum) [T][nh][splits][2]
  const bf16* gate = nullptr;
  int64_t ldg = 0, gstride = 0;
  bf16* out = nullptr;
};

template <int HD, int STAGES>
struct PartialSmem {
  static constexpr int kRow = HD + 8;  // bf16 elements: 16 bytes of padding per key row
  static constexpr int kTileBytes = kTile * kRow * 2;
  static constexpr int kStageBytes = 2 * kTileBytes;  // K tile, V tile
  static constexpr int kOutRow = HD + 4;  // fp32 epilogue rows: columns 2c, 2c+1 in distinct banks
  static constexpr int kRing = STAGES * kStageBytes;
  static constexpr int kOut = (kCols * kOutRow + 2 * kCols) * 4;
  static constexpr int kBytes = kRing > kOut ? kRing : kOut;
};

template <int HD, int STAGES>
__global__ void __launch_bounds__(32) sdpa_partial_kernel(const SdpaArgs a) {
  using Sm = PartialSmem<HD, STAGES>;
  constexpr int kSteps = HD / 16;  // k-steps of S^T and m-tiles of O^T
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int lane = threadIdx.x, g = lane >> 2, c = lane & 3;
  const int split = blockIdx.x, kvh = blockIdx.y;
  pdl_wait();
  pdl_launch_dependents();
  const int G = 1 << a.lg;
  const int64_t tok0 = static_cast<int64_t>(blockIdx.z) << (3 - a.lg);  // kCols / G tokens per warp
  // Column n: token tok0 + n / G, head kvh * G + n % G; a column past the last token has no keys.
  auto col_len = [&](int n) -> int64_t {
    const int64_t t = tok0 + (n >> a.lg);
    return t < a.T ? static_cast<int64_t>(a.pos[t]) + 1 : 0;
  };
  const int64_t len0 = col_len(2 * c), len1 = col_len(2 * c + 1);  // this lane's score columns
  int64_t maxlen = max(len0, len1);
  maxlen = max(maxlen, static_cast<int64_t>(__shfl_xor_sync(0xFFFFFFFFu, static_cast<long long>(maxlen), 1)));
  maxlen = max(maxlen, static_cast<int64_t>(__shfl_xor_sync(0xFFFFFFFFu, static_cast<long long>(maxlen), 2)));
  maxlen = min(maxlen, a.capacity);
  const int64_t j0 = static_cast<int64_t>(split) * a.chunk;
  const int64_t j1 = min(j0 + a.chunk, maxlen);
  const int nt = j1 > j0 ? static_cast<int>((j1 - j0 + kTile - 1) / kTile) : 0;

  // Q^T as the B operand of S^T: column g, dims 16s + 2c (+1) and 16s + 2c + 8 (+9).
  uint32_t qf[kSteps][2];
  {
    const int64_t t = tok0 + (g >> a.lg);
    const bool live = t < a.T;
    const uint32_t* qp =
        reinterpret_cast<const uint32_t*>(a.q + ((live ? t : 0) * a.nh + (kvh << a.lg) + (g & (G - 1))) * HD);
#pragma unroll
    for (int s = 0; s < kSteps; ++s) {
      qf[s][0] = live ? qp[8 * s + c] : 0u;
      qf[s][1] = live ? qp[8 * s + c + 4] : 0u;
    }
  }

  // Tile copies: lane -> (row lr + k * kRpp, 16-byte piece lc) of the K and V tiles; immediate offsets.
  constexpr int kChunks = HD / 8, kRpp = 32 / kChunks, kPasses = kTile / kRpp;
  const int lr = lane / kChunks, lc = lane % kChunks;
  const int64_t lane_off = (j0 + lr) * HD + lc * 8;
  const bf16* kl = a.kc + static_cast<int64_t>(kvh) * a.capacity * HD + lane_off;
  const bf16* vl = a.vc + static_cast<int64_t>(kvh) * a.capacity * HD + lane_off;
  const uint32_t sl = smem_u32(smem_raw) + (lr * Sm::kRow + lc * 8) * 2;
  auto load_tile = [&](int it) {
    const uint32_t sd = sl + (it % STAGES) * Sm::kStageBytes;
    const int64_t e = static_cast<int64_t>(it) * kTile * HD;
    const int rem =
        static_cast<int>(min(j1 - j0 - static_cast<int64_t>(it) * kTile - lr, static_cast<int64_t>(kTile)));
    if (rem >= kTile) {  // a whole tile of live keys
#pragma unroll
      for (int k = 0; k < kPasses; ++k) {
        cp_async16(sd + k * kRpp * Sm::kRow * 2, kl + e + k * kRpp * HD, true);
        cp_async16(sd + Sm::kTileBytes + k * kRpp * Sm::kRow * 2, vl + e + k * kRpp * HD, true);
      }
    } else {  // the last tile: rows past j1 zero-filled (their address clamped to a live row)
#pragma unroll
      for (int k = 0; k < kPasses; ++k) {
        const bool ok = k * kRpp < rem;
        const int64_t o = e + (ok ? k * kRpp : 0) * HD;
        cp_async16(sd + k * kRpp * Sm::kRow * 2, kl + o, ok);
        cp_async16(sd + Sm::kTileBytes + k * kRpp * Sm::kRow * 2, vl + o, ok);
      }
    }
  };
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < nt) load_tile(s);
    cp_async_commit();
  }

  float o[kSteps][4];
#pragma unroll
  for (int i = 0; i < kSteps; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;  // columns 2c, 2c+1 (l: this lane's keys)
  // ldmatrix row addresses. K (A of S^T, row-major keys x dims): lanes 0-15 rows 0-15 at dims +0,
  // lanes 16-31 at dims +8. V (A of O^T = V^T, transposed): matrix lane/8 = (keys 0-7 | 8-15) x
  // (dims +0 | +8) in the order a0..a3 wants.
  const uint32_t k_addr = smem_u32(smem_raw) + ((lane & 15) * Sm::kRow + (lane >> 4) * 8) * 2;
  const uint32_t v_addr = smem_u32(smem_raw) + Sm::kTileBytes +
                          (((lane & 7) + ((lane >> 4) << 3)) * Sm::kRow + ((lane >> 3) & 1) * 8) * 2;

  for (int it = 0; it < nt; ++it) {
    cp_async_wait<STAGES - 2>();
    __syncwarp();  // tile it landed for every lane; every lane is done with tile it-1's buffer
    if (it + STAGES - 1 < nt) load_tile(it + STAGES - 1);
    cp_async_commit();
    const uint32_t stage = (it % STAGES) * Sm::kStageBytes;
    const uint32_t ka = k_addr + stage, va = v_addr + stage;

    float sa[4] = {0.0f, 0.0f, 0.0f, 0.0f}, sb[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // two chains for ILP
#pragma unroll
    for (int s = 0; s < kSteps; ++s) {
      uint32_t af[4];
      ldsm_x4(af, ka + s * 32);
      mma_bf16((s & 1) ? sb : sa, af, qf[s][0], qf[s][1]);
    }
    // Scores (log2 units) of keys jb + g and jb + g + 8 for columns 2c, 2c+1; causal / past-the-end
    // -> -inf.
    const int64_t ja = j0 + static_cast<int64_t>(it) * kTile + g, jc = ja + 8;
    const float s0 = ja < len0 ? __fmul_rn(__fadd_rn(sa[0], sb[0]), a.scale_log2) : -INFINITY;
    const float s1 = ja < len1 ? __fmul_rn(__fadd_rn(sa[1], sb[1]), a.scale_log2) : -INFINITY;
    const float s2 = jc < len0 ? __fmul_rn(__fadd_rn(sa[2], sb[2]), a.scale_log2) : -INFINITY;
    const float s3 = jc < len1 ? __fmul_rn(__fadd_rn(sa[3], sb[3]), a.scale_log2) : -INFINITY;
    float mx0 = fmaxf(s0, s2), mx1 = fmaxf(s1, s3);
#pragma unroll
    for (int d = 4; d < 32; d <<= 1) {
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xFFFFFFFFu, mx0, d));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xFFFFFFFFu, mx1, d));
    }
    const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
    // A column with no live key yet (max -inf) subtracts 0: its factor and probabilities are 2^-inf = 0.
    const float b0 = mn0 == -INFINITY ? 0.0f : mn0, b1 = mn1 == -INFINITY ? 0.0f : mn1;
    const float corr0 = ex2(__fsub_rn(m0, b0)), corr1 = ex2(__fsub_rn(m1, b1));
    const float p0 = ex2(__fsub_rn(s0, b0)), p2 = ex2(__fsub_rn(s2, b0));
    const float p1 = ex2(__fsub_rn(s1, b1)), p3 = ex2(__fsub_rn(s3, b1));
    m0 = mn0, m1 = mn1;
    l0 = __fadd_rn(__fmul_rn(l0, corr0), __fadd_rn(p0, p2));
    l1 = __fadd_rn(__fmul_rn(l1, corr1), __fadd_rn(p1, p3));
    if (!__all_sync(0xFFFFFFFFu, corr0 == 1.0f && corr1 == 1.0f)) {  // the running max moved
#pragma unroll
      for (int i = 0; i < kSteps; ++i) {
        o[i][0] = __fmul_rn(o[i][0], corr0), o[i][1] = __fmul_rn(o[i][1], corr1);
        o[i][2] = __fmul_rn(o[i][2], corr0), o[i][3] = __fmul_rn(o[i][3], corr1);
      }
    }
    // P^T (keys x columns) -> B operand of O^T: transpose each 8-key block; hi and lo halves.
    const uint32_t h01 = pack_bf16x2(p0, p1), h23 = pack_bf16x2(p2, p3);
    const uint32_t l01 = pack_bf16x2(__fsub_rn(p0, bf_lo(h01)), __fsub_rn(p1, bf_hi(h01)));
    const uint32_t l23 = pack_bf16x2(__fsub_rn(p2, bf_lo(h23)), __fsub_rn(p3, bf_hi(h23)));
    const uint32_t bh0 = movmatrix_trans(h01), bh1 = movmatrix_trans(h23);
    const uint32_t bl0 = movmatrix_trans(l01), bl1 = movmatrix_trans(l23);
#pragma unroll
    for (int i = 0; i < kSteps; ++i) {
      uint32_t af[4];
      ldsm_x4_trans(af, va + i * 32);
      mma_bf16(o[i], af, bh0, bh1);
      mma_bf16(o[i], af, bl0, bl1);
    }
  }

  // Column sums over the 8 key rows of lanes g; stage O^T as [column][dim] for row-wise stores.
#pragma unroll
  for (int d = 4; d < 32; d <<= 1) {
    l0 = __fadd_rn(l0, __shfl_xor_sync(0xFFFFFFFFu, l0, d));
    l1 = __fadd_rn(l1, __shfl_xor_sync(0xFFFFFFFFu, l1, d));
  }
  cp_async_wait<0>();
  __syncwarp();
  float* os = reinterpret_cast<float*>(smem_raw);
  float* ml = os + kCols * Sm::kOutRow;  // (max, sum) per column
#pragma unroll
  for (int i = 0; i < kSteps; ++i) {
    os[(2 * c) * Sm::kOutRow + 16 * i + g] = o[i][0];
    os[(2 * c + 1) * Sm::kOutRow + 16 * i + g] = o[i][1];
    os[(2 * c) * Sm::kOutRow + 16 * i + g + 8] = o[i][2];
    os[(2 * c + 1) * Sm::kOutRow + 16 * i + g + 8] = o[i][3];
  }
  if (g == 0) ml[4 * c] = m0, ml[4 * c + 1] = l0, ml[4 * c + 2] = m1, ml[4 * c + 3] = l1;
  __syncwarp();
  for (int n = 0; n < kCols; ++n) {
    const int64_t t = tok0 + (n >> a.lg);
    if (t >= a.T) break;
    const int h = (kvh << a.lg) + (n & (G - 1));
    const float* orow = os + n * Sm::kOutRow;
    if (a.splits == 1) {  // the whole context: normalise, gate, store (same expressions as the combine)
      const float L = ml[2 * n + 1];
      for (int d = lane; d < HD; d += 32) {
        float y = round_bf(__fdiv_rn(orow[d], L));
        if (a.gate) y = round_bf(__fmul_rn(y, sigmoid_bf(bf_at(a.gate + t * a.ldg + h * a.gstride + d))));
        a.out[(t * a.nh + h) * HD + d] = __float2bfloat16_rn(y);
      }
    } else {
      const int64_t r = (t * a.nh + h) * a.splits + split;
      float4* dst = reinterpret_cast<float4*>(a.ws + r * HD);
      for (int d4 = lane; d4 < HD / 4; d4 += 32) dst[d4] = *reinterpret_cast<const float4*>(orow + 4 * d4);
      if (lane == 0) {
        float* mlg = a.ws + a.T * a.nh * a.splits * HD + r * 2;
        mlg[0] = ml[2 * n], mlg[1] = ml[2 * n + 1];
      }
    }
  }
}

// Combine: block (head x 32-dim slice, token). One round trip: every thread loads its (max, sum) pairs
// and its parts' acc slices, then the block reduces. Fixed assignment and reduction order: the gated
// and ungated launches (fused / unfused twins) agree bit for bit.
__global__ void __launch_bounds__(kCombineThreads)
    sdpa_combine_kernel(const float* __restrict__ ws, int64_t T, int nh, int hd, int parts,
                        const bf16* __restrict__ gate, int64_t ldg, int64_t gstride, bf16* __restrict__ out) {
  __shared__ float w[kMaxSplits];
  __shared__ float red[kCombineThreads / 32];
  __shared__ float4 part_o[kCombineThreads];
  pdl_wait();
  const int slices = hd / kCombineDims;
  const int h = blockIdx.x / slices, d0 = (blockIdx.x % slices) * kCombineDims;
  const int64_t tok = blockIdx.y, r0 = (tok * nh + h) * parts;
  const float2* ml = reinterpret_cast<const float2*>(ws + T * nh * parts * hd) + r0;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int q = tid % kCombineLanes, grp = tid / kCombineLanes;
  constexpr int kMl = kMaxSplits / kCombineThreads;
  float2 mlv[kMl];
#pragma unroll
  for (int k = 0; k < kMl; ++k) {
    const int p = tid + k * kCombineThreads;
    mlv[k] = p < parts ? ml[p] : make_float2(-INFINITY, 0.0f);
  }
  const float4* src = reinterpret_cast<const float4*>(ws + r0 * hd + d0) + q;
  float4 v[kCombinePer];
#pragma unroll
  for (int k = 0; k < kCombinePer; ++k) {
    const int p = grp + k * kCombineGroups;
    v[k] = p < parts ? src[static_cast<int64_t>(p) * (hd / 4)] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
  float mx = mlv[0].x;
#pragma unroll
  for (int k = 1; k < kMl; ++k) mx = fmaxf(mx, mlv[k].x);
  for (int d = 16; d > 0; d >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xFFFFFFFFu, mx, d));
  if (lane == 0) red[warp] = mx;
  __syncthreads();
  float M = red[0];
  for (int i = 1; i < kCombineThreads / 32; ++i) M = fmaxf(M, red[i]);
  __syncthreads();
  float lp = 0.0f;
#pragma unroll
  for (int k = 0; k < kMl; ++k) {
    const int p = tid + k * kCombineThreads;
    // An empty part (no live keys: max -inf) weighs 0.
    const float e = mlv[k].x == -INFINITY ? 0.0f : ex2(__fsub_rn(mlv[k].x, M));
    if (p < parts) w[p] = e;
    lp = __fadd_rn(lp, __fmul_rn(mlv[k].y, e));
  }
  for (int d = 16; d > 0; d >>= 1) lp = __fadd_rn(lp, __shfl_xor_sync(0xFFFFFFFFu, lp, d));
  if (lane == 0) red[warp] = lp;
  __syncthreads();
  float L = red[0];
  for (int i = 1; i < kCombineThreads / 32; ++i) L = __fadd_rn(L, red[i]);
  float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
  for (int k = 0; k < kCombinePer; ++k) {
    const int p = grp + k * kCombineGroups;
    if (p >= parts) break;
    const float e = w[p];
    acc.x = __fadd_rn(acc.x, __fmul_rn(v[k].x, e)), acc.y = __fadd_rn(acc.y, __fmul_rn(v[k].y, e));
    acc.z = __fadd_rn(acc.z, __fmul_rn(v[k].z, e)), acc.w = __fadd_rn(acc.w, __fmul_rn(v[k].w, e));
  }
  part_o[tid] = acc;
  __syncthreads();
  if (grp != 0) return;
  float o[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int k = 0; k < kCombineGroups; ++k) {
    const float4 u = part_o[k * kCombineLanes + q];
    o[0] = __fadd_rn(o[0], u.x), o[1] = __fadd_rn(o[1], u.y), o[2] = __fadd_rn(o[2], u.z),
    o[3] = __fadd_rn(o[3], u.w);
  }
  for (int k = 0; k < 4; ++k) {
    const int d = d0 + 4 * q + k;
    float y = round_bf(__fdiv_rn(o[k], L));
    if (gate) y = round_bf(__fmul_rn(y, sigmoid_bf(bf_at(gate + tok * ldg + int64_t{h} * gstride + d))));
    out[(tok * nh + h) * hd + d] = __float2bfloat16_rn(y);
  }
}

// Both kernels launch with programmatic stream serialization (kernels/common/launch.cuh); each waits
// with griddepcontrol.wait before any global read. Hides the launch gap to the previous kernel and
// between partial and combine.
constexpr LaunchAttrs kPdl{0, true};

template <int HD, int STAGES>
void launch_partial(const SdpaArgs& a, dim3 grid, cudaStream_t s) {
  constexpr int kSmem = PartialSmem<HD, STAGES>::kBytes;
  // Per process, like the other kernels' attribute calls; max carveout so four rings fit an SM.
  static const bool configured = [] {
    FB_CUDA_CHECK(cudaFuncSetAttribute(sdpa_partial_kernel<HD, STAGES>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
    FB_CUDA_CHECK(cudaFuncSetAttribute(sdpa_partial_kernel<HD, STAGES>,
                                       cudaFuncAttributePreferredSharedMemoryCarveout,
                                       cudaSharedmemCarveoutMaxShared));
    return true;
  }();
  (void)configured;
  launch_kernel(sdpa_partial_kernel<HD, STAGES>, grid, dim3(32), kSmem, s, kPdl, a);
}

struct SplitPlan {
  int64_t splits = 1, chunk = 0;  // chunk: keys per split, a multiple of kTile
};

// Fill the GPU with one-warp partials: kTargetWarps over (kv heads x token groups x splits), at
// least one 16-key tile per split; the same T and capacity always give the same plan (graphs).
SplitPlan plan_splits(const QwenAttnDims& d, int64_t T, int64_t capacity) {
  const int G = std::max(1, d.n_heads / std::max(1, d.n_kv_heads));
  const int64_t tpw = std::max(1, kCols / G);
  const int64_t groups =
      std::max<int64_t>(1, int64_t{d.n_kv_heads} * ((std::max<int64_t>(T, 1) + tpw - 1) / tpw));
  const int64_t tiles = std::max<int64_t>(1, (capacity + kTile - 1) / kTile);
  const int64_t want =
      std::clamp<int64_t>((kTargetWarps + groups - 1) / groups, 1, std::min<int64_t>(tiles, kMaxSplits));
  const int64_t per = (tiles + want - 1) / want;
  return {(tiles + per - 1) / per, per * kTile};
}

}  // namespace

int qwen_sdpa_splits(const QwenAttnDims& d, int64_t T, int64_t capacity) {
  return static_cast<int>(plan_splits(d, T, capacity).splits);
}

size_t qwen_sdpa_workspace_floats(const QwenAttnDims& d, int64_t T, int64_t capacity) {
  const int64_t parts = plan_splits(d, T, capacity).splits;
  return static_cast<size_t>(T * d.n_heads * parts * (2 + d.head_dim));
}

void qwen_sdpa(const QwenAttnDims& d, const bf16* q, const bf16* k_cache, const bf16* v_cache,
               int64_t capacity, int64_t T, const int32_t* d_pos, const bf16* gate, int64_t ldg,
               int64_t gstride, float* workspace, bf16* out, cudaStream_t stream) {
  const char* fn = "qwen_sdpa";
  check_dims(fn, d);
  require(q && k_cache && v_cache && d_pos && workspace && out, fn, "null pointer");
  const int G = d.n_heads / d.n_kv_heads, tpw = kCols / G;
  const int64_t token_groups = (T + tpw - 1) / tpw;
  require(T >= 1 && token_groups <= 65535 && capacity >= 1, fn,
          "1 <= T (<= 65535 warps of tokens), capacity >= 1");
  auto aligned = [](const void* p, uintptr_t n) { return reinterpret_cast<uintptr_t>(p) % n == 0; };
  require(aligned(k_cache, 16) && aligned(v_cache, 16) && aligned(workspace, 16) && aligned(q, 4), fn,
          "k/v caches and workspace 16-byte aligned, q 4-byte aligned");
  const SplitPlan plan = plan_splits(d, T, capacity);
  SdpaArgs a;
  a.q = q, a.kc = k_cache, a.vc = v_cache, a.capacity = capacity, a.T = T, a.pos = d_pos;
  a.nh = d.n_heads, a.nkv = d.n_kv_heads, a.lg = G == 1 ? 0 : G == 2 ? 1 : G == 4 ? 2 : 3;
  a.splits = static_cast<int>(plan.splits), a.chunk = static_cast<int>(plan.chunk);
  a.scale_log2 = static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(d.head_dim)));
  a.ws = workspace;
  a.gate = gate, a.ldg = ldg, a.gstride = gstride, a.out = out;
  const dim3 grid(static_cast<unsigned>(a.splits), static_cast<unsigned>(d.n_kv_heads),
                  static_cast<unsigned>(token_groups));
  if (d.head_dim == 64)
    launch_partial<64, kStages>(a, grid, stream);
  else if (d.head_dim == 128)
    launch_partial<128, kStages>(a, grid, stream);
  else
    launch_partial<256, kStages>(a, grid, stream);
  FB_CUDA_CHECK(cudaGetLastError());
  if (a.splits == 1) return;  // the partial wrote the output
  // Same shared-memory carveout as the partial (and qwen_attn_prep): no SM reconfiguration between
  // the kernels, so the programmatic launches can actually overlap.
  static const bool configured = [] {
    FB_CUDA_CHECK(cudaFuncSetAttribute(sdpa_combine_kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                       cudaSharedmemCarveoutMaxShared));
    return true;
  }();
  (void)configured;
  const dim3 cgrid(static_cast<unsigned>(d.n_heads * (d.head_dim / kCombineDims)), static_cast<unsigned>(T));
  launch_kernel(sdpa_combine_kernel, cgrid, dim3(kCombineThreads), 0, stream, kPdl, workspace, T, d.n_heads,
                d.head_dim, a.splits, gate, ldg, gstride, out);
  FB_CUDA_CHECK(cudaGetLastError());
}

}  // namespace fb::cuda
