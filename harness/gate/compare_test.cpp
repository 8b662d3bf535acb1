// compare on synthetic results documents: matching by key, verdicts, numerics that got worse,
// refusals (GPU, build, injected slowdown), Markdown.
#include "harness/gate/compare.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "harness/gate/compare_command.h"

namespace fb::gate {
namespace {

using nlohmann::json;

json timing(std::mt19937_64& rng, double ms, size_t n = 200) {
  std::normal_distribution<double> d(ms, ms * 0.005);
  json t = {{"method", "cuda-events"}, {"cold", false}, {"launch_gated", true}};
  json s = {{"ms", json::array()}, {"sm_clock_mhz", json::array()}, {"throttled", json::array()}};
  for (size_t i = 0; i < n; ++i) {
    s["ms"].push_back(d(rng));
    s["sm_clock_mhz"].push_back(1980);
    s["throttled"].push_back(false);
  }
  t["samples"] = s;
  return t;
}

json a_case(std::mt19937_64& rng, const std::string& tensor, double ms, double nmse = 1e-6,
            bool bit_exact = false) {
  return {{"scenario", "s"},
          {"kernel", "k"},
          {"variant", "fused"},
          {"layout", "default"},
          {"backend", "cuda"},
          {"tokens", 1},
          {"context", 0},
          {"seed", 1},
          {"shape", {{"tensor", tensor}}},
          {"verdict", "pass"},
          {"repro", "fusebench bench --instance '" + tensor + ":q4_K'"},
          {"comparisons",
           json::array({{{"against", "reference"},
                         {"verdict", "pass"},
                         {"why", ""},
                         {"metrics", {{"nmse", nmse}, {"bit_exact", bit_exact}, {"nonfinite", 0}}}}})},
          {"hot", timing(rng, ms)},
          {"cold", nullptr}};
}

json doc(std::vector<json> cases, const std::string& gpu = "NVIDIA H200") {
  json d = {
      {"schema", "fusebench-results"},
      {"schema_version", 1},
      {"kind", "bench"},
      {"env",
       {{"git_sha", "abc"},
        {"git_dirty", false},
        {"build_type", "Release"},
        {"compiler", "gcc 13"},
        {"cuda_compiler", "NVIDIA 13.0"},
        {"device", {{"name", gpu}, {"sm_count", 132}, {"compute_capability", "9.0"}, {"available", true}}}}},
      {"cases", cases}};
  return d;
}

TEST(Compare, VerdictsPerCase) {
  std::mt19937_64 rng(1);
  const json base = doc({a_case(rng, "a", 0.1), a_case(rng, "b", 0.1), a_case(rng, "c", 0.1)});
  const json next = doc({a_case(rng, "a", 0.1), a_case(rng, "b", 0.11), a_case(rng, "c", 0.09)});
  CompareOptions o;
  const Comparison c = compare_results(base, next, o);
  ASSERT_EQ(c.rows.size(), 3u);
  EXPECT_EQ(c.rows[0].decision.change, Change::same);
  EXPECT_EQ(c.rows[1].decision.change, Change::slower);
  EXPECT_EQ(c.rows[2].decision.change, Change::faster);
  EXPECT_TRUE(c.regressed(o));
  const std::string md = render_markdown(c, o);
  EXPECT_NE(md.find("regression"), std::string::npos);
  EXPECT_NE(md.find("| SLOWER | hot | `s k b:q4_K fused default T1 ctx0 seed1`"), std::string::npos) << md;
}

TEST(Compare, UnmatchedCasesAreListedNotFailed) {
  std::mt19937_64 rng(2);
  const Comparison c =
      compare_results(doc({a_case(rng, "a", 0.1)}), doc({a_case(rng, "z", 0.1)}), CompareOptions{});
  EXPECT_TRUE(c.rows.empty());
  EXPECT_EQ(c.only_base.size(), 1u);
  EXPECT_EQ(c.only_next.size(), 1u);
  EXPECT_FALSE(c.regressed(CompareOptions{}));
}

TEST(Compare, NumericsWorseFailsOnItsOwn) {
  std::mt19937_64 rng(3);
  CompareOptions o;
  auto worse = [&](json next_case) {
    return compare_results(doc({a_case(rng, "a", 0.1, 1e-6, true)}), doc({next_case}), o);
  };
  EXPECT_EQ(worse(a_case(rng, "a", 0.1, 1e-6, false)).numerics.size(), 1u);  // bit-exact lost
  EXPECT_EQ(worse(a_case(rng, "a", 0.1, 1e-6, true)).numerics.size(), 0u);
  const Comparison grown =
      compare_results(doc({a_case(rng, "a", 0.1, 1e-6)}), doc({a_case(rng, "a", 0.1, 5e-6)}), o);
  ASSERT_EQ(grown.numerics.size(), 1u);
  EXPECT_TRUE(grown.regressed(o));
  EXPECT_EQ(grown.rows.at(0).decision.change, Change::same);  // timing alone would pass
}

TEST(Compare, CaseThatNowSkipsIsNotSilent) {
  std::mt19937_64 rng(9);
  json skipped = a_case(rng, "a", 0.1);
  skipped["verdict"] = "skip";
  skipped["skip_reason"] = "needs 80.0 GiB of device memory, 12.0 GiB free";
  skipped["comparisons"] = json::array();
  skipped["hot"] = nullptr;
  CompareOptions o;
  const Comparison c = compare_results(doc({a_case(rng, "a", 0.1)}), doc({skipped}), o);
  EXPECT_TRUE(c.rows.empty());
  ASSERT_EQ(c.numerics.size(), 1u);
  EXPECT_EQ(c.numerics[0].what, "verdict pass -> skip: needs 80.0 GiB of device memory, 12.0 GiB free");
  EXPECT_TRUE(c.regressed(o));
}

TEST(Compare, RefusesOtherGpuUnlessForced) {
  std::mt19937_64 rng(4);
  const json base = doc({a_case(rng, "a", 0.1)}),
             next = doc({a_case(rng, "a", 0.1)}, "NVIDIA H100 80GB HBM3");
  CompareOptions o;
  EXPECT_FALSE(refusal_reasons(base, next, o).empty());
  o.force = true;
  EXPECT_TRUE(refusal_reasons(base, next, o).empty());
  json debug = doc({a_case(rng, "a", 0.1)});
  debug["env"]["build_type"] = "Debug";
  EXPECT_FALSE(refusal_reasons(base, debug, CompareOptions{}).empty());
}

TEST(Compare, InjectedSlowdownIsNeverARealResult) {
  std::mt19937_64 rng(5);
  json next = doc({a_case(rng, "a", 0.1)});
  next["env"]["injected_slowdown"] = 0.03;
  CompareOptions o;
  o.force = true;
  EXPECT_FALSE(refusal_reasons(doc({a_case(rng, "a", 0.1)}), next, o).empty());
  o.allow_injected = true;
  EXPECT_TRUE(refusal_reasons(doc({a_case(rng, "a", 0.1)}), next, o).empty());
}

TEST(Compare, ClockDropIsNotARegression) {
  // Same cycles, 5 % lower clock: 5 % more time. A compute-bound kernel under a power limit, not
  // slower code: UNSURE, not SLOWER. The same time change at an unchanged clock is SLOWER.
  std::mt19937_64 rng(8);
  json base = doc({a_case(rng, "a", 0.1)}), next = doc({a_case(rng, "a", 0.105)});
  for (auto& s : next["cases"][0]["hot"]["samples"]["sm_clock_mhz"]) s = 1881;
  const Comparison c = compare_results(base, next, CompareOptions{});
  EXPECT_EQ(c.rows.at(0).decision.change, Change::unsure) << c.rows.at(0).decision.why;
  EXPECT_NE(c.rows.at(0).decision.why.find("clock"), std::string::npos);
  const json same_clock = doc({a_case(rng, "a", 0.105)});
  EXPECT_EQ(compare_results(base, same_clock, CompareOptions{}).rows.at(0).decision.change, Change::slower);
}

TEST(Compare, ThrottledSamplesAreLeftOut) {
  json t = {{"samples", {{"ms", {1.0, 2.0, 100.0}}, {"throttled", {false, false, true}}}}};
  EXPECT_EQ(kept_samples(t), (std::vector<double>{1.0, 2.0}));
}

TEST(Compare, ShareMovesAreReported) {
  std::mt19937_64 rng(6);
  json base = doc({a_case(rng, "a", 0.1)}), next = doc({a_case(rng, "a", 0.1)});
  auto prof = [](double share) {
    return json{
        {"groups",
         {{{"name", "step"}, {"kernels", {{{"range", "matvec"}, {"kernel", "k1"}, {"share_pct", share}}}}}}}};
  };
  base["profile"] = prof(40);
  next["profile"] = prof(55);
  const Comparison c = compare_results(base, next, CompareOptions{});
  ASSERT_EQ(c.shares.size(), 1u);
  EXPECT_NE(render_markdown(c, CompareOptions{}).find("Kernel share moved"), std::string::npos);
}

TEST(Compare, MicrosecondShiftBelowTimerResolutionIsNotSlower) {
  // 4 us -> 4.12 us (+3 %, 0.12 us) is below the CUDA event resolution: UNSURE, not a regression;
  // 40 us -> 41.2 us is SLOWER. The legend and the JSON options name the floor.
  std::mt19937_64 rng(10);
  const json base = doc({a_case(rng, "small", 0.004), a_case(rng, "large", 0.040)});
  const json next = doc({a_case(rng, "small", 0.004 * 1.03), a_case(rng, "large", 0.040 * 1.03)});
  CompareOptions o;
  const Comparison c = compare_results(base, next, o);
  ASSERT_EQ(c.rows.size(), 2u);
  EXPECT_EQ(c.rows[0].decision.change, Change::unsure) << c.rows[0].decision.why;
  EXPECT_NE(c.rows[0].decision.why.find("timer resolution"), std::string::npos);
  EXPECT_EQ(c.rows[1].decision.change, Change::slower) << c.rows[1].decision.why;
  EXPECT_NE(render_text(c, o).find("timer resolution 0.5 us"), std::string::npos);
  EXPECT_NE(render_markdown(c, o).find("at least 0.5 µs"), std::string::npos);
  const json j = to_json(c, o);
  EXPECT_DOUBLE_EQ(j["options"]["resolution_ms"].get<double>(), 0.0005);
  EXPECT_TRUE(j["rows"][0]["below_resolution"].get<bool>());
}

TEST(CompareCommand, ResolutionOptionParsesInMicroseconds) {
  auto parse = [](std::vector<std::string> args) {
    CLI::App app;
    CompareOptions o;
    add_gate_options(&app, o);
    std::reverse(args.begin(), args.end());  // CLI11 takes a vector in reverse order
    app.parse(args);
    return o;
  };
  EXPECT_DOUBLE_EQ(parse({}).gate.resolution_ms, 0.0005);
  EXPECT_DOUBLE_EQ(parse({"--resolution-us", "0.25"}).gate.resolution_ms, 0.00025);
  EXPECT_DOUBLE_EQ(parse({"--resolution-us", "0"}).gate.resolution_ms, 0.0);
  EXPECT_THROW(parse({"--resolution-us", "-1"}), CLI::ValidationError);
}

TEST(Baselines, GpuSlug) {
  EXPECT_EQ(gpu_slug("NVIDIA H200"), "nvidia-h200");
  EXPECT_EQ(gpu_slug("NVIDIA H100 80GB HBM3"), "nvidia-h100-80gb-hbm3");
}

}  // namespace
}  // namespace fb::gate
