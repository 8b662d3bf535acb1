#include "reference/model/model_tensors.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

namespace fb {
namespace {

std::map<std::string, TensorSpec> by_name(const std::vector<TensorSpec>& specs) {
  std::map<std::string, TensorSpec> m;
  for (const auto& s : specs) m[s.name] = s;
  return m;
}

int64_t total_params(const std::vector<TensorSpec>& specs) {
  int64_t n = 0;
  for (const auto& s : specs) n += s.n_elements();
  return n;
}

TEST(ModelTensors, UseMoreBitsMatchesLlamaQuantDefinition) {
  // n = 60: n/8 = 7, 7n/8 = 52; middle layers every third from 9 (= 7 + 2).
  std::vector<int64_t> more;
  for (int64_t i = 0; i < 60; ++i)
    if (llama_use_more_bits(i, 60)) more.push_back(i);
  const std::vector<int64_t> expected = {0,  1,  2,  3,  4,  5,  6,  9,  12, 15, 18, 21, 24, 27, 30,
                                         33, 36, 39, 42, 45, 48, 51, 52, 53, 54, 55, 56, 57, 58, 59};
  EXPECT_EQ(more, expected);
}

TEST(ModelTensors, Gemma4FullShapesAndQ4KMTypes) {
  const ModelConfig c = model_config(ModelFamily::gemma4, ModelScale::full);
  const auto specs = model_tensors(c, QuantRecipe::q4_k_m);
  const auto m = by_name(specs);
  // 3 globals + 14 tensors per sliding layer + 13 per full layer (no attn_v: V = K).
  EXPECT_EQ(specs.size(), 3u + 50u * 14u + 10u * 13u);
  const int64_t params = total_params(specs);
  EXPECT_GT(params, 30'500'000'000);
  EXPECT_LT(params, 31'000'000'000) << "gemma4-31b should have about 30.7 B parameters";

  EXPECT_EQ(m.at("token_embd.weight").type, GgmlType::Q6_K);  // tied embedding -> Q6_K
  EXPECT_EQ(m.at("token_embd.weight").ne, (std::vector<int64_t>{5376, 262144}));
  EXPECT_EQ(m.at("blk.0.attn_q.weight").ne, (std::vector<int64_t>{5376, 8192}));
  EXPECT_EQ(m.at("blk.0.attn_k.weight").ne, (std::vector<int64_t>{5376, 4096}));
  EXPECT_EQ(m.at("blk.5.attn_q.weight").ne, (std::vector<int64_t>{5376, 16384}));
  EXPECT_EQ(m.at("blk.5.attn_k.weight").ne, (std::vector<int64_t>{5376, 2048}));
  EXPECT_EQ(m.count("blk.5.attn_v.weight"), 0u);
  EXPECT_EQ(m.at("blk.5.attn_output.weight").ne, (std::vector<int64_t>{16384, 5376}));
  EXPECT_EQ(m.at("blk.0.ffn_gate.weight").ne, (std::vector<int64_t>{5376, 21504}));
  EXPECT_EQ(m.at("blk.0.ffn_down.weight").ne, (std::vector<int64_t>{21504, 5376}));
  EXPECT_EQ(m.at("blk.0.attn_q_norm.weight").type, GgmlType::F32);
  EXPECT_EQ(m.at("rope_freqs.weight").ne, (std::vector<int64_t>{256}));

  // ffn_down: Q6_K exactly on use_more_bits(layer, 60).
  for (int64_t i = 0; i < 60; ++i) {
    const auto t = m.at("blk." + std::to_string(i) + ".ffn_down.weight").type;
    EXPECT_EQ(t, llama_use_more_bits(i, 60) ? GgmlType::Q6_K : GgmlType::Q4_K) << "layer " << i;
  }
  // attn_v exists on the 50 sliding layers and is indexed 0..49 among them.
  int64_t iv = 0;
  for (int64_t i = 0; i < 60; ++i) {
    if (c.is_full_attention(i)) continue;
    const auto t = m.at("blk." + std::to_string(i) + ".attn_v.weight").type;
    EXPECT_EQ(t, llama_use_more_bits(iv, 50) ? GgmlType::Q6_K : GgmlType::Q4_K) << "layer " << i;
    ++iv;
  }
  EXPECT_EQ(m.at("blk.0.ffn_gate.weight").type, GgmlType::Q4_K);
}

TEST(ModelTensors, Qwen35MoeFullShapesAndQ4KMTypes) {
  const ModelConfig c = model_config(ModelFamily::qwen35moe, ModelScale::full);
  const auto specs = model_tensors(c, QuantRecipe::q4_k_m);
  const auto m = by_name(specs);
  const int64_t params = total_params(specs);
  EXPECT_GT(params, 34'000'000'000);
  EXPECT_LT(params, 36'000'000'000) << "qwen3.5-moe (35B-A3B) should have about 35 B parameters";
  EXPECT_EQ(m.at("token_embd.weight").type, GgmlType::Q4_K);  // untied: output carries Q6_K
  EXPECT_EQ(m.at("output.weight").type, GgmlType::Q6_K);
  EXPECT_EQ(m.at("blk.0.attn_qkv.weight").ne, (std::vector<int64_t>{2048, 8192}));
  EXPECT_EQ(m.at("blk.0.attn_qkv.weight").type, GgmlType::Q5_K);
  EXPECT_EQ(m.at("blk.0.attn_gate.weight").ne, (std::vector<int64_t>{2048, 4096}));
  EXPECT_EQ(m.at("blk.0.ssm_beta.weight").ne, (std::vector<int64_t>{2048, 32}));
  EXPECT_EQ(m.at("blk.0.ssm_alpha.weight").ne, (std::vector<int64_t>{2048, 32}));
  EXPECT_EQ(m.at("blk.0.ssm_conv1d.weight").ne, (std::vector<int64_t>{4, 8192}));
  EXPECT_EQ(m.at("blk.0.ssm_conv1d.weight").type, GgmlType::F32);
  EXPECT_EQ(m.at("blk.0.ssm_a").ne, (std::vector<int64_t>{32}));
  EXPECT_EQ(m.at("blk.0.ssm_out.weight").ne, (std::vector<int64_t>{4096, 2048}));
  EXPECT_EQ(m.at("blk.3.attn_q.weight").ne, (std::vector<int64_t>{2048, 8192}));
  EXPECT_EQ(m.at("blk.3.attn_k.weight").ne, (std::vector<int64_t>{2048, 512}));
  EXPECT_EQ(m.at("blk.3.attn_output.weight").ne, (std::vector<int64_t>{4096, 2048}));
  EXPECT_EQ(m.count("blk.3.attn_qkv.weight"), 0u);
  EXPECT_EQ(m.at("blk.0.ffn_gate_inp.weight").type, GgmlType::F32);
  EXPECT_EQ(m.at("blk.0.ffn_gate_exps.weight").ne, (std::vector<int64_t>{2048, 512, 256}));
  EXPECT_EQ(m.at("blk.0.ffn_down_exps.weight").ne, (std::vector<int64_t>{512, 2048, 256}));
  EXPECT_EQ(m.at("blk.0.ffn_down_exps.weight").type, GgmlType::Q6_K);  // use_more_bits(0, 40)
  EXPECT_EQ(m.at("blk.5.ffn_down_exps.weight").type, GgmlType::Q4_K);
  EXPECT_EQ(m.at("blk.0.ffn_gate_inp_shexp.weight").ne, (std::vector<int64_t>{2048}));
  // attn_v: n counts attn_v (10) + attn_qkv (30) names = 40; i runs over the 10 attn_v tensors.
  int64_t iv = 0;
  for (int64_t i = 3; i < 40; i += 4) {
    const auto t = m.at("blk." + std::to_string(i) + ".attn_v.weight").type;
    EXPECT_EQ(t, llama_use_more_bits(iv, 40) ? GgmlType::Q6_K : GgmlType::Q4_K) << "layer " << i;
    ++iv;
  }
}

TEST(ModelTensors, UniformRecipeQuantizesEverythingQ4KButOutput) {
  for (auto family : {ModelFamily::gemma4, ModelFamily::qwen35moe}) {
    const ModelConfig c = model_config(family, ModelScale::tiny);
    for (const auto& s : model_tensors(c, QuantRecipe::q4_k)) {
      if (s.type == GgmlType::F32) continue;
      const bool output = s.name == "output.weight" || (c.tied_embeddings && s.name == "token_embd.weight");
      EXPECT_EQ(s.type, output ? GgmlType::Q6_K : GgmlType::Q4_K) << s.name;
    }
  }
}

TEST(ModelTensors, TinyScalesKeepStructure) {
  for (auto family : {ModelFamily::gemma4, ModelFamily::qwen35moe}) {
    const ModelConfig tiny = model_config(family, ModelScale::tiny);
    const ModelConfig full = model_config(family, ModelScale::full);
    std::set<std::string> tiny_kinds, full_kinds;
    auto kind = [](const std::string& name) {
      return name.rfind("blk.", 0) == 0 ? name.substr(name.find('.', 4) + 1) : name;
    };
    for (const auto& s : model_tensors(tiny, QuantRecipe::q4_k_m)) tiny_kinds.insert(kind(s.name));
    for (const auto& s : model_tensors(full, QuantRecipe::q4_k_m)) full_kinds.insert(kind(s.name));
    EXPECT_EQ(tiny_kinds, full_kinds) << tiny.name << ": tiny must carry every tensor kind of the full model";
    EXPECT_LT(total_params(model_tensors(tiny, QuantRecipe::q4_k_m)), 20'000'000) << tiny.name;
  }
}

TEST(ModelTensors, MetadataCarriesLlamaCppKeys) {
  const ModelConfig g = model_config(ModelFamily::gemma4, ModelScale::full);
  std::map<std::string, GgufValue> m;
  for (const auto& kv : model_metadata(g, QuantRecipe::q4_k_m, 7)) m[kv.key] = kv.value;
  EXPECT_EQ(*m.at("general.architecture").as_string(), "gemma4");
  EXPECT_EQ(m.at("gemma4.block_count").type(), GgufValueType::UINT32);
  EXPECT_EQ(m.at("gemma4.embedding_length").as_uint(), 5376u);
  EXPECT_EQ(m.at("gemma4.attention.sliding_window_pattern").as_array()->size(), 60u);
  EXPECT_EQ(m.at("gemma4.attention.layer_norm_rms_epsilon").type(), GgufValueType::FLOAT32);
  EXPECT_EQ(m.at("general.file_type").as_uint(), 15u);

  const ModelConfig q = model_config(ModelFamily::qwen35moe, ModelScale::full);
  m.clear();
  for (const auto& kv : model_metadata(q, QuantRecipe::q4_k_m, 7)) m[kv.key] = kv.value;
  EXPECT_EQ(*m.at("general.architecture").as_string(), "qwen35moe");
  EXPECT_EQ(m.at("qwen35moe.expert_count").as_uint(), 256u);
  EXPECT_EQ(m.at("qwen35moe.ssm.inner_size").as_uint(), 4096u);
  EXPECT_EQ(m.at("qwen35moe.rope.dimension_sections").as_array()->size(), 4u);
}

TEST(ModelTensors, UnknownNamesAreRejectedWithTheValidOnes) {
  try {
    model_config("gemma5", "full");
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("gemma4-31b"), std::string::npos) << e.what();
  }
  EXPECT_THROW(model_config("gemma4-31b", "huge"), std::invalid_argument);
  EXPECT_THROW(parse_quant_recipe("q3_k_s"), std::invalid_argument);
}

}  // namespace
// Gemma q/k norm weights are scaled so that unit-rms q and k give attention scores of std ~1 (a
// near-argmax softmax otherwise, see qk_norm_scale); the other norms stay around 1.
TEST(ModelTensors, Gemma4QkNormsAreScaledForHeadDim) {
  EXPECT_NEAR(qk_norm_scale(256) * qk_norm_scale(256) * 16.0, 1.0, 1e-12);
  const ModelConfig c = model_config(ModelFamily::gemma4, ModelScale::tiny);
  int n = 0;
  for (const TensorSpec& s : model_tensors(c, QuantRecipe::q4_k_m)) {
    const bool qk =
        s.name.find("attn_q_norm") != std::string::npos || s.name.find("attn_k_norm") != std::string::npos;
    EXPECT_EQ(s.init == TensorInit::qk_norm, qk) << s.name;
    n += qk;
  }
  EXPECT_EQ(n, 2 * c.n_layers);
}

}  // namespace fb
