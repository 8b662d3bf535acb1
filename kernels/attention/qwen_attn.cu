#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/attention/qwen_attn.cuh"
#include "kernels/attention/qwen_attn_device.cuh"
#include "kernels/common/cuda_check.h"
#include "reference/formats/half.h"

// The SDPA (split-K partials + combine) lives in qwen_sdpa.cu.
namespace fb::cuda {
namespace {

using namespace qwen_detail;
constexpr int kVec = 8;

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
  // The SDPA partial that follows is launched programmatically and waits for this grid to finish
  // before it reads q or the caches; letting it be scheduled now hides its launch gap.
  asm volatile("griddepcontrol.launch_dependents;\n" ::);
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

unsigned blocks_for(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

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
  // The SDPA partial (launched programmatically after this kernel) wants the largest shared-memory
  // carveout; asking for it here too spares an SM reconfiguration between the two.
  static const bool configured = [] {
    FB_CUDA_CHECK(cudaFuncSetAttribute(prep_kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                       cudaSharedmemCarveoutMaxShared));
    return true;
  }();
  (void)configured;
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

}  // namespace fb::cuda
