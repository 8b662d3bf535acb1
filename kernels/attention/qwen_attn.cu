#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/attention/qwen_attn.cuh"
#include "kernels/common/cuda_check.h"
#include "reference/formats/half.h"

namespace fb::cuda {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kVec = 8;
constexpr int kWarps = 4;  // SDPA block: 4 warps over one split's keys, merged in shared memory
constexpr int kMinChunk = 64, kMaxSplits = 512;

void require(bool ok, const char* fn, const std::string& what) {
  if (!ok) throw std::invalid_argument(std::string(fn) + ": " + what);
}

__device__ __forceinline__ float round_bf(float f) {
  return __uint_as_float(uint32_t{fp32_to_bf16(f)} << 16);
}
__device__ __forceinline__ float bf_at(const bf16* p) {
  return __uint_as_float(uint32_t{*reinterpret_cast<const uint16_t*>(p)} << 16);
}
__device__ __forceinline__ void load8(const bf16* p, float v[kVec]) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    v[2 * k] = __uint_as_float(w[k] << 16);
    v[2 * k + 1] = __uint_as_float(w[k] & 0xFFFF0000u);
  }
}
__device__ __forceinline__ void store8(bf16* p, const float v[kVec]) {
  uint32_t w[4];
#pragma unroll
  for (int k = 0; k < 4; ++k)
    w[k] = (__float_as_uint(v[2 * k]) >> 16) | (__float_as_uint(v[2 * k + 1]) & 0xFFFF0000u);
  *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
}

// Same expressions as kernels/ops rope8 (bit-identical twins): fp32 angle float(pos) * inv_freq,
// precise sincosf, one rounding.
__device__ __forceinline__ void rope8(float y[kVec], const float p[kVec], int d0, int pos,
                                      const RopeParams& rp) {
  const int half = rp.rot_dim / 2;
  if (d0 >= rp.rot_dim) return;
  const bool first = d0 < half;
  const int j0 = first ? d0 : d0 - half;
  const float fpos = static_cast<float>(pos);
#pragma unroll
  for (int k = 0; k < kVec; ++k) {
    const int j = j0 + k;
    if (j >= rp.n_freq) continue;
    float s, c;
    sincosf(__fmul_rn(fpos, rp.inv_freq[j]), &s, &c);
    const float r = first ? __fsub_rn(__fmul_rn(y[k], c), __fmul_rn(p[k], s))
                          : __fadd_rn(__fmul_rn(y[k], c), __fmul_rn(p[k], s));
    y[k] = round_bf(r);
  }
}

__device__ __forceinline__ float sigmoid_bf(float g) {
  return round_bf(__fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-g))));  // torch bf16 sigmoid: fp32 math, bf16 out
}

// ---- prep: one row (q head, k head or v head of a token) per tpr = hd/8 threads, the ops norm map --
struct PrepArgs {
  const bf16* proj = nullptr;
  int64_t ldp = 0, T = 0, capacity = 0;
  int nh = 0, nkv = 0, hd = 0, tpr = 0;
  const float *q_norm = nullptr, *k_norm = nullptr;
  float eps = 0.0f;
  const int32_t* pos = nullptr;
  bf16 *q_out = nullptr, *k_cache = nullptr, *v_cache = nullptr;
};

__global__ void __launch_bounds__(256) prep_kernel(const PrepArgs a, const __grid_constant__ RopeParams rp) {
  extern __shared__ float rowbuf[];  // rows-per-block x hd
  const int tpr = a.tpr, rib = threadIdx.x / tpr, t = threadIdx.x % tpr;
  const int per_tok = a.nh + 2 * a.nkv;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / tpr) + rib;
  const bool live = row < a.T * per_tok;
  const int64_t tok = live ? row / per_tok : 0;
  const int j = live ? static_cast<int>(row % per_tok) : 0;
  const int kind = j < a.nh ? 0 : (j < a.nh + a.nkv ? 1 : 2);  // q, k, v
  const int head = kind == 0 ? j : (kind == 1 ? j - a.nh : j - a.nh - a.nkv);
  const int64_t col =
      kind == 0 ? int64_t{head} * 2 * a.hd
                : int64_t{2} * a.nh * a.hd + int64_t{kind - 1} * a.nkv * a.hd + int64_t{head} * a.hd;
  float v[kVec] = {};
  if (live) load8(a.proj + tok * a.ldp + col + t * kVec, v);
  float ss = 0.0f;
#pragma unroll
  for (int k = 0; k < kVec; ++k) ss = __fadd_rn(ss, __fmul_rn(v[k], v[k]));
  for (int o = tpr / 2; o > 0; o /= 2) ss = __fadd_rn(ss, __shfl_xor_sync(0xFFFFFFFFu, ss, o));
  const float inv = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(__fdiv_rn(ss, static_cast<float>(a.hd)), a.eps)));
  const float* w = kind == 0 ? a.q_norm : a.k_norm;
  float y[kVec];
#pragma unroll
  for (int k = 0; k < kVec; ++k) {
    y[k] = v[k];
    if (live && kind < 2) y[k] = round_bf(__fmul_rn(__fmul_rn(v[k], inv), __fadd_rn(1.0f, w[t * kVec + k])));
  }
  float* buf = rowbuf + rib * a.hd;
  if (live)
    for (int k = 0; k < kVec; ++k) buf[t * kVec + k] = y[k];
  __syncthreads();
  if (!live) return;
  const int pos = a.pos[tok];
  const int d0 = t * kVec, half = rp.rot_dim / 2;
  if (kind < 2 && d0 < rp.rot_dim) {
    const int pd = d0 < half ? d0 + half : d0 - half;
    float p[kVec];
    for (int k = 0; k < kVec; ++k) p[k] = buf[pd + k];
    rope8(y, p, d0, pos, rp);
  }
  bf16* dst = kind == 0 ? a.q_out + (tok * a.nh + head) * a.hd
                        : (kind == 1 ? a.k_cache : a.v_cache) + (int64_t{head} * a.capacity + pos) * a.hd;
  store8(dst + d0, y);
}

__global__ void split_kernel(const bf16* proj, int64_t ldp, int64_t T, int nh, int nkv, int hd, bf16* q,
                             bf16* gate, bf16* k, bf16* v) {
  const int64_t per_tok = (int64_t{2} * nh + 2 * nkv) * hd / kVec;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= T * per_tok) return;
  const int64_t tok = i / per_tok, c = (i % per_tok) * kVec;
  float x[kVec];
  load8(proj + tok * ldp + c, x);
  const int64_t qc = int64_t{2} * nh * hd, kc = int64_t{nkv} * hd;
  if (c < qc) {
    const int64_t h = c / (2 * hd), r = c % (2 * hd);
    if (r < hd)
      store8(q + (tok * nh + h) * hd + r, x);
    else if (gate)
      store8(gate + (tok * nh + h) * hd + r - hd, x);
  } else if (c < qc + kc) {
    store8(k + tok * kc + (c - qc), x);
  } else {
    store8(v + tok * kc + (c - qc - kc), x);
  }
}

__global__ void kv_append_kernel(const bf16* k, const bf16* v, int64_t T, int nkv, int hd, const int32_t* pos,
                                 bf16* kc, bf16* vc, int64_t capacity) {
  const int64_t per_tok = int64_t{nkv} * hd / kVec;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= T * per_tok) return;
  const int64_t tok = i / per_tok, c = (i % per_tok) * kVec, h = c / hd, d = c % hd;
  const int64_t dst = (h * capacity + pos[tok]) * hd + d;
  float x[kVec];
  load8(k + tok * nkv * hd + c, x);
  store8(kc + dst, x);
  load8(v + tok * nkv * hd + c, x);
  store8(vc + dst, x);
}

__global__ void gate_mul_kernel(const bf16* attn, const bf16* gate, int64_t ldg, int64_t gstride, int64_t T,
                                int nh, int hd, bf16* y) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= T * nh * hd) return;
  const int64_t t = i / (int64_t{nh} * hd), h = (i / hd) % nh, d = i % hd;
  const float g = sigmoid_bf(bf_at(gate + t * ldg + h * gstride + d));
  y[i] = __float2bfloat16_rn(round_bf(__fmul_rn(bf_at(attn + i), g)));
}

// ---- SDPA partials: block (split, kv head, token), warp w takes keys chunk0 + w, + kWarps, ...; lane
// owns dims [lane * DPL, lane * DPL + DPL) of every head of the GQA group; the block writes one
// partial (max, sum, unnormalised acc) per (split, head).
template <int DPL>
__device__ __forceinline__ void load_dims(const bf16* p, float v[DPL]) {
  if constexpr (DPL == 8) {
    load8(p, v);
  } else {
#pragma unroll
    for (int k = 0; k < DPL; k += 2) {
      const uint32_t u = *reinterpret_cast<const uint32_t*>(p + k);
      v[k] = __uint_as_float(u << 16);
      v[k + 1] = __uint_as_float(u & 0xFFFF0000u);
    }
  }
}

struct SdpaArgs {
  const bf16 *q = nullptr, *kc = nullptr, *vc = nullptr;
  int64_t capacity = 0, T = 0;
  const int32_t* pos = nullptr;
  int nh = 0, nkv = 0, hd = 0, splits = 0, chunk = 0;
  float scale = 0.0f;
  float* ws = nullptr;  // ml [T][nh][parts][2], acc [T][nh][parts][hd]
};

template <int DPL, int G>
__global__ void __launch_bounds__(kWarps * 32) sdpa_partial_kernel(const SdpaArgs a) {
  const int split = blockIdx.x, kvh = blockIdx.y;
  const int64_t tok = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int parts = a.splits;
  const int64_t len = static_cast<int64_t>(a.pos[tok]) + 1;
  float qf[G][DPL], acc[G][DPL], m[G], l[G];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    load_dims<DPL>(a.q + (tok * a.nh + kvh * G + g) * a.hd + lane * DPL, qf[g]);
    m[g] = -INFINITY, l[g] = 0.0f;
#pragma unroll
    for (int i = 0; i < DPL; ++i) acc[g][i] = 0.0f;
  }
  const int64_t j0 = int64_t{split} * a.chunk, j1 = min(j0 + a.chunk, len);
  const bf16* kbase = a.kc + int64_t{kvh} * a.capacity * a.hd + lane * DPL;
  const bf16* vbase = a.vc + int64_t{kvh} * a.capacity * a.hd + lane * DPL;
  for (int64_t j = j0 + warp; j < j1; j += kWarps) {
    float kf[DPL], vf[DPL];
    load_dims<DPL>(kbase + j * a.hd, kf);
    load_dims<DPL>(vbase + j * a.hd, vf);
#pragma unroll
    for (int g = 0; g < G; ++g) {
      float s = 0.0f;
#pragma unroll
      for (int i = 0; i < DPL; ++i) s = fmaf(qf[g][i], kf[i], s);
#pragma unroll
      for (int o = 16; o > 0; o /= 2) s += __shfl_xor_sync(0xFFFFFFFFu, s, o);
      s *= a.scale;
      const float mn = fmaxf(m[g], s), corr = expf(m[g] - mn), p = expf(s - mn);
      l[g] = l[g] * corr + p;
#pragma unroll
      for (int i = 0; i < DPL; ++i) acc[g][i] = fmaf(p, vf[i], acc[g][i] * corr);
      m[g] = mn;
    }
  }
  // Merge the warps' partials in shared memory: one partial per (split, head) in the workspace.
  __shared__ float sm_ml[kWarps][G][2];
  __shared__ float sm_acc[kWarps][G][DPL * 32];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    if (lane == 0) sm_ml[warp][g][0] = m[g], sm_ml[warp][g][1] = l[g];
#pragma unroll
    for (int i = 0; i < DPL; ++i) sm_acc[warp][g][lane * DPL + i] = acc[g][i];
  }
  __syncthreads();
  constexpr int hd = DPL * 32;
  for (int idx = threadIdx.x; idx < G * hd; idx += kWarps * 32) {
    const int g = idx / hd, d = idx % hd;
    float M = -INFINITY;
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, sm_ml[w][g][0]);
    float L = 0.0f, o = 0.0f;
    if (M != -INFINITY)
      for (int w = 0; w < kWarps; ++w) {
        if (sm_ml[w][g][0] == -INFINITY) continue;
        const float e = expf(sm_ml[w][g][0] - M);
        L += sm_ml[w][g][1] * e;
        o += sm_acc[w][g][d] * e;
      }
    const int64_t r = (tok * a.nh + kvh * G + g) * parts + split;
    if (d == 0) a.ws[r * 2] = M, a.ws[r * 2 + 1] = L;
    a.ws[a.T * a.nh * parts * 2 + r * a.hd + d] = o;
  }
}

// Combine: block (head, token), thread = dim. gate null: out = bf16(attn); else the fused output gate.
__global__ void sdpa_combine_kernel(const float* ws, int64_t T, int nh, int hd, int parts, const bf16* gate,
                                    int64_t ldg, int64_t gstride, bf16* out) {
  const int h = blockIdx.x, d = threadIdx.x;
  const int64_t tok = blockIdx.y, r0 = (tok * nh + h) * parts;
  float M = -INFINITY;
  for (int p = 0; p < parts; ++p) M = fmaxf(M, ws[(r0 + p) * 2]);
  float L = 0.0f, o = 0.0f;
  const float* acc = ws + T * nh * parts * 2;
  for (int p = 0; p < parts; ++p) {
    const float mp = ws[(r0 + p) * 2];
    if (mp == -INFINITY) continue;
    const float e = expf(mp - M);
    L += ws[(r0 + p) * 2 + 1] * e;
    o += acc[(r0 + p) * hd + d] * e;
  }
  float y = round_bf(__fdiv_rn(o, L));
  if (gate) y = round_bf(__fmul_rn(y, sigmoid_bf(bf_at(gate + tok * ldg + int64_t{h} * gstride + d))));
  out[(tok * nh + h) * hd + d] = __float2bfloat16_rn(y);
}

void check_dims(const char* fn, const QwenAttnDims& d) {
  require(d.head_dim == 64 || d.head_dim == 128 || d.head_dim == 256, fn, "head_dim must be 64, 128 or 256");
  require(d.n_kv_heads >= 1 && d.n_heads % d.n_kv_heads == 0, fn, "n_heads must be a multiple of n_kv_heads");
  const int g = d.n_heads / d.n_kv_heads;
  require(g == 1 || g == 2 || g == 4 || g == 8, fn, "GQA group must be 1, 2, 4 or 8");
}

unsigned blocks_for(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

template <int DPL>
void launch_partial_g(const SdpaArgs& a, int G, dim3 grid, cudaStream_t s) {
  switch (G) {
    case 1:
      sdpa_partial_kernel<DPL, 1><<<grid, kWarps * 32, 0, s>>>(a);
      break;
    case 2:
      sdpa_partial_kernel<DPL, 2><<<grid, kWarps * 32, 0, s>>>(a);
      break;
    case 4:
      sdpa_partial_kernel<DPL, 4><<<grid, kWarps * 32, 0, s>>>(a);
      break;
    default:
      sdpa_partial_kernel<DPL, 8><<<grid, kWarps * 32, 0, s>>>(a);
      break;
  }
}

}  // namespace

void qwen_attn_prep(const QwenAttnDims& d, const bf16* proj, int64_t ldp, int64_t T, const float* q_norm,
                    const float* k_norm, float eps, const int32_t* d_pos, const RopeParams& rope, bf16* q_out,
                    bf16* k_cache, bf16* v_cache, int64_t capacity, cudaStream_t stream) {
  const char* fn = "qwen_attn_prep";
  check_dims(fn, d);
  require(T >= 1 && ldp >= d.proj_cols() && ldp % kVec == 0, fn, "T >= 1, ldp >= proj_cols, ldp % 8 == 0");
  require(proj && q_norm && k_norm && d_pos && q_out && k_cache && v_cache, fn, "null pointer");
  require(rope.head_dim == d.head_dim && rope.rot_dim % (2 * kVec) == 0, fn,
          "rope must match head_dim, rot % 16");
  require(capacity >= 1, fn, "capacity >= 1");
  PrepArgs a;
  a.proj = proj, a.ldp = ldp, a.T = T, a.capacity = capacity;
  a.nh = d.n_heads, a.nkv = d.n_kv_heads, a.hd = d.head_dim, a.tpr = d.head_dim / kVec;
  a.q_norm = q_norm, a.k_norm = k_norm, a.eps = eps, a.pos = d_pos;
  a.q_out = q_out, a.k_cache = k_cache, a.v_cache = v_cache;
  const int rpb = 256 / a.tpr;
  const int64_t rows = T * (d.n_heads + 2 * d.n_kv_heads);
  prep_kernel<<<blocks_for(rows, rpb), 256, rpb * d.head_dim * sizeof(float), stream>>>(a, rope);
  FB_CUDA_CHECK(cudaGetLastError());
}

void qwen_split_qkv(const QwenAttnDims& d, const bf16* proj, int64_t ldp, int64_t T, bf16* q, bf16* gate,
                    bf16* k, bf16* v, cudaStream_t stream) {
  const char* fn = "qwen_split_qkv";
  check_dims(fn, d);
  require(T >= 1 && ldp >= d.proj_cols() && ldp % kVec == 0, fn, "T >= 1, ldp >= proj_cols, ldp % 8 == 0");
  require(proj && q && k && v, fn, "null pointer");
  const int64_t n = T * d.proj_cols() / kVec;
  split_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(proj, ldp, T, d.n_heads, d.n_kv_heads, d.head_dim, q,
                                                       gate, k, v);
  FB_CUDA_CHECK(cudaGetLastError());
}

void qwen_kv_append(const QwenAttnDims& d, const bf16* k, const bf16* v, int64_t T, const int32_t* d_pos,
                    bf16* k_cache, bf16* v_cache, int64_t capacity, cudaStream_t stream) {
  const char* fn = "qwen_kv_append";
  check_dims(fn, d);
  require(T >= 1 && capacity >= 1 && k && v && d_pos && k_cache && v_cache, fn, "bad arguments");
  const int64_t n = T * d.kv_cols() / kVec;
  kv_append_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(k, v, T, d.n_kv_heads, d.head_dim, d_pos, k_cache,
                                                           v_cache, capacity);
  FB_CUDA_CHECK(cudaGetLastError());
}

void qwen_sigmoid_gate_mul(const bf16* attn, const bf16* gate, int64_t ldg, int64_t gstride, int64_t T,
                           int n_heads, int head_dim, bf16* y, cudaStream_t stream) {
  require(attn && gate && y && T >= 1 && n_heads >= 1 && head_dim >= 1, "qwen_sigmoid_gate_mul",
          "bad arguments");
  const int64_t n = T * n_heads * head_dim;
  gate_mul_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(attn, gate, ldg, gstride, T, n_heads, head_dim, y);
  FB_CUDA_CHECK(cudaGetLastError());
}

int qwen_sdpa_splits(int64_t T, int64_t capacity) {
  // Enough splits to fill the GPU at decode; at prefill the tokens fill it and the fp32 partials
  // (T x heads x splits x hd) must stay small, so the split count shrinks as T grows.
  const int64_t s = (capacity + kMinChunk - 1) / kMinChunk;
  const int64_t most = std::max<int64_t>(1, kMaxSplits / std::max<int64_t>(T, 1));
  return static_cast<int>(std::max<int64_t>(1, std::min(s, most)));
}

size_t qwen_sdpa_workspace_floats(const QwenAttnDims& d, int64_t T, int64_t capacity) {
  const int64_t parts = qwen_sdpa_splits(T, capacity);
  return static_cast<size_t>(T * d.n_heads * parts * (2 + d.head_dim));
}

void qwen_sdpa(const QwenAttnDims& d, const bf16* q, const bf16* k_cache, const bf16* v_cache,
               int64_t capacity, int64_t T, const int32_t* d_pos, const bf16* gate, int64_t ldg,
               int64_t gstride, float* workspace, bf16* out, cudaStream_t stream) {
  const char* fn = "qwen_sdpa";
  check_dims(fn, d);
  require(q && k_cache && v_cache && d_pos && workspace && out, fn, "null pointer");
  require(T >= 1 && T <= 65535 && capacity >= 1, fn, "1 <= T <= 65535, capacity >= 1");
  SdpaArgs a;
  a.q = q, a.kc = k_cache, a.vc = v_cache, a.capacity = capacity, a.T = T, a.pos = d_pos;
  a.nh = d.n_heads, a.nkv = d.n_kv_heads, a.hd = d.head_dim;
  a.splits = qwen_sdpa_splits(T, capacity);
  a.chunk = static_cast<int>((capacity + a.splits - 1) / a.splits);
  a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d.head_dim)));
  a.ws = workspace;
  const dim3 grid(static_cast<unsigned>(a.splits), static_cast<unsigned>(d.n_kv_heads),
                  static_cast<unsigned>(T));
  const int G = d.n_heads / d.n_kv_heads;
  if (d.head_dim == 64)
    launch_partial_g<2>(a, G, grid, stream);
  else if (d.head_dim == 128)
    launch_partial_g<4>(a, G, grid, stream);
  else
    launch_partial_g<8>(a, G, grid, stream);
  FB_CUDA_CHECK(cudaGetLastError());
  sdpa_combine_kernel<<<dim3(static_cast<unsigned>(d.n_heads), static_cast<unsigned>(T)), d.head_dim, 0,
                        stream>>>(workspace, T, d.n_heads, d.head_dim, a.splits, gate, ldg, gstride, out);
  FB_CUDA_CHECK(cudaGetLastError());
}

}  // namespace fb::cuda
