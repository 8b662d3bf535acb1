#pragma once
// ggml's reference quantizers (quantize_row_*_ref, no importance matrix), re-implemented bit-exact:
// same operation order, nearest_int (round-half-even via the 1.5*2^23 trick), fp16 RNE. Build with
// -ffp-contract=off (the top-level CMakeLists does) so no FMA contraction changes a rounding.
#include <cstdint>

#include "reference/formats/blocks.h"
#include "reference/formats/ggml_type.h"

namespace fb {

void quantize_row_q4_K_ref(const float* x, BlockQ4K* y, int64_t n);
void quantize_row_q5_K_ref(const float* x, BlockQ5K* y, int64_t n);
void quantize_row_q6_K_ref(const float* x, BlockQ6K* y, int64_t n);
void quantize_row_q8_0_ref(const float* x, BlockQ8_0* y, int64_t n);
void quantize_row_f16(const float* x, uint16_t* y, int64_t n);
void quantize_row_bf16(const float* x, uint16_t* y, int64_t n);

// Dispatch on type: writes ggml_row_bytes(type, n) bytes to dst. Throws std::invalid_argument for a
// type that is not convertible or an n that is not a multiple of the block size.
void quantize(GgmlType type, const float* src, void* dst, int64_t n);

}  // namespace fb
