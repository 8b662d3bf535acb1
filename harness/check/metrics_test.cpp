#include "harness/check/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace fb {
namespace {

TEST(Metrics, IdenticalIsBitExact) {
  const std::vector<float> a = {1.0f, -2.5f, 3.25f};
  const Metrics m = compare(a, a);
  EXPECT_TRUE(m.bit_exact);
  EXPECT_EQ(m.mismatches, 0u);
  EXPECT_DOUBLE_EQ(m.cosine, 1.0);
  EXPECT_DOUBLE_EQ(m.nmse, 0.0);
}

TEST(Metrics, HandComputedValues) {
  const std::vector<float> ref = {3.0f, 4.0f};
  const std::vector<float> got = {3.0f, 5.0f};
  const Metrics m = compare(ref, got);
  EXPECT_FALSE(m.bit_exact);
  EXPECT_EQ(m.mismatches, 1u);
  EXPECT_DOUBLE_EQ(m.max_abs, 1.0);
  EXPECT_EQ(m.max_abs_index, 1u);
  EXPECT_DOUBLE_EQ(m.max_rel, 0.25);
  EXPECT_DOUBLE_EQ(m.nmse, 1.0 / 25.0);  // 1^2 / (9 + 16)
  EXPECT_DOUBLE_EQ(m.cosine, (9.0 + 20.0) / (5.0 * std::sqrt(34.0)));
}

TEST(Metrics, SignedZeroIsNotBitExactButHasNoError) {
  const std::vector<float> ref = {0.0f}, got = {-0.0f};
  const Metrics m = compare(ref, got);
  EXPECT_FALSE(m.bit_exact);
  EXPECT_DOUBLE_EQ(m.max_abs, 0.0);
}

TEST(Metrics, NanInOutputIsCounted) {
  const std::vector<float> ref = {1.0f, 2.0f}, got = {1.0f, NAN};
  const Metrics m = compare(ref, got);
  EXPECT_EQ(m.nonfinite, 1u);
  EXPECT_FALSE(m.bit_exact);
}

TEST(Metrics, SizeMismatchThrows) {
  const std::vector<float> a = {1.0f}, b = {1.0f, 2.0f};
  EXPECT_THROW(compare(a, b), std::invalid_argument);
}

}  // namespace
}  // namespace fb
