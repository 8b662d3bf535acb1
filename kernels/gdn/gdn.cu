#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/common/cuda_check.h"
#include "kernels/gdn/gdn.cuh"

namespace fb::cuda {

namespace {

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("gdn: " + what);
}
bool aligned(const void* p, uintptr_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; }

__device__ __forceinline__ float bf(const __nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float silu(float v) { return __fdiv_rn(v, __fadd_rn(1.0f, expf(-v))); }

// ---- depthwise causal conv, kernel 4 ------------------------------------------------------------

// One thread per channel: the 4-input window slides over the T tokens in registers; products are
// fp32 and summed in tap order (executorch's manual form), SiLU in fp32, the state written once.
// Tokens go four at a time, their inputs all requested before the first is used: a loop of one
// token per iteration waits a full load latency per token (T = 4: 3.2 -> 2.7 us back-to-back, H200).
__global__ void __launch_bounds__(256)
    conv_manual_kernel(const __nv_bfloat16* __restrict__ x, int64_t ldx, int64_t T, int64_t C,
                       __nv_bfloat16* __restrict__ state, const float* __restrict__ w,
                       __nv_bfloat16* __restrict__ out) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const float4 wv = __ldg(reinterpret_cast<const float4*>(w) + c);
  // The 4-entry state row is one 8-byte load and store (the API requires state % 8 == 0).
  alignas(8) __nv_bfloat16 last[4];
  *reinterpret_cast<uint2*>(last) = *reinterpret_cast<const uint2*>(state + 4 * c);
  float win[4] = {bf(last[0]), bf(last[1]), bf(last[2]), bf(last[3])};
  auto step = [&](__nv_bfloat16 xb, int64_t t) {
    win[0] = win[1], win[1] = win[2], win[2] = win[3], win[3] = bf(xb);
    last[0] = last[1], last[1] = last[2], last[2] = last[3], last[3] = xb;
    float acc = __fmul_rn(win[0], wv.x);
    acc = __fadd_rn(acc, __fmul_rn(win[1], wv.y));
    acc = __fadd_rn(acc, __fmul_rn(win[2], wv.z));
    acc = __fadd_rn(acc, __fmul_rn(win[3], wv.w));
    out[t * C + c] = __float2bfloat16_rn(silu(acc));
  };
  int64_t t = 0;
  for (; t + 4 <= T; t += 4) {
    __nv_bfloat16 xb[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) xb[j] = x[(t + j) * ldx + c];
#pragma unroll
    for (int j = 0; j < 4; ++j) step(xb[j], t + j);
  }
  for (; t < T; ++t) step(x[t * ldx + c], t);
  *reinterpret_cast<uint2*>(state + 4 * c) = *reinterpret_cast<const uint2*>(last);
}

// Naive twin, step 1: inp[c][0..K+T) = cat(state[c], x[:, c]) in fp32.
__global__ void conv_pad_kernel(const __nv_bfloat16* __restrict__ x, int64_t ldx, int64_t T, int64_t C, int K,
                                const __nv_bfloat16* __restrict__ state, float* __restrict__ inp) {
  const int64_t L = K + T;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= C * L) return;
  const int64_t c = i / L, j = i % L;
  inp[i] = j < K ? bf(state[c * K + j]) : bf(x[(j - K) * ldx + c]);
}
// Step 2: conv1d over the padded input, fma-accumulated (what a textbook conv kernel does).
__global__ void conv_fma_kernel(const float* __restrict__ inp, int64_t T, int64_t C, int K,
                                const float* __restrict__ w, float* __restrict__ acc_out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= T * C) return;
  const int64_t t = i / C, c = i % C;
  const float* in = inp + c * (K + T) + t + 1;
  float acc = 0.0f;
  for (int j = 0; j < K; ++j) acc = __fmaf_rn(in[j], w[c * K + j], acc);
  acc_out[i] = acc;
}
// Step 3: SiLU to bf16. Step 4: the state keeps the last K inputs.
__global__ void conv_silu_kernel(const float* __restrict__ acc, int64_t n, __nv_bfloat16* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __float2bfloat16_rn(silu(acc[i]));
}
__global__ void conv_state_kernel(const float* __restrict__ inp, int64_t T, int64_t C, int K,
                                  __nv_bfloat16* __restrict__ state) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= C * K) return;
  const int64_t c = i / K, j = i % K;
  state[i] = __float2bfloat16_rn(inp[c * (K + T) + T + j]);  // exact: a bf16 input
}

unsigned blocks_for(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

// ---- gated delta rule ---------------------------------------------------------------------------

// x / max(|x|, 1e-6) * mul over one head of dk = 32 * kPer values, by one warp. The butterfly leaves
// the same sum in every lane (each level adds the same two numbers in both lanes).
template <int kPer>
__device__ __forceinline__ void l2norm_warp(const __nv_bfloat16* __restrict__ x, float mul, float* dst,
                                            int lane) {
  float v[kPer];
  float ss = 0.0f;
#pragma unroll
  for (int c = 0; c < kPer; ++c) {
    v[c] = bf(x[c * 32 + lane]);
    ss = __fmaf_rn(v[c], v[c], ss);
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) ss = __fadd_rn(ss, __shfl_xor_sync(0xFFFFFFFFu, ss, off));
  const float inv = __frcp_rn(fmaxf(__fsqrt_rn(ss), 1e-6f));
#pragma unroll
  for (int c = 0; c < kPer; ++c) dst[c * 32 + lane] = __fmul_rn(__fmul_rn(v[c], inv), mul);
}

struct Gates {
  float beta, decay;
};
__device__ __forceinline__ Gates gates_of(float b, float a, float A, float dt_bias) {
  const float beta = __frcp_rn(__fadd_rn(1.0f, expf(-b)));
  const float x = __fadd_rn(a, dt_bias);
  const float sp = x > 20.0f ? x : log1pf(expf(x));
  return {beta, expf(__fmul_rn(A, sp))};
}

constexpr int kSlice = 32;   // dv columns per block (a warp's lanes)
constexpr int kWarpsDR = 8;  // each warp owns dk / 8 rows of the slice

struct DeltaArgs {
  const __nv_bfloat16* qkv;  // [T][conv_dim]
  const __nv_bfloat16* ba;
  int64_t ldba;
  const float* ssm_a;
  const float* dt_bias;
  const float* qk;     // prenormed: [T][2][k_heads][dk]
  const float* gates;  // prenormed: [T][v_heads][2]
  float* state;
  __nv_bfloat16* o;
  int64_t T;
  int k_heads, v_heads, dv;
  float q_scale;
};

// Block (v-head h, 32-column slice of dv), 256 threads: lane = column, warp w = rows [w R, w R + R)
// of the state slice, held in registers across all T tokens. Per token: S *= decay; kv = S^T k
// (per-warp partial sums, combined in warp order through shared memory); delta = beta (v - kv);
// S += k delta^T; o = S^T q (combined the same way). Three barriers per token.
template <int DK, bool kPrenormed>
__global__ void __launch_bounds__(kWarpsDR * 32) delta_rule_kernel(DeltaArgs p) {
  constexpr int R = DK / kWarpsDR;
  const int h = blockIdx.x, slice = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int hk = h / (p.v_heads / p.k_heads);
  const int64_t key_dim = int64_t{p.k_heads} * DK, conv_dim = 2 * key_dim + int64_t{p.v_heads} * p.dv;
  const int col = slice * kSlice + lane;
  __shared__ float qn[DK], kn[DK], red[kWarpsDR][kSlice], red2[kWarpsDR][kSlice];
  __shared__ Gates g;
  float* S_g = p.state + (static_cast<int64_t>(h) * DK + warp * R) * p.dv + col;
  float S[R];
#pragma unroll
  for (int r = 0; r < R; ++r) S[r] = S_g[static_cast<int64_t>(r) * p.dv];
  for (int64_t t = 0; t < p.T; ++t) {
    const __nv_bfloat16* row = p.qkv + t * conv_dim;
    if constexpr (kPrenormed) {
      const float* qk = p.qk + t * 2 * key_dim;
      for (int i = threadIdx.x; i < DK; i += blockDim.x) {
        qn[i] = qk[hk * DK + i];
        kn[i] = qk[key_dim + hk * DK + i];
      }
      if (threadIdx.x == 0) g = {p.gates[(t * p.v_heads + h) * 2], p.gates[(t * p.v_heads + h) * 2 + 1]};
    } else {
      if (warp == 0) l2norm_warp<DK / 32>(row + hk * DK, p.q_scale, qn, lane);
      if (warp == 1) l2norm_warp<DK / 32>(row + key_dim + hk * DK, 1.0f, kn, lane);
      if (warp == 2 && lane == 0) {
        const __nv_bfloat16* ba = p.ba + t * p.ldba;
        g = gates_of(bf(ba[h]), bf(ba[p.v_heads + h]), p.ssm_a[h], p.dt_bias[h]);
      }
    }
    const float v = bf(row[2 * key_dim + static_cast<int64_t>(h) * p.dv + col]);
    __syncthreads();
    const Gates gt = g;
    float kv = 0.0f;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      S[r] = __fmul_rn(S[r], gt.decay);
      kv = __fmaf_rn(S[r], kn[warp * R + r], kv);
    }
    red[warp][lane] = kv;
    __syncthreads();
    float kv_all = red[0][lane];
#pragma unroll
    for (int w = 1; w < kWarpsDR; ++w) kv_all = __fadd_rn(kv_all, red[w][lane]);
    const float delta = __fmul_rn(gt.beta, __fsub_rn(v, kv_all));
    float op = 0.0f;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      S[r] = __fmaf_rn(kn[warp * R + r], delta, S[r]);
      op = __fmaf_rn(S[r], qn[warp * R + r], op);
    }
    red2[warp][lane] = op;
    __syncthreads();
    if (warp == 0) {
      float o = red2[0][lane];
#pragma unroll
      for (int w = 1; w < kWarpsDR; ++w) o = __fadd_rn(o, red2[w][lane]);
      p.o[(t * p.v_heads + h) * p.dv + col] = __float2bfloat16_rn(o);
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) S_g[static_cast<int64_t>(r) * p.dv] = S[r];
}

// Twin piece: one warp per (token, q|k, k-head) row.
template <int kPer>
__global__ void __launch_bounds__(256)
    qk_l2norm_kernel(const __nv_bfloat16* __restrict__ qkv, int64_t T, int k_heads, int64_t conv_dim,
                     float q_scale, float* __restrict__ qk) {
  constexpr int DK = kPer * 32;
  const int64_t wid = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (wid >= T * 2 * k_heads) return;
  const int64_t t = wid / (2 * k_heads);
  const int which = static_cast<int>(wid / k_heads % 2), hk = static_cast<int>(wid % k_heads);
  const int64_t key_dim = int64_t{k_heads} * DK;
  l2norm_warp<kPer>(qkv + t * conv_dim + which * key_dim + hk * DK, which == 0 ? q_scale : 1.0f,
                    qk + t * 2 * key_dim + which * key_dim + hk * DK, threadIdx.x & 31);
}

__global__ void gates_kernel(const __nv_bfloat16* __restrict__ ba, int64_t ldba, int64_t T, int v_heads,
                             const float* __restrict__ ssm_a, const float* __restrict__ dt_bias,
                             float* __restrict__ gates) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= T * v_heads) return;
  const int64_t t = i / v_heads;
  const int h = static_cast<int>(i % v_heads);
  const Gates g = gates_of(bf(ba[t * ldba + h]), bf(ba[t * ldba + v_heads + h]), ssm_a[h], dt_bias[h]);
  gates[2 * i] = g.beta;
  gates[2 * i + 1] = g.decay;
}

// ---- gated RMSNorm ------------------------------------------------------------------------------

template <int kPer>
__global__ void __launch_bounds__(256)
    gated_norm_kernel(const __nv_bfloat16* __restrict__ o, const __nv_bfloat16* __restrict__ z, int64_t ldz,
                      const float* __restrict__ w, int64_t T, int v_heads, float eps,
                      __nv_bfloat16* __restrict__ out) {
  constexpr int D = kPer * 32;
  const int64_t wid = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (wid >= T * v_heads) return;
  const int lane = threadIdx.x & 31;
  const int64_t t = wid / v_heads;
  const int h = static_cast<int>(wid % v_heads);
  const __nv_bfloat16* orow = o + wid * D;
  const __nv_bfloat16* zrow = z + t * ldz + static_cast<int64_t>(h) * D;
  float v[kPer];
  float ss = 0.0f;
#pragma unroll
  for (int c = 0; c < kPer; ++c) {
    v[c] = bf(orow[c * 32 + lane]);
    ss = __fmaf_rn(v[c], v[c], ss);
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) ss = __fadd_rn(ss, __shfl_xor_sync(0xFFFFFFFFu, ss, off));
  const float inv = __frsqrt_rn(__fadd_rn(__fdiv_rn(ss, static_cast<float>(D)), eps));
#pragma unroll
  for (int c = 0; c < kPer; ++c) {
    const int i = c * 32 + lane;
    const float n = __bfloat162float(__float2bfloat16_rn(__fmul_rn(v[c], inv)));
    out[wid * D + i] = __float2bfloat16_rn(__fmul_rn(__fmul_rn(w[i], n), silu(bf(zrow[i]))));
  }
}

void check_dims(const GdnDims& d) {
  require(d.k_heads >= 1 && d.v_heads >= d.k_heads && d.v_heads % d.k_heads == 0, "v_heads % k_heads");
  require(d.dk == 64 || d.dk == 128, "dk must be 64 or 128");
  require(d.dv >= 32 && d.dv % 32 == 0, "dv must be a positive multiple of 32");
}

template <bool kPrenormed>
void launch_delta(const GdnDims& d, const DeltaArgs& a, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(d.v_heads), static_cast<unsigned>(d.dv / kSlice));
  if (d.dk == 128)
    delta_rule_kernel<128, kPrenormed><<<grid, kWarpsDR * 32, 0, stream>>>(a);
  else
    delta_rule_kernel<64, kPrenormed><<<grid, kWarpsDR * 32, 0, stream>>>(a);
  FB_CUDA_CHECK_LAUNCH();
}

}  // namespace

void causal_conv_silu(const __nv_bfloat16* x, int64_t ldx, int64_t T, int64_t C, __nv_bfloat16* state,
                      const float* w, int K, __nv_bfloat16* out, cudaStream_t stream) {
  require(K == 4, "the manual conv is written for kernel 4");
  require(T >= 1 && C >= 1 && ldx >= C, "need T >= 1, C >= 1, ldx >= C");
  require(x && state && w && out && aligned(state, 8) && aligned(w, 16), "null or misaligned pointer");
  conv_manual_kernel<<<blocks_for(C, 256), 256, 0, stream>>>(x, ldx, T, C, state, w, out);
  FB_CUDA_CHECK_LAUNCH();
}

size_t conv_naive_workspace_floats(int64_t T, int64_t C, int K) {
  return static_cast<size_t>(C * (K + T) + T * C);
}

void causal_conv_silu_naive(const __nv_bfloat16* x, int64_t ldx, int64_t T, int64_t C, __nv_bfloat16* state,
                            const float* w, int K, __nv_bfloat16* out, float* workspace,
                            cudaStream_t stream) {
  require(K >= 1 && T >= 1 && C >= 1 && ldx >= C, "bad conv shape");
  require(x && state && w && out && workspace, "null pointer");
  float* inp = workspace;
  float* acc = workspace + C * (K + T);
  conv_pad_kernel<<<blocks_for(C * (K + T), 256), 256, 0, stream>>>(x, ldx, T, C, K, state, inp);
  FB_CUDA_CHECK_LAUNCH();
  conv_fma_kernel<<<blocks_for(T * C, 256), 256, 0, stream>>>(inp, T, C, K, w, acc);
  FB_CUDA_CHECK_LAUNCH();
  conv_silu_kernel<<<blocks_for(T * C, 256), 256, 0, stream>>>(acc, T * C, out);
  FB_CUDA_CHECK_LAUNCH();
  conv_state_kernel<<<blocks_for(C * K, 256), 256, 0, stream>>>(inp, T, C, K, state);
  FB_CUDA_CHECK_LAUNCH();
}

void gated_delta_rule(const GdnDims& d, const __nv_bfloat16* qkv, int64_t T, const __nv_bfloat16* ba,
                      int64_t ldba, const float* ssm_a, const float* dt_bias, float* state, __nv_bfloat16* o,
                      cudaStream_t stream) {
  check_dims(d);
  require(T >= 1 && ldba >= 2 * d.v_heads, "need T >= 1 and ldba >= 2 v_heads");
  require(qkv && ba && ssm_a && dt_bias && state && o, "null pointer");
  const DeltaArgs a{qkv,       ba,
                    ldba,      ssm_a,
                    dt_bias,   nullptr,
                    nullptr,   state,
                    o,         T,
                    d.k_heads, d.v_heads,
                    d.dv,      static_cast<float>(1.0 / std::sqrt(static_cast<double>(d.dk)))};
  launch_delta<false>(d, a, stream);
}

void gdn_qk_l2norm(const GdnDims& d, const __nv_bfloat16* qkv, int64_t T, float* qk, cudaStream_t stream) {
  check_dims(d);
  require(T >= 1 && qkv && qk, "bad arguments");
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d.dk)));
  const int64_t threads = T * 2 * d.k_heads * 32;
  if (d.dk == 128)
    qk_l2norm_kernel<4>
        <<<blocks_for(threads, 256), 256, 0, stream>>>(qkv, T, d.k_heads, d.conv_dim(), scale, qk);
  else
    qk_l2norm_kernel<2>
        <<<blocks_for(threads, 256), 256, 0, stream>>>(qkv, T, d.k_heads, d.conv_dim(), scale, qk);
  FB_CUDA_CHECK_LAUNCH();
}

void gdn_gates(const GdnDims& d, const __nv_bfloat16* ba, int64_t ldba, int64_t T, const float* ssm_a,
               const float* dt_bias, float* gates, cudaStream_t stream) {
  check_dims(d);
  require(T >= 1 && ldba >= 2 * d.v_heads && ba && ssm_a && dt_bias && gates, "bad arguments");
  gates_kernel<<<blocks_for(T * d.v_heads, 256), 256, 0, stream>>>(ba, ldba, T, d.v_heads, ssm_a, dt_bias,
                                                                   gates);
  FB_CUDA_CHECK_LAUNCH();
}

void gated_delta_rule_prenormed(const GdnDims& d, const float* qk, const __nv_bfloat16* qkv,
                                const float* gates, int64_t T, float* state, __nv_bfloat16* o,
                                cudaStream_t stream) {
  check_dims(d);
  require(T >= 1 && qk && qkv && gates && state && o, "bad arguments");
  const DeltaArgs a{qkv,   nullptr, 0, nullptr,   nullptr,   qk,   gates,
                    state, o,       T, d.k_heads, d.v_heads, d.dv, 0.0f};
  launch_delta<true>(d, a, stream);
}

void gated_rms_norm(const __nv_bfloat16* o, const __nv_bfloat16* z, int64_t ldz, const float* w, int64_t T,
                    int v_heads, int dv, float eps, __nv_bfloat16* out, cudaStream_t stream) {
  require(T >= 1 && v_heads >= 1 && dv % 32 == 0 && dv >= 32 && dv <= 256,
          "need dv % 32 == 0, 32 <= dv <= 256");
  require(ldz >= int64_t{v_heads} * dv && o && z && w && out, "bad arguments");
  const int64_t threads = T * v_heads * 32;
  const unsigned grid = blocks_for(threads, 256);
  switch (dv / 32) {
    case 1:
      gated_norm_kernel<1><<<grid, 256, 0, stream>>>(o, z, ldz, w, T, v_heads, eps, out);
      break;
    case 2:
      gated_norm_kernel<2><<<grid, 256, 0, stream>>>(o, z, ldz, w, T, v_heads, eps, out);
      break;
    case 4:
      gated_norm_kernel<4><<<grid, 256, 0, stream>>>(o, z, ldz, w, T, v_heads, eps, out);
      break;
    case 8:
      gated_norm_kernel<8><<<grid, 256, 0, stream>>>(o, z, ldz, w, T, v_heads, eps, out);
      break;
    default:
      require(false, "dv must be 32, 64, 128 or 256");
  }
  FB_CUDA_CHECK_LAUNCH();
}

}  // namespace fb::cuda
