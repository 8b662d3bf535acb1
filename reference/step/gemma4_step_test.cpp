#include "reference/step/gemma4_step.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "reference/model/make_model.h"

namespace fb::ref {
namespace {

namespace fs = std::filesystem;

struct TinyModel {
  fs::path path;
  TinyModel() {
    path =
        fs::temp_directory_path() /
        ("fusebench_step_ref_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + ".gguf");
    MakeModelOptions o;
    o.seed = 3;
    make_model(gemma4_step_tiny_config(), path, o);
  }
  ~TinyModel() { fs::remove(path); }
};

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = a.size() == b.size() ? 0.0 : INFINITY;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::abs(double(a[i]) - b[i]));
  return m;
}

// The fused load path (row-concatenated raw blocks, dequantized once, split again) gives the same
// weights bit for bit, because rows of ggml blocks are self-contained.
TEST(Gemma4StepRef, FusedLoadEqualsUnfused) {
  TinyModel m;
  const GgufFile f = GgufFile::open(m.path);
  const ModelConfig c = gemma4_step_tiny_config();
  const Gemma4RefWeights a = load_gemma4_ref_weights(f, c, false), b = load_gemma4_ref_weights(f, c, true);
  ASSERT_FALSE(b.fusion_log.empty());
  ASSERT_EQ(a.layers.size(), b.layers.size());
  for (size_t i = 0; i < a.layers.size(); ++i) {
    EXPECT_EQ(a.layers[i].wq, b.layers[i].wq) << "layer " << i;
    EXPECT_EQ(a.layers[i].wk, b.layers[i].wk) << "layer " << i;
    EXPECT_EQ(a.layers[i].wv, b.layers[i].wv) << "layer " << i;
    EXPECT_EQ(a.layers[i].wgate, b.layers[i].wgate) << "layer " << i;
    EXPECT_EQ(a.layers[i].wup, b.layers[i].wup) << "layer " << i;
  }
}

// A decode step of token P after a prefill of P tokens computes exactly what a prefill of P + 1
// tokens computes for its last row: every op is row-wise or causal, and the caches hold the same
// content (ring slots, TQ4 codes) either way. Starts from seeded random caches past the window.
TEST(Gemma4StepRef, DecodeAfterPrefillEqualsLongerPrefill) {
  TinyModel m;
  const GgufFile f = GgufFile::open(m.path);
  const ModelConfig c = gemma4_step_tiny_config();
  const Gemma4RefWeights w = load_gemma4_ref_weights(f, c, true);
  const int64_t ctx = 90, P = 20;  // crosses the 64-token window and the 128-slot ring boundary
  const std::vector<int32_t> toks = step_tokens(c.vocab, P + 1, 7);
  Gemma4KvState s1 = make_kv_state(c, 256, ctx, 11), s2 = make_kv_state(c, 256, ctx, 11);
  const std::vector<int32_t> prefix(toks.begin(), toks.end() - 1);
  const std::vector<float> pre = gemma4_ref_step(w, s1, prefix, ctx);
  const std::vector<float> dec = gemma4_ref_step(w, s1, {toks.back()}, ctx + P);
  const std::vector<float> full = gemma4_ref_step(w, s2, toks, ctx);
  ASSERT_EQ(dec.size(), static_cast<size_t>(c.vocab));
  for (float v : dec) ASSERT_TRUE(std::isfinite(v));
  EXPECT_LE(max_abs_diff(dec, full), 1e-5) << "decode-after-prefill vs prefill last row";
  EXPECT_GT(max_abs_diff(pre, full), 1e-3) << "different tokens must give different logits";
  // Softcap bounds the logits.
  for (float v : full) ASSERT_LE(std::abs(v), 30.0f);
}

}  // namespace
}  // namespace fb::ref
