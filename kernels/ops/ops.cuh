#pragma once
// The small ops of the dense path (notes/models.md §1.2, §5.2), bf16 in/out, fp32 math, each
// checked against fb::ref (reference/ops/ops.h).
//
// Fusions and their unfused twins. Every fused kernel rounds to bf16 exactly where the model's
// graph materialises a bf16 tensor (the twin's intermediate), computes the same fp32 expressions
// in the same order, and the library is built with --fmad=false; so fused == unfused bit for bit:
//   head_norm_rope            == rms_norm (per head) -> rope
//   gelu_tanh_mul             == gelu_tanh (gate half) -> mul
//   residual_norm_scale       == rms_norm -> add -> scale
//   add_rms_norm_q8           == add -> rms_norm -> quantize_activations_q8 (kernels/gemv)
// All norms share one reduction (same thread->element map and order for a given `cols`), which is
// what makes the norm part bit-identical across kernels.
//
// Entry points validate on the host and throw std::invalid_argument before touching the device;
// device-side inputs (positions, tokens, the layer scalar) are read by the kernels, so every launch
// is CUDA-graph safe. Row widths: cols % 8 == 0 (16-byte vectors), cols <= 8192, pointers 16-byte
// aligned.
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "reference/formats/ggml_type.h"
#include "reference/matvec/q8_block.h"

namespace fb::cuda {

// direct: x*rsqrt(mean(x^2)+eps)*w (gemma); one_plus: *(1+w) (qwen); none: no weight (v_norm).
enum class NormWeight { direct, one_plus, none };

// Rotate-half RoPE: dim i < rot_dim/2 pairs with i + rot_dim/2; angle = float(pos) * inv_freq[i]
// in fp32 (as torch computes it); pairs with i >= n_freq and dims >= rot_dim pass through.
// Gemma sliding {256, 256, 128}, theta 1e4, den 256; gemma full {512, 512, 64}, theta 1e6, den 512.
struct RopeParams {
  static constexpr int kMaxHalf = 256;
  int head_dim = 0, rot_dim = 0, n_freq = 0;
  float inv_freq[kMaxHalf] = {};  // kernel parameter space: no device table to allocate
};
// inv_freq[i] = float(theta^(-2i/freq_den)) computed in double: the same expression as
// fb::ref::rope_inv_freq, so kernel and reference see identical fp32 frequencies.
RopeParams make_rope_params(int head_dim, int rot_dim, int n_freq, int freq_den, double theta);

// out[r, :] = norm(x[r, :]) over `cols`. Per-head q/k norm: rows = tokens*heads, cols = head_dim;
// v_norm: mode none, w null. w: fp32 [cols] (GGUF norm weights are F32).
void rms_norm(const __nv_bfloat16* x, const float* w, NormWeight mode, float eps, __nv_bfloat16* out,
              int64_t rows, int cols, cudaStream_t stream);

// Fused per-head norm + RoPE: x, out [tokens, heads, head_dim]; d_pos: int32 [tokens] on device.
void head_norm_rope(const __nv_bfloat16* x, const float* w, NormWeight mode, float eps, const int32_t* d_pos,
                    const RopeParams& rope, __nv_bfloat16* out, int64_t tokens, int heads,
                    cudaStream_t stream);
// Unfused twin's second half (out may equal x).
void rope(const __nv_bfloat16* x, const int32_t* d_pos, const RopeParams& rope, __nv_bfloat16* out,
          int64_t tokens, int heads, cudaStream_t stream);

// Elementwise over rows; `ld*` are row strides in elements (multiples of 8).
void gelu_tanh(const __nv_bfloat16* x, int64_t ldx, __nv_bfloat16* out, int64_t ldo, int64_t rows,
               int64_t cols, cudaStream_t stream);
void mul(const __nv_bfloat16* a, int64_t lda, const __nv_bfloat16* b, int64_t ldb, __nv_bfloat16* out,
         int64_t ldo, int64_t rows, int64_t cols, cudaStream_t stream);
// gate_up [tokens, 2*inter] = [gate | up]  ->  out [tokens, inter] = bf16(bf16(gelu(gate)) * up).
void gelu_tanh_mul(const __nv_bfloat16* gate_up, __nv_bfloat16* out, int64_t tokens, int64_t inter,
                   cudaStream_t stream);
void add(const __nv_bfloat16* a, const __nv_bfloat16* b, __nv_bfloat16* out, int64_t n, cudaStream_t stream);
// out = bf16(a * *d_scalar): the layer scalar is a device tensor.
void scale(const __nv_bfloat16* a, const float* d_scalar, __nv_bfloat16* out, int64_t n, cudaStream_t stream);
// Final logit softcap: fp32 out = tanh(x / cap) * cap (the model casts the logits to fp32 first).
void softcap(const __nv_bfloat16* x, float* out, int64_t n, float cap, cudaStream_t stream);

// Fused residual branch: out = bf16(x + bf16(rmsnorm(h) * w)), then bf16(out * *d_scalar) when
// d_scalar is not null. out may equal x.
void residual_norm_scale(const __nv_bfloat16* x, const __nv_bfloat16* h, const float* w, float eps,
                         const float* d_scalar, __nv_bfloat16* out, int64_t rows, int cols,
                         cudaStream_t stream);

// Fused residual add + norm + activation quantize (the qwen3.5 step's layer seams):
// x = bf16(x + h) in place (h may be null: no add), out = rms_norm(x), q8 (may be null) =
// quantize_activations_q8(out). Same bits as add -> rms_norm -> quantize_activations_q8.
// q8 needs cols % 32 == 0 (rows * cols / 32 blocks); out must not alias x or h.
void add_rms_norm_q8(__nv_bfloat16* x, const __nv_bfloat16* h, const float* w, NormWeight mode, float eps,
                     __nv_bfloat16* out, Q8Block* q8, int64_t rows, int cols, cudaStream_t stream);

// Embedding gather with dequant-on-gather: table rows in ggml layout (Q6_K: the tied gemma
// token_embd; BF16 also accepted), out[t, :] = bf16(bf16(row(tokens[t])) * scale), the fp32 scale
// (sqrt(hidden)) applied in fp32 as the model does. A token outside [0, vocab) writes NaN rows
// (device data cannot be validated on the host without a sync).
bool embed_supported(GgmlType type);
void embed(GgmlType type, const void* table, int64_t vocab, int64_t cols, const int32_t* d_tokens,
           int64_t tokens, float scale, __nv_bfloat16* out, cudaStream_t stream);

}  // namespace fb::cuda
