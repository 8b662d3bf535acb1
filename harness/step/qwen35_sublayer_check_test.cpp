// The arithmetic that picks the worst sublayer (no GPU): qwen35_tolerance_used must exceed 1 exactly
// where the runner's judge() fails a comparison, for each bound, so the sublayer the harness
// reports is the one that decides its verdict. The GPU side is qwen35_full_prefill_gpu_test.
#include "harness/step/qwen35_sublayer_check.h"

#include <gtest/gtest.h>

#include <cmath>

#include "harness/runner/runner.h"
#include "harness/runner/tolerances.h"

namespace fb {
namespace {

Metrics near(double cosine, double nmse) {
  Metrics m;
  m.n = 100;
  m.bit_exact = false;
  m.mismatches = 3;
  m.cosine = cosine;
  m.nmse = nmse;
  m.max_abs = 1e-3;
  return m;
}

bool judged_pass(const Metrics& m, const Tolerance& t) {
  Comparison c{"unfused", m, t, Verdict::pass, ""};
  judge(c);
  return c.verdict == Verdict::pass;
}

TEST(Qwen35SublayerCheck, ToleranceUsedCrossesOneWhereJudgeFails) {
  const Tolerance t = kernel_tolerance("qwen35_prefill_sublayer", "unfused");
  ASSERT_FALSE(t.bit_exact) << t.source;
  const double cos_bound = t.min_cosine, nmse_bound = t.max_nmse;
  const struct {
    Metrics m;
    bool pass;
  } cases[] = {
      {near(1.0, 0.0), true},
      {near(1.0 - 0.5 * (1.0 - cos_bound), 0.5 * nmse_bound), true},
      {near(1.0 - 2.0 * (1.0 - cos_bound), 0.5 * nmse_bound), false},  // cosine alone fails
      {near(1.0, 2.0 * nmse_bound), false},  // a wrong scale: direction right, size not
  };
  for (const auto& c : cases) {
    const double used = qwen35_tolerance_used(c.m, t);
    EXPECT_EQ(used <= 1.0, c.pass) << c.m.summary() << " used " << used;
    EXPECT_EQ(judged_pass(c.m, t), c.pass) << c.m.summary();
  }
}

TEST(Qwen35SublayerCheck, NonFiniteAndBitExactBoundsUseEverything) {
  Tolerance loose;
  Metrics m = near(1.0, 0.0);
  EXPECT_EQ(qwen35_tolerance_used(m, loose), 0.0) << "no bounds set: nothing used";
  m.nonfinite = 1;
  EXPECT_TRUE(std::isinf(qwen35_tolerance_used(m, loose)));
  m = near(NAN, 0.0);
  EXPECT_TRUE(std::isinf(qwen35_tolerance_used(m, loose))) << "a NaN metric is never within bounds";
  Tolerance exact;
  exact.bit_exact = true;
  EXPECT_TRUE(std::isinf(qwen35_tolerance_used(near(1.0, 0.0), exact)));
  Metrics same;
  EXPECT_EQ(qwen35_tolerance_used(same, exact), 0.0);
}

}  // namespace
}  // namespace fb
