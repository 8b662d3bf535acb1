#pragma once
// GPU dequantization of ggml tensors, bit-exact to the CPU reference fb::dequantize
// (reference/formats/dequantize.h) for every input, NaN/inf/subnormal scales included.
// The float results follow the CPU reference as built on x86-64: NaN operands propagate with their
// payload quieted, invalid operations (inf*0, inf-inf) give the x86 default NaN 0xFFC00000.
// The bf16 variant rounds that float with fb::fp32_to_bf16 (round-to-nearest-even, NaN quieted).
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "reference/formats/ggml_type.h"

namespace fb::cuda {

// F32, F16, BF16, Q8_0, Q4_K, Q5_K, Q6_K.
bool dequantize_supported(GgmlType type);

// d_src holds n_rows rows of n_cols elements in ggml layout (rows back to back, ggml_row_bytes each);
// d_dst receives n_rows * n_cols values, row-major. Enqueued on `stream`, asynchronous.
// Throws std::invalid_argument, before touching the device, for an unsupported type, negative
// sizes, an n_cols that is not a multiple of the type's block size, null pointers, or a d_src not
// aligned to its block's natural alignment (4 bytes for Q4_K/Q5_K/F32, 2 for the others).
// Throws fb::CudaError when the launch fails. Zero elements: nothing is enqueued.
void dequantize(GgmlType type, const void* d_src, float* d_dst, int64_t n_rows, int64_t n_cols,
                cudaStream_t stream);
void dequantize(GgmlType type, const void* d_src, __nv_bfloat16* d_dst, int64_t n_rows, int64_t n_cols,
                cudaStream_t stream);

}  // namespace fb::cuda
