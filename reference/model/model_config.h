#pragma once
// Shapes of the two covered models (notes/models.md §1.1, §5.1) at full scale and at a tiny scale
// that keeps the structure (layer pattern, GQA ratios, fused-projection layouts) with dims small
// enough for CI. Every K (ne[0] of a quantized weight) stays a multiple of 256 so K-quants apply.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace fb {

enum class ModelFamily { gemma4, qwen35moe };
enum class ModelScale { full, tiny };

struct Gemma4Dims {
  int64_t intermediate = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads_sliding = 0, head_dim_sliding = 0;
  int64_t n_kv_heads_full = 0, head_dim_full = 0;
  int64_t full_every = 6;  // layer i is full attention when (i+1) % full_every == 0
  int64_t sliding_window = 0;
  int64_t rotary_pairs_full = 0;  // proportional RoPE: pairs rotated on full layers
  double rope_theta_sliding = 1e4, rope_theta_full = 1e6;
  double final_softcap = 30.0;
};

struct Qwen35MoeDims {
  int64_t n_heads = 0, n_kv_heads = 0, head_dim = 0, rotary_dim = 0;
  int64_t full_every = 4;  // layer i is full attention when (i+1) % full_every == 0
  int64_t gdn_k_heads = 0, gdn_v_heads = 0, gdn_head_k_dim = 0, gdn_head_v_dim = 0, conv_kernel = 4;
  int64_t n_experts = 0, top_k = 0, expert_intermediate = 0, shared_intermediate = 0;
  double rope_theta = 1e7;

  int64_t key_dim() const { return gdn_k_heads * gdn_head_k_dim; }
  int64_t value_dim() const { return gdn_v_heads * gdn_head_v_dim; }
  int64_t conv_dim() const { return 2 * key_dim() + value_dim(); }
};

struct ModelConfig {
  std::string name;  // "gemma4-31b" | "qwen3.5-moe"
  ModelFamily family = ModelFamily::gemma4;
  ModelScale scale = ModelScale::full;
  std::string gguf_arch;  // llama.cpp architecture string: "gemma4" | "qwen35moe"
  int64_t vocab = 0, hidden = 0, n_layers = 0, context_length = 0;
  double rms_eps = 1e-6;
  bool tied_embeddings = false;
  Gemma4Dims gemma;
  Qwen35MoeDims qwen;

  bool is_full_attention(int64_t layer) const;
  std::string scale_name() const { return scale == ModelScale::full ? "full" : "tiny"; }
};

ModelConfig model_config(ModelFamily family, ModelScale scale);
// Accepts "gemma4-31b" / "qwen3.5-moe" and "full" / "tiny"; throws std::invalid_argument listing
// the valid names otherwise.
ModelConfig model_config(std::string_view model, std::string_view scale);
std::vector<std::string> model_names();

}  // namespace fb
