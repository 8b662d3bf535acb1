#include "reference/model/model_tensors.h"

#include <fmt/format.h>

#include <cmath>
#include <stdexcept>

namespace fb {

int64_t TensorSpec::n_elements() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

int64_t TensorSpec::n_rows() const { return ne.empty() ? 1 : n_elements() / ne[0]; }

uint64_t TensorSpec::n_bytes() const { return ggml_row_bytes(type, ne[0]) * static_cast<uint64_t>(n_rows()); }

QuantRecipe parse_quant_recipe(const std::string& name) {
  if (name == "q4_k_m" || name == "Q4_K_M") return QuantRecipe::q4_k_m;
  if (name == "q4_k" || name == "Q4_K") return QuantRecipe::q4_k;
  throw std::invalid_argument(fmt::format("unknown recipe '{}' (expected q4_k_m or q4_k)", name));
}

const char* to_string(QuantRecipe r) { return r == QuantRecipe::q4_k_m ? "q4_k_m" : "q4_k"; }

double qk_norm_scale(int64_t head_dim) {
  // s^2 sqrt(K) = 1: std of a sum of K products of unit-rms q and k entries, each weighted by s^2.
  return 1.0 / std::sqrt(std::sqrt(static_cast<double>(head_dim)));
}

bool llama_use_more_bits(int64_t i, int64_t n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

namespace {

// Picks quantized types the way llama-quant's llama_tensor_get_type does for Q4_K_M, using the
// same counters: attn_v is counted over attn_v + attn_qkv names (n) and indexed over attn_v
// tensors only (i); ffn_down is indexed by layer.
class RecipeState {
 public:
  RecipeState(const ModelConfig& c, QuantRecipe r) : m_config(c), m_recipe(r) {}

  void count(const std::vector<TensorSpec>& specs) {
    for (const auto& s : specs) {
      if (ends_with(s.name, ".attn_v.weight") || ends_with(s.name, ".attn_qkv.weight")) ++m_n_attention_wv;
    }
  }

  GgmlType pick(const std::string& name, int64_t layer) {
    if (name == "output.weight" || (name == "token_embd.weight" && m_config.tied_embeddings)) {
      return GgmlType::Q6_K;
    }
    if (m_recipe == QuantRecipe::q4_k) return GgmlType::Q4_K;
    if (ends_with(name, ".attn_v.weight")) {
      const bool more = llama_use_more_bits(m_i_attention_wv++, m_n_attention_wv);
      return more ? GgmlType::Q6_K : GgmlType::Q4_K;
    }
    // The name-based llama-quant (ggml-org/llama.cpp@8784689f) gives attn_qkv Q5_K under Q4_K_M;
    // the later category-based one routes it through the attn_v rule instead. We follow the
    // former: it is what published qwen3.5 Q4_K_M files carry and it exercises Q5_K.
    if (ends_with(name, ".attn_qkv.weight")) return GgmlType::Q5_K;
    if (name.find("ffn_down") != std::string::npos) {
      return llama_use_more_bits(layer, m_config.n_layers) ? GgmlType::Q6_K : GgmlType::Q4_K;
    }
    return GgmlType::Q4_K;
  }

 private:
  static bool ends_with(const std::string& s, const char* suffix) {
    const std::string_view sv(suffix);
    return s.size() >= sv.size() && s.compare(s.size() - sv.size(), sv.size(), sv) == 0;
  }
  const ModelConfig& m_config;
  QuantRecipe m_recipe;
  int64_t m_n_attention_wv = 0;
  int64_t m_i_attention_wv = 0;
};

struct Builder {
  std::vector<TensorSpec> specs;
  std::vector<int64_t> layers;  // layer of each spec, -1 for globals

  void add(std::string name, std::vector<int64_t> ne, TensorInit init, int64_t layer, bool quantize) {
    TensorSpec s;
    s.name = std::move(name);
    s.ne = std::move(ne);
    s.init = init;
    // Placeholder until the recipe pass: F32 stays for tensors llama-quant never quantizes.
    s.type = quantize ? GgmlType::Q4_K : GgmlType::F32;
    specs.push_back(std::move(s));
    layers.push_back(layer);
  }
  void weight(int64_t layer, const char* what, std::vector<int64_t> ne) {
    add(fmt::format("blk.{}.{}.weight", layer, what), std::move(ne), TensorInit::linear, layer, true);
  }
  void norm(int64_t layer, const char* what, int64_t n, TensorInit init) {
    add(fmt::format("blk.{}.{}.weight", layer, what), {n}, init, layer, false);
  }
};

void gemma4_tensors(const ModelConfig& c, Builder& b) {
  const Gemma4Dims& g = c.gemma;
  const int64_t h = c.hidden;
  b.add("token_embd.weight", {h, c.vocab}, TensorInit::linear, -1, true);
  b.add("rope_freqs.weight", {g.head_dim_full / 2}, TensorInit::rope_freqs, -1, false);
  b.specs.back().rotated_pairs = g.rotary_pairs_full;
  b.add("output_norm.weight", {h}, TensorInit::norm_direct, -1, false);
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const bool full = c.is_full_attention(i);
    const int64_t hd = full ? g.head_dim_full : g.head_dim_sliding;
    const int64_t kv = full ? g.n_kv_heads_full : g.n_kv_heads_sliding;
    b.norm(i, "attn_norm", h, TensorInit::norm_direct);
    b.weight(i, "attn_q", {h, g.n_heads * hd});
    b.weight(i, "attn_k", {h, kv * hd});
    if (!full) b.weight(i, "attn_v", {h, kv * hd});  // full layers: V = K (attention_k_eq_v)
    b.weight(i, "attn_output", {g.n_heads * hd, h});
    b.norm(i, "attn_q_norm", hd, TensorInit::qk_norm);
    b.norm(i, "attn_k_norm", hd, TensorInit::qk_norm);
    b.norm(i, "post_attention_norm", h, TensorInit::norm_direct);
    b.norm(i, "ffn_norm", h, TensorInit::norm_direct);
    b.weight(i, "ffn_gate", {h, g.intermediate});
    b.weight(i, "ffn_up", {h, g.intermediate});
    b.weight(i, "ffn_down", {g.intermediate, h});
    b.norm(i, "post_ffw_norm", h, TensorInit::norm_direct);
    b.add(fmt::format("blk.{}.layer_output_scale.weight", i), {1}, TensorInit::layer_scalar, i, false);
  }
}

void qwen35moe_tensors(const ModelConfig& c, Builder& b) {
  const Qwen35MoeDims& q = c.qwen;
  const int64_t h = c.hidden;
  b.add("token_embd.weight", {h, c.vocab}, TensorInit::linear, -1, true);
  b.add("output_norm.weight", {h}, TensorInit::norm_offset, -1, false);
  b.add("output.weight", {h, c.vocab}, TensorInit::linear, -1, true);
  for (int64_t i = 0; i < c.n_layers; ++i) {
    b.norm(i, "attn_norm", h, TensorInit::norm_offset);
    b.norm(i, "post_attention_norm", h, TensorInit::norm_offset);
    if (c.is_full_attention(i)) {
      // attn_q rows hold [query | gate] interleaved per head: 2 * head_dim rows per head.
      b.weight(i, "attn_q", {h, 2 * q.n_heads * q.head_dim});
      b.weight(i, "attn_k", {h, q.n_kv_heads * q.head_dim});
      b.weight(i, "attn_v", {h, q.n_kv_heads * q.head_dim});
      b.weight(i, "attn_output", {q.n_heads * q.head_dim, h});
      b.norm(i, "attn_q_norm", q.head_dim, TensorInit::norm_offset);
      b.norm(i, "attn_k_norm", q.head_dim, TensorInit::norm_offset);
    } else {
      b.weight(i, "attn_qkv", {h, q.conv_dim()});
      b.weight(i, "attn_gate", {h, q.value_dim()});
      b.weight(i, "ssm_beta", {h, q.gdn_v_heads});
      b.weight(i, "ssm_alpha", {h, q.gdn_v_heads});
      b.add(fmt::format("blk.{}.ssm_conv1d.weight", i), {q.conv_kernel, q.conv_dim()}, TensorInit::conv, i,
            false);
      b.add(fmt::format("blk.{}.ssm_dt.bias", i), {q.gdn_v_heads}, TensorInit::dt_bias, i, false);
      b.add(fmt::format("blk.{}.ssm_a", i), {q.gdn_v_heads}, TensorInit::ssm_a, i, false);
      b.norm(i, "ssm_norm", q.gdn_head_v_dim, TensorInit::norm_direct);
      b.weight(i, "ssm_out", {q.value_dim(), h});
    }
    // The router stays F32: llama-quant never quantizes ffn_gate_inp.weight.
    b.add(fmt::format("blk.{}.ffn_gate_inp.weight", i), {h, q.n_experts}, TensorInit::linear, i, false);
    b.weight(i, "ffn_gate_exps", {h, q.expert_intermediate, q.n_experts});
    b.weight(i, "ffn_up_exps", {h, q.expert_intermediate, q.n_experts});
    b.weight(i, "ffn_down_exps", {q.expert_intermediate, h, q.n_experts});
    b.add(fmt::format("blk.{}.ffn_gate_inp_shexp.weight", i), {h}, TensorInit::linear, i, false);
    b.weight(i, "ffn_gate_shexp", {h, q.shared_intermediate});
    b.weight(i, "ffn_up_shexp", {h, q.shared_intermediate});
    b.weight(i, "ffn_down_shexp", {q.shared_intermediate, h});
  }
}

GgufKv kv(std::string key, GgufValueStorage v) { return GgufKv{std::move(key), GgufValue{std::move(v)}}; }

GgufKv kv_u32(std::string key, int64_t v) { return kv(std::move(key), static_cast<uint32_t>(v)); }

GgufKv kv_f32(std::string key, double v) { return kv(std::move(key), static_cast<float>(v)); }

}  // namespace

std::vector<TensorSpec> model_tensors(const ModelConfig& config, QuantRecipe recipe) {
  Builder b;
  if (config.family == ModelFamily::gemma4) {
    gemma4_tensors(config, b);
  } else {
    qwen35moe_tensors(config, b);
  }
  RecipeState state(config, recipe);
  state.count(b.specs);
  for (size_t k = 0; k < b.specs.size(); ++k) {
    TensorSpec& s = b.specs[k];
    if (s.type == GgmlType::F32) continue;
    s.type = state.pick(s.name, b.layers[k]);
    if (s.ne[0] % ggml_type_info(s.type).block_elems != 0) {
      throw std::logic_error(
          fmt::format("{}: K={} is not a multiple of the {} block", s.name, s.ne[0], ggml_type_name(s.type)));
    }
  }
  return b.specs;
}

std::vector<GgufKv> model_metadata(const ModelConfig& c, QuantRecipe recipe, uint64_t seed) {
  const std::string a = c.gguf_arch;
  std::vector<GgufKv> m;
  m.push_back(kv("general.architecture", a));
  m.push_back(kv("general.name", fmt::format("fusebench synthetic {} ({})", c.name, c.scale_name())));
  m.push_back(kv_u32("general.file_type", 15));            // LLAMA_FTYPE_MOSTLY_Q4_K_M (llama.h)
  m.push_back(kv_u32("general.quantization_version", 2));  // GGML_QNT_VERSION
  m.push_back(kv("fusebench.generator", std::string("fusebench make-model")));
  m.push_back(kv("fusebench.model", c.name));
  m.push_back(kv("fusebench.scale", c.scale_name()));
  m.push_back(kv("fusebench.recipe", std::string(to_string(recipe))));
  m.push_back(kv("fusebench.seed", static_cast<uint64_t>(seed)));
  m.push_back(kv_u32(a + ".context_length", c.context_length));
  m.push_back(kv_u32(a + ".embedding_length", c.hidden));
  m.push_back(kv_u32(a + ".block_count", c.n_layers));
  m.push_back(kv_f32(a + ".attention.layer_norm_rms_epsilon", c.rms_eps));
  if (c.family == ModelFamily::gemma4) {
    const Gemma4Dims& g = c.gemma;
    m.push_back(kv_u32(a + ".feed_forward_length", g.intermediate));
    m.push_back(kv_u32(a + ".attention.head_count", g.n_heads));
    GgufArray kv_heads{GgufValueType::INT32, std::vector<int32_t>{}};
    GgufArray pattern{GgufValueType::BOOL, std::vector<uint8_t>{}};
    for (int64_t i = 0; i < c.n_layers; ++i) {
      const bool full = c.is_full_attention(i);
      std::get<std::vector<int32_t>>(kv_heads.values)
          .push_back(static_cast<int32_t>(full ? g.n_kv_heads_full : g.n_kv_heads_sliding));
      std::get<std::vector<uint8_t>>(pattern.values).push_back(full ? 0 : 1);  // true = sliding
    }
    m.push_back(kv(a + ".attention.head_count_kv", kv_heads));
    m.push_back(kv_u32(a + ".attention.key_length", g.head_dim_full));
    m.push_back(kv_u32(a + ".attention.value_length", g.head_dim_full));
    m.push_back(kv_u32(a + ".attention.key_length_swa", g.head_dim_sliding));
    m.push_back(kv_u32(a + ".attention.value_length_swa", g.head_dim_sliding));
    m.push_back(kv_u32(a + ".rope.dimension_count", g.head_dim_full));
    m.push_back(kv_u32(a + ".rope.dimension_count_swa", g.head_dim_sliding));
    m.push_back(kv_f32(a + ".rope.freq_base", g.rope_theta_full));
    m.push_back(kv_f32(a + ".rope.freq_base_swa", g.rope_theta_sliding));
    m.push_back(kv_u32(a + ".attention.sliding_window", g.sliding_window));
    m.push_back(kv(a + ".attention.sliding_window_pattern", pattern));
    m.push_back(kv_u32(a + ".embedding_length_per_layer_input", 0));
    m.push_back(kv_f32(a + ".final_logit_softcapping", g.final_softcap));
  } else {
    const Qwen35MoeDims& q = c.qwen;
    m.push_back(kv_u32(a + ".attention.head_count", q.n_heads));
    m.push_back(kv_u32(a + ".attention.head_count_kv", q.n_kv_heads));
    m.push_back(kv_u32(a + ".attention.key_length", q.head_dim));
    m.push_back(kv_u32(a + ".attention.value_length", q.head_dim));
    m.push_back(kv_u32(a + ".rope.dimension_count", q.rotary_dim));
    m.push_back(kv_f32(a + ".rope.freq_base", q.rope_theta));
    // Text-only use of IMRoPE: all rotary pairs in the first section.
    m.push_back(kv(a + ".rope.dimension_sections",
                   GgufArray{GgufValueType::INT32,
                             std::vector<int32_t>{static_cast<int32_t>(q.rotary_dim / 2), 0, 0, 0}}));
    m.push_back(kv_u32(a + ".expert_count", q.n_experts));
    m.push_back(kv_u32(a + ".expert_used_count", q.top_k));
    m.push_back(kv_u32(a + ".expert_feed_forward_length", q.expert_intermediate));
    m.push_back(kv_u32(a + ".expert_shared_feed_forward_length", q.shared_intermediate));
    m.push_back(kv_u32(a + ".ssm.conv_kernel", q.conv_kernel));
    m.push_back(kv_u32(a + ".ssm.inner_size", q.value_dim()));
    m.push_back(kv_u32(a + ".ssm.state_size", q.gdn_head_k_dim));
    m.push_back(kv_u32(a + ".ssm.time_step_rank", q.gdn_v_heads));
    m.push_back(kv_u32(a + ".ssm.group_count", q.gdn_k_heads));
    m.push_back(kv_u32(a + ".full_attention_interval", q.full_every));
  }
  // No tokenizer: llama.cpp's "no_vocab" model type, as its own synthetic-model tests use.
  m.push_back(kv("tokenizer.ggml.model", std::string("no_vocab")));
  return m;
}

}  // namespace fb
