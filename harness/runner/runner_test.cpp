#include "harness/runner/runner.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "harness/runner/kernel_registry.h"
#include "harness/runner/tolerances.h"

namespace fb {
namespace {

Comparison make(Metrics m, Tolerance t) {
  Comparison c;
  c.metrics = m;
  c.tolerance = t;
  judge(c);
  return c;
}

TEST(Judge, BitExactIgnoresNumericBounds) {
  Metrics m;
  m.bit_exact = false;
  m.mismatches = 1;
  m.n = 10;
  Tolerance t;
  t.bit_exact = true;
  EXPECT_EQ(make(m, t).verdict, Verdict::fail);
  m.bit_exact = true;
  m.mismatches = 0;
  EXPECT_EQ(make(m, t).verdict, Verdict::pass);
}

TEST(Judge, EachBoundFailsWithItsName) {
  Metrics m;
  m.n = 4;
  m.bit_exact = false;
  m.max_abs = 0.5;
  m.max_rel = 0.1;
  m.cosine = 0.99;
  m.nmse = 1e-3;
  Tolerance t;
  t.max_abs = 0.1;
  EXPECT_NE(make(m, t).why.find("max_abs"), std::string::npos);
  t = Tolerance{};
  t.max_rel = 0.01;
  EXPECT_NE(make(m, t).why.find("max_rel"), std::string::npos);
  t = Tolerance{};
  t.min_cosine = 0.999;
  EXPECT_NE(make(m, t).why.find("cosine"), std::string::npos);
  t = Tolerance{};
  t.max_nmse = 1e-5;
  EXPECT_NE(make(m, t).why.find("nmse"), std::string::npos);
  t = Tolerance{};
  EXPECT_EQ(make(m, t).verdict, Verdict::pass);
  m.nonfinite = 1;
  EXPECT_EQ(make(m, t).verdict, Verdict::fail) << "NaN/Inf never pass";
}

TEST(B2bLaunches, AboutHundredMicrosecondsPerSampleClamped) {
  EXPECT_EQ(b2b_launches_per_sample(0.005), 20);    // 5 us -> 20 x 5 us = 100 us
  EXPECT_EQ(b2b_launches_per_sample(0.003), 34);    // ceil(33.3)
  EXPECT_EQ(b2b_launches_per_sample(0.05), 2);      // exact quotient, not rounded up to 3
  EXPECT_EQ(b2b_launches_per_sample(0.0001), 200);  // 0.1 us -> 1000, clamped
  EXPECT_EQ(b2b_launches_per_sample(5.0), 2);       // long kernels still get two
  EXPECT_EQ(b2b_launches_per_sample(0.0), 200);
}

TEST(Tolerances, MissingEntryIsStrictNotLoose) {
  const Tolerance t = kernel_tolerance("no_such_kernel", "reference");
  EXPECT_TRUE(t.bit_exact);
  EXPECT_NE(t.source.find("missing"), std::string::npos);
  EXPECT_TRUE(kernel_tolerance("dequant_bf16", "unfused").bit_exact);
}

TEST(Registry, DequantInstancesCoverFusionGroupsAndSingles) {
  const KernelDef* k = find_kernel("dequant_bf16");
  ASSERT_NE(k, nullptr);
  const auto gemma = k->instances(model_config(ModelFamily::gemma4, ModelScale::full), Phase::prefill);
  bool gate_up = false, q6k = false;
  for (const auto& i : gemma) {
    if (i["name"] == "ffn_gate+ffn_up") {
      gate_up = true;
      EXPECT_EQ(i["parts"][0]["rows"], 21504);
      EXPECT_EQ(i["cols"], 5376);
      EXPECT_EQ(i["variants"], (nlohmann::json{"fused", "unfused"}));
    }
    q6k |= i["type"] == "q6_K";
  }
  EXPECT_TRUE(gate_up);
  EXPECT_TRUE(q6k) << "the Q4_K_M mix's Q6_K ffn_down/attn_v must be covered";
  EXPECT_TRUE(k->instances(model_config(ModelFamily::gemma4, ModelScale::full), Phase::decode).empty());
  EXPECT_FALSE(k->instances(model_config(ModelFamily::qwen35moe, ModelScale::tiny), Phase::prefill).empty());
}

TEST(Runner, CpuOnlyRunsReferencesAndSaysWhatItSkipped) {
  Scenario s;
  s.name = "tiny-prefill";
  s.file = "tiny-prefill.toml";
  s.model = "gemma4-31b";
  s.scale = "tiny";
  s.phase = Phase::prefill;
  s.tokens = {8};
  s.contexts = {64, 256};
  s.variants = {"fused", "unfused"};
  RunOptions o;
  o.filters.kernels = {"dequant_bf16"};  // other kernels serve prefill too; this test is about one
  o.filters.instances = {"ffn_gate+ffn_up"};
  DeviceInfo none;
  none.unavailable_reason = "no GPU in this test";
  const RunReport r = run_scenarios({s}, o, none, std::nullopt);
  // dequant does not depend on context: one case per variant, not one per context.
  ASSERT_EQ(r.cases.size(), 2u);
  EXPECT_EQ(r.cases[0].variant, "unfused") << "the twin runs first";
  EXPECT_EQ(r.cases[0].comparisons.size(), 1u) << "unfused: vs reference";
  ASSERT_EQ(r.cases[1].comparisons.size(), 2u) << "fused: vs reference and vs its unfused twin";
  EXPECT_EQ(r.cases[1].comparisons[1].against, "unfused");
  for (const auto& c : r.cases) {
    EXPECT_EQ(c.verdict, Verdict::pass) << c.error;
    for (const auto& cmp : c.comparisons) EXPECT_TRUE(cmp.metrics.bit_exact) << cmp.against;
    EXPECT_EQ(c.backend, "cpu-reference");
    EXPECT_NE(c.repro.find("--instance 'ffn_gate+ffn_up@1024x256'"), std::string::npos) << c.repro;
  }
  ASSERT_FALSE(r.notes.empty());
  EXPECT_NE(r.notes[0].find("no GPU in this test"), std::string::npos) << r.notes[0];

  o.bench = true;
  o.timing.min_samples = 3;
  o.timing.min_seconds = 0.0;
  const RunReport b = run_scenarios({s}, o, none, std::nullopt);
  ASSERT_EQ(b.cases.size(), 2u);
  for (const auto& c : b.cases) {
    ASSERT_TRUE(c.hot.has_value());
    EXPECT_EQ(c.hot->method, "cpu-steady-clock");
    EXPECT_GE(c.hot->samples.size(), 3u);
  }
}

TEST(Runner, UnknownKernelInAScenarioIsAnError) {
  Scenario s;
  s.name = "bad";
  s.file = "bad.toml";
  s.model = "gemma4-31b";
  s.scale = "tiny";
  s.phase = Phase::prefill;
  s.tokens = {8};
  s.contexts = {64};
  s.kernels = {"warp_drive"};
  DeviceInfo none;
  EXPECT_THROW(run_scenarios({s}, RunOptions{}, none, std::nullopt), std::invalid_argument);
}

TEST(Runner, NotesWhenNothingApplies) {
  Scenario s;
  s.name = "decode";
  s.file = "decode.toml";
  s.model = "qwen3.5-moe";
  s.scale = "tiny";
  s.phase = Phase::decode;
  s.tokens = {1};
  s.contexts = {64};
  DeviceInfo none;
  RunOptions o;
  o.filters.kernels = {"dequant_bf16"};  // prefill-only: nothing applies to a decode scenario
  const RunReport r = run_scenarios({s}, o, none, std::nullopt);
  EXPECT_TRUE(r.cases.empty());
  ASSERT_EQ(r.notes.size(), 1u);
  EXPECT_NE(r.notes[0].find("no kernel"), std::string::npos) << r.notes[0];
}

}  // namespace
}  // namespace fb
