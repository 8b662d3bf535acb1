// Packing checks: every layout is unpacked again and compared with ggml's dequant of the original
// blocks (reference/formats, bit-exact to ggml). Quants must match exactly; scales and zeros within
// the documented conversion bounds (layouts.h).
#include "reference/layouts/layouts.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "reference/formats/dequantize.h"
#include "reference/formats/half.h"
#include "reference/formats/quantize.h"
#include "reference/util/splitmix.h"

namespace fb {
namespace {

constexpr uint64_t kSeed = 4242;

template <class Block>
std::vector<Block> quantized_gaussian(GgmlType type, int64_t n, int64_t k, uint64_t seed) {
  const CounterRng rng(seed, 7);
  std::vector<float> x(static_cast<size_t>(n * k));
  for (size_t i = 0; i < x.size(); ++i) x[i] = 0.02f * rng.normal(i);
  std::vector<Block> b(static_cast<size_t>(n * k / 256));
  quantize(type, x.data(), b.data(), n * k);
  return b;
}

template <class Block>
std::vector<Block> random_bytes(int64_t count, uint64_t seed) {
  const CounterRng rng(seed, 9);
  std::vector<Block> b(static_cast<size_t>(count));
  auto* p = reinterpret_cast<uint8_t*>(b.data());
  for (size_t i = 0; i < b.size() * sizeof(Block); ++i) p[i] = static_cast<uint8_t>(rng.bits(i));
  return b;
}

std::vector<float> dequant_rows(GgmlType type, const void* blocks, int64_t n, int64_t k) {
  std::vector<float> y(static_cast<size_t>(n * k));
  dequantize(type, blocks, y.data(), n * k);
  return y;
}

// With d = 1, dmin = 0 and every sub-block scale 1, ggml's dequant returns the raw quant q: an
// independent unpacking of the nibble order to check the layout's q() against.
std::vector<BlockQ4K> unit_scales(std::vector<BlockQ4K> b) {
  for (auto& blk : b) {
    blk.d = fp32_to_fp16(1.0f);
    blk.dmin = 0;
    const uint8_t s[12] = {1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1};
    std::memcpy(blk.scales, s, 12);
  }
  return b;
}

TEST(Q4KCoalesced, HandDerivedBlock) {
  BlockQ4K b{};
  b.d = fp32_to_fp16(0.5f);
  b.dmin = fp32_to_fp16(0.25f);
  // sub-blocks 0..3: sc = 2, m = 3; 4..7: sc = 4 + 16 = 20 (high bits 01), m = 5.
  for (int j = 0; j < 4; ++j) {
    b.scales[j] = 2 | (1 << 6);
    b.scales[j + 4] = 3;
    b.scales[j + 8] = static_cast<uint8_t>(4 | (5 << 4));
  }
  for (int i = 0; i < 128; ++i) b.qs[i] = static_cast<uint8_t>((i % 16) | ((15 - i % 16) << 4));
  const CoalescedInt4 t = pack_q4k_coalesced(&b, 1, 256, ScaleEncoding::bf16);
  // Weight 64c + l is the low nibble of qs[32c + l]; weight 64c + 32 + l the high nibble.
  EXPECT_EQ(t.q(0, 5), 5);
  EXPECT_EQ(t.q(0, 32 + 5), 10);
  EXPECT_EQ(t.q(0, 64 + 17), 1);
  EXPECT_EQ(t.qdata[0], 0x10);      // q0 = 0 (low), q1 = 1 (high)
  EXPECT_EQ(t.scale(0, 0), 1.0f);   // 0.5 * 2
  EXPECT_EQ(t.zero(0, 0), 0.75f);   // 0.25 * 3 / 1
  EXPECT_EQ(t.scale(0, 5), 10.0f);  // 0.5 * 20
  EXPECT_EQ(t.zero(0, 5), bf16_to_fp32(fp32_to_bf16(1.25f / 10.0f)));
  // (q - z) * s == d*sc*q - dmin*m where the zero is exact in bf16.
  EXPECT_EQ(t.weight(0, 5), 0.5 * 2 * 5 - 0.25 * 3);
}

void check_q4k(const std::vector<BlockQ4K>& blocks, int64_t n, int64_t k, bool expect_tight) {
  const auto truth = dequant_rows(GgmlType::Q4_K, blocks.data(), n, k);
  const auto qs = dequant_rows(GgmlType::Q4_K, unit_scales(blocks).data(), n, k);
  const CoalescedInt4 t = pack_q4k_coalesced(blocks.data(), n, k, ScaleEncoding::bf16);
  const CoalescedInt4 u = pack_q4k_coalesced(blocks.data(), n, k, ScaleEncoding::code8);
  ASSERT_EQ(t.qdata, u.qdata);
  double err_t = 0, err_u = 0, sig = 0, worst_ratio = 0;
  int64_t zero_dropped = 0;
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < k; ++c) {
      const size_t i = static_cast<size_t>(r * k + c);
      ASSERT_EQ(t.q(r, c), static_cast<int>(qs[i])) << "row " << r << " col " << c;
      const Q4KGroup g =
          q4k_group(blocks[static_cast<size_t>(r * k / 256 + c / 256)], static_cast<int>(c % 256 / 32));
      const double bound = q4k_conversion_bound(t.q(r, c), g);
      const double e = std::fabs(t.weight(r, c) - truth[i]);
      // truth is ggml's fp32 result (one rounding of d*sc*q - dmin*m): allow its half ulp too.
      ASSERT_LE(e, bound + std::fabs(truth[i]) * 0x1p-24 + 1e-30) << "row " << r << " col " << c;
      if (bound > 0) worst_ratio = std::max(worst_ratio, e / bound);
      zero_dropped += g.S == 0.0f && g.M != 0.0f;
      err_t += e * e;
      err_u += (u.weight(r, c) - truth[i]) * (u.weight(r, c) - truth[i]);
      sig += static_cast<double>(truth[i]) * truth[i];
    }
  }
  // Codes: each decoded scale/zero within half a step of the bf16 value it encodes.
  for (int64_t r = 0; r < n; ++r)
    for (int64_t g = 0; g < k / 32; ++g) {
      const double ss = fp16_to_fp32(u.scale_step[static_cast<size_t>(r * k / 256 + g / 8)]);
      const double zs = fp16_to_fp32(u.zero_step[static_cast<size_t>(r * k / 256 + g / 8)]);
      ASSERT_LE(std::fabs(u.scale(r, g) - t.scale(r, g)), ss / 2 + 1e-30);
      ASSERT_LE(std::fabs(u.zero(r, g) - t.zero(r, g)), zs / 2 + 1e-30);
    }
  std::printf(
      "q4_K %lldx%lld: NMSE vs ggml bf16-enc %.3g, u8-enc %.3g; worst err/bound %.3f; zero dropped in %lld "
      "weights\n",
      static_cast<long long>(n), static_cast<long long>(k), err_t / sig, err_u / sig, worst_ratio,
      static_cast<long long>(zero_dropped));
  if (expect_tight) {
    // Measured on seed 4242: bf16 1.64e-5, u8 2.66e-5. The bf16 zero (~7.5 q-units for centred
    // data) loses up to 7.5 * 2^-8 = 0.03 q-units, which alone exceeds an NMSE of 1e-5: the layout
    // itself, not the kernel, puts the 1e-5 target out of reach vs the ggml truth.
    EXPECT_LT(err_t / sig, 3e-5);
    EXPECT_LT(err_u / sig, 5e-5);  // 8-bit codes of scale and zero per 256 on top
  }
}

TEST(Q4KCoalesced, QuantizerBlocksWithinConversionBound) {
  const int64_t n = 24, k = 1024;
  check_q4k(quantized_gaussian<BlockQ4K>(GgmlType::Q4_K, n, k, kSeed), n, k, true);
}

TEST(Q4KCoalesced, RandomBytesWithinConversionBound) {
  // Arbitrary scales/mins (sc = 0 included: the dropped-zero case); NaN/inf d excluded.
  const int64_t n = 16, k = 512;
  auto b = random_bytes<BlockQ4K>(n * k / 256, kSeed);
  const CounterRng rng(kSeed, 3);
  for (size_t i = 0; i < b.size(); ++i) {
    b[i].d = fp32_to_fp16(1e-4f + 2e-3f * rng.uniform(2 * i));
    b[i].dmin = fp32_to_fp16(1e-4f + 2e-3f * rng.uniform(2 * i + 1));
  }
  check_q4k(b, n, k, false);
}

TEST(Q4KCoalesced, RowConcatEqualsPackOfConcatenatedBlocks) {
  auto a = quantized_gaussian<BlockQ4K>(GgmlType::Q4_K, 3, 512, 1);
  auto b = quantized_gaussian<BlockQ4K>(GgmlType::Q4_K, 5, 512, 2);
  std::vector<BlockQ4K> ab = a;
  ab.insert(ab.end(), b.begin(), b.end());
  for (auto enc : {ScaleEncoding::bf16, ScaleEncoding::code8}) {
    const auto c =
        concat_rows(pack_q4k_coalesced(a.data(), 3, 512, enc), pack_q4k_coalesced(b.data(), 5, 512, enc));
    const auto d = pack_q4k_coalesced(ab.data(), 8, 512, enc);
    EXPECT_EQ(c.qdata, d.qdata);
    EXPECT_EQ(c.scale_bf16, d.scale_bf16);
    EXPECT_EQ(c.zero_bf16, d.zero_bf16);
    EXPECT_EQ(c.scale_code, d.scale_code);
    EXPECT_EQ(c.zero_code, d.zero_code);
    EXPECT_EQ(c.scale_step, d.scale_step);
    EXPECT_EQ(c.zero_step, d.zero_step);
  }
}

TEST(Q4KCoalesced, RejectsBadK) {
  BlockQ4K b{};
  EXPECT_THROW(pack_q4k_coalesced(&b, 1, 128, ScaleEncoding::bf16), std::invalid_argument);
}

void check_q6k(std::vector<BlockQ6K> blocks, int64_t n, int64_t k) {
  const auto truth = dequant_rows(GgmlType::Q6_K, blocks.data(), n, k);
  auto unit = blocks;
  for (auto& b : unit) {
    b.d = fp32_to_fp16(1.0f);
    for (auto& s : b.scales) s = 1;
  }
  const auto qs = dequant_rows(GgmlType::Q6_K, unit.data(), n, k);
  const PlanarInt6 t = pack_q6k_planar(blocks.data(), n, k, ScaleEncoding::bf16);
  const PlanarInt6 c = pack_q6k_planar(blocks.data(), n, k, ScaleEncoding::code8);
  ASSERT_EQ(t.ql, c.ql);
  ASSERT_EQ(t.qh, c.qh);
  double err_t = 0, err_c = 0, sig = 0;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t col = 0; col < k; ++col) {
      const size_t i = static_cast<size_t>(r * k + col);
      ASSERT_EQ(t.q(r, col), static_cast<int>(qs[i])) << "row " << r << " col " << col;
      const BlockQ6K& b = blocks[static_cast<size_t>(r * k / 256 + col / 256)];
      const double S = fp16_to_fp32(b.d) * static_cast<float>(b.scales[col % 256 / 16]);
      const double bound = std::fabs(t.q(r, col) * S) * (0x1p-8 + 0x1p-24) + 1e-30;
      ASSERT_LE(std::fabs(t.weight(r, col) - truth[i]), bound) << "row " << r << " col " << col;
      const double step = fp16_to_fp32(c.scale_step[static_cast<size_t>(r * k / 256 + col / 256)]);
      ASSERT_LE(std::fabs(c.scale(r, col / 16) - S), step / 2 + std::fabs(S) * 0x1p-24 + 1e-30);
      err_t += (t.weight(r, col) - truth[i]) * (t.weight(r, col) - truth[i]);
      err_c += (c.weight(r, col) - truth[i]) * (c.weight(r, col) - truth[i]);
      sig += static_cast<double>(truth[i]) * truth[i];
    }
  std::printf("q6_K %lldx%lld: NMSE vs ggml bf16-enc %.3g, i8-enc %.3g\n", static_cast<long long>(n),
              static_cast<long long>(k), err_t / sig, err_c / sig);
  EXPECT_LT(err_t / sig, 1e-5);
}

TEST(Q6KPlanar, HandDerivedBitPositions) {
  BlockQ6K b{};
  b.d = fp32_to_fp16(1.0f);
  for (auto& s : b.scales) s = 1;
  // Weight 0: ql[0] low, qh[0] bits 0-1; weight 1: ql[1] low, qh[1] bits 0-1.
  b.ql[0] = 0x05;
  b.qh[0] = 0x02;  // weight 0: u = 5 | 2 << 4 = 37 -> q = 5
  b.ql[1] = 0x0F;
  b.qh[1] = 0x03;  // weight 1: u = 63 -> q = 31
  const PlanarInt6 t = pack_q6k_planar(&b, 1, 256, ScaleEncoding::bf16);
  EXPECT_EQ(t.q(0, 0), 5);
  EXPECT_EQ(t.q(0, 1), 31);
  EXPECT_EQ(t.ql[0], 0xF5);   // even k low nibble
  EXPECT_EQ(t.qh[0] & 3, 2);  // hi_even byte 0 bits 0-1: weight 0
  EXPECT_EQ(t.qh[4] & 3, 3);  // hi_odd byte 0 bits 0-1: weight 1
}

TEST(Q6KPlanar, QuantizerBlocksWithinBound) {
  check_q6k(quantized_gaussian<BlockQ6K>(GgmlType::Q6_K, 16, 1024, kSeed), 16, 1024);
}

TEST(Q6KPlanar, RandomBytesWithinBound) {
  auto b = random_bytes<BlockQ6K>(16 * 2, kSeed + 1);
  const CounterRng rng(kSeed, 5);
  for (size_t i = 0; i < b.size(); ++i) b[i].d = fp32_to_fp16(5e-5f + 5e-4f * rng.uniform(i));
  check_q6k(b, 16, 512);
}

TEST(Q6KPlanar, RowConcat) {
  auto a = quantized_gaussian<BlockQ6K>(GgmlType::Q6_K, 2, 256, 1);
  auto b = quantized_gaussian<BlockQ6K>(GgmlType::Q6_K, 3, 256, 2);
  std::vector<BlockQ6K> ab = a;
  ab.insert(ab.end(), b.begin(), b.end());
  const auto c = concat_rows(pack_q6k_planar(a.data(), 2, 256, ScaleEncoding::code8),
                             pack_q6k_planar(b.data(), 3, 256, ScaleEncoding::code8));
  const auto d = pack_q6k_planar(ab.data(), 5, 256, ScaleEncoding::code8);
  EXPECT_EQ(c.ql, d.ql);
  EXPECT_EQ(c.qh, d.qh);
  EXPECT_EQ(c.scale_code, d.scale_code);
  EXPECT_EQ(c.scale_step, d.scale_step);
}

}  // namespace
}  // namespace fb
