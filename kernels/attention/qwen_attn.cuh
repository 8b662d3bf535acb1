#pragma once
// qwen3.5-moe full-attention pieces around the fused q|gate / k / v projection (notes/models.md §5.2):
// the projection output row of a token is [q_h0 | gate_h0 | q_h1 | gate_h1 | ... | k (nkv*hd) | v (nkv*hd)]
// (attn_q holds query and gate interleaved per head; the load-time q+k+v fusion appends k and v).
//
// Fusions and twins (the library is built with --fmad=false and uses explicit _rn intrinsics):
//   qwen_attn_prep (one pass over the projection row: q (1+w)-RMSNorm + partial RoPE -> q buffer;
//     k norm + RoPE and v appended straight into the bf16 KV cache at the token's position)  vs
//     qwen_split_qkv (strided copy into contiguous q / k / v) -> ops rms_norm + rope -> qwen_kv_append.
//     The norm uses the ops kernels' thread->element map and reduction order, so the twins match bit
//     for bit.
//   qwen_sdpa_decode with the output gate fused into the split combine (y = bf16(bf16(attn) *
//     bf16(sigmoid(gate))), gate read in place from the projection row)  vs  the same SDPA writing
//     bf16(attn) then qwen_sigmoid_gate_mul: bit-identical.
//
// SDPA: bf16 K/V caches [nkv][capacity][hd], causal (token t attends positions 0 .. pos[t]), scale
// 1/sqrt(hd), GQA (q head h uses kv head h / (nh / nkv)). Split-K over fixed chunks of `capacity`
// (chosen on the host from the dims, T and capacity only), kv length read in-kernel from the device
// positions, so a launch is graph-safe at any context <= capacity. Tensor-core flash decoding
// (qwen_sdpa.cu): one warp per (split, kv head, 8 / group tokens) serves the whole GQA group from one
// read of K/V; fp32 softmax. One split (large T): no combine launch. hd in {64, 128, 256}, nh / nkv in
// {1, 2, 4, 8}; k/v caches and the workspace 16-byte aligned.
#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "kernels/ops/ops.cuh"

namespace fb::cuda {

struct QwenAttnDims {
  int n_heads = 0, n_kv_heads = 0, head_dim = 0;
  int64_t q_cols() const { return int64_t{2} * n_heads * head_dim; }  // interleaved q|gate
  int64_t kv_cols() const { return int64_t{n_kv_heads} * head_dim; }
  int64_t proj_cols() const { return q_cols() + 2 * kv_cols(); }
};

// proj: row t at proj + t * ldp (>= proj_cols()); q_norm/k_norm fp32 [hd] (1+w); d_pos int32 [T];
// q_out [T][nh][hd]; k_cache/v_cache bf16 [nkv][capacity][hd]: row pos[t] written.
void qwen_attn_prep(const QwenAttnDims& d, const __nv_bfloat16* proj, int64_t ldp, int64_t T,
                    const float* q_norm, const float* k_norm, float eps, const int32_t* d_pos,
                    const RopeParams& rope, __nv_bfloat16* q_out, __nv_bfloat16* k_cache,
                    __nv_bfloat16* v_cache, int64_t capacity, cudaStream_t stream);

// Twin pieces. q [T][nh][hd], gate [T][nh][hd] (may be null: not copied), k, v [T][nkv][hd].
void qwen_split_qkv(const QwenAttnDims& d, const __nv_bfloat16* proj, int64_t ldp, int64_t T,
                    __nv_bfloat16* q, __nv_bfloat16* gate, __nv_bfloat16* k, __nv_bfloat16* v,
                    cudaStream_t stream);
// k, v [T][nkv][hd] -> caches at row pos[t].
void qwen_kv_append(const QwenAttnDims& d, const __nv_bfloat16* k, const __nv_bfloat16* v, int64_t T,
                    const int32_t* d_pos, __nv_bfloat16* k_cache, __nv_bfloat16* v_cache, int64_t capacity,
                    cudaStream_t stream);
// y [T][nh*hd] = bf16(attn * bf16(sigmoid(gate))), gate of token t head h at gate + t*ldg + h*gstride.
void qwen_sigmoid_gate_mul(const __nv_bfloat16* attn, const __nv_bfloat16* gate, int64_t ldg, int64_t gstride,
                           int64_t T, int n_heads, int head_dim, __nv_bfloat16* y, cudaStream_t stream);

// Split count (from the dims, T and capacity only: fixed for a captured graph) and workspace floats.
int qwen_sdpa_splits(const QwenAttnDims& d, int64_t T, int64_t capacity);
size_t qwen_sdpa_workspace_floats(const QwenAttnDims& d, int64_t T, int64_t capacity);
// q [T][nh][hd]; out [T][nh*hd]. gate null: out = bf16(attn). gate non-null: the fused output gate,
// gate of token t head h at gate + t * ldg + h * gstride (the projection row: ldg = ldp, gstride = 2hd,
// gate pointer = proj + hd).
void qwen_sdpa(const QwenAttnDims& d, const __nv_bfloat16* q, const __nv_bfloat16* k_cache,
               const __nv_bfloat16* v_cache, int64_t capacity, int64_t T, const int32_t* d_pos,
               const __nv_bfloat16* gate, int64_t ldg, int64_t gstride, float* workspace, __nv_bfloat16* out,
               cudaStream_t stream);

}  // namespace fb::cuda
