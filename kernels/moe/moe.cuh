#pragma once
// qwen3.5-moe sparse MoE kernels for decode (notes/models.md §5.3; CPU truth reference/moe/moe_ref.h).
// Expert ids and routing weights are read from device memory, so the whole chain is graph-safe.
//
// Pairs: p = t * slots + s for token t and slot s; slots = top_k, or top_k + 1 when the shared
// expert rides along as expert id E (its weights appended after the routed experts at load time,
// its weight sigmoid(w_sh . x) written by the router).
//
// W4A8: activations are quantized per 32 into fb::Q8Block (same contract as
// fb::quantize_activations_q8, bit-exact); weights are symmetric INT4 (executorch fused_moe: u = q+8,
// bf16 scale per group, w = (u - 8) s) or ggml Q4_K blocks read in place ([E][N] rows).
//
// Fusions and twins (bit-exact: the same per-(pair, row) device dot — lanes over 32-weight units, a
// fixed xor reduction — and the same rounding points):
//   GEMM1 fused: one launch over each expert's [gate; up] rows, quantizing x itself (moe_gemm1_quant)
//     vs  moe_quantize_q8, then a gate launch and an up launch (moe_gemm1) writing the two column
//     halves of the same buffer.
//   GEMM2 fused: silu(gate) * up rounded to bf16 and quantized in shared memory, the down matvec,
//     bf16(acc * w_s) per slot summed in fp32 in slot order, one bf16 store  vs
//     moe_silu_mul -> moe_quantize_q8 -> moe_down (fp32 per pair) -> moe_weighted_sum.
// The fused kernels keep the twins' integer dot products and float operations but may hold the
// quantized activations in another order in shared memory (Q4_K: natural order). At T = 1
// moe_gemm2_silu is a launch of 8-block clusters (sm_90) sharing the token's activations.
#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "reference/matvec/q8_block.h"

namespace fb::cuda {

enum class ExpertFormat { sym_int4, q4_k };
const char* to_string(ExpertFormat f);

struct ExpertWeights {
  ExpertFormat format = ExpertFormat::sym_int4;
  int64_t experts = 0, n = 0, k = 0;  // experts (routed + shared), rows per expert, K
  int group = 32;                     // sym_int4: k per bf16 scale (32, 64 or 128)
  const void* qdata = nullptr;        // sym_int4: [E][N][K/2]; q4_k: [E][N][K/256] blocks
  const void* scale = nullptr;        // sym_int4: bf16 [E][N][K/group]
};

// rows x k bf16 -> rows * k/32 blocks. k % 32 == 0.
void moe_quantize_q8(const __nv_bfloat16* x, int64_t rows, int64_t k, Q8Block* q8, cudaStream_t stream);

// Router: logits = W_r x (fp32 weights [E][H], fp32 sums), top_k by value (ties: lower id), softmax
// over them in fp32; with w_shared ([H], may be null) one more slot: id E, weight sigmoid(w_sh . x).
// ids, weights: [T][slots]. logits: workspace fp32 [T][E + 1]. E <= 1024, top_k <= 16, H % 4 == 0.
void moe_router(const __nv_bfloat16* x, const float* w_router, const float* w_shared, int64_t tokens,
                int64_t hidden, int experts, int top_k, float* logits, int32_t* ids, float* weights,
                cudaStream_t stream);

// GEMM1: out[p * ldo + col0 + n] = bf16(W_{ids[p]}[n] . x_{p / slots}) for n < w.n.
// q8x: tokens * k/32 blocks. k % 256 == 0.
void moe_gemm1(const ExpertWeights& w, const Q8Block* q8x, const int32_t* ids, int64_t tokens, int slots,
               __nv_bfloat16* out, int64_t ldo, int64_t col0, cudaStream_t stream);

// GEMM1 with the activation quantize folded in (the decode path): x [tokens][w.k] bf16, 16-byte
// aligned; each block quantizes the token rows it needs into shared memory. Same output as
// moe_quantize_q8 + moe_gemm1, bit for bit.
void moe_gemm1_quant(const ExpertWeights& w, const __nv_bfloat16* x, const int32_t* ids, int64_t tokens,
                     int slots, __nv_bfloat16* out, int64_t ldo, int64_t col0, cudaStream_t stream);

// GEMM2 with SiLU, routing weight and the slot sum fused: h [P][2 * w.k] = [gate | up] from GEMM1;
// y [T][w.n] bf16. w.k % 256 == 0, w.k <= 1024, slots * w.k <= 32768 (one token's activations live in
// shared memory).
void moe_gemm2_silu(const ExpertWeights& w, const __nv_bfloat16* h, const int32_t* ids, const float* weights,
                    int64_t tokens, int slots, __nv_bfloat16* y, cudaStream_t stream);

// The unfused twin's pieces.
void moe_silu_mul(const __nv_bfloat16* h, int64_t pairs, int64_t inter, __nv_bfloat16* act,
                  cudaStream_t stream);
// acc[p][n] = W_{ids[p]}[n] . act_p (fp32), q8act: pairs * k/32 blocks.
void moe_down(const ExpertWeights& w, const Q8Block* q8act, const int32_t* ids, int64_t pairs, float* acc,
              cudaStream_t stream);
// y[t][n] = bf16(sum_s bf16(acc[t * slots + s][n] * weights[t * slots + s])), fp32 sum in slot order.
void moe_weighted_sum(const float* acc, const float* weights, int64_t tokens, int slots, int64_t n,
                      __nv_bfloat16* y, cudaStream_t stream);

}  // namespace fb::cuda
