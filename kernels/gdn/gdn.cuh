#pragma once
// qwen3.5-moe GatedDeltaNet kernels (notes/models.md §5.2; CPU truth reference/gdn/gdn_ref.h), for
// decode (T = 1..4) and prefill (any T, sequential over tokens). The in_proj itself is the W4A8
// matvec over the load-time fused rows [qkv | z | b | a] (kernels/gemv); these kernels read its bf16
// output in place through row strides.
//
// Fusions and twins (the library is built with --fmad=false and uses explicit _rn intrinsics):
//   causal_conv_silu (manual shifted multiply-add: fp32 products summed in tap order, state update
//     in the same pass)  vs  causal_conv_silu_naive (pad/concat kernel, fma-accumulated conv kernel,
//     SiLU kernel, state kernel): the sums round differently, so they agree within fp32 rounding.
//   gated_delta_rule (L2 norm of q/k, beta, decay and the recurrence in one kernel)  vs
//     gdn_qk_l2norm + gdn_gates + gated_delta_rule_prenormed: the same device functions on fp32
//     intermediates, so the outputs and states are bit-identical.
//
// State layouts: conv state bf16 [C][K] (the last K inputs, oldest first; they are bf16 inputs, so
// bf16 holds them exactly); recurrent state fp32 [v_heads][dk][dv]. Both updated in place; a
// launch reads nothing from the host, so a decode step can be captured in a CUDA graph.
#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace fb::cuda {

struct GdnDims {
  int k_heads = 0, v_heads = 0, dk = 0, dv = 0, conv_kernel = 4;
  int64_t key_dim() const { return int64_t{k_heads} * dk; }
  int64_t value_dim() const { return int64_t{v_heads} * dv; }
  int64_t conv_dim() const { return 2 * key_dim() + value_dim(); }
};

// x: row t at x + t * ldx, its first C columns are the conv input; state: bf16 [C][K]; w: fp32
// [C][K]; out: [T][C] bf16 = silu(conv). C % 2 == 0, K == 4, ldx >= C.
void causal_conv_silu(const __nv_bfloat16* x, int64_t ldx, int64_t T, int64_t C, __nv_bfloat16* state,
                      const float* w, int K, __nv_bfloat16* out, cudaStream_t stream);
// The unfused twin; workspace: conv_naive_workspace_floats(T, C, K) floats.
size_t conv_naive_workspace_floats(int64_t T, int64_t C, int K);
void causal_conv_silu_naive(const __nv_bfloat16* x, int64_t ldx, int64_t T, int64_t C, __nv_bfloat16* state,
                            const float* w, int K, __nv_bfloat16* out, float* workspace, cudaStream_t stream);

// qkv: [T][conv_dim] conv output (q | k | v); b of token t, v-head h at ba[t * ldba + h], a at
// ba[t * ldba + v_heads + h] (the in_proj output's last 2 * v_heads columns); ssm_a (= -exp(A_log)),
// dt_bias: fp32 [v_heads]; state fp32 [v_heads][dk][dv] in/out; o: [T][v_heads][dv] bf16.
// dk in {64, 128}, dv % 32 == 0, v_heads % k_heads == 0.
void gated_delta_rule(const GdnDims& d, const __nv_bfloat16* qkv, int64_t T, const __nv_bfloat16* ba,
                      int64_t ldba, const float* ssm_a, const float* dt_bias, float* state, __nv_bfloat16* o,
                      cudaStream_t stream);

// Twin pieces. qk: fp32 [T][2][k_heads][dk] (q normalised and scaled by dk^-1/2, k normalised);
// gates: fp32 [T][v_heads][2] = {beta, decay = exp(g)}.
void gdn_qk_l2norm(const GdnDims& d, const __nv_bfloat16* qkv, int64_t T, float* qk, cudaStream_t stream);
void gdn_gates(const GdnDims& d, const __nv_bfloat16* ba, int64_t ldba, int64_t T, const float* ssm_a,
               const float* dt_bias, float* gates, cudaStream_t stream);
void gated_delta_rule_prenormed(const GdnDims& d, const float* qk, const __nv_bfloat16* qkv,
                                const float* gates, int64_t T, float* state, __nv_bfloat16* o,
                                cudaStream_t stream);

// Gated RMSNorm per v-head: out[t][h][i] = bf16(w[i] * bf16(rmsnorm(o[t][h])[i]) * silu(z[t][h*dv+i]))
// with z of token t at z + t * ldz. dv % 32 == 0, dv <= 256.
void gated_rms_norm(const __nv_bfloat16* o, const __nv_bfloat16* z, int64_t ldz, const float* w, int64_t T,
                    int v_heads, int dv, float eps, __nv_bfloat16* out, cudaStream_t stream);

}  // namespace fb::cuda
