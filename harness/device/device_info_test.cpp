// Runs everywhere: query_device() is called unconditionally at the start of every run, so it must
// answer (never throw) whether or not a GPU, a driver or CUDA itself is present.
#include "harness/device/device_info.h"

#include <gtest/gtest.h>

namespace fb {
namespace {

TEST(DeviceInfo, QueryNeverThrowsAndExplainsAbsence) {
  DeviceInfo d;
  EXPECT_NO_THROW(d = query_device());
  if (!d.available) {
    EXPECT_FALSE(d.unavailable_reason.empty());
    const nlohmann::json j = to_json(d);
    EXPECT_EQ(j.at("available"), false);
    EXPECT_EQ(j.at("unavailable_reason"), d.unavailable_reason);
  } else {
    EXPECT_TRUE(d.unavailable_reason.empty());
  }
}

TEST(DeviceInfo, BaselinesJsonShape) {
  DeviceBaselines b;
  b.copy_gbps = 3000;
  b.bf16_gemm_tflops = 700;
  b.copy.method = b.gemm.method = "cuda-events";
  const nlohmann::json j = to_json(b);
  EXPECT_EQ(j.at("copy_gbps"), 3000.0);
  EXPECT_EQ(j.at("bf16_gemm_tflops"), 700.0);
  EXPECT_EQ(j.at("copy").at("method"), "cuda-events");
  EXPECT_TRUE(j.at("gemm").contains("summary"));
}

TEST(DeviceInfo, NoDeviceMeansNoClockAndNoBaselines) {
  const DeviceInfo d = query_device();
  if (d.available) GTEST_SKIP() << "a device is present; device_info_gpu_test covers it";
  EXPECT_THROW(measure_baselines(), std::runtime_error);
}

}  // namespace
}  // namespace fb
