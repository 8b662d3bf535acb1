#pragma once
// The quantized activation block of the W4A8/W6A8 decode matvec (notes/models.md §3.2), shared by
// the CPU reference and the CUDA kernels (a POD format header, like reference/formats/blocks.h).
// Per token, per 32 consecutive activations: symmetric int8 with an fp32 scale, stored even/odd so
// that one 32-bit word of qs_even (qs_odd) pairs with the low (high) nibbles of one 32-bit weight
// word. The two half sums let the kernel apply a weight zero/offset per 16 (int6) or per 32 (int4)
// without a dp4a against ones; they are exact integer sums of the stored quants.
#include <cstdint>

namespace fb {

struct alignas(16) Q8Block {
  int8_t qs_even[16];  // elements 0, 2, ..., 30
  int8_t qs_odd[16];   // elements 1, 3, ..., 31
  float d;             // amax / 127 (fp32); element i = qs[i] * d
  int32_t sum_lo;      // sum of the quants of elements 0..15
  int32_t sum_hi;      // sum of the quants of elements 16..31
  int32_t pad;         // keeps the block 48 bytes = three 16-byte loads
};
static_assert(sizeof(Q8Block) == 48);

}  // namespace fb
