// fp16 conversions are checked against the CPU's F16C instructions, which implement IEEE
// round-to-nearest-even exactly (as ggml's portable bit trick does); bf16 against hand-derived bits.
#include "reference/formats/half.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <immintrin.h>

#include <cstdint>

namespace fb {
namespace {

bool cpu_has_f16c() { return __builtin_cpu_supports("f16c"); }

#define FB_REQUIRE_F16C()                                  \
  do {                                                     \
    if (!cpu_has_f16c()) GTEST_SKIP() << "CPU lacks F16C"; \
  } while (0)

uint16_t hw_fp32_to_fp16(float f) { return static_cast<uint16_t>(_cvtss_sh(f, 0)); }
float hw_fp16_to_fp32(uint16_t h) { return _cvtsh_ss(h); }

bool is_nan_bits(uint32_t u) { return (u & 0x7FFFFFFFu) > 0x7F800000u; }

// F16C keeps NaN payload bits where ggml returns the canonical 0x7E00, so NaN inputs are checked
// against ggml's rule and the rest against the hardware. Returns an empty string when they agree.
std::string check_fp32_to_fp16(uint32_t u) {
  const float f = bits_float(u);
  const uint16_t got = fp32_to_fp16(f);
  const uint16_t want =
      is_nan_bits(u) ? static_cast<uint16_t>(((u >> 16) & 0x8000u) | 0x7E00u) : hw_fp32_to_fp16(f);
  if (got == want) return {};
  return fmt::format("fp32 bits 0x{:08X} ({:g}): got 0x{:04X}, want 0x{:04X}", u, f, got, want);
}

TEST(HalfTest, Fp32ToFp16StridedSweepMatchesF16C) {
  FB_REQUIRE_F16C();
  // 61 is prime, so the sweep visits every residue of the low bits over the 2^32 range; about
  // 70M conversions, well under two seconds.
  constexpr uint64_t kStride = 61;
  uint64_t failures = 0;
  for (uint64_t u = 0; u < (1ull << 32); u += kStride) {
    const std::string msg = check_fp32_to_fp16(static_cast<uint32_t>(u));
    if (!msg.empty() && ++failures <= 10) ADD_FAILURE() << msg;
  }
  EXPECT_EQ(failures, 0u);
}

TEST(HalfTest, Fp32ToFp16EveryRoundingBoundary) {
  FB_REQUIRE_F16C();
  uint64_t failures = 0;
  for (uint32_t h = 0; h < 0x7C00u; ++h) {
    // The exact midpoint between fp16 h and its successor (65536 past the largest finite value,
    // where rounding overflows to inf) has at most 12 significant bits, so it is an exact fp32.
    const float lo = fp16_to_fp32(static_cast<uint16_t>(h));
    const float hi = h == 0x7BFFu ? 65536.0f : fp16_to_fp32(static_cast<uint16_t>(h + 1));
    const uint32_t mid = float_bits((lo + hi) * 0.5f);
    for (uint32_t sign : {0u, 0x80000000u}) {
      for (uint32_t u : {mid - 1, mid, mid + 1}) {
        const std::string msg = check_fp32_to_fp16(u | sign);
        if (!msg.empty() && ++failures <= 10) ADD_FAILURE() << "boundary above h=" << h << ": " << msg;
      }
    }
  }
  EXPECT_EQ(failures, 0u);
}

TEST(HalfTest, Fp32ToFp16SpecialValues) {
  FB_REQUIRE_F16C();
  // NaNs (quiet, signaling, max payload) of both signs -> 0x7E00 with the sign kept.
  EXPECT_EQ(fp32_to_fp16(bits_float(0x7FC00000u)), 0x7E00);
  EXPECT_EQ(fp32_to_fp16(bits_float(0xFFC00000u)), 0xFE00);
  EXPECT_EQ(fp32_to_fp16(bits_float(0x7F800001u)), 0x7E00);
  EXPECT_EQ(fp32_to_fp16(bits_float(0xFFFFFFFFu)), 0xFE00);
  EXPECT_EQ(fp32_to_fp16(bits_float(0x7FBFFFFFu)), 0x7E00);
  // Overflow: 65504 is the largest finite; 65519.99 still rounds down; the midpoint 65520 ties to
  // the even neighbour, which is the (inf) 65536.
  EXPECT_EQ(fp32_to_fp16(65504.0f), 0x7BFF);
  EXPECT_EQ(fp32_to_fp16(bits_float(0x477FEFFFu)), 0x7BFF);
  EXPECT_EQ(fp32_to_fp16(65520.0f), 0x7C00);
  EXPECT_EQ(fp32_to_fp16(-65520.0f), 0xFC00);
  EXPECT_EQ(fp32_to_fp16(1e10f), 0x7C00);
  EXPECT_EQ(fp32_to_fp16(bits_float(0x7F800000u)), 0x7C00);
  EXPECT_EQ(fp32_to_fp16(bits_float(0xFF800000u)), 0xFC00);
  // Subnormals: 2^-24 is the smallest; 2^-25 ties to even (0); just above it rounds up to 1;
  // 3*2^-25 ties to even (2); 2^-14 - 2^-24 is the largest subnormal 0x03FF.
  EXPECT_EQ(fp32_to_fp16(0x1p-24f), 0x0001);
  EXPECT_EQ(fp32_to_fp16(0x1p-25f), 0x0000);
  EXPECT_EQ(fp32_to_fp16(bits_float(0x33000001u)), 0x0001);
  EXPECT_EQ(fp32_to_fp16(0x3p-25f), 0x0002);
  EXPECT_EQ(fp32_to_fp16(-0x1p-24f), 0x8001);
  EXPECT_EQ(fp32_to_fp16(0x1p-14f - 0x1p-24f), 0x03FF);
  EXPECT_EQ(fp32_to_fp16(0x1p-14f), 0x0400);
  EXPECT_EQ(fp32_to_fp16(1e-30f), 0x0000);
  EXPECT_EQ(fp32_to_fp16(-1e-30f), 0x8000);
  EXPECT_EQ(fp32_to_fp16(-0.0f), 0x8000);
  for (float f : {0x1p-24f, 0x1p-25f, 0x3p-25f, 65520.0f, 1e-30f, -0.0f}) {
    EXPECT_EQ(fp32_to_fp16(f), hw_fp32_to_fp16(f)) << f;
  }
}

TEST(HalfTest, Fp16ToFp32ExhaustiveMatchesF16C) {
  FB_REQUIRE_F16C();
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    const uint32_t got = float_bits(fp16_to_fp32(static_cast<uint16_t>(h)));
    const uint32_t want = float_bits(hw_fp16_to_fp32(static_cast<uint16_t>(h)));
    ASSERT_EQ(got, want) << fmt::format("fp16 0x{:04X}: got 0x{:08X}, want 0x{:08X}", h, got, want);
  }
}

TEST(HalfTest, Fp16RoundTripsThroughFp32) {
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    const bool nan = (h & 0x7C00u) == 0x7C00u && (h & 0x3FFu) != 0;
    if (nan) continue;  // NaNs collapse to 0x7E00 by design
    ASSERT_EQ(fp32_to_fp16(fp16_to_fp32(static_cast<uint16_t>(h))), h) << fmt::format("0x{:04X}", h);
  }
}

TEST(HalfTest, Bf16KnownAnswers) {
  // 1.0 = 0x3F800000 -> top half exactly.
  EXPECT_EQ(fp32_to_bf16(1.0f), 0x3F80);
  // 0x3F808000 sits exactly halfway between 0x3F80 and 0x3F81; the kept LSB is 0 -> stays 0x3F80.
  EXPECT_EQ(fp32_to_bf16(bits_float(0x3F808000u)), 0x3F80);
  // 0x3F818000: halfway between 0x3F81 and 0x3F82; LSB 1 -> rounds up to the even 0x3F82.
  EXPECT_EQ(fp32_to_bf16(bits_float(0x3F818000u)), 0x3F82);
  // One ulp above/below the tie decides by magnitude.
  EXPECT_EQ(fp32_to_bf16(bits_float(0x3F808001u)), 0x3F81);
  EXPECT_EQ(fp32_to_bf16(bits_float(0x3F817FFFu)), 0x3F81);
  // Negative values round on magnitude too: -1.00390625 = 0xBF808000 ties to 0xBF80.
  EXPECT_EQ(fp32_to_bf16(bits_float(0xBF808000u)), 0xBF80);
  // Largest finite fp32 0x7F7FFFFF rounds up past the largest bf16 into inf 0x7F80.
  EXPECT_EQ(fp32_to_bf16(bits_float(0x7F7FFFFFu)), 0x7F80);
  EXPECT_EQ(fp32_to_bf16(bits_float(0x7F800000u)), 0x7F80);
  EXPECT_EQ(fp32_to_bf16(bits_float(0xFF800000u)), 0xFF80);
  // NaNs: truncated, quiet bit (0x40 in the top half) forced on; sign and upper payload kept.
  EXPECT_EQ(fp32_to_bf16(bits_float(0x7F800001u)), 0x7FC0);  // sNaN with payload only in the low half
  EXPECT_EQ(fp32_to_bf16(bits_float(0x7FC00000u)), 0x7FC0);
  EXPECT_EQ(fp32_to_bf16(bits_float(0xFF810000u)), 0xFFC1);
  EXPECT_EQ(fp32_to_bf16(bits_float(0x7FFFFFFFu)), 0x7FFF);
  // Subnormals are kept (no flush): 0x00010000 -> 0x0001; 0x00008000 ties to even 0; 0x00018000
  // ties up to 0x0002; the smallest fp32 subnormal 0x00000001 rounds to +0.
  EXPECT_EQ(fp32_to_bf16(bits_float(0x00010000u)), 0x0001);
  EXPECT_EQ(fp32_to_bf16(bits_float(0x00008000u)), 0x0000);
  EXPECT_EQ(fp32_to_bf16(bits_float(0x00018000u)), 0x0002);
  EXPECT_EQ(fp32_to_bf16(bits_float(0x00000001u)), 0x0000);
  EXPECT_EQ(fp32_to_bf16(bits_float(0x80010000u)), 0x8001);
  // bf16 -> fp32 is a 16-bit shift, exact for everything including subnormals and NaN payloads.
  EXPECT_EQ(float_bits(bf16_to_fp32(0x0001)), 0x00010000u);
  EXPECT_EQ(float_bits(bf16_to_fp32(0xFFC1)), 0xFFC10000u);
  EXPECT_EQ(bf16_to_fp32(0x3F80), 1.0f);
  EXPECT_EQ(bf16_to_fp32(0xC040), -3.0f);
}

}  // namespace
}  // namespace fb
