#include "harness/check/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
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

TEST(Metrics, NanInReferenceIsCountedUnlessTheBitsMatch) {
  const std::vector<float> ref = {NAN, 1.0f}, got = {0.0f, 1.0f};
  EXPECT_EQ(compare(ref, got).nonfinite, 1u) << "a NaN reference must not be skipped silently";
  EXPECT_EQ(compare(ref, ref).nonfinite, 0u) << "the same NaN bits on both sides are a match";
  const std::vector<float> inf = {INFINITY}, minf = {-INFINITY};
  EXPECT_EQ(compare(inf, minf).nonfinite, 1u);
}

TEST(Metrics, UlpHistogramBucketsByPowersOfTwo) {
  const float one = 1.0f;
  const float up1 = std::nextafter(one, 2.0f);
  const float up3 = std::nextafter(std::nextafter(up1, 2.0f), 2.0f);
  const std::vector<float> ref = {one, one, one, 0.0f, 2.0f};
  const std::vector<float> got = {up1, up3, one, -0.0f, 2.0f};
  const Metrics m = compare(ref, got);
  // distance 1 -> bucket 1; distance 3 -> bucket 4; +0 vs -0 are adjacent -> bucket 1.
  EXPECT_EQ(m.ulp_histogram, (std::map<uint64_t, uint64_t>{{1, 2}, {4, 1}}));
  EXPECT_TRUE(compare(ref, ref).ulp_histogram.empty());
}

TEST(Metrics, SizeMismatchThrows) {
  const std::vector<float> a = {1.0f}, b = {1.0f, 2.0f};
  EXPECT_THROW(compare(a, b), std::invalid_argument);
}

}  // namespace
}  // namespace fb
