#pragma once
// The GGUF tensor inventory and metadata of a model, with llama.cpp names and ggml shapes
// (src/llama-arch.cpp LLM_TENSOR_NAMES; gemma4 / qwen35moe load_arch_tensors), and the type each
// tensor gets under llama-quant's Q4_K_M recipe. Facts and citations: ../shared/notes and the
// closing note of issue 2.
#include <cstdint>
#include <string>
#include <vector>

#include "reference/formats/ggml_type.h"
#include "reference/gguf/gguf_value.h"
#include "reference/model/model_config.h"

namespace fb {

// How a tensor's float values are drawn before quantization (all from N(0,1) draws of a
// counter-based RNG keyed by seed and tensor name).
enum class TensorInit {
  linear,        // N(0, 0.02^2): a projection / embedding weight
  norm_direct,   // 1 + 0.1 N: RMSNorm weight multiplied directly (gemma, GDN gated norm)
  norm_offset,   // 0.1 N: RMSNorm weight used as (1 + w) (qwen GemmaRMSNorm)
  layer_scalar,  // uniform in [0.5, 1): gemma per-layer output scale
  conv,          // N(0, 0.25): depthwise conv taps
  ssm_a,         // -uniform(1, 16): -exp(A_log) as llama.cpp stores it
  dt_bias,       // log(expm1(dt)), dt log-uniform in [1e-3, 1e-1] (Mamba-style init)
  rope_freqs,    // 1 for rotated pairs, 1e30 for the rest (llama.cpp's proportional-RoPE factors)
  qk_norm,       // qk_norm_scale(K) (1 + 0.1 N): gemma q/k RMSNorm weight (direct), see below
};

// Scale of gemma's q_norm / k_norm weights for head_dim K: K^(-1/4), so that scores have std ~ 1.
// Gemma4 scores are q.k with scale 1 after both RMSNorms, so unit weights give score std ~ sqrt(K)
// (22.6 at K = 512): a near-argmax softmax in which one rounding difference upstream flips the
// attended position, and the random model turns chaotic (the tiny CPU step with W4A8-like int8
// activations: logits cosine 0.63 at prefill T 100). Trained attention is not near-argmax on random
// input; at std 1 the same perturbation gives cosine >= 0.998 (numbers in reference/step/gemma4_step.h);
// at std 2 it was already 0.984 (decode ctx 300), at std 3 0.906 (prefill T 100).
double qk_norm_scale(int64_t head_dim);

struct TensorSpec {
  std::string name;
  std::vector<int64_t> ne;  // ggml order: ne[0] = K (columns)
  GgmlType type = GgmlType::F32;
  TensorInit init = TensorInit::linear;
  int64_t rotated_pairs = 0;  // rope_freqs only

  int64_t n_elements() const;
  int64_t n_rows() const;  // product of ne[1..]
  uint64_t n_bytes() const;
};

enum class QuantRecipe {
  q4_k_m,  // llama-quant Q4_K_M (name-based version: attn_qkv -> Q5_K), see quant_recipe.cpp
  q4_k,    // every quantizable weight Q4_K, output/tied embedding Q6_K: all fusions apply
};
QuantRecipe parse_quant_recipe(const std::string& name);  // "q4_k_m" | "q4_k"
const char* to_string(QuantRecipe r);

// Tensors in the order llama.cpp's converter writes them (globals, then blk.0.., blk.1.., ...).
std::vector<TensorSpec> model_tensors(const ModelConfig& config, QuantRecipe recipe);
std::vector<GgufKv> model_metadata(const ModelConfig& config, QuantRecipe recipe, uint64_t seed);

// llama-quant's use_more_bits(i, n): which layers get more bits under the *_M recipes.
bool llama_use_more_bits(int64_t i, int64_t n);

}  // namespace fb
