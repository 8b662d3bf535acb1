// aggregate() on synthetic CUPTI records: group by external id, innermost NVTX range on the
// launching thread, kernels outside ranges kept apart, shares summing to 100 %, no-NVTX fallback.
#include "harness/profile/kernel_profile.h"

#include <gtest/gtest.h>

namespace fb::profile {
namespace {

ActivityLog two_cases() {
  ActivityLog log;
  // Case 1: a step range holding two kernel ranges; case 2: one range; one setup kernel outside.
  log.ranges = {{1, 100, 1000, "decode_step", "fusebench"},
                {1, 110, 200, "matvec_w4a8", "fusebench"},
                {1, 300, 400, "rms_norm", "fusebench"},
                {1, 2000, 2100, "swa_decode", "fusebench"},
                {1, 0, 5000, "someone_else", "other-domain"}};
  log.apis = {{10, 1, 120}, {11, 1, 130}, {12, 1, 310}, {13, 1, 500}, {20, 1, 2010}, {21, 1, 1500}};
  log.kernels = {{10, 1000, 1300, "void quantize<1>(float const*)"},
                 {11, 1300, 1900, "matvec"},
                 {12, 2000, 2100, "rms_norm"},
                 {13, 2100, 2200, "step_tail"},  // in the step range only
                 {20, 3000, 3400, "swa"},
                 {21, 2500, 2600, "poison"},  // between ranges: setup work
                 {99, 0, 10, "ungrouped"}};
  log.externals = {{10, 1}, {11, 1}, {12, 1}, {13, 1}, {20, 2}, {21, 2}};
  return log;
}

TEST(KernelProfile, GroupsRangesAndShares) {
  ActivityLog log = two_cases();
  log.kernels[0].name = short_kernel_name(log.kernels[0].name);
  const auto p = aggregate(log, {{1, "step"}, {2, "swa case"}});
  ASSERT_TRUE(p["nvtx_ranges"].get<bool>());
  EXPECT_EQ(p["ungrouped_ns"].get<uint64_t>(), 10u);
  const auto& g1 = p["groups"][0];
  EXPECT_EQ(g1["name"], "step");
  EXPECT_EQ(g1["gpu_ns"].get<uint64_t>(), 300u + 600 + 100 + 100);
  ASSERT_EQ(g1["kernels"].size(), 4u);
  EXPECT_EQ(g1["kernels"][0]["kernel"], "matvec");  // largest first
  EXPECT_EQ(g1["kernels"][0]["range"], "matvec_w4a8");
  double sum = 0;
  for (const auto& k : g1["kernels"]) sum += k["share_pct"].get<double>();
  EXPECT_NEAR(sum, 100.0, 1e-9);
  bool saw_tail = false, saw_quant = false;
  for (const auto& k : g1["kernels"]) {
    if (k["kernel"] == "step_tail") saw_tail = k["range"] == "decode_step";
    if (k["kernel"] == "quantize<1>") saw_quant = k["range"] == "matvec_w4a8";
  }
  EXPECT_TRUE(saw_tail);
  EXPECT_TRUE(saw_quant);
  const auto& g2 = p["groups"][1];
  EXPECT_EQ(g2["kernels"].size(), 1u);
  EXPECT_EQ(g2["outside_ranges_ns"].get<uint64_t>(), 100u);
  EXPECT_NE(render_table(p).find("matvec_w4a8"), std::string::npos);
}

TEST(KernelProfile, LaunchThreadIdsUnknownToRangesFallBackToAllRanges) {
  ActivityLog log = two_cases();
  for (auto& a : log.apis) a.thread = 77;
  const auto p = aggregate(log, {{1, "step"}, {2, "swa case"}});
  EXPECT_EQ(p["groups"][0]["kernels"][0]["range"], "matvec_w4a8");
}

TEST(KernelProfile, WithoutNvtxEveryGroupedKernelCounts) {
  ActivityLog log = two_cases();
  log.ranges.clear();
  const auto p = aggregate(log, {{1, "a"}, {2, "b"}});
  EXPECT_FALSE(p["nvtx_ranges"].get<bool>());
  EXPECT_EQ(p["groups"][1]["kernels"].size(), 2u);
  EXPECT_EQ(p["groups"][1]["kernels"][0]["range"], "(no NVTX)");
}

TEST(KernelProfile, ShortNames) {
  EXPECT_EQ(short_kernel_name("void fb::k<(int)4, true>(float const*, int)"), "fb::k<(int)4, true>");
  EXPECT_EQ(short_kernel_name("plain_c_kernel"), "plain_c_kernel");
  // The H200 profile of 2026-11-22 showed every kernel as "fb::cuda::": the unnamed namespace's '('
  // was taken for the argument list.
  EXPECT_EQ(short_kernel_name("void fb::cuda::(anonymous namespace)::swa_decode<256>(fb::cuda::P const&)"),
            "fb::cuda::swa_decode<256>");
  EXPECT_EQ(short_kernel_name("void k(void (*)(int), float)"), "k");
}

}  // namespace
}  // namespace fb::profile
