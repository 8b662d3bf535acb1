#pragma once
// CPU references of the decode matvec (W4A8 / W6A8 dp4a kernels in kernels/gemv).
//
// Activation quantization contract (bit-exact with the CUDA kernel): for each token m and each
// 32-element block of x (bf16), in fp32 with IEEE round-to-nearest operations only:
//   amax = max |x_i|;  d = amax / 127.0f;  inv = d != 0 ? 1.0f / d : 0.0f;
//   q_i  = clamp(round_half_even(x_i * inv), -128, 127)
// The CUDA kernel uses __fdiv_rn, __frcp_rn (== 1.0f/d correctly rounded), __fmul_rn and
// __float2int_rn, so every quant, d and half sum agree bit for bit.
//
// Truth: y = W x in fp64 with W the ggml dequant of the original GGUF blocks (bit-exact to ggml) and
// x the bf16 activations. "Emulated": y = W_layout (q_a * d_a) in fp64, with W_layout the weights as
// the chosen device layout represents them (bf16/coded scales) and the quantized activations: the
// kernel computes this up to fp32 accumulation, so it allows a much tighter check of the kernel.
#include <cstdint>
#include <functional>
#include <vector>

#include "reference/formats/ggml_type.h"
#include "reference/matvec/q8_block.h"

namespace fb {

// x: m * k bf16 values (row-major); out: m * k/32 blocks. k % 32 == 0.
void quantize_activations_q8(const uint16_t* x_bf16, int64_t m, int64_t k, Q8Block* out);
// The value a block element stands for, qs * d, in double (exact).
double q8_value(const Q8Block& b, int i);

// y (m * n, row-major [m][n]) = sum_k w(row, k) * x(m, k) in fp64.
// weight_row(row, dst) writes one row of k weights.
std::vector<double> matvec_fp64(int64_t m, int64_t n, int64_t k,
                                const std::function<void(int64_t row, double* dst)>& weight_row,
                                const std::vector<double>& x);

// Helpers building x for matvec_fp64.
std::vector<double> activations_bf16_to_double(const uint16_t* x_bf16, int64_t m, int64_t k);
std::vector<double> activations_q8_to_double(const Q8Block* q, int64_t m, int64_t k);

// Truth weights: rows of a ggml tensor (Q4_K / Q6_K / any dequantizable type), as double.
std::function<void(int64_t, double*)> ggml_weight_rows(GgmlType type, const uint8_t* blocks, int64_t k);

enum class GluAct { gelu_tanh, silu };
const char* to_string(GluAct a);
double glu_act(GluAct a, double g);  // fp64 activation of the truth
// act(gate) * up for y = [gate; up] per token (y is [m][2i]); out is [m][i].
std::vector<double> glu_fp64(const std::vector<double>& y, int64_t m, int64_t i, GluAct a);

// Rounds to bf16 and back (the kernels' output dtype).
std::vector<float> round_bf16(const std::vector<double>& v);

}  // namespace fb
