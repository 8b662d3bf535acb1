#include <algorithm>
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

// One output of the manual form: products in fp32 summed in tap order, SiLU in fp32. Both conv kernels
// call it, which is what makes their outputs bit-identical.
__device__ __forceinline__ __nv_bfloat16 conv4_silu(float a, float b, float c, float d, float4 w) {
  float acc = __fmul_rn(a, w.x);
  acc = __fadd_rn(acc, __fmul_rn(b, w.y));
  acc = __fadd_rn(acc, __fmul_rn(c, w.z));
  acc = __fadd_rn(acc, __fmul_rn(d, w.w));
  return __float2bfloat16_rn(silu(acc));
}

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
    out[t * C + c] = conv4_silu(win[0], win[1], win[2], win[3], wv);
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

// Prefill form (T > 4): one thread per (channel, run of kConvRun tokens), so T = 512 fills the GPU
// (the sliding form gives 8192 channels only 32 blocks and walks 512 tokens each: 186 us vs the naive
// twin's 22 us on H200). Each run reads the 3 inputs before it (x, or the state for run 0) and does
// the sliding form's exact per-output arithmetic, so the outputs are bit-identical to it. Only run 0
// reads the old state, so its thread also writes the new one (x's last 4 rows, T > 4): no other
// thread touches the state, no second launch.
constexpr int kConvRun = 8;
__global__ void __launch_bounds__(256)
    conv_runs_kernel(const __nv_bfloat16* __restrict__ x, int64_t ldx, int64_t T, int64_t C,
                     __nv_bfloat16* __restrict__ state, const float* __restrict__ w,
                     __nv_bfloat16* __restrict__ out) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const float4 wv = __ldg(reinterpret_cast<const float4*>(w) + c);
  const int64_t runs = (T + kConvRun - 1) / kConvRun;
  for (int64_t r = blockIdx.y; r < runs; r += gridDim.y) {
    const int64_t t0 = r * kConvRun;
    // in[j] = input of token t0 - 3 + j; all loads issued before the first use.
    __nv_bfloat16 in[kConvRun + 3];
    alignas(8) __nv_bfloat16 fresh[4];
    if (t0 == 0) {
      alignas(8) __nv_bfloat16 old[4];
      *reinterpret_cast<uint2*>(old) = *reinterpret_cast<const uint2*>(state + 4 * c);
      in[0] = old[1], in[1] = old[2], in[2] = old[3];
#pragma unroll
      for (int j = 0; j < 4; ++j) fresh[j] = x[(T - 4 + j) * ldx + c];
    } else {
#pragma unroll
      for (int j = 0; j < 3; ++j) in[j] = x[(t0 - 3 + j) * ldx + c];
    }
#pragma unroll
    for (int j = 0; j < kConvRun; ++j)
      if (t0 + j < T) in[3 + j] = x[(t0 + j) * ldx + c];
#pragma unroll
    for (int j = 0; j < kConvRun; ++j) {
      if (t0 + j >= T) break;
      out[(t0 + j) * C + c] = conv4_silu(bf(in[j]), bf(in[j + 1]), bf(in[j + 2]), bf(in[j + 3]), wv);
    }
    if (t0 == 0) *reinterpret_cast<uint2*>(state + 4 * c) = *reinterpret_cast<const uint2*>(fresh);
  }
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

// x / max(|x|, 1e-6) * mul over one head of dk = 32 * kPer values, by one warp; lane holds
// x[c * 32 + lane] in xr[c]. The butterfly leaves the same sum in every lane (each level adds the same
// two numbers in both lanes).
template <int kPer>
__device__ __forceinline__ void l2norm_regs(const __nv_bfloat16 (&xr)[kPer], float mul, float* dst,
                                            int lane) {
  float v[kPer];
  float ss = 0.0f;
#pragma unroll
  for (int c = 0; c < kPer; ++c) {
    v[c] = bf(xr[c]);
    ss = __fmaf_rn(v[c], v[c], ss);
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) ss = __fadd_rn(ss, __shfl_xor_sync(0xFFFFFFFFu, ss, off));
  const float inv = __frcp_rn(fmaxf(__fsqrt_rn(ss), 1e-6f));
#pragma unroll
  for (int c = 0; c < kPer; ++c) dst[c * 32 + lane] = __fmul_rn(__fmul_rn(v[c], inv), mul);
}
template <int kPer>
__device__ __forceinline__ void l2norm_warp(const __nv_bfloat16* __restrict__ x, float mul, float* dst,
                                            int lane) {
  __nv_bfloat16 xr[kPer];
#pragma unroll
  for (int c = 0; c < kPer; ++c) xr[c] = x[c * 32 + lane];
  l2norm_regs<kPer>(xr, mul, dst, lane);
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

// One token's inputs as this thread loads them, two tokens ahead of their use. Fused: warps 0 / 1
// hold q / k of the k-head (lane: elements lane, lane + 32, ...), warp 2 lane 0 holds b and a.
// Prenormed: thread i < DK holds q[i] and k[i], thread 0 the gates. Every thread: v of its column.
template <int DK, bool kPrenormed>
struct TokenInputs;
template <int DK>
struct TokenInputs<DK, false> {
  __nv_bfloat16 qk[DK / 32], b, a, v;
};
template <int DK>
struct TokenInputs<DK, true> {
  float q, k, beta, decay;
  __nv_bfloat16 v;
};

// Block (v-head h, 32-column slice of dv), 256 threads: lane = column, warp w = rows [w R, w R + R)
// of the state slice, held in registers across all T tokens. Per token: S *= decay; kv = S^T k
// (per-warp partial sums, combined in warp order through shared memory); delta = beta (v - kv);
// S += k delta^T; o = S^T q (combined the same way).
// Prefill is latency-bound (one block per SM, a chain of dependent steps per token), so the token
// loop is software-pipelined without touching the arithmetic: token t + 2's inputs are requested
// at the top of token t, token t + 1's normalised q/k and gates are computed into the other half
// of double-buffered shared memory while token t finishes, and the output row is summed by the
// last warp. Two barriers per token instead of three and no load latency on the token chain.
template <int DK, bool kPrenormed>
__global__ void __launch_bounds__(kWarpsDR * 32) delta_rule_kernel(DeltaArgs p) {
  constexpr int R = DK / kWarpsDR;
  using In = TokenInputs<DK, kPrenormed>;
  const int h = blockIdx.x, slice = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int hk = h / (p.v_heads / p.k_heads);
  const int64_t key_dim = int64_t{p.k_heads} * DK, conv_dim = 2 * key_dim + int64_t{p.v_heads} * p.dv;
  const int col = slice * kSlice + lane;
  __shared__ alignas(16) float qn[2][DK], kn[2][DK];
  __shared__ float red[kWarpsDR][kSlice], red2[kWarpsDR][kSlice];
  __shared__ Gates g[2];
  float A_h = 0.0f, dt_h = 0.0f;
  if constexpr (!kPrenormed) {
    if (warp == 2 && lane == 0) A_h = p.ssm_a[h], dt_h = p.dt_bias[h];
  }

  auto load = [&](int64_t t, In& in) {
    const __nv_bfloat16* row = p.qkv + t * conv_dim;
    in.v = row[2 * key_dim + static_cast<int64_t>(h) * p.dv + col];
    if constexpr (kPrenormed) {
      const float* qk = p.qk + t * 2 * key_dim;
      if (threadIdx.x < DK) {
        in.q = qk[hk * DK + threadIdx.x];
        in.k = qk[key_dim + hk * DK + threadIdx.x];
      }
      if (threadIdx.x == 0) {
        in.beta = p.gates[(t * p.v_heads + h) * 2];
        in.decay = p.gates[(t * p.v_heads + h) * 2 + 1];
      }
    } else {
      if (warp < 2) {
#pragma unroll
        for (int c = 0; c < DK / 32; ++c) in.qk[c] = row[warp * key_dim + hk * DK + c * 32 + lane];
      }
      if (warp == 2 && lane == 0) {
        const __nv_bfloat16* ba = p.ba + t * p.ldba;
        in.b = ba[h];
        in.a = ba[p.v_heads + h];
      }
    }
  };
  // Normalised q, k and the gates of a loaded token into shared buffer buf.
  auto publish = [&](const In& in, int buf) {
    if constexpr (kPrenormed) {
      if (threadIdx.x < DK) {
        qn[buf][threadIdx.x] = in.q;
        kn[buf][threadIdx.x] = in.k;
      }
      if (threadIdx.x == 0) g[buf] = {in.beta, in.decay};
    } else {
      if (warp == 0) l2norm_regs<DK / 32>(in.qk, p.q_scale, qn[buf], lane);
      if (warp == 1) l2norm_regs<DK / 32>(in.qk, 1.0f, kn[buf], lane);
      if (warp == 2 && lane == 0) g[buf] = gates_of(bf(in.b), bf(in.a), A_h, dt_h);
    }
  };

  float* S_g = p.state + (static_cast<int64_t>(h) * DK + warp * R) * p.dv + col;
  float S[R];
#pragma unroll
  for (int r = 0; r < R; ++r) S[r] = S_g[static_cast<int64_t>(r) * p.dv];
  In in_a, in_b;
  load(0, in_a);
  if (p.T > 1) load(1, in_b);
  publish(in_a, 0);
  float v = bf(in_a.v);
  __syncthreads();

  // Token t: next holds token t + 1's inputs, spare receives token t + 2's.
  auto token = [&](int64_t t, const In& next, In& spare) {
    const int buf = static_cast<int>(t & 1);
    if (t + 2 < p.T) load(t + 2, spare);
    const Gates gt = g[buf];
    const float4* k4 = reinterpret_cast<const float4*>(kn[buf] + warp * R);
    const float4* q4 = reinterpret_cast<const float4*>(qn[buf] + warp * R);
    float kv = 0.0f;
#pragma unroll
    for (int r4 = 0; r4 < R / 4; ++r4) {
      const float4 k = k4[r4];
      const float kr[4] = {k.x, k.y, k.z, k.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        float& s = S[4 * r4 + j];
        s = __fmul_rn(s, gt.decay);
        kv = __fmaf_rn(s, kr[j], kv);
      }
    }
    red[warp][lane] = kv;
    __syncthreads();
    float kv_all = red[0][lane];
#pragma unroll
    for (int w = 1; w < kWarpsDR; ++w) kv_all = __fadd_rn(kv_all, red[w][lane]);
    const float delta = __fmul_rn(gt.beta, __fsub_rn(v, kv_all));
    float op = 0.0f;
#pragma unroll
    for (int r4 = 0; r4 < R / 4; ++r4) {
      const float4 k = k4[r4], q = q4[r4];
      const float kr[4] = {k.x, k.y, k.z, k.w}, qr[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        float& s = S[4 * r4 + j];
        s = __fmaf_rn(kr[j], delta, s);
        op = __fmaf_rn(s, qr[j], op);
      }
    }
    red2[warp][lane] = op;
    if (t + 1 < p.T) {
      publish(next, buf ^ 1);
      v = bf(next.v);
    }
    __syncthreads();
    if (warp == kWarpsDR - 1) {
      float o = red2[0][lane];
#pragma unroll
      for (int w = 1; w < kWarpsDR; ++w) o = __fadd_rn(o, red2[w][lane]);
      p.o[(t * p.v_heads + h) * p.dv + col] = __float2bfloat16_rn(o);
    }
  };
  // Unrolled by two so the two input sets swap roles without register copies (a copy of a register
  // whose load is in flight would wait for it).
  for (int64_t t = 0; t < p.T; t += 2) {
    token(t, in_b, in_a);
    if (t + 1 < p.T) token(t + 1, in_a, in_b);
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
  if (T <= 4) {  // decode: the sliding form (T = 1: ~2.1 us, H200)
    conv_manual_kernel<<<blocks_for(C, 256), 256, 0, stream>>>(x, ldx, T, C, state, w, out);
  } else {
    const int64_t runs = (T + kConvRun - 1) / kConvRun;
    const dim3 grid(blocks_for(C, 256), static_cast<unsigned>(std::min<int64_t>(runs, 65535)));
    conv_runs_kernel<<<grid, 256, 0, stream>>>(x, ldx, T, C, state, w, out);
  }
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
