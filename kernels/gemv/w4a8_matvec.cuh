#pragma once
// Decode matvec (M = 1..4 tokens) on 4- and 6-bit weights with int8 activations (W4A8 / W6A8,
// dp4a), notes/models.md §3.2. Activations are first quantized per token and per 32 into Q8Block
// (reference/matvec/q8_block.h; bit-exact with fb::quantize_activations_q8), then the matvec streams
// the weights once with 16-byte loads and writes bf16: for the repacked layouts a kernel that stages
// the activations in shared memory and gives each warp 2 rows x 6 units per lane in flight, on a
// block-balanced grid; otherwise (ggml blocks, small int4 or int6-bf16 N, activations past the
// shared-memory budget) one warp per row pair reading activations through L1. The variant is picked
// per shape (w4a8_matvec_tuning.cuh); all give the same bits.
//
// Weight formats (layouts: reference/layouts/layouts.h; ggml blocks: reference/formats/blocks.h):
//   int4_bf16 / int4_u8: CoalescedInt4 from Q4_K (w = (q - zero) * scale per 32)
//   int6_bf16 / int6_i8: PlanarInt6 from Q6_K (w = (u - 32) * scale per 16)
//   q4_k / q6_k:         the GGUF blocks as loaded, no repacking (measures what repacking buys)
// Every format accumulates, per 32-weight unit, d_a * (integer dp4a sum and offset term) in fp32 with
// explicit _rn intrinsics (no compiler contraction choices), lanes strided over units, then a fixed
// xor-shuffle reduction: a row's result depends only on that row's data, so a row-concatenated
// [gate; up] launch gives the same bits as two launches (DESIGN §4).
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "reference/matvec/q8_block.h"

namespace fb::cuda {

enum class MatvecFormat { int4_bf16, int4_u8, int6_bf16, int6_i8, q4_k, q6_k };
const char* to_string(MatvecFormat f);

// none: y[t][n] = sum_k w[n][k] x[t][k].
// glu_*: the n rows are [gate (n/2); up (n/2)]; y[t][i] = act(bf16(gate_i)) * bf16(up_i), rounded to
// bf16. Gate and up are rounded to bf16 first so the fused epilogue equals the unfused chain
// (matvec to bf16, then glu_bf16) bit for bit.
enum class MatvecEpilogue { none, glu_gelu_tanh, glu_silu };

struct MatvecWeights {
  MatvecFormat format = MatvecFormat::int4_u8;
  int64_t n = 0, k = 0;
  const void* qdata = nullptr;           // int4: qdata (N, K/2); int6: ql (N, K/2); q4_k/q6_k: blocks
  const void* qhigh = nullptr;           // int6: qh (N, K/4)
  const void* scale = nullptr;           // bf16 / uint8 / int8 per group (int4: 32, int6: 16)
  const void* zero = nullptr;            // int4 only: bf16 / uint8 per 32
  const uint16_t* scale_step = nullptr;  // u8/i8: fp16 per 256
  const uint16_t* zero_step = nullptr;   // int4_u8: fp16 per 256
};

// x: m x k bf16, row-major; q8: m * k/32 blocks. k % 32 == 0, 1 <= m.
void quantize_activations_q8(const __nv_bfloat16* x, int64_t m, int64_t k, Q8Block* q8, cudaStream_t stream);

// y: m x n (none) or m x n/2 (glu) bf16. Requirements (std::invalid_argument otherwise, before any
// device work): 1 <= m <= 4, n >= 1 (even for glu), k % 256 == 0, the pointers the format needs
// non-null, qdata 16-byte aligned (q6_k: 2), qhigh 8, q8 16, scales/steps their element size.
void w4a8_matvec(const MatvecWeights& w, const Q8Block* q8, int64_t m, __nv_bfloat16* y, MatvecEpilogue ep,
                 cudaStream_t stream);

// Both steps: quantize x into `workspace` (m * k/32 blocks), then the matvec. The matvec is launched
// with programmatic dependent launch: it may start while the quantize kernel runs, issuing its first
// weight loads, and waits (griddepcontrol.wait) before it reads `workspace` or writes y. Safe for any
// caller: the quantize kernel is a normal launch, so all earlier work on the stream has finished
// before either starts. (w4a8_matvec alone never uses PDL.) For int4 weights with k <= 2048 at
// m <= 2 (x 16-byte aligned) it is one plain launch instead: every block of the matvec quantizes x
// into shared memory itself and block 0 writes `workspace` (the same bits as the quantize kernel).
void w4a8_matvec_bf16(const MatvecWeights& w, const __nv_bfloat16* x, int64_t m, Q8Block* workspace,
                      __nv_bfloat16* y, MatvecEpilogue ep, cudaStream_t stream);

// The unfused GLU: y is m x 2i bf16 ([gate | up] per token), out m x i bf16; ep must be a glu_*.
void glu_bf16(const __nv_bfloat16* y, int64_t m, int64_t i, MatvecEpilogue ep, __nv_bfloat16* out,
              cudaStream_t stream);

}  // namespace fb::cuda
