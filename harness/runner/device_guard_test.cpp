// The pieces of device_guard that need no GPU: the skip message and the injection selector.
// runner_gpu_test (label gpu) proves the run continues past an injected CUDA error.
#include "harness/runner/device_guard.h"

#include <gtest/gtest.h>

#include <cstdlib>

namespace fb {
namespace {

constexpr uint64_t kGiB = uint64_t{1} << 30;

TEST(DeviceGuard, ShortfallNamesNeededAndFree) {
  EXPECT_EQ(device_memory_shortfall(10 * kGiB, 10 * kGiB), "");
  EXPECT_EQ(device_memory_shortfall(0, 0), "");
  EXPECT_EQ(device_memory_shortfall(80 * kGiB + kGiB / 2, 12 * kGiB + kGiB / 4),
            "needs 80.5 GiB of device memory, 12.2 GiB free");
  // Small sizes stay readable instead of "0.0 GiB".
  EXPECT_EQ(device_memory_shortfall(3 * (uint64_t{1} << 20), 1),
            "needs 3.0 MiB of device memory, 1 byte free");
  EXPECT_EQ(device_memory_shortfall(kGiB, 5000), "needs 1.0 GiB of device memory, 5000 bytes free");
}

TEST(DeviceGuard, FakeFreeBytesComeFromTheEnvironment) {
  ::setenv("FUSEBENCH_FAKE_FREE_DEVICE_BYTES", "12345", 1);
  EXPECT_EQ(device_free_bytes(), std::optional<uint64_t>(12345));
  ::setenv("FUSEBENCH_FAKE_FREE_DEVICE_BYTES", "12x", 1);  // malformed: ignored, never a guess
  const auto real = device_free_bytes();
  ::unsetenv("FUSEBENCH_FAKE_FREE_DEVICE_BYTES");
  EXPECT_EQ(real, device_free_bytes());
}

TEST(DeviceGuard, InjectionSelectsKernelAndOptionalVariant) {
  ::unsetenv("FUSEBENCH_INJECT_CUDA_ERROR");
  EXPECT_FALSE(cuda_error_injection_selects("matvec", "fused"));
  ::setenv("FUSEBENCH_INJECT_CUDA_ERROR", "matvec", 1);
  EXPECT_TRUE(cuda_error_injection_selects("matvec", "fused"));
  EXPECT_TRUE(cuda_error_injection_selects("matvec", "unfused"));
  EXPECT_FALSE(cuda_error_injection_selects("matvec2", "fused"));
  ::setenv("FUSEBENCH_INJECT_CUDA_ERROR", "matvec:fused", 1);
  EXPECT_TRUE(cuda_error_injection_selects("matvec", "fused"));
  EXPECT_FALSE(cuda_error_injection_selects("matvec", "unfused"));
  ::unsetenv("FUSEBENCH_INJECT_CUDA_ERROR");
}

}  // namespace
}  // namespace fb
