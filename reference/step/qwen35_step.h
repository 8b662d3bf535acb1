#pragma once
// CPU reference of one whole qwen3.5-moe step (notes/models.md §5.2): embedding, decoder layers
// (GatedDeltaNet on 3 of 4, full attention with a sigmoid output gate on every 4th), sparse MoE with
// a gated shared expert, final (1+w) norm and the separate lm_head. Linear layers use the exact
// dequantized ggml weights with fp64 accumulation; every tensor the model materialises in bf16 is
// rounded to bf16 (the same points the CUDA step rounds at), so the CUDA step differs only by its
// W4A8 activation quantization and fp32 accumulation. T = 1 is a decode step, T > 1 a prefill
// (logits of the last token only). Meant for tiny models: all weights are held in fp32.
//
// Rounding points (torch bf16 graph): in_proj outputs; conv output; delta-rule output o; gated norm;
// q/k after norm and after RoPE; attention output; bf16(sigmoid(gate)); bf16(attn * that); o_proj;
// residual sums; router weights fp32; GEMM1 [gate | up]; bf16(silu(gate) * up); the MoE sum (truth:
// fp64 over the slots, the shared expert being one more slot weighted sigmoid(w_sh . x)).
#include <cstdint>
#include <string>
#include <vector>

#include "reference/gguf/gguf_file.h"
#include "reference/model/model_config.h"

namespace fb::ref {

// model_config(qwen3.5-moe, tiny): 4 layers (3 GDN + 1 full), every K a multiple of 256.
ModelConfig qwen35_step_tiny_config();

struct Qwen35RefLayer {
  bool full = false;
  std::vector<float> attn_norm, post_attention_norm;  // (1 + w)
  // Full attention: wq rows [head][query (hd) | gate (hd)], wk, wv [nkv * hd][H], wo [H][nh * hd].
  std::vector<float> wq, wk, wv, wo, q_norm, k_norm;
  // GatedDeltaNet: in_proj parts, conv [C][K], A (= -exp(A_log)), dt_bias, gated-norm w, out_proj.
  std::vector<float> w_qkv, w_z, w_beta, w_alpha, conv, ssm_a, dt_bias, ssm_norm, w_out;
  // MoE: router [E][H] (F32 in the GGUF), experts [E][I][H] / [E][H][I], shared expert and its gate [H].
  std::vector<float> router, gate_exps, up_exps, down_exps, shexp_gate, gate_shexp, up_shexp, down_shexp;
};

struct Qwen35RefWeights {
  ModelConfig config;
  std::vector<float> embd, output_norm, output;  // output: [vocab][H]
  std::vector<Qwen35RefLayer> layers;
  std::vector<std::string> fusion_log;
};

// fused: apply the load-time row-concat fusions first (q+k+v, GDN in_proj, shared gate+up) and split
// the dequantized fused tensors again, which must give the same weights bit for bit.
Qwen35RefWeights load_qwen35_ref_weights(const GgufFile& file, const ModelConfig& config, bool fused);

// Per layer: full attention: bf16 K/V caches [nkv][capacity][hd] (values); GDN: conv state [C][K]
// (bf16 values, the last K inputs, oldest first) and the recurrent state [v_heads][dk][dv] (fp32
// values held in double: truth carries it unrounded).
struct Qwen35LayerState {
  std::vector<float> k, v;
  std::vector<float> conv;
  std::vector<double> ssm;
};
struct Qwen35State {
  int64_t capacity = 0;
  std::vector<Qwen35LayerState> layers;
};
// Seeded random valid content: K/V N(0, 1) bf16 at positions [0, filled) (zeros beyond), conv state
// N(0, 1) bf16, recurrent state N(0, kSsmScale^2) fp32 values.
inline constexpr double kSsmScale = 0.05;
Qwen35State make_qwen35_state(const ModelConfig& config, int64_t capacity, int64_t filled, uint64_t seed);

// Per-layer outputs recorded for diagnosis (the residual stream after each layer, bf16 values).
struct Qwen35Trace {
  std::vector<std::vector<float>> residual;  // [layer][T][H]
  // [layer] routing stability, the smallest over the step's tokens of
  //   (logit_k - logit_k+1) / (rms(x) * |w_k - w_k+1|)
  // with k, k+1 the last chosen and the first unchosen expert, x the router input, w the router rows:
  // the relative rms change of x (in a random direction, one standard deviation) that closes the gap.
  // A step whose inputs deviate by r (relative rms) keeps the same experts with high probability when
  // this is several times r; a value near 0 is a near-tie that any rounding difference may flip.
  std::vector<double> routing_margin;
  // Diagnosis of a step against a GPU step, sublayer by sublayer:
  std::vector<std::vector<float>> mixer_residual;  // [layer][T][H]: x after the attention/GDN add
  std::vector<std::vector<double>> token_margin;   // [layer][T]: routing_margin of each token
  // [layer][T][slots]: the fp64 routing the MoE used (ids with the shared expert as id n_experts,
  // fp32 weights), the layout of the GPU router's output, so a GPU step can be run with it.
  std::vector<std::vector<int32_t>> routing_ids;
  std::vector<std::vector<float>> routing_weights;
};

// One step over tokens at positions pos .. pos+T-1; appends K/V, advances the GDN states, returns
// the fp32 logits of the last token ([vocab], bf16 values: lm_head output cast to fp32).
std::vector<float> qwen35_ref_step(const Qwen35RefWeights& w, Qwen35State& state,
                                   const std::vector<int32_t>& tokens, int64_t pos,
                                   Qwen35Trace* trace = nullptr);

}  // namespace fb::ref
