// The range types must compile and nest in every build (NVTX on, off, or no headers); with no tool
// attached nvtx3 calls are no-ops, so this checks the API shape, not what a profiler records.
#include "harness/timing/nvtx.h"

#include <gtest/gtest.h>

#include <string>

namespace fb {
namespace {

TEST(Nvtx, RangesNestAndCompileInEveryBuild) {
  EXPECT_STREQ(nvtx_domain::name, "fusebench");
  const std::string step = "decode step 3";
  int work = 0;
  {
    nvtx_range outer{step};
    for (int i = 0; i < 3; ++i) {
      FB_NVTX_RANGE("kernel launch");
      nvtx_range inner{"inner"};
      ++work;
    }
  }
  EXPECT_EQ(work, 3);
}

}  // namespace
}  // namespace fb
