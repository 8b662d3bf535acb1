#pragma once
// Load-time device layouts of the decode matvec (notes/models.md §2.2–§2.4), built on the CPU from
// raw GGUF blocks and unpacked again for the checks. Kernels read the same arrays through raw
// pointers; the byte conventions are written once here.
//
// CoalescedInt4 (from Q4_K): qdata (N, K/2), byte j of a row = q[2j] | q[2j+1] << 4 (even k low
// nibble), q in [0, 15]; per 32-weight group g a scale and a zero in q units, w = (q - zero) * scale.
//   bf16 encoding: scale, zero as bf16 (N, K/32).
//   u8 encoding:   uint8 codes (N, K/32) times an fp16 step per 256 (N, K/256), one step for the
//                  scales and one for the zeros; code = round(x / step), step = fp16(max8(x) / 255),
//                  where x are the bf16 values of the bf16 encoding (executorch main builds the codes
//                  from its bf16 ExportableInt4Tensor). code * step is exact in fp32 (8 x 11 bits).
// PlanarInt6 (from Q6_K): u = q + 32 in [0, 63]; ql (N, K/2) = low nibbles, same even/odd packing as
// int4; qh (N, K/4): per 32-weight chunk 8 bytes, bytes 0..3 hold the high 2 bits of the even
// weights 8w+0,2,4,6 (w = byte index, at bits 0-1, 2-3, 4-5, 6-7), bytes 4..7 those of 8w+1,3,5,7.
// Per 16-weight group a symmetric scale, w = (u - 32) * scale.
//   bf16 encoding: bf16 (N, K/16) of d * sc (exact fp32 product, then one RNE rounding).
//   i8 encoding:   int8 codes (N, K/16) times fp16 step (N, K/256), step = fp16(absmax16(d*sc)/127),
//                  code = clamp(round(d*sc / step), -127, 127).
//
// Exact vs converted (Q4_K): ggml's weight is d*sc*q - dmin*m (both products exact in fp32). The
// conversion stores s = bf16(d*sc) and z = bf16(fp32(dmin*m / (d*sc))), so
//   |(q - z)*s - (d*sc*q - dmin*m)| <= q*|S|*2^-8 + |M|*((1+2^-8)^2*(1+2^-24) - 1)   (S = d*sc, M = dmin*m)
// with one exception: where S == 0 the zero is stored as 0 (executorch does this), so the weight
// becomes 0 instead of -dmin*m. q4k_conversion_bound() returns that bound; the tests check it.
#include <cstdint>
#include <vector>

#include "reference/formats/blocks.h"

namespace fb {

enum class ScaleEncoding { bf16, code8 };  // code8: uint8 for int4 (non-negative), int8 for int6

struct CoalescedInt4 {
  int64_t n = 0, k = 0;
  ScaleEncoding enc = ScaleEncoding::bf16;
  std::vector<uint8_t> qdata;                   // N * K/2
  std::vector<uint16_t> scale_bf16, zero_bf16;  // N * K/32 (bf16 encoding)
  std::vector<uint8_t> scale_code, zero_code;   // N * K/32 (u8 encoding)
  std::vector<uint16_t> scale_step, zero_step;  // N * K/256 fp16 (u8 encoding)

  int q(int64_t row, int64_t col) const;
  float scale(int64_t row, int64_t group) const;  // the fp32 value the kernel multiplies with
  float zero(int64_t row, int64_t group) const;
  // (q - zero) * scale in double: what the kernel's arithmetic represents, exactly.
  double weight(int64_t row, int64_t col) const;
  uint64_t device_bytes() const;
};

struct PlanarInt6 {
  int64_t n = 0, k = 0;
  ScaleEncoding enc = ScaleEncoding::bf16;
  std::vector<uint8_t> ql;           // N * K/2
  std::vector<uint8_t> qh;           // N * K/4
  std::vector<uint16_t> scale_bf16;  // N * K/16
  std::vector<int8_t> scale_code;    // N * K/16
  std::vector<uint16_t> scale_step;  // N * K/256 fp16

  int q(int64_t row, int64_t col) const;  // signed, [-32, 31]
  float scale(int64_t row, int64_t group16) const;
  double weight(int64_t row, int64_t col) const;
  uint64_t device_bytes() const;
};

// blocks: n rows of k/256 blocks each (ggml row order). k % 256 == 0, else std::invalid_argument.
CoalescedInt4 pack_q4k_coalesced(const BlockQ4K* blocks, int64_t n, int64_t k, ScaleEncoding enc);
PlanarInt6 pack_q6k_planar(const BlockQ6K* blocks, int64_t n, int64_t k, ScaleEncoding enc);

// Row-concatenation of layouts with the same k and encoding (gate rows first): equal to packing the
// row-concatenated blocks, which the tests check.
CoalescedInt4 concat_rows(const CoalescedInt4& a, const CoalescedInt4& b);
PlanarInt6 concat_rows(const PlanarInt6& a, const PlanarInt6& b);

// Exact ggml Q4_K fields of one 32-weight group: S = d*sc, M = dmin*m (fp32, exact), q of a weight.
struct Q4KGroup {
  float S, M;
};
Q4KGroup q4k_group(const BlockQ4K& b, int sub);
// The documented bound on |converted - exact| for a weight of quant q in a group (see above).
double q4k_conversion_bound(int q, Q4KGroup g);

}  // namespace fb
