// The MoE references: symmetric INT4 packing and quantization (torchao amax/7.5), expert row slices
// (the fused [gate; up] tensor splits into the unfused parts), routing (top-k order, softmax, the
// shared-expert slot) and GEMM1/GEMM2 against a dense per-token computation.
#include "reference/moe/moe_ref.h"

#include <gtest/gtest.h>

#include <cmath>

#include "reference/formats/half.h"
#include "reference/util/splitmix.h"

namespace fb {
namespace {

std::vector<float> randn(size_t n, uint64_t stream, float sigma) {
  const CounterRng rng(3, stream);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = bf16_to_fp32(fp32_to_bf16(sigma * rng.normal(i)));
  return v;
}

TEST(SymInt4, PackingAndQuantization) {
  const int64_t E = 3, N = 5, K = 64, G = 32;
  auto w = randn(E * N * K, 1, 0.02f);
  w[7] = 0.0f;
  const SymInt4Experts q = quantize_sym_int4(w.data(), E, N, K, G);
  ASSERT_EQ(q.qdata.size(), static_cast<size_t>(E * N * K / 2));
  ASSERT_EQ(q.scale.size(), static_cast<size_t>(E * N * K / G));
  for (int64_t e = 0; e < E; ++e)
    for (int64_t r = 0; r < N; ++r)
      for (int64_t g = 0; g < K / G; ++g) {
        float amax = 0;
        for (int64_t i = 0; i < G; ++i) amax = std::max(amax, std::fabs(w[(e * N + r) * K + g * G + i]));
        EXPECT_EQ(q.scale_of(e, r, g), bf16_to_fp32(fp32_to_bf16(amax / 7.5f)));
        for (int64_t i = 0; i < G; ++i) {
          const int64_t c = g * G + i;
          const double x = w[(e * N + r) * K + c];
          EXPECT_GE(q.q(e, r, c), -8);
          EXPECT_LE(q.q(e, r, c), 7);
          // Half a step, plus the clamp of +amax (7.5 steps -> 7) and the bf16 rounding of the step.
          EXPECT_LE(std::fabs(q.weight(e, r, c) - x), q.scale_of(e, r, g) * (0.5 + 8.0 / 256) + 1e-12)
              << e << r << c;
        }
      }
  // Even k in the low nibble, u = q + 8.
  EXPECT_EQ(q.qdata[0] & 0xF, q.q(0, 0, 0) + 8);
  EXPECT_EQ(q.qdata[0] >> 4, q.q(0, 0, 1) + 8);
}

TEST(SymInt4, ExpertRowsSliceEveryExpert) {
  const int64_t E = 2, N = 6, K = 64;
  const auto w = randn(E * N * K, 2, 0.02f);
  const SymInt4Experts q = quantize_sym_int4(w.data(), E, N, K, 32);
  const SymInt4Experts up = expert_rows(q, 3, 3);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t r = 0; r < 3; ++r)
      for (int64_t c = 0; c < K; ++c) EXPECT_EQ(up.weight(e, r, c), q.weight(e, r + 3, c));
  std::vector<uint8_t> bytes(E * N * 10);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i);
  const auto part = expert_rows(bytes, E, N, 10, 2, 2);
  ASSERT_EQ(part.size(), static_cast<size_t>(E * 2 * 10));
  EXPECT_EQ(part[0], bytes[20]);
  EXPECT_EQ(part[20], bytes[(N + 2) * 10]);
}

TEST(Routing, TopKSoftmaxAndSharedSlot) {
  const int64_t T = 3, H = 16, E = 10, k = 4;
  const auto x = randn(T * H, 3, 1.0f), wr = randn(E * H, 4, 1.0f), ws = randn(H, 5, 0.1f);
  const Routing r = route_fp64(x, wr, ws.data(), T, H, E, k);
  ASSERT_EQ(r.slots, k + 1);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> logit(E);
    for (int64_t e = 0; e < E; ++e)
      for (int64_t i = 0; i < H; ++i) logit[e] += static_cast<double>(x[t * H + i]) * wr[e * H + i];
    double sum = 0, prev = INFINITY;
    for (int64_t s = 0; s < k; ++s) {
      const int32_t id = r.ids[t * r.slots + s];
      EXPECT_LE(logit[id], prev);
      prev = logit[id];
      sum += r.weights[t * r.slots + s];
    }
    for (int64_t e = 0; e < E; ++e) {  // every unselected logit is <= the k-th
      bool sel = false;
      for (int64_t s = 0; s < k; ++s) sel |= r.ids[t * r.slots + s] == e;
      if (!sel) {
        EXPECT_LE(logit[e], prev);
      }
    }
    EXPECT_NEAR(sum, 1.0, 1e-6);
    EXPECT_EQ(r.ids[t * r.slots + k], E);
    double sh = 0;
    for (int64_t i = 0; i < H; ++i) sh += static_cast<double>(x[t * H + i]) * ws[i];
    EXPECT_NEAR(r.weights[t * r.slots + k], 1.0 / (1.0 + std::exp(-sh)), 1e-7);
  }
  const auto dense = dense_gates(r, E + 1);
  double total = 0;
  for (double g : dense) total += g;
  EXPECT_GT(total, static_cast<double>(T));
}

TEST(MoeGemms, MatchDensePerTokenComputation) {
  const int64_t T = 2, H = 64, I = 32, E = 4, k = 2;
  const auto w13f = randn((E + 1) * 2 * I * H, 6, 0.05f), w2f = randn((E + 1) * H * I, 7, 0.05f);
  const SymInt4Experts w13 = quantize_sym_int4(w13f.data(), E + 1, 2 * I, H, 32);
  const SymInt4Experts w2 = quantize_sym_int4(w2f.data(), E + 1, H, I, 32);
  const auto x = randn(T * H, 8, 1.0f), wr = randn(E * H, 9, 1.0f), ws = randn(H, 10, 0.1f);
  const Routing r = route_fp64(x, wr, ws.data(), T, H, E, k);
  const std::vector<double> xd(x.begin(), x.end());
  const auto h = moe_gemm1_fp64(sym_int4_rows(w13), 2 * I, H, xd, r);
  const auto y = moe_gemm2_fp64(sym_int4_rows(w2), H, I, h, r);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < H; ++n) {
      double want = 0;
      for (int64_t s = 0; s < r.slots; ++s) {
        const int64_t e = r.ids[t * r.slots + s];
        double acc = 0;
        for (int64_t j = 0; j < I; ++j) {
          double g = 0, u = 0;
          for (int64_t c = 0; c < H; ++c) {
            g += w13.weight(e, j, c) * x[t * H + c];
            u += w13.weight(e, I + j, c) * x[t * H + c];
          }
          acc += w2.weight(e, n, j) * (g / (1 + std::exp(-g))) * u;
        }
        want += r.weights[t * r.slots + s] * acc;
      }
      EXPECT_NEAR(y[t * H + n], want, 1e-9 * (1 + std::fabs(want)));
    }
}

}  // namespace
}  // namespace fb
