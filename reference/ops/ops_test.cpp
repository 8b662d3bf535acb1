// Hand-derived answers for the op references; the kernels are checked against these functions.
#include "reference/ops/ops.h"

#include <gtest/gtest.h>

#include <cmath>

#include "reference/formats/half.h"
#include "reference/util/splitmix.h"

namespace fb::ref {
namespace {

TEST(RoundBf16, TiesToEvenAndAgreesWithFp32Path) {
  EXPECT_EQ(round_bf16(1.0 + 0x1p-8), 1.0f);                      // tie, 1.0 is even
  EXPECT_EQ(round_bf16(1.0 + 3 * 0x1p-8), 1.0f + 0x1p-6f);        // tie, rounds up to even
  EXPECT_EQ(round_bf16(1.0 + 0x1p-8 + 0x1p-40), 1.0f + 0x1p-7f);  // just above the tie
  EXPECT_EQ(round_bf16(-2.5), -2.5f);
  CounterRng rng(7, 1);
  for (uint64_t i = 0; i < 100000; ++i) {
    const float f = rng.normal(i) * 100.0f;
    ASSERT_EQ(round_bf16(f), bf16_to_fp32(fp32_to_bf16(f))) << f;  // a float input rounds once either way
  }
}

TEST(RmsNorm, WeightModes) {
  const std::vector<float> x(8, 1.0f);
  const std::vector<float> w(8, 0.5f);
  // mean(x^2) = 1: 1/sqrt(1 + 1e-6) rounds to 1 in bf16 after the multiply.
  for (float v : rms_norm_bf16(x, 2, 4, w.data(), NormWeight::direct, 1e-6)) EXPECT_EQ(v, 0.5f);
  for (float v : rms_norm_bf16(x, 2, 4, w.data(), NormWeight::one_plus, 1e-6)) EXPECT_EQ(v, 1.5f);
  for (float v : rms_norm_bf16(x, 2, 4, nullptr, NormWeight::none, 1e-6)) EXPECT_EQ(v, 1.0f);
  // [3, 4]: mean square 12.5 -> 3/sqrt(12.5) = 0.848528..., 4/sqrt(12.5) = 1.131370...
  const auto y = rms_norm_bf16({3.0f, 4.0f}, 1, 2, nullptr, NormWeight::none, 0.0);
  EXPECT_EQ(y[0], round_bf16(0.848528137423857));
  EXPECT_EQ(y[1], round_bf16(1.131370849898476));
}

TEST(Rope, InvFreqProportionalLayout) {
  const RopeSpec full{512, 512, 64, 512, 1e6};
  const auto f = rope_inv_freq(full);
  ASSERT_EQ(f.size(), 256u);
  EXPECT_EQ(f[0], 1.0f);
  EXPECT_EQ(f[63], static_cast<float>(std::pow(1e6, -126.0 / 512.0)));  // denominator head_dim, not 128
  for (size_t i = 64; i < f.size(); ++i) EXPECT_EQ(f[i], 0.0f) << i;
  EXPECT_EQ(rope_inv_freq({256, 256, 128, 256, 1e4})[1], static_cast<float>(std::pow(1e4, -2.0 / 256.0)));
}

TEST(Rope, ProportionalPairsDim0With256AndPassesTheRest) {
  const RopeSpec full{512, 512, 64, 512, 1e6};
  std::vector<float> x(512, 0.25f);
  x[0] = 1.0f;
  x[256] = 0.0f;
  x[64] = 1.0f;
  const auto y = rope_bf16(x, 1, 1, {1}, full);
  EXPECT_EQ(y[0], round_bf16(std::cos(1.0)));
  EXPECT_EQ(y[256], round_bf16(std::sin(1.0)));
  EXPECT_EQ(y[64], 1.0f);  // inv_freq 0: cos 1, sin 0
  EXPECT_EQ(y[320], 0.25f);
  EXPECT_EQ(y[511], 0.25f);
  // Position 0 is the identity everywhere.
  EXPECT_EQ(rope_bf16(x, 1, 1, {0}, full), x);
}

TEST(Rope, PartialRotDimLeavesTail) {
  const RopeSpec qwen{8, 4, 2, 4, 1e7};  // pairs (0,2), (1,3); 4..7 untouched
  const std::vector<float> x = {1, 0, 0, 1, 5, 6, 7, 8};
  const auto y = rope_bf16(x, 1, 1, {2}, qwen);
  EXPECT_EQ(y[0], round_bf16(std::cos(2.0)));
  EXPECT_EQ(y[2], round_bf16(std::sin(2.0)));
  const float a1 = 2.0f * static_cast<float>(std::pow(1e7, -0.5));
  EXPECT_EQ(y[1], round_bf16(-std::sin(static_cast<double>(a1))));
  EXPECT_EQ(y[3], round_bf16(std::cos(static_cast<double>(a1))));
  EXPECT_EQ(std::vector<float>(y.begin() + 4, y.end()), std::vector<float>(x.begin() + 4, x.end()));
}

TEST(Activations, GeluAndSoftcap) {
  EXPECT_EQ(gelu_tanh(0.0), 0.0);
  EXPECT_NEAR(gelu_tanh(1.0), 0.8411919906082768, 1e-15);
  EXPECT_NEAR(gelu_tanh(-1.0), -0.15880800939172324, 1e-15);
  EXPECT_NEAR(gelu_tanh(10.0), 10.0, 1e-12);
  const auto m = gelu_tanh_mul_bf16({1.0f, 0.0f, 2.0f, 3.0f}, 1, 2);  // gate [1, 0], up [2, 3]
  EXPECT_EQ(m[0], round_bf16(static_cast<double>(round_bf16(0.8411919906082768)) * 2.0));
  EXPECT_EQ(m[1], 0.0f);
  const auto s = softcap_f32({0.0f, 30.0f, -1e6f}, 30.0);
  EXPECT_EQ(s[0], 0.0f);
  EXPECT_EQ(s[1], static_cast<float>(30.0 * std::tanh(1.0)));
  EXPECT_EQ(s[2], -30.0f);
}

TEST(Residual, NormAddScale) {
  const std::vector<float> x(4, 1.0f), h(4, 3.0f), w(4, 1.0f);
  const float half = 0.5f;
  for (float v : residual_norm_scale_bf16(x, h, 1, 4, w.data(), 1e-6, nullptr)) EXPECT_EQ(v, 2.0f);
  for (float v : residual_norm_scale_bf16(x, h, 1, 4, w.data(), 1e-6, &half)) EXPECT_EQ(v, 1.0f);
}

TEST(Embed, ScaleInFp32AfterBf16Table) {
  const std::vector<float> table = {1.0f + 0x1p-9f, 3.0f, -1.0f, 0.5f};  // 2 rows of 2
  const auto y = embed_bf16([&](int32_t t) { return table.data() + 2 * t; }, {1, 0}, 2, embed_scale(4));
  EXPECT_EQ(y, (std::vector<float>{-2.0f, 1.0f, 2.0f, 6.0f}));
  EXPECT_EQ(embed_scale(5376), static_cast<float>(std::sqrt(5376.0)));
}

TEST(Gemm, SampledRows) {
  const std::vector<float> x0 = {1, 2, 3}, x1 = {-1, 0, 1}, w0 = {1, 1, 1}, w1 = {0.5f, 0, 2};
  const auto y = gemm_sampled_bf16({x0.data(), x1.data()}, {w0.data(), w1.data()}, 3);
  EXPECT_EQ(y, (std::vector<float>{6.0f, 6.5f, 0.0f, 1.5f}));
}

}  // namespace
}  // namespace fb::ref
