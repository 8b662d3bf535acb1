#pragma once
// CPU dequantization bit-exact to ggml's dequantize_row_* (notes/ggml-formats.md §2.3).
#include <cstdint>
#include <span>

#include "reference/formats/blocks.h"
#include "reference/formats/ggml_type.h"

namespace fb {

void dequantize_row_q4_K(const BlockQ4K* x, float* y, int64_t n);
void dequantize_row_q5_K(const BlockQ5K* x, float* y, int64_t n);
void dequantize_row_q6_K(const BlockQ6K* x, float* y, int64_t n);
void dequantize_row_q8_0(const BlockQ8_0* x, float* y, int64_t n);
void dequantize_row_f16(const uint16_t* x, float* y, int64_t n);
void dequantize_row_bf16(const uint16_t* x, float* y, int64_t n);

// Dispatch on type: reads ggml_row_bytes(type, n) bytes from src (n a multiple of the block size).
// Throws std::invalid_argument for a type that is not
// convertible or an n that is not a multiple of the block size.
void dequantize(GgmlType type, const void* src, float* dst, int64_t n);

}  // namespace fb
