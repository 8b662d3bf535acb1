// The kernels' decoders, run on the host against the CPU reference: pins the index arithmetic and
// the x86 NaN rules without a GPU. The device-only parts (launch geometry, stores, the hardware's
// own ops) are covered by fb_dequantize_gpu_test.
#include "kernels/dequant/dequant_decoders.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "reference/formats/dequantize.h"
#include "reference/formats/ggml_type.h"
#include "reference/formats/half.h"

namespace {

using fb::GgmlType;
namespace d = fb::cuda::detail;

constexpr uint64_t kSeed = 7;

uint16_t scale_value(std::mt19937_64& rng) {
  const uint16_t sign = (rng() & 1) ? 0x8000 : 0;
  const uint16_t mant = static_cast<uint16_t>(rng() & 0x3FF);
  switch (rng() % 8) {
    case 0:
      return sign | 0x7C00 | (mant ? mant : 1);  // NaN, signalling or quiet
    case 1:
      return sign | 0x7C00;  // inf
    case 2:
      return sign | (mant ? mant : 1);  // subnormal
    case 3:
      return sign;  // zero
    default:
      return fb::fp32_to_fp16(std::ldexp(1.0f + (rng() % 1000) / 1000.0f, -(int)(rng() % 14)));
  }
}

// The tiled kernel's view: load<N> + decode<N> for every run of N outputs of every 256-output tile,
// exactly as the lanes call them (bf16: N = 8, f32: N = 4). A clean run must hold no NaN and no
// subnormal: that is what lets the kernel round it with the hardware's cvt.rn.bf16x2.
template <class Decoder, int N>
void check_tiles(const fb::GgmlTypeInfo& info, const std::vector<uint8_t>& bytes,
                 const std::vector<float>& want) {
  const int64_t n = static_cast<int64_t>(want.size());
  ASSERT_EQ(n % 256, 0);
  int64_t mismatches = 0, unclean = 0, clean_runs = 0;
  for (int64_t tile = 0; tile < n / 256; ++tile) {
    const uint8_t* t = bytes.data() + tile * Decoder::kTileBytes;
    for (int e = 0; e < 256; e += N) {
      float v[N];
      const bool clean = Decoder::template decode<N>(Decoder::template load<N>(t, e), e, v);
      clean_runs += clean;
      for (int k = 0; k < N; ++k) {
        const int64_t i = tile * 256 + e + k;
        const uint32_t got = fb::float_bits(v[k]), exp = fb::float_bits(want[i]);
        if (got != exp && mismatches++ < 5) {
          ADD_FAILURE() << info.name << " tiled N=" << N << " element " << i << ": decoder " << std::hex
                        << got << " reference " << exp << std::dec << ", seed " << kSeed;
        }
        const bool special = std::isnan(v[k]) || (v[k] != 0.0f && std::fabs(v[k]) < 1.17549435e-38f);
        if (clean && special && unclean++ < 5) {
          ADD_FAILURE() << info.name << " tiled N=" << N << " element " << i << " is " << std::hex << got
                        << " in a run reported clean";
        }
      }
    }
  }
  EXPECT_EQ(mismatches, 0) << info.name << " N=" << N;
  EXPECT_EQ(unclean, 0) << info.name << " N=" << N;
  EXPECT_GT(clean_runs, 0) << info.name << " N=" << N;  // the fast path was exercised too
}

template <class Decoder>
void check_type(GgmlType type, std::vector<size_t> scale_offsets) {
  const fb::GgmlTypeInfo& info = fb::ggml_type_info(type);
  constexpr int kBlocks = 4096;
  std::mt19937_64 rng(kSeed + static_cast<uint64_t>(type));
  std::vector<uint8_t> bytes(kBlocks * info.block_bytes);
  for (auto& b : bytes) b = static_cast<uint8_t>(rng());
  for (int i = 0; i < kBlocks; ++i) {
    for (size_t off : scale_offsets) {
      const uint16_t h = scale_value(rng);
      std::memcpy(bytes.data() + i * info.block_bytes + off, &h, 2);
    }
  }
  const int64_t n = int64_t{kBlocks} * info.block_elems;
  std::vector<float> want(n);
  fb::dequantize(type, bytes.data(), want.data(), n);

  std::vector<typename Decoder::Block> blocks(kBlocks);
  std::memcpy(blocks.data(), bytes.data(), bytes.size());
  int64_t mismatches = 0;
  for (int64_t first = 0; first < n; first += 4) {
    float v[4];
    Decoder::run(blocks[first / Decoder::kBlockElems], static_cast<int>(first % Decoder::kBlockElems), v);
    for (int k = 0; k < 4; ++k) {
      const uint32_t got = fb::float_bits(v[k]), exp = fb::float_bits(want[first + k]);
      if (got != exp && mismatches++ < 5) {
        ADD_FAILURE() << info.name << " element " << first + k << " (block " << (first + k) / info.block_elems
                      << "): decoder " << std::hex << got << " reference " << exp << std::dec << ", seed "
                      << kSeed;
      }
    }
  }
  EXPECT_EQ(mismatches, 0) << info.name;
  check_tiles<Decoder, 4>(info, bytes, want);
  check_tiles<Decoder, 8>(info, bytes, want);
}

TEST(DequantDecoders, Q4KMatchesReference) {
  check_type<d::DecodeQ4K>(GgmlType::Q4_K, {offsetof(fb::BlockQ4K, d), offsetof(fb::BlockQ4K, dmin)});
}
TEST(DequantDecoders, Q5KMatchesReference) {
  check_type<d::DecodeQ5K>(GgmlType::Q5_K, {offsetof(fb::BlockQ5K, d), offsetof(fb::BlockQ5K, dmin)});
}
TEST(DequantDecoders, Q6KMatchesReference) {
  check_type<d::DecodeQ6K>(GgmlType::Q6_K, {offsetof(fb::BlockQ6K, d)});
}
TEST(DequantDecoders, Q8_0MatchesReference) {
  check_type<d::DecodeQ8_0>(GgmlType::Q8_0, {offsetof(fb::BlockQ8_0, d)});
}

TEST(DequantDecoders, HalfTypesMatchReferenceForEveryPattern) {
  std::vector<uint16_t> all(65536);
  for (uint32_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
  std::vector<float> want(all.size());
  fb::dequantize(GgmlType::F16, all.data(), want.data(), static_cast<int64_t>(all.size()));
  for (uint32_t i = 0; i < all.size(); ++i) {
    ASSERT_EQ(fb::float_bits(d::DecodeF16::one(all[i])), fb::float_bits(want[i]))
        << "f16 0x" << std::hex << i;
  }
  fb::dequantize(GgmlType::BF16, all.data(), want.data(), static_cast<int64_t>(all.size()));
  for (uint32_t i = 0; i < all.size(); ++i) {
    ASSERT_EQ(fb::float_bits(d::DecodeBF16::one(all[i])), fb::float_bits(want[i]))
        << "bf16 0x" << std::hex << i;
  }
}

TEST(DequantDecoders, HalfToFloatMatchesReferenceForEveryPattern) {
  for (uint32_t h = 0; h < 65536; ++h) {
    ASSERT_EQ(fb::float_bits(d::half_to_float(h)), fb::float_bits(fb::fp16_to_fp32(static_cast<uint16_t>(h))))
        << "0x" << std::hex << h;
  }
}

// Plain types through load<N>/decode<N>, every 16-bit pattern and random f32 bits (NaNs included).
template <class Decoder, int N>
void check_plain_tiles(GgmlType type, const std::vector<uint8_t>& bytes) {
  const int64_t n = static_cast<int64_t>(bytes.size() / sizeof(typename Decoder::Block));
  std::vector<float> want(n);
  fb::dequantize(type, bytes.data(), want.data(), n);
  for (int64_t tile = 0; tile < n / 256; ++tile) {
    for (int e = 0; e < 256; e += N) {
      float v[N];
      const bool clean = Decoder::template decode<N>(
          Decoder::template load<N>(bytes.data() + tile * Decoder::kTileBytes, e), e, v);
      ASSERT_FALSE(clean);
      for (int k = 0; k < N; ++k) {
        ASSERT_EQ(fb::float_bits(v[k]), fb::float_bits(want[tile * 256 + e + k]))
            << fb::ggml_type_info(type).name << " N=" << N << " element " << tile * 256 + e + k;
      }
    }
  }
}

TEST(DequantDecoders, PlainTilesMatchReference) {
  std::vector<uint8_t> halves(65536 * 2);
  for (uint32_t i = 0; i < 65536; ++i) std::memcpy(halves.data() + 2 * i, &i, 2);
  check_plain_tiles<d::DecodeF16, 4>(GgmlType::F16, halves);
  check_plain_tiles<d::DecodeF16, 8>(GgmlType::F16, halves);
  check_plain_tiles<d::DecodeBF16, 4>(GgmlType::BF16, halves);
  check_plain_tiles<d::DecodeBF16, 8>(GgmlType::BF16, halves);
  std::mt19937_64 rng(kSeed);
  std::vector<uint8_t> words(4 * 256 * 64);
  for (auto& b : words) b = static_cast<uint8_t>(rng());
  check_plain_tiles<d::DecodeF32, 4>(GgmlType::F32, words);
  check_plain_tiles<d::DecodeF32, 8>(GgmlType::F32, words);
}

// The rules the GPU path emulates, written out so a change is a visible decision.
TEST(DequantDecoders, X86NanRules) {
  const float snan = fb::bits_float(0x7F800123u), qnan_neg = fb::bits_float(0xFFC00456u);
  const float inf = fb::bits_float(0x7F800000u);
  EXPECT_EQ(fb::float_bits(d::mul_x86(snan, 2.0f)), 0x7FC00123u);  // payload kept, quieted
  EXPECT_EQ(fb::float_bits(d::mul_x86(2.0f, snan)), 0x7FC00123u);
  EXPECT_EQ(fb::float_bits(d::sub_x86(qnan_neg, snan)), 0xFFC00456u);  // first NaN operand wins
  EXPECT_EQ(fb::float_bits(d::sub_x86(1.0f, qnan_neg)), 0xFFC00456u);
  EXPECT_EQ(fb::float_bits(d::mul_x86(inf, 0.0f)), 0xFFC00000u);  // default NaN
  EXPECT_EQ(fb::float_bits(d::sub_x86(inf, inf)), 0xFFC00000u);
  EXPECT_EQ(fb::float_bits(d::mul_sub_x86(inf, 0.0f, snan)), 0xFFC00000u);
  EXPECT_EQ(fb::float_bits(d::mul_mul_x86(snan, 0.0f, inf)), 0x7FC00123u);
#if defined(__x86_64__) || defined(__i386__)
  // On x86 the host's own SSE arithmetic must agree with the emulation.
  volatile float a = inf, z = 0.0f, s = snan;
  EXPECT_EQ(fb::float_bits(a * z), 0xFFC00000u);
  EXPECT_EQ(fb::float_bits(s * 2.0f), 0x7FC00123u);
#endif
}

}  // namespace
