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
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/attention/tq4_sdpa.cuh"
#include "kernels/common/cuda_check.h"
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

// One CTA per (token, kv head, K or V); thread i owns coordinates 2i and 2i+1, i.e. one output byte.
__global__ void tq4_compress_kernel(const __nv_bfloat16* __restrict__ k, const __nv_bfloat16* __restrict__ v,
                                    const int32_t* __restrict__ d_pos,
                                    const uint16_t* __restrict__ boundaries,
                                    const uint16_t* __restrict__ rotation_t, int n_kv, int d,
                                    int64_t capacity, uint8_t* __restrict__ k_packed,
                                    uint16_t* __restrict__ k_norms, uint8_t* __restrict__ v_packed,
                                    uint16_t* __restrict__ v_norms) {
  extern __shared__ float u_s[];  // d floats
  __shared__ float warp_ss[32];
  __shared__ float bound_s[15];
  const int t = blockIdx.x / n_kv, h = blockIdx.x % n_kv;
  const bool is_v = blockIdx.y == 1;
  const int i = threadIdx.x;
  const int64_t pos = static_cast<int64_t>(*d_pos) + t;
  if (pos < 0 || pos >= capacity) return;  // the whole CTA agrees: no barrier is left waiting
  if (i < 15) bound_s[i] = bf16_to_fp32(boundaries[i]);
  const uint32_t xx =
      reinterpret_cast<const uint32_t*>((is_v ? v : k) + (static_cast<int64_t>(t) * n_kv + h) * d)[i];
  const float x0 = bf16_to_fp32(static_cast<uint16_t>(xx & 0xFFFF)),
              x1 = bf16_to_fp32(static_cast<uint16_t>(xx >> 16));
  float ss = x0 * x0 + x1 * x1;
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xFFFFFFFFu, ss, o);
  if ((i & 31) == 0) warp_ss[i >> 5] = ss;
  __syncthreads();
  if (i < 32) {
    float s = i < static_cast<int>(blockDim.x / 32) ? warp_ss[i] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xFFFFFFFFu, s, o);
    if (i == 0) warp_ss[0] = s;
  }
  __syncthreads();
  const uint16_t norm = fp32_to_bf16(sqrtf(warp_ss[0]));
  // torch: bf16 norm + 1e-10 is a bf16 tensor op (fp32 math, rounded), then a bf16 division.
  const float denom = bf16_to_fp32(fp32_to_bf16(bf16_to_fp32(norm) + 1e-10f));
  u_s[2 * i] = bf16_to_fp32(fp32_to_bf16(x0 / denom));
  u_s[2 * i + 1] = bf16_to_fp32(fp32_to_bf16(x1 / denom));
  __syncthreads();
  // y_c = sum_j u_j Pi^T[j][c]: for each j the CTA reads one contiguous row of Pi^T (coalesced).
  float y0 = 0.0f, y1 = 0.0f;
  const uint32_t* rt = reinterpret_cast<const uint32_t*>(rotation_t) + i;
#pragma unroll 8
  for (int j = 0; j < d; ++j) {
    const uint32_t r = __ldg(rt + static_cast<int64_t>(j) * (d / 2));
    y0 = fmaf(u_s[j], bf16_to_fp32(static_cast<uint16_t>(r & 0xFFFF)), y0);
    y1 = fmaf(u_s[j], bf16_to_fp32(static_cast<uint16_t>(r >> 16)), y1);
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
  (is_v ? v_packed : k_packed)[slot * (d / 2) + i] = static_cast<uint8_t>((i0 << 4) | i1);
  if (i == 0) (is_v ? v_norms : k_norms)[slot] = norm;
}

// ---- rotations: Y[v][r] = sum_c A(r, c) X[v][c], A = Pi or Pi^T ----------------------------------

constexpr int kRotRows = 16, kRotVecs = 32, kRotK = 32;

__device__ __forceinline__ float load_as_float(const float* p) { return *p; }
__device__ __forceinline__ float load_as_float(const __nv_bfloat16* p) {
  return bf16_to_fp32(*reinterpret_cast<const uint16_t*>(p));
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
                          int num_splits, int64_t chunk, float scale_log2e, float* __restrict__ part_o,
                          float2* __restrict__ part_ml) {
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
  const int64_t visible = min(kv_len, max(kv_len - T + t + 1, int64_t{0}));  // causal, in-kernel
  const int64_t begin = split * chunk;
  const int64_t end = min(begin + chunk, visible);

  float q[kG][kLaneDims];
  {
    const float* qb = q_rot + (static_cast<int64_t>(t) * n_q_heads + kvh * kG) * kD + lane * kLaneDims;
#pragma unroll
    for (int h = 0; h < kG; ++h) {
#pragma unroll
      for (int i = 0; i < kLaneDims; i += 4) {
        const float4 f = *reinterpret_cast<const float4*>(qb + h * kD + i);
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

  const uint8_t* kb = k_packed + static_cast<int64_t>(kvh) * capacity * kRowBytes;
  const uint8_t* vb = v_packed + static_cast<int64_t>(kvh) * capacity * kRowBytes;
  const uint16_t* knb = k_norms + static_cast<int64_t>(kvh) * capacity;
  const uint16_t* vnb = v_norms + static_cast<int64_t>(kvh) * capacity;
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
      p_s[lane][h] = key < end ? p * bf16_to_fp32(vnb[key]) : 0.0f;
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

  const int64_t row0 = static_cast<int64_t>(t) * n_q_heads + kvh * kG;
#pragma unroll
  for (int h = 0; h < kG; ++h) {
    *reinterpret_cast<float4*>(part_o + ((row0 + h) * num_splits + split) * kD + tid * kPvDims) =
        make_float4(acc[h][0], acc[h][1], acc[h][2], acc[h][3]);
  }
  if (tid < kG) part_ml[(row0 + tid) * num_splits + split] = make_float2(m_s[tid], l_s[tid]);
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
  const dim3 grid(static_cast<unsigned>(T * c.n_kv_heads), 2);
  tq4_compress_kernel<<<grid, d / 2, d * sizeof(float), stream>>>(k, v, d_pos, tb.boundaries, tb.rotation_t,
                                                                  c.n_kv_heads, d, c.capacity, c.k_packed,
                                                                  c.k_norms, c.v_packed, c.v_norms);
  FB_CUDA_CHECK_LAUNCH();
}

void launch_sdpa(const __nv_bfloat16* q, int64_t T, int n_q_heads, const int32_t* d_kv_len, float scale,
                 const Tq4Cache& c, const Tq4Tables& tb, void* workspace, __nv_bfloat16* out,
                 cudaStream_t stream) {
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
      static_cast<int>(T), n_q_heads, splits, chunk, scale * kLog2e, w.part_o, w.part_ml);
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
  launch_sdpa(q, T, n_q_heads, d_kv_len, scale, cache, tables, workspace, out, stream);
}

}  // namespace fb::cuda
