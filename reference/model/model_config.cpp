#include "reference/model/model_config.h"

#include <fmt/format.h>

#include <stdexcept>

namespace fb {

bool ModelConfig::is_full_attention(int64_t layer) const {
  const int64_t every = family == ModelFamily::gemma4 ? gemma.full_every : qwen.full_every;
  return (layer + 1) % every == 0;
}

static ModelConfig gemma4(ModelScale scale) {
  ModelConfig c;
  c.name = "gemma4-31b";
  c.family = ModelFamily::gemma4;
  c.scale = scale;
  c.gguf_arch = "gemma4";
  c.tied_embeddings = true;
  c.rms_eps = 1e-6;
  Gemma4Dims& g = c.gemma;
  g.full_every = 6;
  g.final_softcap = 30.0;
  g.rope_theta_sliding = 1e4;
  g.rope_theta_full = 1e6;
  if (scale == ModelScale::full) {
    c.vocab = 262144;
    c.hidden = 5376;
    c.n_layers = 60;
    c.context_length = 262144;
    g.intermediate = 21504;
    g.n_heads = 32;
    g.n_kv_heads_sliding = 16;
    g.head_dim_sliding = 256;
    g.n_kv_heads_full = 4;
    g.head_dim_full = 512;
    g.sliding_window = 1024;
  } else {
    // Same pattern (5 sliding + 1 full), same GQA ratios (2:1 sliding, 8:1 full), head_dim_full =
    // 2 x head_dim_sliding, partial rotary 1/4 on full layers.
    c.vocab = 1024;
    c.hidden = 256;
    c.n_layers = 6;
    c.context_length = 4096;
    g.intermediate = 512;
    g.n_heads = 8;
    g.n_kv_heads_sliding = 4;
    g.head_dim_sliding = 32;
    g.n_kv_heads_full = 1;
    g.head_dim_full = 64;
    g.sliding_window = 64;
  }
  g.rotary_pairs_full = g.head_dim_full / 8;  // factor 0.25 of head_dim/2 pairs
  return c;
}

static ModelConfig qwen35moe(ModelScale scale) {
  ModelConfig c;
  c.name = "qwen3.5-moe";
  c.family = ModelFamily::qwen35moe;
  c.scale = scale;
  c.gguf_arch = "qwen35moe";
  c.tied_embeddings = false;
  c.rms_eps = 1e-6;
  Qwen35MoeDims& q = c.qwen;
  q.full_every = 4;
  q.conv_kernel = 4;
  if (scale == ModelScale::full) {
    c.vocab = 248320;
    c.hidden = 2048;
    c.n_layers = 40;
    c.context_length = 262144;
    q.n_heads = 16;
    q.n_kv_heads = 2;
    q.head_dim = 256;
    q.rotary_dim = 64;
    q.gdn_k_heads = 16;
    q.gdn_v_heads = 32;
    q.gdn_head_k_dim = 128;
    q.gdn_head_v_dim = 128;
    q.n_experts = 256;
    q.top_k = 8;
    q.expert_intermediate = 512;
    q.shared_intermediate = 512;
    q.rope_theta = 1e7;
  } else {
    // 4 layers: 3 GatedDeltaNet + 1 full attention, as in the real 3:1 pattern. The expert and
    // shared intermediates stay 256 (not nano's 16) because they are the K of the down projections.
    c.vocab = 1024;
    c.hidden = 256;
    c.n_layers = 4;
    c.context_length = 4096;
    q.n_heads = 4;
    q.n_kv_heads = 2;
    q.head_dim = 64;
    q.rotary_dim = 16;
    q.gdn_k_heads = 2;
    q.gdn_v_heads = 4;
    q.gdn_head_k_dim = 64;
    q.gdn_head_v_dim = 64;
    q.n_experts = 8;
    q.top_k = 2;
    q.expert_intermediate = 256;
    q.shared_intermediate = 256;
    q.rope_theta = 1e4;
  }
  return c;
}

ModelConfig model_config(ModelFamily family, ModelScale scale) {
  return family == ModelFamily::gemma4 ? gemma4(scale) : qwen35moe(scale);
}

std::vector<std::string> model_names() { return {"gemma4-31b", "qwen3.5-moe"}; }

ModelConfig model_config(std::string_view model, std::string_view scale) {
  ModelScale s;
  if (scale == "full") {
    s = ModelScale::full;
  } else if (scale == "tiny") {
    s = ModelScale::tiny;
  } else {
    throw std::invalid_argument(fmt::format("unknown scale '{}' (expected full or tiny)", scale));
  }
  if (model == "gemma4-31b") return model_config(ModelFamily::gemma4, s);
  if (model == "qwen3.5-moe") return model_config(ModelFamily::qwen35moe, s);
  throw std::invalid_argument(fmt::format("unknown model '{}' (expected gemma4-31b or qwen3.5-moe)", model));
}

}  // namespace fb
