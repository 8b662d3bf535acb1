// On a GPU: a CUDA error in one case fails that case with CUDA's own error text and the run goes
// on (every other case keeps the verdict it has without the error), and a case needing more device
// memory than is free is skipped with "needs X GiB of device memory, Y GiB free" (MiB or bytes when
// smaller). Both faults come from the test
// hooks in device_guard.h, so the real runner path is exercised, not a mock.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "harness/device/device_info.h"
#include "harness/runner/runner.h"
#include "harness/scenario/scenario.h"
#include "kernels/common/cuda_check.h"

namespace fb {
namespace {

RunReport run_tiny_decode(const DeviceInfo& dev) {
  const auto scenarios = load_scenarios(std::filesystem::path(FUSEBENCH_SOURCE_DIR) / "scenarios");
  RunOptions o;
  o.filters.scenarios = {"gemma4-31b-tiny-decode"};
  return run_scenarios(scenarios, o, dev, std::nullopt);
}

class DeviceGuardGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = cuda_device_unavailable_reason()) GTEST_SKIP() << *why;
    dev = query_device();
    ASSERT_TRUE(dev.available) << dev.unavailable_reason;
  }
  void TearDown() override {
    ::unsetenv("FUSEBENCH_INJECT_CUDA_ERROR");
    ::unsetenv("FUSEBENCH_FAKE_FREE_DEVICE_BYTES");
  }
  DeviceInfo dev;
};

TEST_F(DeviceGuardGpu, CudaErrorFailsOnlyItsCaseAndTheRunContinues) {
  const RunReport base = run_tiny_decode(dev);
  ASSERT_GE(base.cases.size(), 2u);
  const std::string victim = base.cases.front().kernel;
  ::setenv("FUSEBENCH_INJECT_CUDA_ERROR", victim.c_str(), 1);
  const RunReport hit = run_tiny_decode(dev);
  ASSERT_EQ(hit.cases.size(), base.cases.size());
  bool failed_before = false, ran_after = false;
  for (size_t i = 0; i < hit.cases.size(); ++i) {
    const CaseResult& b = base.cases[i];
    const CaseResult& h = hit.cases[i];
    SCOPED_TRACE(h.kernel + " " + h.variant + " " + h.error);
    ASSERT_EQ(h.kernel, b.kernel);
    if (h.kernel == victim && b.verdict != Verdict::skip) {
      EXPECT_EQ(h.verdict, Verdict::fail);
      EXPECT_NE(h.error.find("cudaMemcpyAsync (injected"), std::string::npos);
      EXPECT_NE(h.error.find("cudaErrorInvalidValue"), std::string::npos) << "CUDA's own error name";
      failed_before = true;
    } else {
      EXPECT_EQ(h.verdict, b.verdict) << "a case after the injected error changed verdict";
      ran_after = ran_after || (failed_before && h.verdict == Verdict::pass);
    }
  }
  EXPECT_TRUE(failed_before);
  EXPECT_TRUE(ran_after) << "no case ran (and passed) after the injected failure";
}

TEST_F(DeviceGuardGpu, CaseLargerThanFreeMemoryIsSkippedWithTheSizes) {
  ::setenv("FUSEBENCH_FAKE_FREE_DEVICE_BYTES", "1", 1);
  const RunReport r = run_tiny_decode(dev);
  ASSERT_FALSE(r.cases.empty());
  int skipped = 0;
  for (const CaseResult& c : r.cases) {
    SCOPED_TRACE(c.kernel + " " + c.variant);
    // A case with no device path at this shape (e.g. tq4_sdpa off head_dim 512 in the tiny model)
    // runs its CPU twin and needs no device memory: it must not be skipped for memory.
    if (c.backend == "cpu-reference") {
      EXPECT_NE(c.verdict, Verdict::skip) << c.skip_reason;
      continue;
    }
    EXPECT_EQ(c.verdict, Verdict::skip);
    EXPECT_NE(c.skip_reason.find("of device memory, 1 byte free"), std::string::npos) << c.skip_reason;
    ++skipped;
  }
  EXPECT_GT(skipped, 0) << "no device case in the tiny decode scenario";
}

}  // namespace
}  // namespace fb
