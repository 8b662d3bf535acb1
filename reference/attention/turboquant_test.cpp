// CPU truth for TurboQuant KV: the codebook's known properties (symmetry, Lloyd fixed point, the
// 4-bit Gaussian Lloyd-Max distortion ~0.0095), orthogonality of the rotation, hand-derived
// compress results, the round-trip distortion, and the two fp64 attentions agreeing.
#include "reference/attention/turboquant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "reference/formats/half.h"
#include "reference/util/splitmix.h"

namespace fb::tq4 {
namespace {

TEST(Tq4Codebook, SymmetricMonotoneAndMidpoints) {
  for (int d : {64, 256, 512}) {
    const Codebook cb = lloyd_max_codebook(d);
    const double sigma = 1.0 / std::sqrt(double(d));
    ASSERT_EQ(cb.centroids.size(), 16u);
    ASSERT_EQ(cb.boundaries.size(), 15u);
    for (int i = 0; i < 16; ++i) {
      EXPECT_NEAR(cb.centroids[i], -cb.centroids[15 - i], 1e-6 * sigma) << "d=" << d << " i=" << i;
      EXPECT_LE(std::abs(cb.centroids[i]), 3.0 * sigma) << "centroids stay inside the truncation";
    }
    for (int i = 1; i < 16; ++i) EXPECT_LT(cb.centroids[i - 1], cb.centroids[i]);
    for (int i = 1; i < 15; ++i)
      EXPECT_LT(bf16_to_fp32(cb.boundaries[i - 1]), bf16_to_fp32(cb.boundaries[i]));
    // The middle boundary is the midpoint of +-c: exactly zero.
    EXPECT_EQ(bf16_to_fp32(cb.boundaries[7]), 0.0f);
    for (int i = 0; i < 15; ++i) {
      EXPECT_EQ(cb.boundaries[i], fp32_to_bf16(0.5f * (cb.centroids[i] + cb.centroids[i + 1])));
    }
  }
}

TEST(Tq4Codebook, KnownGaussianDistortion) {
  // Max (1960): the 16-level Lloyd-Max quantizer of N(0,1) has MSE 0.009497. Truncating the
  // design domain at +-3 sigma moves the outer cells a little; the tails still map to the ends.
  const Codebook cb = lloyd_max_codebook(512);
  const double sigma = 1.0 / std::sqrt(512.0);
  const double mse_unit = codebook_mse(cb, sigma) / (sigma * sigma);
  EXPECT_NEAR(mse_unit, 0.0095, 5e-4) << "unit-variance MSE " << mse_unit;
  // Scale invariance: the d = 1 design is the d = 512 one times sqrt(512).
  const Codebook cb1 = lloyd_max_codebook(2);
  EXPECT_NEAR(codebook_mse(cb1, 1.0 / std::sqrt(2.0)) * 2.0, mse_unit, 1e-6);
}

TEST(Tq4Codebook, LloydFixedPoint) {
  // Each centroid is the conditional mean of its truncated cell, checked against a midpoint-rule
  // integral so the closed form itself is verified. Lloyd converges slowly: upstream stops at 200
  // iterations about 3e-4 sigma short of the fixed point, and so does this (same cap, same tol).
  const int d = 512;
  const Codebook cb = lloyd_max_codebook(d);
  const double sigma = 1.0 / std::sqrt(double(d));
  EXPECT_EQ(cb.iterations, 200);
  // With no cap the iteration reaches the fixed point to the fp32 rounding of the centroids.
  const Codebook converged = lloyd_max_codebook(d, 100000, 1e-12);
  EXPECT_LT(converged.iterations, 100000);
  for (int i = 0; i < 16; ++i) EXPECT_NEAR(converged.centroids[i], cb.centroids[i], 1e-3 * sigma);
  for (int i = 0; i < 16; ++i) {
    const auto& c = converged.centroids;
    const double a = i == 0 ? -3 * sigma : 0.5 * (double(c[i - 1]) + c[i]);
    const double b = i == 15 ? 3 * sigma : 0.5 * (double(c[i]) + c[i + 1]);
    double m0 = 0, m1 = 0;
    const int n = 20000;
    for (int k = 0; k < n; ++k) {
      const double x = a + (b - a) * (k + 0.5) / n;
      const double w = std::exp(-0.5 * x * x / (sigma * sigma));
      m0 += w;
      m1 += w * x;
    }
    EXPECT_NEAR(c[i], m1 / m0, 1e-6 * sigma) << "cell " << i;
  }
}

TEST(Tq4Rotation, OrthogonalDeterministicSignCorrected) {
  const int d = 512;
  const auto q = haar_rotation_fp64(d, 42);
  double worst = 0;
  for (int i = 0; i < d; ++i) {
    for (int j = i; j < d; ++j) {
      double s = 0;
      for (int k = 0; k < d; ++k) s += q[size_t(k) * d + i] * q[size_t(k) * d + j];
      worst = std::max(worst, std::abs(s - (i == j ? 1.0 : 0.0)));
    }
  }
  EXPECT_LT(worst, 1e-12) << "max |Q^T Q - I|";
  EXPECT_EQ(q, haar_rotation_fp64(d, 42));
  EXPECT_NE(q, haar_rotation_fp64(d, 43));
  const Rotation r = haar_rotation(d, 42);
  for (int i = 0; i < d; i += 37)
    for (int j = 0; j < d; j += 41) {
      EXPECT_EQ(r.rotation[size_t(i) * d + j], float(q[size_t(i) * d + j]));
      EXPECT_EQ(r.rotation_t[size_t(j) * d + i], fp32_to_bf16(r.rotation[size_t(i) * d + j]));
    }
}

Rotation identity(int d) {
  std::vector<float> m(size_t(d) * d, 0.0f);
  for (int i = 0; i < d; ++i) m[size_t(i) * d + i] = 1.0f;
  return from_matrix(d, m);
}

TEST(Tq4Compress, KnownAnswersWithIdentityRotation) {
  const int d = 64;  // sigma = 1/8: the outer boundaries sit inside (-0.375, 0.375)
  const Codebook cb = lloyd_max_codebook(d);
  const Rotation rot = identity(d);
  // x = 2 e0: norm 2, y = e0. 1 is above every boundary -> 15; 0 is not above the zero middle
  // boundary (right=False) -> 7. Even coordinate in the high nibble: 0xF7, then 0x77 ...
  // x = -3 e2: y = -e2 -> indices 7, 7, 0, 7, ... -> 0x77, 0x07, 0x77 ...
  std::vector<uint16_t> x(2 * d, 0);
  x[0] = fp32_to_bf16(2);
  x[d + 2] = fp32_to_bf16(-3);
  std::vector<uint8_t> packed(d);
  uint16_t norms[2];
  compress(x.data(), 2, cb, rot, packed.data(), norms);
  for (int b = 0; b < d; ++b) {
    const uint8_t want = b == 0 ? 0xF7 : b == d / 2 + 1 ? 0x07 : 0x77;
    EXPECT_EQ(packed[b], want) << "byte " << b;
  }
  EXPECT_EQ(bf16_to_fp32(norms[0]), 2.0f);
  EXPECT_EQ(bf16_to_fp32(norms[1]), 3.0f);
  std::vector<double> out(2 * d);
  decompress(packed.data(), norms, 2, cb, rot, out.data());
  EXPECT_DOUBLE_EQ(out[0], 2.0 * cb.centroids[15]);
  EXPECT_DOUBLE_EQ(out[1], 2.0 * cb.centroids[7]);
  EXPECT_DOUBLE_EQ(out[d + 2], 3.0 * cb.centroids[0]);
  // A coordinate exactly on a boundary goes to the lower cell (bucketize right=False): a unit
  // vector (b9, sqrt(1 - b9^2)) whose bf16 norm rounds to exactly 1 keeps y0 = b9.
  std::vector<uint16_t> xb(d, 0);
  const float b9 = bf16_to_fp32(cb.boundaries[9]);
  xb[0] = cb.boundaries[9];
  xb[1] = fp32_to_bf16(std::sqrt(1.0f - b9 * b9));
  compress(xb.data(), 1, cb, rot, packed.data(), norms);
  ASSERT_EQ(bf16_to_fp32(norms[0]), 1.0f);
  EXPECT_EQ(packed[0] >> 4, 9);
  EXPECT_EQ(packed[0] & 15, 15);
}

TEST(Tq4Compress, RoundTripDistortion) {
  // ||x - x_hat||^2 / ||x||^2 is d x (per-coordinate MSE at sigma^2 = 1/d) ~ 0.0095, plus the bf16
  // rounding of u, y, norm and rotation_T (~1e-5 each).
  const int d = 512, n = 64;
  const Codebook cb = lloyd_max_codebook(d);
  const Rotation rot = haar_rotation(d, 42);
  const CounterRng rng(7, 1);
  std::vector<uint16_t> x(size_t(n) * d);
  for (size_t i = 0; i < x.size(); ++i) x[i] = fp32_to_bf16(3.0f * rng.normal(i));
  std::vector<uint8_t> packed(size_t(n) * d / 2);
  std::vector<uint16_t> norms(n);
  compress(x.data(), n, cb, rot, packed.data(), norms.data());
  std::vector<double> xh(size_t(n) * d);
  decompress(packed.data(), norms.data(), n, cb, rot, xh.data());
  double err = 0, ref = 0, worst = 0;
  for (int v = 0; v < n; ++v) {
    double e = 0, r = 0;
    for (int j = 0; j < d; ++j) {
      const double xv = bf16_to_fp32(x[size_t(v) * d + j]);
      e += (xv - xh[size_t(v) * d + j]) * (xv - xh[size_t(v) * d + j]);
      r += xv * xv;
    }
    err += e;
    ref += r;
    worst = std::max(worst, e / r);
  }
  EXPECT_NEAR(err / ref, 0.0095, 0.0015) << "mean relative squared error";
  EXPECT_LT(worst, 0.02) << "worst vector";
}

TEST(Tq4Attention, Fp64KnownAnswer) {
  // One query, keys with scores 0 and ln 3 -> weights 1/4, 3/4.
  const double q[2] = {1, 0};
  const double k[4] = {0, 0, std::log(3.0), 0};
  const double v[4] = {1, 0, 0, 1};
  double out[2];
  attention_fp64(q, k, v, 1, 1, 1, 2, 2, 2, 1.0, out);
  EXPECT_NEAR(out[0], 0.25, 1e-15);
  EXPECT_NEAR(out[1], 0.75, 1e-15);
  // Causal with T = 2 over kv_len 2: query 0 sees key 0 only.
  const double q2[4] = {1, 0, 1, 0};
  double out2[4];
  attention_fp64(q2, k, v, 2, 1, 1, 2, 2, 2, 1.0, out2);
  EXPECT_DOUBLE_EQ(out2[0], 1.0);
  EXPECT_DOUBLE_EQ(out2[1], 0.0);
  EXPECT_NEAR(out2[3], 0.75, 1e-15);
}

TEST(Tq4Attention, RotatedDomainEqualsDequantizedCache) {
  const int d = 64, n_q = 4, n_kv = 2, T = 3;
  const int64_t stride = 40, kv_len = 37;
  const Codebook cb = lloyd_max_codebook(d);
  const Rotation rot = haar_rotation(d, 42);
  const CounterRng rng(11, 2);
  std::vector<uint16_t> kx(size_t(n_kv) * stride * d), vx(kx.size());
  for (size_t i = 0; i < kx.size(); ++i) {
    kx[i] = fp32_to_bf16(rng.normal(i));
    vx[i] = fp32_to_bf16(rng.normal(i + kx.size()));
  }
  std::vector<uint8_t> kp(kx.size() / 2), vp(kx.size() / 2);
  std::vector<uint16_t> kn(size_t(n_kv) * stride), vn(kn.size());
  compress(kx.data(), n_kv * stride, cb, rot, kp.data(), kn.data());
  compress(vx.data(), n_kv * stride, cb, rot, vp.data(), vn.data());
  std::vector<double> kd(kx.size()), vd(kx.size()), q(size_t(T) * n_q * d);
  decompress(kp.data(), kn.data(), n_kv * stride, cb, rot, kd.data());
  decompress(vp.data(), vn.data(), n_kv * stride, cb, rot, vd.data());
  for (size_t i = 0; i < q.size(); ++i) q[i] = bf16_to_fp32(fp32_to_bf16(rng.normal(i + 3 * kx.size())));
  std::vector<double> a(q.size()), b(q.size());
  attention_fp64(q.data(), kd.data(), vd.data(), T, n_q, n_kv, d, stride, kv_len, 1.0, a.data());
  tq4_attention_fp64(q.data(), kp.data(), kn.data(), vp.data(), vn.data(), cb, rot, T, n_q, n_kv, stride,
                     kv_len, 1.0, b.data());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-12 * (1 + std::abs(a[i]))) << i;
}

}  // namespace
}  // namespace fb::tq4
