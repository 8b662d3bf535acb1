#include "reference/fusion/load_fusions.h"

#include <gtest/gtest.h>

#include <bit>
#include <cstring>
#include <filesystem>

#include "reference/formats/dequantize.h"
#include "reference/gguf/gguf_writer.h"
#include "reference/model/make_model.h"
#include "reference/util/splitmix.h"

namespace fb {
namespace {

namespace fs = std::filesystem;

class LoadFusionsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    m_dir = fs::temp_directory_path() / (std::string("fusebench_fusions_") +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(m_dir);
  }
  void TearDown() override { fs::remove_all(m_dir); }

  fs::path make(ModelFamily family, QuantRecipe recipe) {
    const ModelConfig c = model_config(family, ModelScale::tiny);
    MakeModelOptions opt;
    opt.seed = 42;
    opt.recipe = recipe;
    const fs::path out = m_dir / (c.name + "-" + to_string(recipe) + ".gguf");
    make_model(c, out, opt);
    return out;
  }

  // A file whose tensors are (name, raw type id, ne) filled with seeded random bytes.
  struct RawTensor {
    std::string name;
    uint32_t type;
    std::vector<int64_t> ne;
  };
  fs::path make_raw(const std::string& file, const std::vector<RawTensor>& tensors) {
    GgufWriter w(m_dir / file);
    w.add_kv("general.architecture", GgufValue{std::string("fusebench-test")});
    for (const auto& t : tensors) w.add_tensor_raw(t.name, t.type, t.ne);
    w.begin_data();
    const CounterRng rng(7, 1);
    uint64_t k = 0;
    for (const auto& info : w.tensors()) {
      std::vector<uint8_t> bytes(info.nbytes);
      for (auto& b : bytes) b = static_cast<uint8_t>(rng.bits(k++));
      w.append(bytes);
    }
    w.finish();
    return m_dir / file;
  }

  fs::path m_dir;
};

// Dequantizing the fused tensor must give exactly the bits of dequantizing each part and stacking.
void expect_fused_equals_stacked(const GgufFile& f, const FusionDecision& d) {
  ASSERT_TRUE(d.fused) << d.describe();
  const std::vector<uint8_t> fused = fuse_rows(f, d);
  std::vector<float> a(static_cast<size_t>(d.rows * d.cols)), b(a.size());
  for (int64_t r = 0; r < d.rows; ++r) {
    dequantize(d.type, fused.data() + r * d.row_bytes, a.data() + r * d.cols, d.cols);
  }
  size_t at = 0;
  for (const std::string& part : d.group.parts) {
    const GgufTensorInfo& t = *f.find_tensor(part);
    const auto bytes = f.tensor_data(t);
    for (int64_t r = 0; r < t.n_rows(); ++r) {
      dequantize(t.ggml_type(), bytes.data() + r * d.row_bytes, b.data() + at, d.cols);
      at += static_cast<size_t>(d.cols);
    }
  }
  ASSERT_EQ(at, b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(std::bit_cast<uint32_t>(a[i]), std::bit_cast<uint32_t>(b[i]))
        << d.group.fused_name << ": element " << i << " (row " << i / d.cols << ", col " << i % d.cols
        << ") fused=" << a[i] << " stacked=" << b[i]
        << "\nreproduce: ctest -R LoadFusionsTest (model seed 42)";
  }
}

TEST_F(LoadFusionsTest, UniformRecipeFusesEverythingBitExact) {
  {
    const GgufFile f = GgufFile::open(make(ModelFamily::gemma4, QuantRecipe::q4_k));
    const FusionPlan plan = plan_load_fusions(f);
    EXPECT_EQ(plan.summary(), (std::vector<std::string>{"fused gate+up on 6 of 6 MLP layers",
                                                        "fused q+k+v on 6 of 6 attention layers"}));
    EXPECT_TRUE(plan.diagnostics().empty());
    for (const auto& d : plan.decisions) expect_fused_equals_stacked(f, d);
    // gemma4's full layer (5) has no attn_v: q+k fuse, noted.
    const auto it = std::find_if(plan.decisions.begin(), plan.decisions.end(), [](const FusionDecision& d) {
      return d.group.kind == FusionKind::qkv && d.group.layer == 5;
    });
    ASSERT_NE(it, plan.decisions.end());
    EXPECT_EQ(it->group.parts.size(), 2u);
    EXPECT_EQ(it->group.note, "no attn_v: V = K");
  }
  {
    const GgufFile f = GgufFile::open(make(ModelFamily::qwen35moe, QuantRecipe::q4_k));
    const FusionPlan plan = plan_load_fusions(f);
    EXPECT_EQ(plan.summary(),
              (std::vector<std::string>{"fused q+k+v on 1 of 1 attention layers",
                                        "fused GDN in_proj qkv+z+b+a on 3 of 3 GatedDeltaNet layers",
                                        "fused shared-expert gate+up on 4 of 4 shared-expert layers"}));
    for (const auto& d : plan.decisions) expect_fused_equals_stacked(f, d);
    const auto gdn = std::find_if(plan.decisions.begin(), plan.decisions.end(), [](const FusionDecision& d) {
      return d.group.kind == FusionKind::gdn_in_proj;
    });
    ASSERT_NE(gdn, plan.decisions.end());
    // [qkv 512 | z 256 | b 4 | a 4] at tiny scale (8192 | 4096 | 32 | 32 at full scale).
    EXPECT_EQ(gdn->part_rows, (std::vector<int64_t>{512, 256, 4, 4}));
  }
}

TEST_F(LoadFusionsTest, Q4KMRecipeLeavesMixedTypeGroupsUnfusedWithReasons) {
  const GgufFile f = GgufFile::open(make(ModelFamily::qwen35moe, QuantRecipe::q4_k_m));
  const FusionPlan plan = plan_load_fusions(f);
  // attn_qkv is Q5_K under Q4_K_M, the rest of in_proj Q4_K: no GDN layer can fuse.
  EXPECT_EQ(plan.fused_count(FusionKind::gdn_in_proj), 0u);
  EXPECT_EQ(plan.candidate_count(FusionKind::gdn_in_proj), 3u);
  ASSERT_FALSE(plan.diagnostics().empty());
  EXPECT_NE(plan.diagnostics().front().find("row bytes differ"), std::string::npos)
      << plan.diagnostics().front();
  EXPECT_NE(plan.diagnostics().front().find("q5_K"), std::string::npos) << plan.diagnostics().front();
  for (const auto& d : plan.decisions)
    if (d.fused) expect_fused_equals_stacked(f, d);
}

TEST_F(LoadFusionsTest, EveryGuardPath) {
  // Q4_0 (id 2) and IQ4_NL (id 20) both take 18 bytes per 32 elements: same row bytes, other type.
  const fs::path p = make_raw("guards.gguf", {
                                                 {"blk.0.ffn_gate.weight", 12, {256, 4}},  // partner missing
                                                 {"blk.1.ffn_gate.weight", 12, {256, 4}},  // 3-D partner
                                                 {"blk.1.ffn_up.weight", 12, {256, 2, 2}},
                                                 {"blk.2.ffn_gate.weight", 12, {256, 4}},  // K differs
                                                 {"blk.2.ffn_up.weight", 12, {512, 4}},
                                                 {"blk.3.ffn_gate.weight", 12, {256, 4}},  // row bytes differ
                                                 {"blk.3.ffn_up.weight", 14, {256, 4}},
                                                 {"blk.4.ffn_gate.weight", 2, {256, 4}},  // type differs
                                                 {"blk.4.ffn_up.weight", 20, {256, 4}},
                                                 {"blk.5.ffn_gate.weight", 14, {256, 3}},  // fuses (Q6_K)
                                                 {"blk.5.ffn_up.weight", 14, {256, 5}},
                                                 {"blk.6.ffn_gate.weight", 12, {256, 0}},  // empty
                                                 {"blk.6.ffn_up.weight", 12, {256, 0}},
                                             });
  const GgufFile f = GgufFile::open(p);
  const FusionPlan plan = plan_load_fusions(f);
  ASSERT_EQ(plan.decisions.size(), 7u);
  const char* expected[] = {"blk.0.ffn_up.weight missing", "is 3-D", "K differs", "row bytes differ",
                            "type differs"};
  for (int i = 0; i < 5; ++i) {
    EXPECT_FALSE(plan.decisions[i].fused);
    EXPECT_NE(plan.decisions[i].reason.find(expected[i]), std::string::npos)
        << "layer " << i << ": " << plan.decisions[i].reason;
  }
  EXPECT_TRUE(plan.decisions[5].fused) << plan.decisions[5].describe();
  EXPECT_EQ(plan.decisions[5].rows, 8);
  expect_fused_equals_stacked(f, plan.decisions[5]);
  EXPECT_FALSE(plan.decisions[6].fused);
  EXPECT_NE(plan.decisions[6].reason.find("empty"), std::string::npos) << plan.decisions[6].reason;
  EXPECT_EQ(plan.summary(), std::vector<std::string>{"fused gate+up on 1 of 7 MLP layers"});
  EXPECT_EQ(plan.diagnostics().size(), 6u);
  // Misuse is an error, not a crash.
  EXPECT_THROW(fuse_rows(f, plan.decisions[0]), std::invalid_argument);
  std::vector<uint8_t> small(10);
  EXPECT_THROW(fuse_rows(f, plan.decisions[5], small), std::invalid_argument);
}

}  // namespace
}  // namespace fb
