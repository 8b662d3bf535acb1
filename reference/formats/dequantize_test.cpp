// Known-answer tests: single blocks whose fields are chosen by hand, expected floats derived by
// hand in the comments. Note why small literals suffice for bit-exactness here: every product in
// these formats is exact in fp32 (Q6_K: 11-bit d x 8-bit scale x 6-bit q < 2^24 significant bits;
// Q4_K/Q5_K: d*sc has <= 17 bits, times a 5-bit q <= 22), so only the final "- m" of Q4_K/Q5_K
// rounds, and that is one IEEE operation with or without FMA.
#include "reference/formats/dequantize.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "reference/formats/half.h"
#include "reference/util/splitmix.h"

namespace fb {
namespace {

// Packed scales for sc = {1,2,3,4,17,33,63,5} and m = {0,1,2,3,16,40,63,7}.
// j<4: byte j = sc[j], byte j+4 = m[j] (low 6 bits).
// j>=4: byte j+4 = (sc&0xF) | (m&0xF)<<4; top 2 bits of sc -> bits 6..7 of byte j-4, of m -> byte j.
//   j=4: sc 17=0b01'0001, m 16=0b01'0000 -> byte8 = 0x01, byte0 = 1|1<<6 = 0x41, byte4 = 0|1<<6 = 0x40
//   j=5: sc 33=0b10'0001, m 40=0b10'1000 -> byte9 = 0x81, byte1 = 2|2<<6 = 0x82, byte5 = 1|2<<6 = 0x81
//   j=6: sc 63, m 63                       -> byte10 = 0xFF, byte2 = 3|3<<6 = 0xC3, byte6 = 2|3<<6 = 0xC2
//   j=7: sc 5, m 7                         -> byte11 = 0x75, byte3 = 0x04, byte7 = 0x03
constexpr uint8_t kScales[12] = {0x41, 0x82, 0xC3, 0x04, 0x40, 0x81, 0xC2, 0x03, 0x01, 0x81, 0xFF, 0x75};

TEST(DequantizeTest, Q4KKnownBlock) {
  BlockQ4K b{};
  b.d = 0x3C00;     // 1.0
  b.dmin = 0x3800;  // 0.5
  std::memcpy(b.scales, kScales, sizeof kScales);
  // Low nibble 5 feeds the even sub-blocks, high nibble 10 the odd ones.
  std::memset(b.qs, 0xA5, sizeof b.qs);
  b.qs[0] = 0x0F;    // element 0 (sub 0) -> q 15; element 32 (sub 1) -> q 0
  b.qs[127] = 0xF0;  // chunk 3, l=31: element 223 (sub 6) -> q 0; element 255 (sub 7) -> q 15
  float y[256];
  dequantize_row_q4_K(&b, y, 256);
  // y = (1*sc)*q - 0.5*m per sub-block with q = 5 (even sub-block) or 10 (odd):
  const float per_sub[8] = {
      5.0f,    // 1*5 - 0
      19.5f,   // 2*10 - 0.5
      14.0f,   // 3*5 - 1
      38.5f,   // 4*10 - 1.5
      77.0f,   // 17*5 - 8
      310.0f,  // 33*10 - 20
      283.5f,  // 63*5 - 31.5
      46.5f,   // 5*10 - 3.5
  };
  for (int e = 0; e < 256; ++e) {
    float want = per_sub[e / 32];
    if (e == 0) want = 15.0f;     // 1*15 - 0
    if (e == 32) want = -0.5f;    // 2*0 - 0.5
    if (e == 223) want = -31.5f;  // 63*0 - 31.5
    if (e == 255) want = 71.5f;   // 5*15 - 3.5
    ASSERT_EQ(y[e], want) << "element " << e;
  }
}

TEST(DequantizeTest, Q4KSubtractionRounds) {
  BlockQ4K b{};
  b.d = 0x7BFF;     // 65504
  b.dmin = 0x0001;  // 2^-24, the smallest fp16 subnormal
  b.scales[0] = 63;
  b.scales[4] = 1;
  b.qs[0] = 0x0F;
  float y[256];
  dequantize_row_q4_K(&b, y, 256);
  // (65504*63)*15 = 61901280 exactly (needs 21 bits); minus 2^-24 is far below half an ulp (ulp 4
  // at 2^25..2^26), so the result rounds back to 61901280.
  EXPECT_EQ(y[0], 61901280.0f);
  // q 0: 0 - 2^-24.
  EXPECT_EQ(y[1], -0x1p-24f);
}

TEST(DequantizeTest, Q5KKnownBlock) {
  BlockQ5K b{};
  b.d = 0x3C00;     // 1.0
  b.dmin = 0x3800;  // 0.5
  std::memcpy(b.scales, kScales, sizeof kScales);
  std::memset(b.qs, 0xA5, sizeof b.qs);
  // qh bit s belongs to sub-block s (chunk s/2, low nibble for even s, high for odd).
  b.qh[0] = 0xFF;   // position 0 of every sub-block gets +16
  b.qh[31] = 0x81;  // position 31 of sub-blocks 0 and 7 gets +16
  float y[256];
  dequantize_row_q5_K(&b, y, 256);
  const float plain[8] = {5.0f, 19.5f, 14.0f, 38.5f, 77.0f, 310.0f, 283.5f, 46.5f};  // as Q4_K above
  // With the fifth bit: q = 21 (even) or 26 (odd):
  const float high[8] = {
      21.0f,    // 1*21 - 0
      51.5f,    // 2*26 - 0.5
      62.0f,    // 3*21 - 1
      102.5f,   // 4*26 - 1.5
      349.0f,   // 17*21 - 8
      838.0f,   // 33*26 - 20
      1291.5f,  // 63*21 - 31.5
      126.5f,   // 5*26 - 3.5
  };
  for (int e = 0; e < 256; ++e) {
    const int s = e / 32;
    const int pos = e % 32;
    const bool hi = pos == 0 || (pos == 31 && (s == 0 || s == 7));
    ASSERT_EQ(y[e], hi ? high[s] : plain[s]) << "element " << e;
  }
}

TEST(DequantizeTest, Q6KKnownBlock) {
  BlockQ6K b{};
  b.d = 0x3400;  // 0.25
  const int8_t sc[16] = {-128, -1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 127};
  std::memcpy(b.scales, sc, sizeof sc);
  // Element e uses scale e/16. With ql = qh = 0 every q is 0 - 32 = -32, so y = 0.25*sc*(-32) = -8*sc.
  b.ql[0] = 0xFF;
  b.qh[0] = 0xFF;
  b.ql[64 + 31] = 0x5A;
  b.qh[32 + 31] = 0x93;  // 0b10'01'00'11
  float y[256];
  dequantize_row_q6_K(&b, y, 256);
  for (int e = 0; e < 256; ++e) {
    float want = -8.0f * sc[e / 16];
    // Half 0, l=0: q1 = ql[0]&F | (qh[0]&3)<<4 = 63 -> 31: 0.25*(-128)*31
    if (e == 0) want = -992.0f;
    // e=32: q2 = ql[32]&F (0) | (qh[0]>>2&3)<<4 = 48 -> 16, scale 2 (=1): 0.25*1*16
    if (e == 32) want = 4.0f;
    // e=64: q3 = ql[0]>>4 (15) | (qh[0]>>4&3)<<4 = 63 -> 31, scale 4 (=3): 0.25*3*31
    if (e == 64) want = 23.25f;
    // e=96: q4 = ql[32]>>4 (0) | (qh[0]>>6&3)<<4 = 48 -> 16, scale 6 (=5): 0.25*5*16
    if (e == 96) want = 20.0f;
    // Half 1, l=31 (ql[95]=0x5A, ql[127]=0, qh[63]=0x93):
    // e=159: q1 = 0xA | 3<<4 = 58 -> 26, scale 9 (=8): 0.25*8*26
    if (e == 159) want = 52.0f;
    // e=191: q2 = 0 | 0<<4 = 0 -> -32, scale 11 (=10): 0.25*10*(-32); same as the default
    // e=223: q3 = 0x5 | 1<<4 = 21 -> -11, scale 13 (=12): 0.25*12*(-11)
    if (e == 223) want = -33.0f;
    // e=255: q4 = 0 | 2<<4 = 32 -> 0, scale 15: 0
    if (e == 255) want = 0.0f;
    ASSERT_EQ(y[e], want) << "element " << e;
  }
  EXPECT_EQ(y[1], 1024.0f);     // -8 * -128
  EXPECT_EQ(y[16], 8.0f);       // -8 * -1
  EXPECT_EQ(y[250], -1016.0f);  // -8 * 127
}

TEST(DequantizeTest, Q8_0KnownBlocks) {
  BlockQ8_0 b[2]{};
  b[0].d = 0x3800;  // 0.5
  const int8_t qs[6] = {-128, -127, -1, 0, 1, 127};
  std::memcpy(b[0].qs, qs, sizeof qs);
  b[1].d = 0x0001;  // 2^-24
  b[1].qs[0] = -128;
  b[1].qs[1] = 3;
  float y[64];
  dequantize_row_q8_0(b, y, 64);
  const float want[6] = {-64.0f, -63.5f, -0.5f, 0.0f, 0.5f, 63.5f};
  for (int j = 0; j < 6; ++j) EXPECT_EQ(y[j], want[j]) << j;
  for (int j = 6; j < 32; ++j) EXPECT_EQ(y[j], 0.0f) << j;
  EXPECT_EQ(y[32], -0x1p-17f);  // -128 * 2^-24
  EXPECT_EQ(y[33], 0x3p-24f);
}

TEST(DequantizeTest, PlainTypesKnownAnswers) {
  const uint16_t h[5] = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x7C00};
  float y[5];
  dequantize_row_f16(h, y, 5);
  EXPECT_EQ(y[0], 1.0f);
  EXPECT_EQ(y[1], -2.0f);
  EXPECT_EQ(y[2], 65504.0f);
  EXPECT_EQ(y[3], 0x1p-24f);
  EXPECT_TRUE(std::isinf(y[4]) && y[4] > 0);
  const uint16_t b[3] = {0x3F80, 0xC040, 0x0001};
  dequantize_row_bf16(b, y, 3);
  EXPECT_EQ(y[0], 1.0f);
  EXPECT_EQ(y[1], -3.0f);
  EXPECT_EQ(float_bits(y[2]), 0x00010000u);  // subnormal kept
  const float f[2] = {1.25f, -7.0f};
  dequantize(GgmlType::F32, f, y, 2);
  EXPECT_EQ(y[0], 1.25f);
  EXPECT_EQ(y[1], -7.0f);
}

// A finite fp16 (exponent field != 31) drawn from random bits.
uint16_t finite_fp16(uint64_t bits) {
  uint16_t h = static_cast<uint16_t>(bits);
  if ((h & 0x7C00u) == 0x7C00u) h = static_cast<uint16_t>(h & ~0x4000u);
  return h;
}

TEST(DequantizeTest, RandomValidBlocksAreFinite) {
  constexpr uint64_t kSeed = 0x5EED0001;
  for (GgmlType type :
       {GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::Q8_0, GgmlType::F16, GgmlType::BF16}) {
    const CounterRng rng(kSeed, static_cast<uint64_t>(type));
    const int64_t n = 256 * 64;
    const size_t bytes = ggml_row_bytes(type, n);
    std::vector<uint8_t> raw(bytes);
    for (size_t i = 0; i < bytes; ++i) raw[i] = static_cast<uint8_t>(rng.bits(i));
    // Force the fp16 scale fields (and fp16/bf16 elements) to finite values; everything else in a
    // block is a valid code for any bit pattern.
    const size_t block_bytes = ggml_type_info(type).block_bytes;
    auto fix16 = [&](size_t off, uint64_t salt) {
      const uint16_t h = finite_fp16(rng.bits(salt));
      std::memcpy(&raw[off], &h, 2);
    };
    const uint64_t salt0 = 1ull << 40;
    for (size_t blk = 0; blk * block_bytes < bytes; ++blk) {
      const size_t base = blk * block_bytes;
      switch (type) {
        case GgmlType::Q4_K:
        case GgmlType::Q5_K:
          fix16(base, salt0 + 2 * blk);
          fix16(base + 2, salt0 + 2 * blk + 1);
          break;
        case GgmlType::Q6_K:
          fix16(base + 208, salt0 + blk);
          break;
        case GgmlType::Q8_0:
        case GgmlType::F16:
          fix16(base, salt0 + blk);
          break;
        case GgmlType::BF16: {
          // bf16 exponent field is bits 7..14; 0xFF there is inf/NaN.
          uint16_t h;
          std::memcpy(&h, &raw[base], 2);
          if ((h & 0x7F80u) == 0x7F80u) h = static_cast<uint16_t>(h & ~0x4000u);
          std::memcpy(&raw[base], &h, 2);
          break;
        }
        default:
          break;
      }
    }
    std::vector<float> y(static_cast<size_t>(n));
    dequantize(type, raw.data(), y.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_TRUE(std::isfinite(y[i]))
          << fmt::format("type {} seed {:#x} element {} block {} value {}", ggml_type_name(type), kSeed, i,
                         i / ggml_type_info(type).block_elems, y[i]);
    }
  }
}

TEST(DequantizeTest, DispatchMatchesRowFunctions) {
  BlockQ4K b{};
  b.d = 0x3C00;
  b.dmin = 0x3800;
  std::memcpy(b.scales, kScales, sizeof kScales);
  std::memset(b.qs, 0x3C, sizeof b.qs);
  float a[256];
  float c[256];
  dequantize_row_q4_K(&b, a, 256);
  dequantize(GgmlType::Q4_K, &b, c, 256);
  EXPECT_EQ(std::memcmp(a, c, sizeof a), 0);
}

void expect_invalid(GgmlType type, int64_t n, const std::vector<std::string>& needles) {
  std::vector<uint8_t> src(4096);
  std::vector<float> dst(4096);
  try {
    dequantize(type, src.data(), dst.data(), n);
    ADD_FAILURE() << "no exception for " << ggml_type_name(type) << " n=" << n;
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    for (const std::string& needle : needles) {
      EXPECT_NE(msg.find(needle), std::string::npos) << "message '" << msg << "' lacks '" << needle << "'";
    }
  }
}

TEST(DequantizeTest, DispatchRejectsUnsupportedTypeAndBadLength) {
  expect_invalid(GgmlType::Q4_0, 32, {"q4_0", "n=32"});
  expect_invalid(GgmlType::IQ2_XXS, 256, {"iq2_xxs", "n=256"});
  expect_invalid(static_cast<GgmlType>(4), 32, {"n=32"});
  expect_invalid(GgmlType::Q4_K, 100, {"q4_K", "n=100", "256"});
  expect_invalid(GgmlType::Q8_0, 33, {"q8_0", "n=33", "32"});
}

}  // namespace
}  // namespace fb
