#include "reference/formats/dequantize.h"

#include <fmt/format.h>

#include <cstring>
#include <stdexcept>

#include "reference/formats/half.h"
#include "reference/formats/k_scales.h"

// Every expression below keeps ggml's operand order and float types (dequantize_row_* in
// ggml-quants.c); with -ffp-contract=off that alone makes the output bit-identical.

namespace fb {

void dequantize_row_q4_K(const BlockQ4K* x, float* y, int64_t n) {
  const int64_t nb = n / kQK_K;
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_fp32(x[i].d);
    const float min = fp16_to_fp32(x[i].dmin);
    const uint8_t* q = x[i].qs;
    for (int c = 0; c < 4; ++c) {
      const KScaleMin lo = get_scale_min_k4(2 * c, x[i].scales);
      const KScaleMin hi = get_scale_min_k4(2 * c + 1, x[i].scales);
      const float d1 = d * lo.scale;
      const float m1 = min * lo.min;
      const float d2 = d * hi.scale;
      const float m2 = min * hi.min;
      for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
      q += 32;
    }
  }
}

void dequantize_row_q5_K(const BlockQ5K* x, float* y, int64_t n) {
  const int64_t nb = n / kQK_K;
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_fp32(x[i].d);
    const float min = fp16_to_fp32(x[i].dmin);
    const uint8_t* ql = x[i].qs;
    const uint8_t* qh = x[i].qh;
    for (int c = 0; c < 4; ++c) {
      const KScaleMin lo = get_scale_min_k4(2 * c, x[i].scales);
      const KScaleMin hi = get_scale_min_k4(2 * c + 1, x[i].scales);
      const float d1 = d * lo.scale;
      const float m1 = min * lo.min;
      const float d2 = d * hi.scale;
      const float m2 = min * hi.min;
      // Chunk c takes its fifth bits from bits 2c (low nibbles) and 2c+1 (high nibbles) of qh.
      const uint8_t u1 = static_cast<uint8_t>(1u << (2 * c));
      const uint8_t u2 = static_cast<uint8_t>(2u << (2 * c));
      for (int l = 0; l < 32; ++l) *y++ = d1 * ((ql[l] & 0xF) + ((qh[l] & u1) ? 16 : 0)) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * ((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
      ql += 32;
    }
  }
}

void dequantize_row_q6_K(const BlockQ6K* x, float* y, int64_t n) {
  const int64_t nb = n / kQK_K;
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_fp32(x[i].d);
    const uint8_t* ql = x[i].ql;
    const uint8_t* qh = x[i].qh;
    const int8_t* sc = x[i].scales;
    for (int half = 0; half < 2; ++half) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        // (d * scale) first, then * q: ggml's left-to-right order.
        y[l + 0] = d * static_cast<float>(sc[is + 0]) * static_cast<float>(q1);
        y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
        y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
        y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
      }
      y += 128;
      ql += 64;
      qh += 32;
      sc += 8;
    }
  }
}

void dequantize_row_q8_0(const BlockQ8_0* x, float* y, int64_t n) {
  const int64_t nb = n / kQK8_0;
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_fp32(x[i].d);
    for (int j = 0; j < kQK8_0; ++j) y[i * kQK8_0 + j] = static_cast<float>(x[i].qs[j]) * d;
  }
}

void dequantize_row_f16(const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = fp16_to_fp32(x[i]);
}

void dequantize_row_bf16(const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = bf16_to_fp32(x[i]);
}

void dequantize(GgmlType type, const void* src, float* dst, int64_t n) {
  require_convertible("dequantize", type, n);
  switch (type) {
    case GgmlType::F32:
      if (n > 0) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case GgmlType::F16:
      return dequantize_row_f16(static_cast<const uint16_t*>(src), dst, n);
    case GgmlType::BF16:
      return dequantize_row_bf16(static_cast<const uint16_t*>(src), dst, n);
    case GgmlType::Q8_0:
      return dequantize_row_q8_0(static_cast<const BlockQ8_0*>(src), dst, n);
    case GgmlType::Q4_K:
      return dequantize_row_q4_K(static_cast<const BlockQ4K*>(src), dst, n);
    case GgmlType::Q5_K:
      return dequantize_row_q5_K(static_cast<const BlockQ5K*>(src), dst, n);
    case GgmlType::Q6_K:
      return dequantize_row_q6_K(static_cast<const BlockQ6K*>(src), dst, n);
    default:
      throw std::invalid_argument(
          fmt::format("dequantize: type {} has no dequantizer (n={})", ggml_type_name(type), n));
  }
}

}  // namespace fb
