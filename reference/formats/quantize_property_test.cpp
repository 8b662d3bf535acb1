// Seeded property tests of quantize -> dequantize. Every failure names the case, the seed and the
// worst element so it can be replayed.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "reference/formats/dequantize.h"
#include "reference/formats/half.h"
#include "reference/formats/quantize.h"
#include "reference/util/splitmix.h"

namespace fb {
namespace {

constexpr uint64_t kSeeds[] = {1, 2, 0xC0FFEE};
constexpr int64_t kN = 256 * 64;  // 64 K-quant super-blocks, 512 Q8_0 blocks per row

constexpr GgmlType kQuantTypes[] = {GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};

// NMSE bounds on Gaussian data, from the uniform-quantizer error Δ²/12 relative to σ² = 1:
//   Q4_K: a 32-sample sub-block spans about 4.1σ (expected range of 32 normals), 15 steps ->
//         Δ ≈ 0.27σ -> 0.0062 before the grid search (which only lowers it); 0.01 leaves room for
//         the 6-bit scale/min codes. One bit fewer would quadruple it (~0.025) and fail.
//   Q5_K: same span, 31 steps -> 0.0015; bound 0.0025.
//   Q6_K: 16-sample sub-blocks on a symmetric 64-level grid over ±max|x| (≈ ±2σ) -> Δ ≈ 0.0625σ ->
//         0.00033; bound 0.0006 (the int8 sub-scales add at most 1/256 relative scale error).
//   Q8_0: 255 levels over ±amax of 32 normals (≈ ±2.5σ) -> Δ ≈ 0.0197σ -> 3.2e-5; bound 6e-5.
// Data that is more uniform in magnitude than a Gaussian (bimodal, extremes) has a smaller range
// to RMS ratio, so the same bounds apply to it a fortiori.
double nmse_bound(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_K:
      return 0.01;
    case GgmlType::Q5_K:
      return 0.0025;
    case GgmlType::Q6_K:
      return 0.0006;
    case GgmlType::Q8_0:
      return 6e-5;
    default:
      return 0.0;
  }
}

// Number of steps between the lowest and highest level of one scale group.
int grid_steps(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_K:
      return 15;
    case GgmlType::Q5_K:
      return 31;
    case GgmlType::Q6_K:
      return 63;
    default:
      return 254;
  }
}

struct RoundTrip {
  std::vector<float> x;
  std::vector<uint8_t> q;
  std::vector<float> y;
};

RoundTrip round_trip(GgmlType t, std::vector<float> x) {
  RoundTrip r{std::move(x), {}, {}};
  r.q.resize(ggml_row_bytes(t, static_cast<int64_t>(r.x.size())));
  r.y.resize(r.x.size());
  quantize(t, r.x.data(), r.q.data(), static_cast<int64_t>(r.x.size()));
  dequantize(t, r.q.data(), r.y.data(), static_cast<int64_t>(r.x.size()));
  return r;
}

std::string where(GgmlType t, const std::string& name, uint64_t seed, const RoundTrip& r, size_t i) {
  return fmt::format("type {} case {} seed {:#x}: element {} (block {}) x={:.9g} y={:.9g}", ggml_type_name(t),
                     name, seed, i, static_cast<int64_t>(i) / ggml_type_info(t).block_elems, r.x[i], r.y[i]);
}

// Checks finiteness, then the Q8_0 per-block bound or the row NMSE bound.
void check_round_trip(GgmlType t, const std::string& name, uint64_t seed, const RoundTrip& r) {
  size_t worst = 0;
  double worst_err = -1.0;
  double err2 = 0.0;
  double sig2 = 0.0;
  for (size_t i = 0; i < r.x.size(); ++i) {
    ASSERT_TRUE(std::isfinite(r.y[i])) << where(t, name, seed, r, i);
    const double e = std::fabs(static_cast<double>(r.x[i]) - r.y[i]);
    err2 += e * e;
    sig2 += static_cast<double>(r.x[i]) * r.x[i];
    if (e > worst_err) {
      worst_err = e;
      worst = i;
    }
  }
  if (t == GgmlType::Q8_0) {
    // y = q*d16 with q = roundf(x/d32), d32 = amax/127: |x - q*d32| <= d32*(0.5 + 2^-16) (the
    // 2^-16 covers the two fp32 roundings in x*(1/d32) for |q| <= 127), and the fp16 rounding of d
    // adds |q|*|d32 - d16| <= 127*|d32 - d16|.
    const auto* blocks = reinterpret_cast<const BlockQ8_0*>(r.q.data());
    for (size_t b = 0; b < r.x.size() / kQK8_0; ++b) {
      float amax = 0.0f;
      for (int j = 0; j < kQK8_0; ++j) amax = std::fmax(amax, std::fabs(r.x[b * kQK8_0 + j]));
      const double d32 = amax / 127.0f;
      const double d16 = fp16_to_fp32(blocks[b].d);
      const double bound = d32 * (0.5 + 0x1p-16) + 127.0 * std::fabs(d32 - d16);
      for (int j = 0; j < kQK8_0; ++j) {
        const size_t i = b * kQK8_0 + j;
        ASSERT_LE(std::fabs(static_cast<double>(r.x[i]) - r.y[i]), bound)
            << where(t, name, seed, r, i) << fmt::format(" bound {:.9g}", bound);
      }
    }
  }
  if (sig2 > 0.0) {
    EXPECT_LE(err2 / sig2, nmse_bound(t))
        << fmt::format("NMSE {:.3g}; worst ", err2 / sig2) << where(t, name, seed, r, worst);
  }
}

using Generator = std::function<float(const CounterRng&, int64_t)>;

struct DataCase {
  std::string name;
  Generator gen;
};

std::vector<DataCase> gaussian_like_cases() {
  return {
      {"gaussian", [](const CounterRng& g, int64_t i) { return g.normal(i); }},
      {"gaussian_x1e-3", [](const CounterRng& g, int64_t i) { return 1e-3f * g.normal(i); }},
      {"gaussian_x300", [](const CounterRng& g, int64_t i) { return 300.0f * g.normal(i); }},
      // Mixed signs far from zero: ±3 with a little noise.
      {"bimodal_pm3",
       [](const CounterRng& g, int64_t i) {
         return ((g.bits(i) >> 63) ? 3.0f : -3.0f) + 0.1f * g.normal(i + (1ll << 40));
       }},
      // Near the fp16 limit: |x| in [32752, 65504], random sign. Every fp16 scale derived from it
      // (max/63, range/(15*63), max/128, amax/127) stays finite.
      {"extremes_65504",
       [](const CounterRng& g, int64_t i) {
         const float m = 65504.0f * (0.5f + 0.5f * g.uniform(i));
         return (g.bits(i + (1ll << 40)) >> 63) ? m : -m;
       }},
      // Each 32-element group gets its own magnitude 10^[-3, 3): sub-blocks of one super-block
      // differ by up to 10^6, so small ones land on 6-bit scale code 0.
      {"mixed_magnitudes",
       [](const CounterRng& g, int64_t i) {
         const float e = 6.0f * g.uniform((i / 32) + (1ll << 41)) - 3.0f;
         return std::pow(10.0f, e) * g.normal(i);
       }},
  };
}

TEST(QuantizePropertyTest, RoundTripErrorWithinBounds) {
  for (GgmlType t : kQuantTypes) {
    for (const DataCase& c : gaussian_like_cases()) {
      for (uint64_t seed : kSeeds) {
        const CounterRng rng(seed, fnv1a64(c.name.data(), c.name.size()));
        std::vector<float> x(kN);
        for (int64_t i = 0; i < kN; ++i) x[i] = c.gen(rng, i);
        check_round_trip(t, c.name, seed, round_trip(t, std::move(x)));
        if (HasFatalFailure()) return;
      }
    }
  }
}

TEST(QuantizePropertyTest, TinyValuesGiveFiniteSmallOutputs) {
  // 1e-30 is far below the smallest fp16 (2^-24), so every scale rounds to 0 (or the group is
  // under GROUP_MAX_EPS): outputs must be finite and no larger than the inputs' magnitude.
  for (GgmlType t : kQuantTypes) {
    for (uint64_t seed : kSeeds) {
      const CounterRng rng(seed, 7);
      std::vector<float> x(kN);
      for (int64_t i = 0; i < kN; ++i) x[i] = 1e-30f * rng.normal(i);
      float amax = 0.0f;
      for (float v : x) amax = std::fmax(amax, std::fabs(v));
      const RoundTrip r = round_trip(t, std::move(x));
      for (size_t i = 0; i < r.y.size(); ++i) {
        ASSERT_TRUE(std::isfinite(r.y[i])) << where(t, "tiny", seed, r, i);
        ASSERT_LE(std::fabs(r.y[i]), amax) << where(t, "tiny", seed, r, i);
      }
    }
  }
}

TEST(QuantizePropertyTest, SingleOutlierIsKept) {
  // One element per block is 1000 on N(0,1) data. The outlier sets its group's maximum, so it sits
  // on the top grid level up to one step: |error| <= range/steps, with range <= 1000 + |min| and
  // |min| < 10 for these samples. Q8_0 gets its own per-block bound in check_round_trip.
  for (GgmlType t : kQuantTypes) {
    const int64_t be = ggml_type_info(t).block_elems;
    for (uint64_t seed : kSeeds) {
      const CounterRng rng(seed, 11);
      std::vector<float> x(kN);
      for (int64_t i = 0; i < kN; ++i) x[i] = rng.normal(i);
      std::vector<int64_t> where_out;
      for (int64_t b = 0; b < kN / be; ++b) {
        const int64_t i = b * be + static_cast<int64_t>(rng.bits(kN + b) % static_cast<uint64_t>(be));
        x[i] = 1000.0f;
        where_out.push_back(i);
      }
      const RoundTrip r = round_trip(t, std::move(x));
      check_round_trip(t, "outlier", seed, r);
      const double tol = 1010.0 / grid_steps(t);
      for (int64_t i : where_out) {
        ASSERT_LE(std::fabs(r.y[i] - 1000.0), tol) << where(t, "outlier", seed, r, i);
      }
    }
  }
}

TEST(QuantizePropertyTest, ConstantBlocksStayConstant) {
  // Each block is one value c (|c| log-uniform in [1e-3, 1e3], random sign). Every element gets
  // the same level, so a block dequantizes to one value, and that value is c up to the fp16
  // rounding of one stored scale (relative 2^-11; 2^-10 allows for one more fp32 rounding) times
  // the integer factor that scale is multiplied by. Small c makes that scale an fp16 subnormal,
  // whose rounding error is absolute (up to 2^-25), hence the second term: factor * 2^-25 with the
  // largest factor per type (below).
  //   Q4_K/Q5_K, c > 0: levels all nmax, scale c/nmax, dmin 0. c < 0: max == min, so the scale is 0
  //     and the value comes from dmin*63 = fp16(|c|/63)*63.
  //   Q6_K: levels all -32 with scale -c/32 -> d*(-128)*(-32) = fp16(c/4096)*4096.
  //   Q8_0: 127 * fp16(|c|/127) with the sign of c.
  const auto factor = [](GgmlType t) {
    switch (t) {
      case GgmlType::Q4_K:
        return 15.0 * 63.0;
      case GgmlType::Q5_K:
        return 31.0 * 63.0;
      case GgmlType::Q6_K:
        return 128.0 * 32.0;
      default:
        return 127.0;
    }
  };
  for (GgmlType t : kQuantTypes) {
    const int64_t be = ggml_type_info(t).block_elems;
    const double abs_tol = factor(t) * 0x1p-25;
    for (uint64_t seed : kSeeds) {
      const CounterRng rng(seed, 13);
      std::vector<float> x(kN);
      for (int64_t b = 0; b < kN / be; ++b) {
        const float mag = std::pow(10.0f, 6.0f * rng.uniform(b) - 3.0f);
        const float c = (rng.bits(b + (1ll << 40)) >> 63) ? mag : -mag;
        for (int64_t j = 0; j < be; ++j) x[b * be + j] = c;
      }
      const RoundTrip r = round_trip(t, std::move(x));
      for (int64_t b = 0; b < kN / be; ++b) {
        const size_t first = static_cast<size_t>(b * be);
        for (int64_t j = 0; j < be; ++j) {
          const size_t i = first + static_cast<size_t>(j);
          ASSERT_EQ(r.y[i], r.y[first]) << where(t, "constant", seed, r, i);
          ASSERT_LE(std::fabs(r.y[i] - r.x[i]), 0x1p-10 * std::fabs(r.x[i]) + abs_tol)
              << where(t, "constant", seed, r, i);
        }
      }
    }
  }
}

TEST(QuantizePropertyTest, Q8_0RequantizingADequantizedBlockIsIdentity) {
  // Holds when the block's largest |q| is exactly 127, d > 0 and every q is in [-127, 127]:
  // amax = 127*d is exact (11 + 7 bits), so d' = amax/127 = d exactly and fp16(d') = d; then
  // x*(1/d) = q*(1 ± 2^-23) rounds back to q. (A block using -128, or no ±127, rescales, and a
  // negative d flips all signs, so those are excluded rather than tested.)
  for (uint64_t seed : kSeeds) {
    const CounterRng rng(seed, 17);
    constexpr int kBlocks = 4096;
    std::vector<BlockQ8_0> q(kBlocks);
    for (int b = 0; b < kBlocks; ++b) {
      uint16_t d = static_cast<uint16_t>(rng.bits(b) & 0x7BFF);  // positive, finite
      if (d == 0) d = 1;
      q[b].d = d;
      for (int j = 0; j < kQK8_0; ++j) {
        q[b].qs[j] = static_cast<int8_t>(static_cast<int>(rng.bits(kBlocks + b * 32 + j) % 255) - 127);
      }
      const int at = static_cast<int>(rng.bits(1ll << 40 | b) % 32);
      q[b].qs[at] = (rng.bits(1ll << 41 | b) >> 63) ? 127 : -127;
    }
    std::vector<float> y(kBlocks * kQK8_0);
    dequantize_row_q8_0(q.data(), y.data(), static_cast<int64_t>(y.size()));
    std::vector<BlockQ8_0> q2(kBlocks);
    quantize_row_q8_0_ref(y.data(), q2.data(), static_cast<int64_t>(y.size()));
    for (int b = 0; b < kBlocks; ++b) {
      ASSERT_EQ(q2[b].d, q[b].d) << fmt::format("seed {:#x} block {}", seed, b);
      for (int j = 0; j < kQK8_0; ++j) {
        ASSERT_EQ(q2[b].qs[j], q[b].qs[j]) << fmt::format("seed {:#x} block {} element {}", seed, b, j);
      }
    }
  }
}

// The K-quant reference quantizers re-fit scales by a grid search over the dequantized values,
// which need not land on the original codes; ggml guarantees no such fixed point, so there is no
// idempotence test for Q4_K/Q5_K/Q6_K.

TEST(QuantizePropertyTest, PlainTypesRequantizeToIdentity) {
  // fp16/bf16 -> fp32 is exact and the round-to-nearest back conversion of an exactly
  // representable value is the value itself; NaNs are canonicalised, so they are excluded.
  std::vector<uint16_t> h;
  for (uint32_t v = 0; v < 0x10000u; ++v) h.push_back(static_cast<uint16_t>(v));
  std::vector<float> y(h.size());
  std::vector<uint16_t> back(h.size());
  dequantize_row_f16(h.data(), y.data(), static_cast<int64_t>(h.size()));
  quantize_row_f16(y.data(), back.data(), static_cast<int64_t>(h.size()));
  for (uint32_t v = 0; v < 0x10000u; ++v) {
    if ((v & 0x7C00u) == 0x7C00u && (v & 0x3FFu) != 0) continue;
    ASSERT_EQ(back[v], v) << fmt::format("f16 0x{:04X}", v);
  }
  dequantize_row_bf16(h.data(), y.data(), static_cast<int64_t>(h.size()));
  quantize_row_bf16(y.data(), back.data(), static_cast<int64_t>(h.size()));
  for (uint32_t v = 0; v < 0x10000u; ++v) {
    if ((v & 0x7F80u) == 0x7F80u && (v & 0x7Fu) != 0) continue;
    ASSERT_EQ(back[v], v) << fmt::format("bf16 0x{:04X}", v);
  }
}

}  // namespace
}  // namespace fb
