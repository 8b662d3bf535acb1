#pragma once
// TurboQuant 4-bit KV attention (gemma4 full layers; notes/models.md §4; CPU truth:
// reference/attention/turboquant.h, whose codebook, rotation and layouts these kernels share).
//
//   k, v            [T][n_kv_heads][head_dim] bf16: this step's K (after k_norm + RoPE), V (after v_norm)
//   q, out          [T][n_q_heads][head_dim] bf16
//   k/v_packed      [n_kv_heads][capacity][head_dim/2] uint8, even coordinate in the HIGH nibble
//   k/v_norms       [n_kv_heads][capacity] bf16 bits
//   centroids       16 fp32;  boundaries 15 bf16 bits;  rotation Pi d x d fp32;  rotation_t Pi^T bf16
//
// Positions come from device memory so one captured CUDA graph replays for every step:
//   d_pos     (append) int32: the first new position; token t goes to pos + t. Tokens whose position
//             falls outside [0, capacity) are dropped on the device (there is no host to throw).
//   d_kv_len  (sdpa)   int32: positions [0, kv_len) are valid (upstream passes input_pos + T); clamped
//             to [0, capacity) in the kernel. Query t sits at kv_len - T + t and attends keys at or
//             below it (the causal prefill mask, built in the kernel; for T = 1: every valid key).
#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace fb::cuda {

struct Tq4Tables {
  const float* centroids = nullptr;
  const uint16_t* boundaries = nullptr;
  const float* rotation = nullptr;
  const uint16_t* rotation_t = nullptr;
  int head_dim = 0;
};

struct Tq4Cache {
  uint8_t* k_packed = nullptr;
  uint16_t* k_norms = nullptr;
  uint8_t* v_packed = nullptr;
  uint16_t* v_norms = nullptr;
  int n_kv_heads = 0;
  int64_t capacity = 0;
  int head_dim = 0;
};

// Compress T tokens of K and V (one launch for both) and write them at d_pos + t, with upstream's
// bf16 arithmetic (norm, u = x / (norm + 1e-10), y = Pi u, bucketize right=False). head_dim: a
// multiple of 64, at most 2048.
void tq4_compress_append(const __nv_bfloat16* k, const __nv_bfloat16* v, int64_t T, const int32_t* d_pos,
                         const Tq4Tables& tables, const Tq4Cache& cache, cudaStream_t stream);

// Split-K count the attention's grid is sized for: fixed by T and the cache capacity, so it is the
// same on every graph replay. Prefill (T > 1) runs exactly this many splits; decode (T = 1) runs
// min(this, ceil(kv_len / 64)) splits of ceil(kv_len / splits) keys, chosen on the device from kv_len.
int tq4_sdpa_num_splits(int64_t T, int n_kv_heads, int64_t capacity);
// Device scratch the attention needs: q_rot, out_rot and the split partials, all fp32.
size_t tq4_sdpa_workspace_bytes(int64_t T, int n_q_heads, const Tq4Cache& cache);

// The decode (T = 1) split kernel tq4_sdpa launches: "fp32" (CUDA-core FMAs) or "mma" (tensor cores,
// mma.sync m16n8k16 with fp16 hi/lo parts of q and the centroids for the scores, fp16 p * v_norm for
// P.V). Read from the environment variable FB_TQ4_DECODE_PATH (fp32 | mma; unset or empty: the
// default, mma) on every call, so a captured graph keeps the path it was captured with. Throws
// std::invalid_argument for any other value (tq4_sdpa too, before enqueuing anything).
const char* tq4_sdpa_decode_path();

// out = softmax(scale * q k^T + causal mask) v over the dequantized cache, computed in the rotated
// domain: q_rot = Pi q (fp32), scores = k_norm * (q_rot . c[k_idx]), out = Pi^T (sum p v_norm c[v_idx]) / l.
// Built for head_dim 512 and GQA 8:1 (the gemma4 full layers): n_q_heads = 8 x n_kv_heads. Four
// launches: rotate q, split-K attention, reduce, un-rotate; at decode the last three are launched
// with programmatic dependent launch (PDL), so each overlaps its predecessor's tail. Throws
// std::invalid_argument before anything is enqueued for unsupported shapes, null or misaligned (16 B)
// pointers or a small workspace.
void tq4_sdpa(const __nv_bfloat16* q, int64_t T, int n_q_heads, const int32_t* d_kv_len, float scale,
              const Tq4Cache& cache, const Tq4Tables& tables, void* workspace, size_t workspace_bytes,
              __nv_bfloat16* out, cudaStream_t stream);

}  // namespace fb::cuda
