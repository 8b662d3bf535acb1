#pragma once
// ggml block layouts as plain structs (ggml-common.h semantics, see notes/ggml-formats.md §2.1).
// Byte-for-byte identical to the on-disk GGUF encoding; usable from host and device code.
#include <cstdint>

namespace fb {

inline constexpr int kQK_K = 256;        // elements per K-quant super-block
inline constexpr int kQK8_0 = 32;        // elements per Q8_0 block
inline constexpr int kKScaleSize = 12;   // packed 6-bit scales/mins of Q4_K and Q5_K

struct BlockQ4K {
  uint16_t d;                    // fp16 super-block scale for the 6-bit sub-block scales
  uint16_t dmin;                 // fp16 super-block scale for the 6-bit sub-block mins
  uint8_t scales[kKScaleSize];   // 8 scales + 8 mins, 6 bits each
  uint8_t qs[kQK_K / 2];         // 4-bit quants: per 64-chunk, low nibbles = sub-block 2c, high = 2c+1
};
static_assert(sizeof(BlockQ4K) == 144);

struct BlockQ5K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kKScaleSize];
  uint8_t qh[kQK_K / 8];         // 5th bit of each quant
  uint8_t qs[kQK_K / 2];         // low 4 bits
};
static_assert(sizeof(BlockQ5K) == 176);

struct BlockQ6K {
  uint8_t ql[kQK_K / 2];         // low 4 bits
  uint8_t qh[kQK_K / 4];         // high 2 bits
  int8_t scales[kQK_K / 16];     // 8-bit sub-block scales (16 elements each)
  uint16_t d;                    // fp16 super-block scale (stored last)
};
static_assert(sizeof(BlockQ6K) == 210);

struct BlockQ8_0 {
  uint16_t d;                    // fp16 scale
  int8_t qs[kQK8_0];
};
static_assert(sizeof(BlockQ8_0) == 34);

}  // namespace fb
