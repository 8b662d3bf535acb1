// TurboQuant 4-bit KV: compress/append and split-K attention. Design (numbers for gemma4 full
// layers: head_dim 512, 32 q heads, 4 kv heads):
//  - Precision. Upstream rounds q_rot, p*v_norm and out_rot to bf16 and uses bf16 rotations. With
//    scale 1.0 and RMS-normed q/k the scores reach tens, and a bf16 q_rot alone moves them by ~1e-2,
//    which is an output NMSE near 1e-4 against fp64 attention over the same dequantized cache (the
//    issue's target is 1e-5). So here q_rot, scores, p and the accumulators stay fp32 and both
//    rotations use the fp32 Pi; only the final output is rounded to bf16.
//  - Fused in the split kernel: nibble -> centroid decode (16-entry fp32 table in shared memory:
//    16 words in 16 banks, so random indices never conflict), k_norm and scale*log2(e) (folded into
//    q), the causal/kv_len mask, the online exp2 softmax, v_norm (folded into p) and P.V. No
//    dequantized K or V exists anywhere. Not fused: the q rotation and the output un-rotation are
//    small GEMMs over Pi (1 MB fp32) that every split CTA would otherwise re-read from L2, and the
//    split reduce must finish before the un-rotation can mix dimensions.
//  - GQA packed: one CTA owns the 8 q heads of a kv head, so each K/V byte is loaded and decoded once
//    for 8 heads. Split-K over keys: grid (splits, kv heads, T).
//  - Decode (T = 1) is latency bound below ~8K keys: its split count follows the device kv_len (one
//    split per 64 keys, idle CTAs of the capacity-sized grid exit), the rotations run one 8-wide slab
//    of Pi per CTA with every load in flight at once, and the split, combine and un-rotation kernels
//    are launched with PDL so each one's launch and prologue (cache prefetch, Pi slab load) overlap
//    the previous kernel. At 128K the split kernel is bound by its fp32 FMAs (8.6 GFLOP of q.k and
//    p.v: ~145 us at the H200's fp32 peak), not by the 270 MB it reads. Hence a second decode split
//    kernel on the tensor cores (tq4_sdpa_decode_mma_kernel, FB_TQ4_DECODE_PATH=mma; design notes at
//    the kernel), same grid, partials, combine and rotations. Prefill always runs the fp32 kernel.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include <cuda_fp16.h>

#include "kernels/attention/tq4_sdpa.cuh"
#include "kernels/common/cuda_check.h"
#include "kernels/common/launch.cuh"
#include "reference/formats/half.h"

namespace fb::cuda {
namespace {

constexpr int kD = 512;        // the head_dim the attention kernels are built for
constexpr int kG = 8;          // q heads per kv head
constexpr int kThreads = 128;  // 4 warps
constexpr int kWarps = kThreads / 32;
constexpr int kTileN = 32;  // keys per tile: 8 per warp in the score phase, 1 per lane in softmax
constexpr int kKeysPerWarp = kTileN / kWarps;
constexpr int kLaneDims = kD / 32;      // score phase: lane owns 16 consecutive dims (8 bytes)
constexpr int kPvDims = kD / kThreads;  // P.V phase: thread owns 4 consecutive dims (2 bytes)
constexpr int kRowBytes = kD / 2;
constexpr int kMaxSplits = 128;
constexpr float kLog2e = 1.4426950408889634f;
static_assert(kG * 2 == kWarps * 4, "softmax phase: each warp owns two heads");
static_assert(kPvDims == 4, "P.V phase reads one 16-bit pair of bytes per key");

// ---- compress + append ---------------------------------------------------------------------------

// Grid (token x kv head, K or V, d / kCompressCols). Each CTA normalises the whole vector (a 1 KB
// read, repeated per CTA so no CTA waits on another) and rotates kCompressCols output coordinates:
// lane l of every warp owns output pair l, warp g sums rows [g, g + d / kCompressWarps) of Pi^T, and
// the warps' partials are added in a fixed order. One CTA per (token, head, K/V) looping over all d
// rows of Pi^T was latency-bound (gemma4 decode: 8 CTAs, 512 dependent L2 loads each): 33.7 us in the
// tq4_append bench, 72.7 us inside the step, on an H200. Spreading the same reads over d / 64 x as
// many CTAs with 8 x shorter loops: 7.4 us in the bench.
constexpr int kCompressCols = 64;  // output coordinates per CTA: 32 bytes of packed indices
constexpr int kCompressWarps = 8;  // slices of Pi^T's rows per CTA
constexpr int kCompressThreads = 32 * kCompressWarps;

__global__ void __launch_bounds__(kCompressThreads)
    tq4_compress_kernel(const __nv_bfloat16* __restrict__ k, const __nv_bfloat16* __restrict__ v,
                        const int32_t* __restrict__ d_pos, const uint16_t* __restrict__ boundaries,
                        const uint16_t* __restrict__ rotation_t, int n_kv, int d, int64_t capacity,
                        uint8_t* __restrict__ k_packed, uint16_t* __restrict__ k_norms,
                        uint8_t* __restrict__ v_packed, uint16_t* __restrict__ v_norms) {
  extern __shared__ float u_s[];  // d floats
  __shared__ float part[kCompressWarps][kCompressCols];
  __shared__ float warp_ss[kCompressWarps];
  __shared__ float bound_s[15];
  const int t = blockIdx.x / n_kv, h = blockIdx.x % n_kv;
  const bool is_v = blockIdx.y == 1;
  const int col0 = blockIdx.z * kCompressCols;
  const int i = threadIdx.x, lane = i & 31, warp = i >> 5;
  const int64_t pos = static_cast<int64_t>(*d_pos) + t;
  if (pos < 0 || pos >= capacity) return;  // the whole CTA agrees: no barrier is left waiting
  if (i < 15) bound_s[i] = bf16_to_fp32(boundaries[i]);
  const uint32_t* x2 =
      reinterpret_cast<const uint32_t*>((is_v ? v : k) + (static_cast<int64_t>(t) * n_kv + h) * d);
  float ss = 0.0f;
  for (int e = i; e < d / 2; e += kCompressThreads) {
    const uint32_t xx = x2[e];
    const float x0 = bf16_to_fp32(static_cast<uint16_t>(xx & 0xFFFF)),
                x1 = bf16_to_fp32(static_cast<uint16_t>(xx >> 16));
    ss = fmaf(x0, x0, fmaf(x1, x1, ss));
  }
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xFFFFFFFFu, ss, o);
  if (lane == 0) warp_ss[warp] = ss;
  __syncthreads();
  float total = 0.0f;
#pragma unroll
  for (int w = 0; w < kCompressWarps; ++w) total += warp_ss[w];
  const uint16_t norm = fp32_to_bf16(sqrtf(total));
  // torch: bf16 norm + 1e-10 is a bf16 tensor op (fp32 math, rounded), then a bf16 division.
  const float denom = bf16_to_fp32(fp32_to_bf16(bf16_to_fp32(norm) + 1e-10f));
  for (int e = i; e < d / 2; e += kCompressThreads) {
    const uint32_t xx = x2[e];
    u_s[2 * e] = bf16_to_fp32(fp32_to_bf16(bf16_to_fp32(static_cast<uint16_t>(xx & 0xFFFF)) / denom));
    u_s[2 * e + 1] = bf16_to_fp32(fp32_to_bf16(bf16_to_fp32(static_cast<uint16_t>(xx >> 16)) / denom));
  }
  __syncthreads();
  // y_c = sum_j u_j Pi^T[j][c]: per row j a warp reads 128 contiguous bytes of Pi^T (coalesced).
  const int rows = d / kCompressWarps, j0 = warp * rows;
  const uint32_t* rt = reinterpret_cast<const uint32_t*>(rotation_t) + col0 / 2 + lane;
  float y0 = 0.0f, y1 = 0.0f;
#pragma unroll 8
  for (int j = j0; j < j0 + rows; ++j) {
    const uint32_t r = __ldg(rt + static_cast<int64_t>(j) * (d / 2));
    y0 = fmaf(u_s[j], bf16_to_fp32(static_cast<uint16_t>(r & 0xFFFF)), y0);
    y1 = fmaf(u_s[j], bf16_to_fp32(static_cast<uint16_t>(r >> 16)), y1);
  }
  part[warp][2 * lane] = y0;
  part[warp][2 * lane + 1] = y1;
  __syncthreads();
  if (warp != 0) return;
  y0 = 0.0f;
  y1 = 0.0f;
#pragma unroll
  for (int w = 0; w < kCompressWarps; ++w) {
    y0 += part[w][2 * lane];
    y1 += part[w][2 * lane + 1];
  }
  y0 = bf16_to_fp32(fp32_to_bf16(y0));
  y1 = bf16_to_fp32(fp32_to_bf16(y1));
  int i0 = 0, i1 = 0;
#pragma unroll
  for (int b = 0; b < 15; ++b) {
    i0 += bound_s[b] < y0 ? 1 : 0;
    i1 += bound_s[b] < y1 ? 1 : 0;
  }
  const int64_t slot = static_cast<int64_t>(h) * capacity + pos;
  (is_v ? v_packed : k_packed)[slot * (d / 2) + col0 / 2 + lane] = static_cast<uint8_t>((i0 << 4) | i1);
  if (blockIdx.z == 0 && lane == 0) (is_v ? v_norms : k_norms)[slot] = norm;
}

// ---- rotations: Y[v][r] = sum_c A(r, c) X[v][c], A = Pi or Pi^T ----------------------------------

constexpr int kRotRows = 16, kRotVecs = 32, kRotK = 32;

// Loads of data a kernel's PDL predecessor writes (q_rot, the partials, out_rot) are coherent L2
// loads (ld.global.cg): `const __restrict__` would let them become ld.global.nc, whose contract is
// "read-only for the whole kernel", which a PDL dependent breaks (it starts while the predecessor
// still writes). Seen on the H200 with nc loads: the gemma step's fused and unfused runs differed
// at ctx 300 (identical with CUDA_LAUNCH_BLOCKING=1, which removes the overlap); with these loads
// they are bit-exact.
__device__ __forceinline__ float load_as_float(const float* p) { return __ldcg(p); }
__device__ __forceinline__ float load_as_float(const __nv_bfloat16* p) {
  return bf16_to_fp32(__ldcg(reinterpret_cast<const unsigned short*>(p)));
}
__device__ __forceinline__ void store_from_float(float* p, float x) { *p = x; }
__device__ __forceinline__ void store_from_float(__nv_bfloat16* p, float x) {
  *reinterpret_cast<uint16_t*>(p) = fp32_to_bf16(x);
}

// Tile of 16 output dims x 32 vectors per CTA (128 threads, 4 outputs each): at decode (32 vectors)
// that is d/16 = 32 CTAs, each streaming 32 KB of Pi.
template <class TIn, class TOut, bool kTranspose>
__global__ void __launch_bounds__(128)
    tq4_rotate_kernel(const TIn* __restrict__ x, const float* __restrict__ pi, int d, int64_t n_vec,
                      TOut* __restrict__ y) {
  __shared__ float a_s[kRotK][kRotRows + 1];  // a_s[c][r] = A(r0 + r, c0 + c)
  __shared__ float x_s[kRotVecs][kRotK + 1];
  const int r0 = blockIdx.x * kRotRows;
  const int64_t v0 = static_cast<int64_t>(blockIdx.y) * kRotVecs;
  const int tid = threadIdx.x;
  const int r = tid % kRotRows, vq = tid / kRotRows;  // vectors vq, vq+8, vq+16, vq+24
  float acc[4] = {0, 0, 0, 0};
  for (int c0 = 0; c0 < d; c0 += kRotK) {
    for (int e = tid; e < kRotK * kRotRows; e += 128) {
      if (kTranspose) {  // A(r, c) = Pi[c][r]: consecutive threads walk r, contiguous in Pi's row c
        const int rr = e % kRotRows, cc = e / kRotRows;
        a_s[cc][rr] = pi[static_cast<int64_t>(c0 + cc) * d + r0 + rr];
      } else {  // A(r, c) = Pi[r][c]: consecutive threads walk c
        const int cc = e % kRotK, rr = e / kRotK;
        a_s[cc][rr] = pi[static_cast<int64_t>(r0 + rr) * d + c0 + cc];
      }
    }
    for (int e = tid; e < kRotK * kRotVecs; e += 128) {
      const int cc = e % kRotK, vv = e / kRotK;
      x_s[vv][cc] = v0 + vv < n_vec ? load_as_float(x + (v0 + vv) * d + c0 + cc) : 0.0f;
    }
    __syncthreads();
#pragma unroll 8
    for (int c = 0; c < kRotK; ++c) {
      const float a = a_s[c][r];
#pragma unroll
      for (int k = 0; k < 4; ++k) acc[k] = fmaf(a, x_s[vq + 8 * k][c], acc[k]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int64_t vv = v0 + vq + 8 * k;
    if (vv < n_vec) store_from_float(y + vv * d + r0 + r, acc[k]);
  }
}

// ---- decode-path rotations (T = 1): one 8-wide slab of the matrix per CTA ---------------------------

// Programmatic dependent launch (sm_90): a kernel launched with the programmatic-serialization
// attribute may start while its predecessor still runs; it must wait before reading what the
// predecessor writes. Launched without the attribute, the wait returns at once.
__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }
__device__ __forceinline__ void pdl_launch_dependents() {
  asm volatile("griddepcontrol.launch_dependents;\n" ::);
}

constexpr int kSlab = 8;           // output dims per CTA
constexpr int kSlabThreads = 256;  // 8 warps x 4 vectors = 32 vectors per CTA
constexpr int kSlabVecsPerWarp = 4;
constexpr int kSlabVecs = kSlabThreads / 32 * kSlabVecsPerWarp;

// Lane v of the result holds sum over lanes of x[v] (31 shuffles for 32 sums instead of 160): each
// step keeps the half of the values whose index bit matches the lane bit.
template <int W>
__device__ __forceinline__ void transpose_reduce_step(float (&x)[32], int lane) {
  const bool up = lane & W;
#pragma unroll
  for (int i = 0; i < W; ++i) {
    const float lo = x[i], hi = x[i + W];
    x[i] = (up ? hi : lo) + __shfl_xor_sync(0xFFFFFFFFu, up ? lo : hi, W);
  }
  if constexpr (W > 1) transpose_reduce_step<W / 2>(x, lane);
}
__device__ __forceinline__ float transpose_reduce_32(float (&x)[32], int lane) {
  transpose_reduce_step<16>(x, lane);
  return x[0];
}

// y[v][j0 + jj] = sum_i A(j0 + jj, i) x[v][i], A = Pi (q rotation) or Pi^T (output un-rotation).
// The CTA stages its 8 x 512 slab of A (16 KB of Pi: 8 rows, or 8 columns) in shared memory before
// waiting on the predecessor (Pi is a constant), then each warp takes 4 vectors with the lanes
// walking i. Grid (d / 8, ceil(n_vec / 32)); d = kD.
template <class TIn, class TOut, bool kTranspose>
__global__ void __launch_bounds__(kSlabThreads)
    tq4_rotate_slab_kernel(const TIn* __restrict__ x, const float* __restrict__ pi, int64_t n_vec,
                           TOut* __restrict__ y) {
  __shared__ __align__(16) float a_s[kD][kSlab];  // a_s[i][jj] = A(j0 + jj, i)
  const int j0 = blockIdx.x * kSlab;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  // 4 float4 per thread, all loaded before any store (one memory round trip).
  constexpr int kSlabLoads = kD * kSlab / 4 / kSlabThreads;
  float4 f[kSlabLoads];
#pragma unroll
  for (int k = 0; k < kSlabLoads; ++k) {
    const int e = tid + k * kSlabThreads;
    f[k] = kTranspose  // A(j, i) = Pi[i][j]: row i of Pi holds the slab's 8 columns contiguously
               ? *reinterpret_cast<const float4*>(pi + static_cast<int64_t>(e >> 1) * kD + j0 + (e & 1) * 4)
               // A(j, i) = Pi[j][i]: 8 contiguous rows, transposed into the slab
               : *reinterpret_cast<const float4*>(pi + static_cast<int64_t>(j0 + e / (kD / 4)) * kD +
                                                  (e % (kD / 4)) * 4);
  }
#pragma unroll
  for (int k = 0; k < kSlabLoads; ++k) {
    const int e = tid + k * kSlabThreads;
    if (kTranspose) {
      *reinterpret_cast<float4*>(&a_s[e >> 1][(e & 1) * 4]) = f[k];
    } else {
      const int jj = e / (kD / 4), i4 = e % (kD / 4);
      a_s[i4 * 4][jj] = f[k].x;
      a_s[i4 * 4 + 1][jj] = f[k].y;
      a_s[i4 * 4 + 2][jj] = f[k].z;
      a_s[i4 * 4 + 3][jj] = f[k].w;
    }
  }
  pdl_wait();
  pdl_launch_dependents();
  __syncthreads();
  const int64_t v0 = static_cast<int64_t>(blockIdx.y) * kSlabVecs + warp * kSlabVecsPerWarp;
  // This lane's 64 x values in flight at once, then the FMAs.
  float xr[kSlabVecsPerWarp * (kD / 32)];
#pragma unroll
  for (int v = 0; v < kSlabVecsPerWarp; ++v)
#pragma unroll
    for (int k = 0; k < kD / 32; ++k)
      xr[v * (kD / 32) + k] = v0 + v < n_vec ? load_as_float(x + (v0 + v) * kD + lane + 32 * k) : 0.0f;
  float part[32];  // [vector 0..3][jj 0..7]
#pragma unroll
  for (int k = 0; k < 32; ++k) part[k] = 0.0f;
#pragma unroll
  for (int k = 0; k < kD / 32; ++k) {
    const int i = lane + 32 * k;
    const float4 a0 = *reinterpret_cast<const float4*>(&a_s[i][0]);
    const float4 a1 = *reinterpret_cast<const float4*>(&a_s[i][4]);
    const float a[kSlab] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
#pragma unroll
    for (int v = 0; v < kSlabVecsPerWarp; ++v) {
      const float xv = xr[v * (kD / 32) + k];
#pragma unroll
      for (int jj = 0; jj < kSlab; ++jj) part[v * kSlab + jj] = fmaf(a[jj], xv, part[v * kSlab + jj]);
    }
  }
  const float r = transpose_reduce_32(part, lane);
  const int64_t v = v0 + lane / kSlab;
  if (v < n_vec) store_from_float(y + v * kD + j0 + lane % kSlab, r);
}

// Split plan of the decode path, from the device kv_len: one split per 64 keys up to max_splits
// (the grid size), so a short context runs few, short splits and a long one fills the grid.
__host__ __device__ __forceinline__ void decode_split_plan(int64_t kv_len, int max_splits, int& splits,
                                                           int64_t& chunk) {
  const int64_t s = (kv_len + 63) / 64;
  splits = static_cast<int>(s < 1 ? 1 : (s > max_splits ? max_splits : s));
  chunk = (kv_len + splits - 1) / splits;
}

// Decode combine: one CTA per (q head, 128 dims), one dim per thread; splits past the active count
// (idle CTAs of the split grid) are never read.
__global__ void __launch_bounds__(128)
    tq4_sdpa_decode_combine_kernel(const float* __restrict__ part_o, const float2* __restrict__ part_ml,
                                   const int32_t* __restrict__ d_kv_len, int64_t capacity, int max_splits,
                                   float* __restrict__ out_rot) {
  pdl_wait();
  pdl_launch_dependents();
  const int64_t row = blockIdx.x;
  const int dim = blockIdx.y * 128 + threadIdx.x;
  const int64_t kv_len = min(max(static_cast<int64_t>(*d_kv_len), int64_t{0}), capacity);
  int splits;
  int64_t chunk;
  decode_split_plan(kv_len, max_splits, splits, chunk);
  const float2* ml = part_ml + row * max_splits;
  float m = -INFINITY;
  for (int s = 0; s < splits; ++s) m = fmaxf(m, __ldcg(ml + s).x);
  float l = 0.0f, o = 0.0f;
  if (m != -INFINITY) {
#pragma unroll 4
    for (int s = 0; s < splits; ++s) {
      const float2 e = __ldcg(ml + s);
      const float w = e.x == -INFINITY ? 0.0f : exp2f(e.x - m);
      l = fmaf(w, e.y, l);
      o = fmaf(w, __ldcg(part_o + (row * max_splits + s) * kD + dim), o);
    }
  }
  out_rot[row * kD + dim] = l > 0.0f ? o / l : 0.0f;
}

// ---- split-K attention ---------------------------------------------------------------------------

// Sums v[h] over the 32 lanes for all 8 heads with 9 shuffles instead of 40: each step halves the
// heads a lane carries. The result is head ((lane>>4)&1)*4 + ((lane>>3)&1)*2 + ((lane>>2)&1).
__device__ __forceinline__ float reduce_8_heads(const float (&v)[kG], int lane) {
  const bool u16 = lane & 16, u8 = lane & 8, u4 = lane & 4;
  float a[4], b[2];
#pragma unroll
  for (int j = 0; j < 4; ++j)
    a[j] = (u16 ? v[j + 4] : v[j]) + __shfl_xor_sync(0xFFFFFFFFu, u16 ? v[j] : v[j + 4], 16);
#pragma unroll
  for (int j = 0; j < 2; ++j)
    b[j] = (u8 ? a[j + 2] : a[j]) + __shfl_xor_sync(0xFFFFFFFFu, u8 ? a[j] : a[j + 2], 8);
  float c = (u4 ? b[1] : b[0]) + __shfl_xor_sync(0xFFFFFFFFu, u4 ? b[0] : b[1], 4);
  c += __shfl_xor_sync(0xFFFFFFFFu, c, 2);
  c += __shfl_xor_sync(0xFFFFFFFFu, c, 1);
  return c;
}

__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xFFFFFFFFu, x, o));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xFFFFFFFFu, x, o);
  return x;
}

// Streams through the cache once: 16-byte loads of V (staged in shared memory for the P.V phase,
// where each thread needs 2 bytes of every key) and coalesced 8-byte loads of K (256 contiguous bytes
// per warp), all issued at the top of a tile so ~16 KB per CTA is in flight while the scores of the
// tile are computed.
__global__ void __launch_bounds__(kThreads, 2)
    tq4_sdpa_split_kernel(const float* __restrict__ q_rot, const uint8_t* __restrict__ k_packed,
                          const uint16_t* __restrict__ k_norms, const uint8_t* __restrict__ v_packed,
                          const uint16_t* __restrict__ v_norms, const float* __restrict__ centroids,
                          const int32_t* __restrict__ d_kv_len, int64_t capacity, int T, int n_q_heads,
                          int num_splits, int64_t chunk, bool device_plan, float scale_log2e,
                          float* __restrict__ part_o, float2* __restrict__ part_ml) {
  __shared__ float lut[16];
  __shared__ __align__(16) float p_s[kTileN][kG];  // log2-domain scores, then p * v_norm
  __shared__ __align__(16) uint8_t v_s[kTileN][kRowBytes];
  __shared__ float m_s[kG], l_s[kG], alpha_s[kG];
  const int split = blockIdx.x, kvh = blockIdx.y, t = blockIdx.z;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  if (tid < 16) lut[tid] = centroids[tid];
  if (tid < kG) {
    m_s[tid] = -INFINITY;
    l_s[tid] = 0.0f;
  }
  const int64_t kv_len = min(max(static_cast<int64_t>(*d_kv_len), int64_t{0}), capacity);
  if (device_plan) {  // decode: the split count follows kv_len; the grid is sized for the maximum
    int active;
    decode_split_plan(kv_len, num_splits, active, chunk);
    if (split >= active) return;  // whole CTA, before any barrier; the combine never reads it
  }
  const int64_t visible = min(kv_len, max(kv_len - T + t + 1, int64_t{0}));  // causal, in-kernel
  const int64_t begin = split * chunk;
  const int64_t end = min(begin + chunk, visible);

  const uint8_t* kb = k_packed + static_cast<int64_t>(kvh) * capacity * kRowBytes;
  const uint8_t* vb = v_packed + static_cast<int64_t>(kvh) * capacity * kRowBytes;
  const uint16_t* knb = k_norms + static_cast<int64_t>(kvh) * capacity;
  const uint16_t* vnb = v_norms + static_cast<int64_t>(kvh) * capacity;
  // The cache does not depend on the q rotation still running before this kernel (PDL): pull the
  // first tile towards L2 while waiting for it.
  if (begin + tid / 8 < end) {
    const int64_t key = begin + tid / 8;  // 16 keys x 8 lines of 64 B (K and V rows of 256 B)
    const uint8_t* row = ((tid & 4) ? vb : kb) + key * kRowBytes + (tid & 3) * 64;
    asm volatile("prefetch.global.L2 [%0];\n" ::"l"(row));
  }
  pdl_wait();

  float q[kG][kLaneDims];
  {
    const float* qb = q_rot + (static_cast<int64_t>(t) * n_q_heads + kvh * kG) * kD + lane * kLaneDims;
#pragma unroll
    for (int h = 0; h < kG; ++h) {
#pragma unroll
      for (int i = 0; i < kLaneDims; i += 4) {
        const float4 f = __ldcg(reinterpret_cast<const float4*>(qb + h * kD + i));
        q[h][i] = f.x * scale_log2e;
        q[h][i + 1] = f.y * scale_log2e;
        q[h][i + 2] = f.z * scale_log2e;
        q[h][i + 3] = f.w * scale_log2e;
      }
    }
  }
  float acc[kG][kPvDims];
#pragma unroll
  for (int h = 0; h < kG; ++h)
#pragma unroll
    for (int e = 0; e < kPvDims; ++e) acc[h][e] = 0.0f;
  __syncthreads();

  constexpr int kVLoads = kTileN * kRowBytes / 16 / kThreads;  // 4 x 16 B per thread

  for (int64_t n0 = begin; n0 < end; n0 += kTileN) {
    uint4 vreg[kVLoads];
#pragma unroll
    for (int r = 0; r < kVLoads; ++r) {
      const int e = tid + r * kThreads;
      const int64_t key = n0 + e / 16;
      vreg[r] = key < end ? __ldcs(reinterpret_cast<const uint4*>(vb + key * kRowBytes) + (e % 16))
                          : make_uint4(0, 0, 0, 0);
    }
    // v_norm of the key this lane owns in the softmax phase, loaded with the tile (not after it).
    const float vn_lane = n0 + lane < end ? bf16_to_fp32(vnb[n0 + lane]) : 0.0f;
    uint2 kreg[kKeysPerWarp];
    float kn[kKeysPerWarp];
#pragma unroll
    for (int j = 0; j < kKeysPerWarp; ++j) {
      const int64_t key = n0 + warp * kKeysPerWarp + j;
      kreg[j] =
          key < end ? __ldcs(reinterpret_cast<const uint2*>(kb + key * kRowBytes) + lane) : make_uint2(0, 0);
      kn[j] = key < end ? bf16_to_fp32(knb[key]) : 0.0f;
    }
#pragma unroll
    for (int j = 0; j < kKeysPerWarp; ++j) {
      float part[kG];
#pragma unroll
      for (int h = 0; h < kG; ++h) part[h] = 0.0f;
#pragma unroll
      for (int b = 0; b < 8; ++b) {
        const uint32_t byte = ((b < 4 ? kreg[j].x : kreg[j].y) >> (8 * (b & 3))) & 0xFFu;
        const float c0 = lut[byte >> 4], c1 = lut[byte & 15];  // even coordinate: high nibble
#pragma unroll
        for (int h = 0; h < kG; ++h) part[h] = fmaf(q[h][2 * b + 1], c1, fmaf(q[h][2 * b], c0, part[h]));
      }
      const float s = reduce_8_heads(part, lane);
      if ((lane & 3) == 0) {
        const int hh = ((lane >> 4) & 1) * 4 + ((lane >> 3) & 1) * 2 + ((lane >> 2) & 1);
        const int64_t key = n0 + warp * kKeysPerWarp + j;
        p_s[warp * kKeysPerWarp + j][hh] = key < end ? s * kn[j] : -INFINITY;
      }
    }
#pragma unroll
    for (int r = 0; r < kVLoads; ++r) {
      const int e = tid + r * kThreads;
      *reinterpret_cast<uint4*>(&v_s[e / 16][(e % 16) * 16]) = vreg[r];
    }
    __syncthreads();

    // Online softmax, one key per lane, two heads per warp. Fully masked so far -> p = 0, alpha = 1.
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int h = warp * 2 + hh;
      const float s = p_s[lane][h];
      const float m_old = m_s[h];
      const float m_new = fmaxf(m_old, warp_max(s));
      const bool none = m_new == -INFINITY;
      const float alpha = none ? 1.0f : exp2f(m_old - m_new);
      const float p = none ? 0.0f : exp2f(s - m_new);
      const float sum = warp_sum(p);
      const int64_t key = n0 + lane;
      p_s[lane][h] = key < end ? p * vn_lane : 0.0f;
      __syncwarp();  // every lane has read m_s[h] before lane 0 replaces it
      if (lane == 0) {
        m_s[h] = m_new;
        l_s[h] = l_s[h] * alpha + sum;
        alpha_s[h] = alpha;
      }
    }
    __syncthreads();

#pragma unroll
    for (int h = 0; h < kG; ++h) {
      const float a = alpha_s[h];
#pragma unroll
      for (int e = 0; e < kPvDims; ++e) acc[h][e] *= a;
    }
    // Keys past `end` have p = 0 and zeroed bytes: the full tile runs with no bound checks.
#pragma unroll 4
    for (int n = 0; n < kTileN; ++n) {
      const uint32_t two = *reinterpret_cast<const uint16_t*>(&v_s[n][tid * 2]);
      const float c[4] = {lut[(two >> 4) & 15], lut[two & 15], lut[(two >> 12) & 15], lut[(two >> 8) & 15]};
      const float4 pa = *reinterpret_cast<const float4*>(&p_s[n][0]);
      const float4 pb = *reinterpret_cast<const float4*>(&p_s[n][4]);
      const float p[kG] = {pa.x, pa.y, pa.z, pa.w, pb.x, pb.y, pb.z, pb.w};
#pragma unroll
      for (int h = 0; h < kG; ++h)
#pragma unroll
        for (int e = 0; e < kPvDims; ++e) acc[h][e] = fmaf(p[h], c[e], acc[h][e]);
    }
    __syncthreads();
  }

  pdl_launch_dependents();  // the combine may be scheduled; it waits for these stores (grid end)
  const int64_t row0 = static_cast<int64_t>(t) * n_q_heads + kvh * kG;
#pragma unroll
  for (int h = 0; h < kG; ++h) {
    *reinterpret_cast<float4*>(part_o + ((row0 + h) * num_splits + split) * kD + tid * kPvDims) =
        make_float4(acc[h][0], acc[h][1], acc[h][2], acc[h][3]);
  }
  if (tid < kG) part_ml[(row0 + tid) * num_splits + split] = make_float2(m_s[tid], l_s[tid]);
}

// ---- tensor-core decode split kernel (FB_TQ4_DECODE_PATH=mma) ------------------------------------
//
// Same grid, split plan, PDL chaining and partial layout (part_o, part_ml) as the fp32 split kernel
// at decode, so the combine and the un-rotation are shared. Per 64-key tile:
//  - Scores S^T (16 keys x 8 heads per warp) with mma.sync m16n8k16 (fp16 in, fp32 accumulate): the
//    keys are the M side, the 8 q heads of the kv head the N side (no padding). fp16 alone moves the
//    scores (tens, in the log2 domain) by ~1e-3 and the output NMSE to ~1e-5, so q and the centroids
//    are split into hi + lo fp16 parts and three products are summed: c_hi q_hi + c_hi q_lo + c_lo q_hi
//    (the dropped c_lo q_lo is ~2^-22 relative). q is scaled by a power of two per kv head (its max
//    to [0.5, 1)) and the centroids likewise, so neither part under- or overflows fp16 for any
//    finite scale; the power-of-two scales are undone exactly in fp32 after the mma, with k_norm.
//  - The reduction index k of the score mma is a permutation of the 512 dims chosen so that each
//    thread's A fragments come from 64 contiguous bytes of its two key rows (4 x 16-byte loads per
//    row, 64 contiguous bytes per row per load instruction across the 4 lanes of a row); q's B
//    fragments use the same permutation and are staged in shared memory in fragment order (one
//    16-byte read per k-step: q_hi and q_lo pairs).
//  - Decode: one 16-entry table of 32-bit words (c_hi | c_lo << 16) in shared memory, 16 words in 16
//    banks, so random nibbles never conflict; byte_perm packs two looked-up words into an fp16 pair.
//  - Online exp2 softmax in fp32 as in the fp32 kernel (warp w: heads 2w, 2w+1; lane: 2 keys); p is
//    multiplied by v_norm and rounded to fp16 (one rounding per key, the fp32 path keeps it fp32).
//  - O^T (512 dims x 8 heads) += V^T P^T with V^T as the A operand: warp w owns 128 dims (8 m-tiles);
//    in m-tile mt, fragment row r < 8 is the high (even) nibble and row r + 8 the low (odd) nibble of
//    byte w*64 + r*8 + mt, so a thread reads 8 contiguous bytes of each of its 4 keys per k-step.
//    V is staged in shared memory (cp.async; rows padded to 272 B: conflict-free 8-byte reads).
//  - Checked before any run only by a CPU model (numpy, not in the repo): the fragment mappings
//    against the PTX m16n8k16 layouts, and the roundings (fp16 hi/lo scores, fp16 p * v_norm and V
//    centroids) at output NMSE 5e-8 .. 1e-7 vs fp64 for q sigma 1e-3 .. 1 (a single fp16 pass for the
//    scores modelled at up to ~9e-7). Throughput estimate at 128K: bound by the shared-memory table
//    lookups (~680 wavefronts per warp per tile), ~85 us; the fp32 kernel measured 488 us.
constexpr int kMmaTileN = 64;                // keys per tile: 16 per warp in the score phase
constexpr int kMmaVStride = kRowBytes + 16;  // padded V row in shared memory
constexpr int kMmaPStride = kMmaTileN + 8;   // padded fp16 row of P (per head): conflict-free reads
constexpr int kMmaSStride = kG + 1;          // padded fp32 row of scores (per key)
static_assert(kMmaTileN == 16 * kWarps, "score phase: one 16-key m-tile per warp");
static_assert(kD == 128 * kWarps, "P.V phase: 128 dims (8 m-tiles) per warp");

__device__ __forceinline__ void mma_f16_16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                              uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(smem)), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

// x = hi + lo, both fp16 bit patterns.
__device__ __forceinline__ void split_f16(float x, uint32_t& hi, uint32_t& lo) {
  const __half h = __float2half_rn(x);
  hi = __half_as_ushort(h);
  lo = __half_as_ushort(__float2half_rn(x - __half2float(h)));
}
__device__ __forceinline__ uint32_t word_of(const uint4& u, int i) {
  return i == 0 ? u.x : (i == 1 ? u.y : (i == 2 ? u.z : u.w));
}
// 2^-e with |x| * 2^-e in [0.5, 1) (1 for x == 0): an exact rescaling.
__device__ __forceinline__ float pow2_normalizer(float amax) {
  int e = 0;
  (void)frexpf(amax, &e);
  return ldexpf(1.0f, -e);
}

// 4 CTAs per SM (<= 128 registers): at 128K the 512 CTAs are resident in one wave.
__global__ void __launch_bounds__(kThreads, 4)
    tq4_sdpa_decode_mma_kernel(const float* __restrict__ q_rot, const uint8_t* __restrict__ k_packed,
                               const uint16_t* __restrict__ k_norms, const uint8_t* __restrict__ v_packed,
                               const uint16_t* __restrict__ v_norms, const float* __restrict__ centroids,
                               const int32_t* __restrict__ d_kv_len, int64_t capacity, int max_splits,
                               float scale_log2e, float* __restrict__ part_o, float2* __restrict__ part_ml) {
  __shared__ __align__(16) uint4 q_frag[kD / 16][32];  // [k-step][lane]: q_hi pair x2, q_lo pair x2
  __shared__ __align__(16) uint8_t v_s[kMmaTileN][kMmaVStride];
  __shared__ float s_s[kMmaTileN][kMmaSStride];          // log2-domain scores
  __shared__ __align__(16) __half p_h[kG][kMmaPStride];  // p * v_norm, fp16, [head][key]
  __shared__ uint32_t lut[16];                           // c_hi | c_lo << 16 (scaled centroids)
  __shared__ float m_s[kG], l_s[kG], alpha_s[kG];
  __shared__ float red_s[kWarps];
  __shared__ float cscale_s;

  const int split = blockIdx.x, kvh = blockIdx.y;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, tig = lane & 3;
  const int64_t kv_len = min(max(static_cast<int64_t>(*d_kv_len), int64_t{0}), capacity);
  int active;
  int64_t chunk;
  decode_split_plan(kv_len, max_splits, active, chunk);
  if (split >= active) return;  // whole CTA, before any barrier; the combine never reads it
  const int64_t begin = split * chunk;
  const int64_t end = min(begin + chunk, kv_len);

  const uint8_t* kb = k_packed + static_cast<int64_t>(kvh) * capacity * kRowBytes;
  const uint8_t* vb = v_packed + static_cast<int64_t>(kvh) * capacity * kRowBytes;
  const uint16_t* knb = k_norms + static_cast<int64_t>(kvh) * capacity;
  const uint16_t* vnb = v_norms + static_cast<int64_t>(kvh) * capacity;

  // Constants first (they do not depend on the q rotation this kernel overlaps through PDL).
  if (tid < 32) {
    const float c = tid < 16 ? centroids[tid] : 0.0f;
    const float cs = pow2_normalizer(warp_max(fabsf(c)));
    if (tid < 16) {
      uint32_t hi, lo;
      split_f16(c * cs, hi, lo);
      lut[tid] = hi | (lo << 16);
    }
    if (tid == 0) cscale_s = cs;
  }
  if (tid < kG) {
    m_s[tid] = -INFINITY;
    l_s[tid] = 0.0f;
  }
  if (begin + tid / 4 < end && tid < 128) {  // first tile's K and V rows (32 keys x 4 lines) to L2
    const int64_t key = begin + tid / 4;
    const uint8_t* row = ((tid & 2) ? vb : kb) + key * kRowBytes + (tid & 1) * 128;
    asm volatile("prefetch.global.L2 [%0];\n" ::"l"(row));
  }
  pdl_wait();

  // q of the 8 heads (fp32, 16 KB): max |q * scale_log2e| -> power-of-two normalizer.
  const float* qb = q_rot + static_cast<int64_t>(kvh) * kG * kD;
  float amax = 0.0f;
#pragma unroll
  for (int r = 0; r < kG * kD / 4 / kThreads; ++r) {
    const float4 f = __ldcg(reinterpret_cast<const float4*>(qb) + tid + r * kThreads);
    amax = fmaxf(amax, fmaxf(fmaxf(fabsf(f.x), fabsf(f.y)), fmaxf(fabsf(f.z), fabsf(f.w))));
  }
  amax = warp_max(amax);
  if (lane == 0) red_s[warp] = amax;
  __syncthreads();  // also publishes lut, cscale_s, m_s, l_s
  amax = fmaxf(fmaxf(red_s[0], red_s[1]), fmaxf(red_s[2], red_s[3]));
  const float qs = pow2_normalizer(amax * fabsf(scale_log2e));
  const float qmul = scale_log2e * qs;
  // Scores come out scaled by qs * cscale (powers of two): undone exactly.
  const float s_unscale = 1.0f / (qs * cscale_s);
  const float o_unscale = 1.0f / cscale_s;

  // B fragments of q: k-step kk, lane (g', t'): rows 2t'+{0,1} are dims 2*byte, 2*byte+1 and rows
  // 2t'+8+{0,1} dims 2*byte+2, 2*byte+3, byte = (kk / 8) * 64 + t' * 16 + 2 * (kk % 8); column g' is
  // head g'. Those are 4 consecutive dims.
#pragma unroll
  for (int r = 0; r < (kD / 16) * 32 / kThreads; ++r) {
    const int e = tid + r * kThreads;
    const int kk = e / 32, ln = e % 32;
    const int gg = ln >> 2, tt = ln & 3;
    const int byte = (kk >> 3) * 64 + tt * 16 + 2 * (kk & 7);
    const float4 f = __ldcg(reinterpret_cast<const float4*>(qb + gg * kD + 2 * byte));
    uint32_t h0, h1, h2, h3, l0, l1, l2, l3;
    split_f16(f.x * qmul, h0, l0);
    split_f16(f.y * qmul, h1, l1);
    split_f16(f.z * qmul, h2, l2);
    split_f16(f.w * qmul, h3, l3);
    q_frag[kk][ln] = make_uint4(h0 | (h1 << 16), h2 | (h3 << 16), l0 | (l1 << 16), l2 | (l3 << 16));
  }

  float o[8][4];
#pragma unroll
  for (int mt = 0; mt < 8; ++mt)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[mt][e] = 0.0f;
  __syncthreads();

  for (int64_t n0 = begin; n0 < end; n0 += kMmaTileN) {
    // V tile -> shared memory (rows past `end` zeroed: they are never read from global memory).
#pragma unroll
    for (int r = 0; r < kMmaTileN * kRowBytes / 16 / kThreads; ++r) {
      const int e = tid + r * kThreads;
      const int key = e / 16, c16 = e % 16;
      uint8_t* dst = &v_s[key][c16 * 16];
      if (n0 + key < end)
        cp_async16(dst, vb + (n0 + key) * kRowBytes + c16 * 16);
      else
        *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
    }
    cp_async_commit();
    // This warp's 16 keys: rows g and g + 8, bytes c*64 + tig*16 .. +15 for c = 0..3.
    const int64_t key_a = n0 + warp * 16 + g, key_b = key_a + 8;
    uint4 ka[4], kc[4];
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      ka[c] = key_a < end ? __ldcs(reinterpret_cast<const uint4*>(kb + key_a * kRowBytes + c * 64 + tig * 16))
                          : make_uint4(0, 0, 0, 0);
      kc[c] = key_b < end ? __ldcs(reinterpret_cast<const uint4*>(kb + key_b * kRowBytes + c * 64 + tig * 16))
                          : make_uint4(0, 0, 0, 0);
    }
    const float kn_a = key_a < end ? bf16_to_fp32(knb[key_a]) : 0.0f;
    const float kn_b = key_b < end ? bf16_to_fp32(knb[key_b]) : 0.0f;
    const float vn0 = n0 + lane < end ? bf16_to_fp32(vnb[n0 + lane]) : 0.0f;
    const float vn1 = n0 + lane + 32 < end ? bf16_to_fp32(vnb[n0 + lane + 32]) : 0.0f;
    {  // next tile's rows towards L2 while this one computes
      const int64_t key = n0 + kMmaTileN + tid / 2;
      if (key < end) {
        const uint8_t* row = ((tid & 1) ? vb : kb) + key * kRowBytes;
        asm volatile("prefetch.global.L2 [%0];\n" ::"l"(row));
        asm volatile("prefetch.global.L2 [%0];\n" ::"l"(row + 128));
      }
    }

    // Scores: 32 k-steps x 3 mma. One accumulator chain: with 4 warps per scheduler the kernel is
    // bound by issue (table lookups), not by the mma latency.
    float sc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
      const uint4 qf = q_frag[kk][lane];
      // Bytes 2*(kk%8), +1 of chunk kk/8: the low 16 bits after the shift.
      const uint32_t wa = word_of(ka[kk >> 3], (kk & 7) >> 1) >> ((kk & 1) * 16);
      const uint32_t wb = word_of(kc[kk >> 3], (kk & 7) >> 1) >> ((kk & 1) * 16);
      // Even coordinate in the high nibble -> the low half of the fp16 pair.
      const uint32_t ea0 = lut[(wa >> 4) & 15], oa0 = lut[wa & 15];
      const uint32_t ea1 = lut[(wa >> 12) & 15], oa1 = lut[(wa >> 8) & 15];
      const uint32_t eb0 = lut[(wb >> 4) & 15], ob0 = lut[wb & 15];
      const uint32_t eb1 = lut[(wb >> 12) & 15], ob1 = lut[(wb >> 8) & 15];
      const uint32_t h0 = __byte_perm(ea0, oa0, 0x5410), h1 = __byte_perm(eb0, ob0, 0x5410);
      const uint32_t h2 = __byte_perm(ea1, oa1, 0x5410), h3 = __byte_perm(eb1, ob1, 0x5410);
      const uint32_t l0 = __byte_perm(ea0, oa0, 0x7632), l1 = __byte_perm(eb0, ob0, 0x7632);
      const uint32_t l2 = __byte_perm(ea1, oa1, 0x7632), l3 = __byte_perm(eb1, ob1, 0x7632);
      mma_f16_16816(sc, h0, h1, h2, h3, qf.x, qf.y);  // c_hi q_hi
      mma_f16_16816(sc, h0, h1, h2, h3, qf.z, qf.w);  // c_hi q_lo
      mma_f16_16816(sc, l0, l1, l2, l3, qf.x, qf.y);  // c_lo q_hi
    }
    // C fragment: sc[0], sc[1] = key g, heads 2tig, 2tig+1; sc[2], sc[3] = key g + 8.
    {
      const int ra = warp * 16 + g, rb = ra + 8;
      s_s[ra][2 * tig] = key_a < end ? sc[0] * s_unscale * kn_a : -INFINITY;
      s_s[ra][2 * tig + 1] = key_a < end ? sc[1] * s_unscale * kn_a : -INFINITY;
      s_s[rb][2 * tig] = key_b < end ? sc[2] * s_unscale * kn_b : -INFINITY;
      s_s[rb][2 * tig + 1] = key_b < end ? sc[3] * s_unscale * kn_b : -INFINITY;
    }
    cp_async_wait_all();
    __syncthreads();

    // Online softmax: warp w owns heads 2w, 2w+1; lane owns keys lane and lane + 32.
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int h = warp * 2 + hh;
      const float s0 = s_s[lane][h], s1 = s_s[lane + 32][h];
      const float m_old = m_s[h];
      const float m_new = fmaxf(m_old, warp_max(fmaxf(s0, s1)));
      const bool none = m_new == -INFINITY;
      const float alpha = none ? 1.0f : exp2f(m_old - m_new);
      const float p0 = none ? 0.0f : exp2f(s0 - m_new);
      const float p1 = none ? 0.0f : exp2f(s1 - m_new);
      const float sum = warp_sum(p0 + p1);
      p_h[h][lane] = __float2half_rn(n0 + lane < end ? p0 * vn0 : 0.0f);
      p_h[h][lane + 32] = __float2half_rn(n0 + lane + 32 < end ? p1 * vn1 : 0.0f);
      __syncwarp();  // every lane has read m_s[h] before lane 0 replaces it
      if (lane == 0) {
        m_s[h] = m_new;
        l_s[h] = l_s[h] * alpha + sum;
        alpha_s[h] = alpha;
      }
    }
    __syncthreads();

    // O^T += V^T P^T: 4 k-steps of 16 keys x 8 m-tiles.
    {
      const float al0 = alpha_s[2 * tig], al1 = alpha_s[2 * tig + 1];
#pragma unroll
      for (int mt = 0; mt < 8; ++mt) {
        o[mt][0] *= al0;
        o[mt][1] *= al1;
        o[mt][2] *= al0;
        o[mt][3] *= al1;
      }
    }
#pragma unroll
    for (int kk = 0; kk < kMmaTileN / 16; ++kk) {
      const uint8_t* vr = &v_s[kk * 16 + 2 * tig][warp * 64 + g * 8];
      const uint2 v0 = *reinterpret_cast<const uint2*>(vr);                    // key 2tig
      const uint2 v1 = *reinterpret_cast<const uint2*>(vr + kMmaVStride);      // key 2tig + 1
      const uint2 v2 = *reinterpret_cast<const uint2*>(vr + 8 * kMmaVStride);  // key 2tig + 8
      const uint2 v3 = *reinterpret_cast<const uint2*>(vr + 9 * kMmaVStride);  // key 2tig + 9
      const uint32_t b0 = *reinterpret_cast<const uint32_t*>(&p_h[g][kk * 16 + 2 * tig]);
      const uint32_t b1 = *reinterpret_cast<const uint32_t*>(&p_h[g][kk * 16 + 2 * tig + 8]);
#pragma unroll
      for (int mt = 0; mt < 8; ++mt) {
        const int sh = 8 * (mt & 3);
        const uint32_t x0 = (mt < 4 ? v0.x : v0.y) >> sh, x1 = (mt < 4 ? v1.x : v1.y) >> sh;
        const uint32_t x2 = (mt < 4 ? v2.x : v2.y) >> sh, x3 = (mt < 4 ? v3.x : v3.y) >> sh;
        const uint32_t r0 = __byte_perm(lut[(x0 >> 4) & 15], lut[(x1 >> 4) & 15], 0x5410);  // even dim
        const uint32_t r1 = __byte_perm(lut[x0 & 15], lut[x1 & 15], 0x5410);                // odd dim
        const uint32_t r2 = __byte_perm(lut[(x2 >> 4) & 15], lut[(x3 >> 4) & 15], 0x5410);
        const uint32_t r3 = __byte_perm(lut[x2 & 15], lut[x3 & 15], 0x5410);
        mma_f16_16816(o[mt], r0, r1, r2, r3, b0, b1);
      }
    }
    __syncthreads();  // v_s, s_s and p_h are rewritten by the next tile
  }

  pdl_launch_dependents();  // the combine may be scheduled; it waits for these stores (grid end)
  const int64_t row0 = static_cast<int64_t>(kvh) * kG;
  float* po0 = part_o + ((row0 + 2 * tig) * max_splits + split) * kD;
  float* po1 = part_o + ((row0 + 2 * tig + 1) * max_splits + split) * kD;
#pragma unroll
  for (int mt = 0; mt < 8; ++mt) {
    const int d = 2 * (warp * 64 + g * 8 + mt);  // rows g (even dim) and g + 8 (odd dim)
    *reinterpret_cast<float2*>(po0 + d) = make_float2(o[mt][0] * o_unscale, o[mt][2] * o_unscale);
    *reinterpret_cast<float2*>(po1 + d) = make_float2(o[mt][1] * o_unscale, o[mt][3] * o_unscale);
  }
  if (tid < kG) part_ml[(row0 + tid) * max_splits + split] = make_float2(m_s[tid], l_s[tid]);
}

// One CTA per (token, q head): rescales each split by exp2(m_s - m), divides by l (0 when no key was
// visible, as upstream).
__global__ void __launch_bounds__(kThreads)
    tq4_sdpa_reduce_kernel(const float* __restrict__ part_o, const float2* __restrict__ part_ml,
                           int num_splits, float* __restrict__ out_rot) {
  const int64_t row = blockIdx.x;
  const int tid = threadIdx.x;
  const float2* ml = part_ml + row * num_splits;
  float m = -INFINITY;
  for (int s = 0; s < num_splits; ++s) m = fmaxf(m, ml[s].x);
  float l = 0.0f;
  float4 o = make_float4(0, 0, 0, 0);
  if (m != -INFINITY) {
    for (int s = 0; s < num_splits; ++s) {
      const float2 e = ml[s];
      if (e.x == -INFINITY) continue;
      const float w = exp2f(e.x - m);
      l = fmaf(w, e.y, l);
      const float4 po = *reinterpret_cast<const float4*>(part_o + (row * num_splits + s) * kD + tid * 4);
      o.x = fmaf(w, po.x, o.x);
      o.y = fmaf(w, po.y, o.y);
      o.z = fmaf(w, po.z, o.z);
      o.w = fmaf(w, po.w, o.w);
    }
  }
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  *reinterpret_cast<float4*>(out_rot + row * kD + tid * 4) =
      make_float4(o.x * inv, o.y * inv, o.z * inv, o.w * inv);
}

// ---- launchers -----------------------------------------------------------------------------------

struct Workspace {
  float* q_rot;
  float* out_rot;
  float* part_o;
  float2* part_ml;
};

Workspace carve(void* base, int64_t T, int n_q_heads, int splits) {
  auto* f = static_cast<float*>(base);
  const int64_t rows = T * n_q_heads;
  Workspace w;
  w.q_rot = f;
  w.out_rot = w.q_rot + rows * kD;
  w.part_o = w.out_rot + rows * kD;
  w.part_ml = reinterpret_cast<float2*>(w.part_o + rows * splits * kD);
  return w;
}

void launch_compress(const __nv_bfloat16* k, const __nv_bfloat16* v, int64_t T, const int32_t* d_pos,
                     const Tq4Tables& tb, const Tq4Cache& c, cudaStream_t stream) {
  const int d = c.head_dim;
  const dim3 grid(static_cast<unsigned>(T * c.n_kv_heads), 2, static_cast<unsigned>(d / kCompressCols));
  tq4_compress_kernel<<<grid, kCompressThreads, d * sizeof(float), stream>>>(
      k, v, d_pos, tb.boundaries, tb.rotation_t, c.n_kv_heads, d, c.capacity, c.k_packed, c.k_norms,
      c.v_packed, c.v_norms);
  FB_CUDA_CHECK_LAUNCH();
}

// Decode (T = 1) split kernel: the fp32 CUDA-core kernel or the tensor-core one (mma.sync, fp16
// hi/lo scores). Chosen per call from FB_TQ4_DECODE_PATH so one process (the GPU tests, a bench)
// can run both; prefill (T > 1) always runs the fp32 kernel.
enum class DecodePath { fp32, mma };
// mma: every GPU test passes on both paths (H200, NMSE vs fp64 within the table) and mma is as fast
// or faster at every context: 128K 225 vs 487 us, 32K 98 vs 156 us (results/nvidia-h200/2026-11-22-*).
constexpr DecodePath kDefaultDecodePath = DecodePath::mma;

DecodePath decode_path_from_env() {
  const char* e = std::getenv("FB_TQ4_DECODE_PATH");
  if (e == nullptr || *e == '\0') return kDefaultDecodePath;
  if (std::strcmp(e, "fp32") == 0) return DecodePath::fp32;
  if (std::strcmp(e, "mma") == 0) return DecodePath::mma;
  throw std::invalid_argument(std::string("tq4: FB_TQ4_DECODE_PATH must be fp32 or mma, got '") + e + "'");
}

// The decode kernels after the first launch with programmatic stream serialization
// (kernels/common/launch.cuh): each may start while the previous one finishes, which hides the launch
// gap between the small decode kernels; each waits with griddepcontrol.wait before reading it.
constexpr LaunchAttrs kPdl{0, true};

// Decode (T = 1): rotate q (a plain launch: it reads the caller's q), then split-K attention,
// combine and un-rotation, each overlapping its predecessor's tail through PDL. The split count
// follows the device kv_len (grid sized for the capacity's maximum, idle CTAs exit at once).
void launch_decode(DecodePath path, const __nv_bfloat16* q, int n_q_heads, const int32_t* d_kv_len,
                   float scale, const Tq4Cache& c, const Tq4Tables& tb, void* workspace, __nv_bfloat16* out,
                   cudaStream_t stream) {
  const int max_splits = tq4_sdpa_num_splits(1, c.n_kv_heads, c.capacity);
  const Workspace w = carve(workspace, 1, n_q_heads, max_splits);
  const dim3 rot_grid(kD / kSlab, static_cast<unsigned>((n_q_heads + kSlabVecs - 1) / kSlabVecs));
  tq4_rotate_slab_kernel<__nv_bfloat16, float, false>
      <<<rot_grid, kSlabThreads, 0, stream>>>(q, tb.rotation, n_q_heads, w.q_rot);
  FB_CUDA_CHECK_LAUNCH();
  if (path == DecodePath::mma) {
    launch_kernel(tq4_sdpa_decode_mma_kernel, dim3(max_splits, c.n_kv_heads, 1), dim3(kThreads), 0, stream,
                  kPdl, static_cast<const float*>(w.q_rot), c.k_packed, c.k_norms, c.v_packed, c.v_norms,
                  tb.centroids, d_kv_len, c.capacity, max_splits, scale * kLog2e, w.part_o, w.part_ml);
  } else {
    launch_kernel(tq4_sdpa_split_kernel, dim3(max_splits, c.n_kv_heads, 1), dim3(kThreads), 0, stream, kPdl,
                  static_cast<const float*>(w.q_rot), c.k_packed, c.k_norms, c.v_packed, c.v_norms,
                  tb.centroids, d_kv_len, c.capacity, 1, n_q_heads, max_splits, int64_t{0}, true,
                  scale * kLog2e, w.part_o, w.part_ml);
  }
  launch_kernel(tq4_sdpa_decode_combine_kernel, dim3(n_q_heads, kD / 128, 1), dim3(128), 0, stream, kPdl,
                static_cast<const float*>(w.part_o), static_cast<const float2*>(w.part_ml), d_kv_len,
                c.capacity, max_splits, w.out_rot);
  launch_kernel(tq4_rotate_slab_kernel<float, __nv_bfloat16, true>, rot_grid, dim3(kSlabThreads), 0, stream,
                kPdl, static_cast<const float*>(w.out_rot), tb.rotation, static_cast<int64_t>(n_q_heads),
                out);
}

void launch_sdpa(DecodePath path, const __nv_bfloat16* q, int64_t T, int n_q_heads, const int32_t* d_kv_len,
                 float scale, const Tq4Cache& c, const Tq4Tables& tb, void* workspace, __nv_bfloat16* out,
                 cudaStream_t stream) {
  if (T == 1) {
    launch_decode(path, q, n_q_heads, d_kv_len, scale, c, tb, workspace, out, stream);
    return;
  }
  const int splits = tq4_sdpa_num_splits(T, c.n_kv_heads, c.capacity);
  const int64_t chunk = (c.capacity + splits - 1) / splits;
  const int64_t rows = T * n_q_heads;
  const Workspace w = carve(workspace, T, n_q_heads, splits);
  const dim3 rot_grid(kD / kRotRows, static_cast<unsigned>((rows + kRotVecs - 1) / kRotVecs));
  tq4_rotate_kernel<__nv_bfloat16, float, false>
      <<<rot_grid, 128, 0, stream>>>(q, tb.rotation, kD, rows, w.q_rot);
  FB_CUDA_CHECK_LAUNCH();
  const dim3 grid(splits, c.n_kv_heads, static_cast<unsigned>(T));
  tq4_sdpa_split_kernel<<<grid, kThreads, 0, stream>>>(
      w.q_rot, c.k_packed, c.k_norms, c.v_packed, c.v_norms, tb.centroids, d_kv_len, c.capacity,
      static_cast<int>(T), n_q_heads, splits, chunk, false, scale * kLog2e, w.part_o, w.part_ml);
  FB_CUDA_CHECK_LAUNCH();
  tq4_sdpa_reduce_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(w.part_o, w.part_ml, splits,
                                                                               w.out_rot);
  FB_CUDA_CHECK_LAUNCH();
  tq4_rotate_kernel<float, __nv_bfloat16, true>
      <<<rot_grid, 128, 0, stream>>>(w.out_rot, tb.rotation, kD, rows, out);
  FB_CUDA_CHECK_LAUNCH();
}

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("tq4: " + what);
}
bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

void validate_common(const Tq4Tables& tb, const Tq4Cache& c) {
  require(c.head_dim == tb.head_dim, "cache and tables disagree on head_dim");
  require(c.n_kv_heads > 0 && c.capacity > 0, "empty cache");
  require(c.k_packed && c.v_packed && c.k_norms && c.v_norms, "null cache pointer");
  require(aligned16(c.k_packed) && aligned16(c.v_packed), "packed cache must be 16-byte aligned");
  require(tb.centroids && tb.boundaries && tb.rotation && tb.rotation_t, "null table pointer");
}

}  // namespace

int tq4_sdpa_num_splits(int64_t T, int n_kv_heads, int64_t capacity) {
  // Decode: one split per 64 cached positions up to 128, i.e. >= 2 waves of 2 CTAs/SM on 132 SMs
  // at 128K (512 CTAs, 1024 keys each). Prefill has T x kv heads CTAs already: split only until
  // ~1024 CTAs exist.
  const int64_t by_len = std::clamp<int64_t>((capacity + 63) / 64, 1, kMaxSplits);
  const int64_t ctas = std::max<int64_t>(1, T * n_kv_heads);
  const int64_t by_par = std::max<int64_t>(1, (1024 + ctas - 1) / ctas);
  return static_cast<int>(T == 1 ? by_len : std::min(by_len, by_par));
}

const char* tq4_sdpa_decode_path() { return decode_path_from_env() == DecodePath::mma ? "mma" : "fp32"; }

size_t tq4_sdpa_workspace_bytes(int64_t T, int n_q_heads, const Tq4Cache& c) {
  const int64_t splits = tq4_sdpa_num_splits(T, c.n_kv_heads, c.capacity);
  const int64_t rows = T * n_q_heads;
  return static_cast<size_t>(rows * kD * 2 + rows * splits * kD + rows * splits * 2) * sizeof(float);
}

void tq4_compress_append(const __nv_bfloat16* k, const __nv_bfloat16* v, int64_t T, const int32_t* d_pos,
                         const Tq4Tables& tables, const Tq4Cache& cache, cudaStream_t stream) {
  validate_common(tables, cache);
  const int d = cache.head_dim;
  require(d >= 64 && d <= 2048 && d % 64 == 0, "compress: head_dim must be a multiple of 64 in [64, 2048]");
  require(T >= 0 && T * cache.n_kv_heads <= 0x7FFFFFFF, "compress: bad T");
  require(k && v && d_pos, "compress: null input");
  require(reinterpret_cast<uintptr_t>(k) % 4 == 0 && reinterpret_cast<uintptr_t>(v) % 4 == 0,
          "compress: k and v must be 4-byte aligned");
  if (T == 0) return;
  launch_compress(k, v, T, d_pos, tables, cache, stream);
}

void tq4_sdpa(const __nv_bfloat16* q, int64_t T, int n_q_heads, const int32_t* d_kv_len, float scale,
              const Tq4Cache& cache, const Tq4Tables& tables, void* workspace, size_t workspace_bytes,
              __nv_bfloat16* out, cudaStream_t stream) {
  validate_common(tables, cache);
  require(cache.head_dim == kD, "sdpa: built for head_dim 512 only");
  require(n_q_heads == kG * cache.n_kv_heads, "sdpa: built for GQA 8:1 (n_q_heads = 8 x n_kv_heads)");
  require(T >= 1 && T <= 65535, "sdpa: T must be in [1, 65535]");
  require(std::isfinite(scale), "sdpa: scale must be finite");
  require(q && out && d_kv_len && workspace, "sdpa: null pointer");
  require(aligned16(q) && aligned16(workspace), "sdpa: q and workspace must be 16-byte aligned");
  require(workspace_bytes >= tq4_sdpa_workspace_bytes(T, n_q_heads, cache), "sdpa: workspace too small");
  const DecodePath path = decode_path_from_env();  // before anything is enqueued: a bad value throws
  launch_sdpa(path, q, T, n_q_heads, d_kv_len, scale, cache, tables, workspace, out, stream);
}

}  // namespace fb::cuda
