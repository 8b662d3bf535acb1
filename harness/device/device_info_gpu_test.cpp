// On a real GPU: the facts are plausible and the baselines land where a Hopper-class part should.
// The floors (100 GB/s copy, 50 TFLOP/s bf16) are far below any sm_90 part, so a failure means the
// measurement is broken (wrong byte count, zeros, a sync missing), not a slow card.
#include <gtest/gtest.h>

#include "harness/device/device_info.h"
#include "kernels/common/cuda_check.h"

namespace fb {
namespace {

class DeviceGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = cuda_device_unavailable_reason()) GTEST_SKIP() << *why;
  }
};

TEST_F(DeviceGpu, FieldsAreSane) {
  const DeviceInfo d = query_device();
  ASSERT_TRUE(d.available) << d.unavailable_reason;
  EXPECT_FALSE(d.name.empty());
  EXPECT_EQ(d.uuid.rfind("GPU-", 0), 0u) << d.uuid;
  EXPECT_GT(d.sm_count, 0);
  EXPECT_GE(d.cc_major, 9);
  EXPECT_GT(d.total_memory_bytes, uint64_t{1} << 30);
  EXPECT_GT(d.l2_bytes, uint64_t{1} << 20);
  EXPECT_GE(d.driver_version, 13000);
  EXPECT_GE(d.runtime_version, 13000);
  EXPECT_GT(d.sm_clock_max_mhz, 500u);
  EXPECT_GT(d.mem_clock_max_mhz, 0u);
  EXPECT_GT(d.memory_bus_width_bits, 0);
  EXPECT_GT(d.theoretical_dram_gbps, 500.0);
  if (read_sm_clock(d.index)) {
    EXPECT_FALSE(d.driver_string.empty());
    EXPECT_GT(d.sm_clock_now_mhz, 0u);
  }
  const nlohmann::json j = to_json(d);
  EXPECT_EQ(j.at("name"), d.name);
  EXPECT_EQ(j.at("compute_capability"), std::to_string(d.cc_major) + "." + std::to_string(d.cc_minor));
}

TEST_F(DeviceGpu, BaselinesArePlausible) {
  const DeviceInfo d = query_device();
  const DeviceBaselines b = measure_baselines();
  RecordProperty("copy_gbps", std::to_string(b.copy_gbps));
  RecordProperty("bf16_gemm_tflops", std::to_string(b.bf16_gemm_tflops));
  std::printf("copy %.0f GB/s (theoretical %.0f), bf16 GEMM %.0f TFLOP/s; throttled %zu/%zu, %zu/%zu\n",
              b.copy_gbps, d.theoretical_dram_gbps, b.bf16_gemm_tflops, b.copy.summary.throttled,
              b.copy.samples.size(), b.gemm.summary.throttled, b.gemm.samples.size());
  // Under compute-sanitizer the rates are those of instrumented kernels: only the upper (datasheet)
  // bound still means something.
  if (!under_compute_sanitizer()) {
    EXPECT_GT(b.copy_gbps, 100.0);
    EXPECT_GT(b.bf16_gemm_tflops, 50.0);
  }
  // Above the datasheet means the byte count or the timing is wrong.
  if (d.theoretical_dram_gbps > 0) {
    EXPECT_LT(b.copy_gbps, 1.05 * d.theoretical_dram_gbps);
  }
  EXPECT_LT(b.bf16_gemm_tflops, 5000.0);
  EXPECT_GE(b.copy.samples.size(), 20u);
  EXPECT_GE(b.gemm.samples.size(), 20u);
}

}  // namespace
}  // namespace fb
