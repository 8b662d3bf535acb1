#pragma once
// CPU reference of one whole gemma4 step (notes/models.md §1.2): embedding, 60 (or few) decoder
// layers with the norm sandwich, sliding layers over a bf16 ring buffer, full layers over a TurboQuant
// 4-bit KV cache (K = V before normalisation), per-layer scalar, final norm, tied lm_head and softcap.
// Linear layers use the exact dequantized ggml weights with fp64 accumulation; every tensor the model
// materialises in bf16 is rounded to bf16, so the CUDA step differs only by its W4A8 activation
// quantization, its weight repacking and fp32 accumulation. T = 1 is a decode step, T > 1 a prefill
// (logits of the last token only). Meant for tiny models: all weights are held in fp32.
#include <cstdint>
#include <vector>

#include "reference/attention/turboquant.h"
#include "reference/gguf/gguf_file.h"
#include "reference/model/model_config.h"

namespace fb::ref {

// The tiny gemma4 the whole-step checks run: model_config(gemma4, tiny) with the full layers at the
// real head_dim 512 and GQA 8:1 (one kv head), because the CUDA TQ4 attention is built for exactly
// that shape; everything else (pattern, sliding dims, window 64) stays tiny.
ModelConfig gemma4_step_tiny_config();

struct Gemma4RefLayer {
  bool full = false;
  int64_t n_kv = 0, head_dim = 0;
  std::vector<float> wq, wk, wv, wo, wgate, wup, wdown;  // row-major [N][K]; wv empty on full layers
  std::vector<float> attn_norm, q_norm, k_norm, post_attn_norm, ffn_norm, post_ffw_norm;
  float layer_scalar = 1.0f;
};

struct Gemma4RefWeights {
  ModelConfig config;
  std::vector<float> embd;  // [vocab][hidden], tied lm_head
  std::vector<float> output_norm;
  std::vector<Gemma4RefLayer> layers;
  std::vector<std::string> fusion_log;  // what the fused load path concatenated
};

// fused = false: every tensor dequantized on its own. fused = true: the load-time fusions
// (reference/fusion: q+k(+v), gate+up row-concat of raw blocks) are applied first and the fused
// tensors dequantized and split again, which must give the same weights bit for bit.
Gemma4RefWeights load_gemma4_ref_weights(const GgufFile& file, const ModelConfig& config, bool fused);

// KV caches of every layer. Sliding: ring [n_kv][2 x window][head_dim] bf16 bits. Full: TQ4 packed
// [n_kv][capacity][head_dim/2] and norms [n_kv][capacity].
struct Gemma4KvLayer {
  std::vector<uint16_t> ring_k, ring_v;
  std::vector<uint8_t> k_packed, v_packed;
  std::vector<uint16_t> k_norms, v_norms;
};
struct Gemma4KvState {
  int64_t capacity = 0;  // full-layer positions
  std::vector<Gemma4KvLayer> layers;
  tq4::Codebook codebook;  // full-layer head_dim
  tq4::Rotation rotation;
};
inline constexpr uint64_t kTq4RotationSeed = 42;  // upstream's generate_rotation_matrix seed
// Seeded random valid cache content for positions [0, filled): every ring slot holds bf16 values,
// N(0, s^2) for K and N(0, kKvScale^2) for V, every TQ4 position random 4-bit indices and a bf16
// norm near s * sqrt(head_dim) (K) or kKvScale * sqrt(head_dim) (V): s = qk_norm_scale(head_dim),
// the scale of a key after make-model's k_norm weights; V is RMS-normed without a weight.
// Sensitivity of the CPU step itself on the tiny model (make-model seed 5, cache seed 21, token
// seed 9; decode ctx 48 / 300, prefill T 20 / 100 at ctx 90), logits cosine vs the fp64 step:
//   fp32 accumulation in the linears: 0.999996 / 0.99997 / 0.99987 / 0.99986
//   linears' inputs int8 per 32, absmax (W4A8-like): 0.9985 / 0.9994 / 0.9991 / 0.9995;
//   over token seeds 1-4 and 9: cosine >= 0.9981, NMSE <= 3.8e-3.
// With the unit q/k norm weights of before (score std ~ sqrt(head_dim), a near-argmax softmax) the
// int8 perturbation gave 0.957 / 0.896 / 0.823 / 0.629 and fp32 accumulation 1.0 / 1.0 / 0.996 / 0.993.
inline constexpr double kKvScale = 1.0;
Gemma4KvState make_kv_state(const ModelConfig& config, int64_t capacity, int64_t filled, uint64_t seed);

// One step over tokens at positions pos .. pos+T-1 (pos = tokens already cached); appends their K/V
// to the state and returns the fp32 softcapped logits of the last token.
std::vector<float> gemma4_ref_step(const Gemma4RefWeights& w, Gemma4KvState& kv,
                                   const std::vector<int32_t>& tokens, int64_t pos);

// Seeded token ids in [0, vocab).
std::vector<int32_t> step_tokens(int64_t vocab, int64_t T, uint64_t seed);

}  // namespace fb::ref
