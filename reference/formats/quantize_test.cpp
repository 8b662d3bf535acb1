// Known-answer tests for the reference quantizers: inputs chosen so the expected bits follow by hand.
#include "reference/formats/quantize.h"

#include <gtest/gtest.h>

#include <cstring>
#include <stdexcept>
#include <vector>

#include "reference/formats/dequantize.h"
#include "reference/formats/half.h"

namespace fb {
namespace {

TEST(QuantizeTest, Q8_0KnownBlockRoundsHalfAwayFromZero) {
  float x[32] = {127.0f, -2.5f, 2.5f, 0.5f, -0.5f, 1.5f, 3.5f, 126.5f, -127.0f, 0.49999997f};
  BlockQ8_0 b;
  quantize_row_q8_0_ref(x, &b, 32);
  // amax = 127 -> d = 127/127 = 1 exactly, id = 1, so qs = roundf(x). roundf sends every .5 away
  // from zero (2.5 -> 3, 126.5 -> 127, 0.5 -> 1) where round-half-even would give 2, 126, 0.
  EXPECT_EQ(b.d, 0x3C00);
  const int8_t want[10] = {127, -3, 3, 1, -1, 2, 4, 127, -127, 0};
  for (int j = 0; j < 10; ++j) EXPECT_EQ(b.qs[j], want[j]) << j;
  for (int j = 10; j < 32; ++j) EXPECT_EQ(b.qs[j], 0) << j;
}

TEST(QuantizeTest, Q8_0ConstantBlock) {
  float x[32];
  for (float& v : x) v = 3.0f;
  BlockQ8_0 b;
  quantize_row_q8_0_ref(x, &b, 32);
  // d = 3/127 = 0.0236220...; in fp16: 2^-6 * 1.51181 -> mantissa 0.51181*1024 = 524.09 -> 524, so
  // d16 = (9 << 10) | 524 = 0x260C = 1548/65536 = 0.02362060546875. qs = roundf(3 * (127/3)) = 127.
  EXPECT_EQ(b.d, 0x260C);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(b.qs[j], 127) << j;
  float y[32];
  dequantize_row_q8_0(&b, y, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], 2.99981689453125f) << j;  // 127 * 1548/65536
}

TEST(QuantizeTest, Q8_0ZeroBlock) {
  float x[32] = {};
  BlockQ8_0 b;
  std::memset(&b, 0xAB, sizeof b);
  quantize_row_q8_0_ref(x, &b, 32);
  // amax 0 -> d 0 -> id 0 (not 1/0), so every q is roundf(0) = 0.
  EXPECT_EQ(b.d, 0);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(b.qs[j], 0);
}

TEST(QuantizeTest, Q4KExactlyRepresentableBlock) {
  // Every 32-block holds k*s for k = 0..15 twice, with s = 63/64. Derivation: min = 0 and
  // max = 15s, so the initial grid already has error 0 (up to one rounding of 1/iscale), and no
  // later grid can do strictly better; the sub-block scale is s (or within an ulp), so
  // max_scale/63 rounds to fp16 2^-6 = 0x2400 exactly, ls = 63 for all eight, and the stored
  // scale d*63 = 63/64 = s again; mins are 0 -> dmin 0. Requantizing x/s = k gives L = k, and
  // dequantizing gives (2^-6*63)*k - 0 = k*s exactly.
  // (Steps of 0.5 would not reconstruct exactly: 0.5/63 has no exact fp16.)
  const float s = 63.0f / 64.0f;
  float x[256];
  for (int e = 0; e < 256; ++e) x[e] = static_cast<float>(e % 16) * s;
  BlockQ4K b;
  quantize_row_q4_K_ref(x, &b, 256);
  EXPECT_EQ(b.d, 0x2400);
  EXPECT_EQ(b.dmin, 0);
  // ls = 63 for every sub-block, lm = 0: bytes 0..3 = 63 | (63>>4)<<6 = 0xFF, bytes 4..7 = 0,
  // bytes 8..11 = 63 & 0xF = 0x0F.
  const uint8_t want_scales[12] = {0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0x0F, 0x0F, 0x0F, 0x0F};
  for (int j = 0; j < 12; ++j) EXPECT_EQ(b.scales[j], want_scales[j]) << j;
  // Byte 32c+l holds element 64c+l (low) and 64c+32+l (high); both are k = l % 16.
  for (int i = 0; i < 128; ++i) {
    const int k = i % 16;
    EXPECT_EQ(b.qs[i], k | (k << 4)) << i;
  }
  float y[256];
  dequantize_row_q4_K(&b, y, 256);
  for (int e = 0; e < 256; ++e) ASSERT_EQ(y[e], x[e]) << e;
}

TEST(QuantizeTest, Q5KExactlyRepresentableBlock) {
  // Same argument as Q4_K with 32 levels: k*s for k = 0..31, s = 63/64; L = k with the fifth bit
  // set for k >= 16.
  const float s = 63.0f / 64.0f;
  float x[256];
  for (int e = 0; e < 256; ++e) x[e] = static_cast<float>(e % 32) * s;
  BlockQ5K b;
  quantize_row_q5_K_ref(x, &b, 256);
  EXPECT_EQ(b.d, 0x2400);
  EXPECT_EQ(b.dmin, 0);
  // Position l of every sub-block holds k = l: qs byte l of each chunk = (l&15) | (l&15)<<4 and
  // qh[l] = 0xFF for l >= 16 (all eight sub-blocks set their bit), 0 below.
  for (int i = 0; i < 128; ++i) EXPECT_EQ(b.qs[i], ((i % 32) & 15) * 0x11) << i;
  for (int l = 0; l < 32; ++l) EXPECT_EQ(b.qh[l], l >= 16 ? 0xFF : 0x00) << l;
  float y[256];
  dequantize_row_q5_K(&b, y, 256);
  for (int e = 0; e < 256; ++e) ASSERT_EQ(y[e], x[e]) << e;
}

TEST(QuantizeTest, Q6KExactlyRepresentableBlock) {
  // Each 16-block holds (k - 32)*2^-4 for k in {0, 4, 8, ..., 60}: max |x| = 2 at k = 0 (x = -2),
  // so iscale = -32/-2 = 16 exactly, L = x*16 + 32 = k, and the x^2-weighted least-squares scale
  // reproduces +1/16 exactly (all points on the line; x = m/4 keeps every sum exact). Block:
  // max_scale = 1/16 -> iscale = -128/(1/16) = -2048 -> d = fp16(-1/2048), scales = -128 each
  // (nearest_int(-2048/16)). Requantize: d*(-128) = 1/16 -> L = x*16 + 32 = k.
  float x[256];
  for (int e = 0; e < 256; ++e) x[e] = static_cast<float>((e % 16) * 4 - 32) / 16.0f;
  BlockQ6K b;
  quantize_row_q6_K_ref(x, &b, 256);
  EXPECT_EQ(b.d, 0x9000);  // -2^-11: sign 1, exponent -11+15 = 4 -> (1<<15) | (4<<10)
  for (int j = 0; j < 16; ++j) EXPECT_EQ(b.scales[j], -128) << j;
  float y[256];
  dequantize_row_q6_K(&b, y, 256);
  for (int e = 0; e < 256; ++e) ASSERT_EQ(y[e], x[e]) << e;
}

TEST(QuantizeTest, AllZeroBlocksGiveZeroBlocksAndZeros) {
  std::vector<float> x(512, 0.0f);
  std::vector<float> y(512);
  for (GgmlType t : kConvertibleTypes) {
    std::vector<uint8_t> q(ggml_row_bytes(t, 512), 0xCD);
    quantize(t, x.data(), q.data(), 512);
    // ggml writes only zero bits for an all-zero Q4_K/Q5_K/Q6_K/Q8_0 block (d, dmin, scales and
    // codes all 0; Q6_K memsets), and +0 for F16/BF16.
    for (size_t i = 0; i < q.size(); ++i) ASSERT_EQ(q[i], 0) << ggml_type_name(t) << " byte " << i;
    dequantize(t, q.data(), y.data(), 512);
    for (int i = 0; i < 512; ++i) ASSERT_EQ(y[i], 0.0f) << ggml_type_name(t) << " element " << i;
  }
}

TEST(QuantizeTest, PlainRows) {
  const float x[4] = {1.0f, 65520.0f, 0x1p-25f, -3.0f};
  uint16_t h[4];
  quantize_row_f16(x, h, 4);
  EXPECT_EQ(h[0], 0x3C00);
  EXPECT_EQ(h[1], 0x7C00);  // the tie above 65504 goes to even = inf
  EXPECT_EQ(h[2], 0x0000);  // tie between 0 and 2^-24 goes to even = 0
  EXPECT_EQ(h[3], 0xC200);
  quantize_row_bf16(x, h, 4);
  EXPECT_EQ(h[0], 0x3F80);
  EXPECT_EQ(h[1], 0x4780);  // 65520 = 0x477FF000: dropped half 0xF000 > 0x8000 -> 0x477F + 1
  EXPECT_EQ(h[3], 0xC040);
}

TEST(QuantizeTest, DispatchRejectsUnsupportedTypeAndBadLength) {
  std::vector<float> x(512);
  std::vector<uint8_t> q(4096);
  EXPECT_THROW(quantize(GgmlType::Q4_0, x.data(), q.data(), 32), std::invalid_argument);
  EXPECT_THROW(quantize(GgmlType::Q6_K, x.data(), q.data(), 255), std::invalid_argument);
  try {
    quantize(GgmlType::Q5_K, x.data(), q.data(), 300);
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("q5_K"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("n=300"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace fb
