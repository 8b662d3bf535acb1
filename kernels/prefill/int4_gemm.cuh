#pragma once
// Prefill (M > 4 tokens) linear on coalesced int4 weights with the dequantization fused into the
// GEMM main loop: y[M, N] = x[M, K] (bf16) * W[N, K]^T, W in the coalesced int4 layout of
// reference/layouts/layouts.h (qdata (N, K/2), per-32 scale/zero, bf16 or u8-code encoding).
// The bf16 weights exist only in shared memory, one k-tile at a time; they are the bits of
// int4_dequant_rule.h, so the fused GEMM multiplies exactly what the unfused twin
// (int4_dequantize_bf16 + cuBLAS) multiplies; only the fp32 accumulation order differs.
//
// Kernel shape (int4_gemm.cu): mma.sync m16n8k16 bf16 -> fp32, tokens as the mma M side and weight
// rows as N (so accumulator pairs are adjacent output columns), ldmatrix from XOR-swizzled tiles,
// a 4-stage cp.async pipeline of raw int4 + x tiles, and the weight tile of k-tile kt+1 dequantized
// into a double-buffered bf16 tile while the tensor cores work on k-tile kt.
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace fb::cuda {

struct Int4GemmWeights {
  int64_t n = 0, k = 0;
  bool u8 = false;                       // false: bf16 scale/zero; true: uint8 codes x fp16 step per 256
  const uint8_t* qdata = nullptr;        // (N, K/2), 16-byte aligned
  const void* scale = nullptr;           // (N, K/32) bf16 or uint8
  const void* zero = nullptr;            // (N, K/32) bf16 or uint8
  const uint16_t* scale_step = nullptr;  // (N, K/256) fp16, u8 only
  const uint16_t* zero_step = nullptr;   // (N, K/256) fp16, u8 only
};

// CTA tile, tokens x weight rows. t*: mma.sync, each warp 64 x 64; the choice trades wave
// quantization (N / BN_w CTAs per token tile on 132 SMs) against per-CTA reuse. wg256_w128: the
// same tiles through Hopper wgmma (two warpgroups of 128 tokens). automatic: see pick_tile.
enum class Int4GemmTile { automatic, t128_w128, t128_w256, t256_w128, wg256_w128 };
const char* to_string(Int4GemmTile t);
inline constexpr Int4GemmTile kInt4GemmTiles[] = {Int4GemmTile::t128_w128, Int4GemmTile::t128_w256,
                                                  Int4GemmTile::t256_w128, Int4GemmTile::wg256_w128};

// Requirements (std::invalid_argument before any device work): m >= 1, n >= 1, k % 256 == 0,
// ldy >= n, pointers non-null (steps only for u8), qdata/x 16-byte aligned, x row stride k.
void int4_gemm(const Int4GemmWeights& w, const __nv_bfloat16* x, int64_t m, __nv_bfloat16* y, int64_t ldy,
               Int4GemmTile tile, cudaStream_t stream);

// The unfused twin's first half: the whole (N, K) bf16 weight, by the same device function.
void int4_dequantize_bf16(const Int4GemmWeights& w, __nv_bfloat16* out, cudaStream_t stream);

}  // namespace fb::cuda
