#include "reference/formats/quantize.h"

#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <stdexcept>

#include "reference/formats/half.h"
#include "reference/formats/k_scales.h"
#include "reference/formats/quant_helpers.h"

// These mirror the quantize_row_*_ref paths that ggml_quantize_chunk takes when imatrix == NULL
// (quantize_q{4,5,6}_K and quantize_q8_0 forward to them). Bit-exactness hinges on keeping ggml's
// operand order, int->float conversion points, strict vs non-strict comparisons and the narrowing
// conversions (int -> uint8/int8) exactly; every scratch array lives on the stack.

namespace fb {

void quantize_row_q8_0_ref(const float* x, BlockQ8_0* y, int64_t n) {
  const int64_t nb = n / kQK8_0;
  for (int64_t i = 0; i < nb; ++i, x += kQK8_0) {
    float amax = 0.0f;
    for (int j = 0; j < kQK8_0; ++j) {
      const float a = std::fabs(x[j]);
      amax = amax > a ? amax : a;  // ggml's MAX(amax, a), same operands so NaN inputs behave alike
    }
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = fp32_to_fp16(d);
    // roundf (half away from zero), not nearest_int: that is what ggml's Q8_0 reference uses.
    for (int j = 0; j < kQK8_0; ++j) y[i].qs[j] = float_to_int8_like_c(std::roundf(x[j] * id));
  }
}

void quantize_row_q4_K_ref(const float* x, BlockQ4K* y, int64_t n) {
  const int64_t nb = n / kQK_K;
  uint8_t L[kQK_K];
  for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
    quantize_k_asym_block(x, 15, -1.0f, 0.1f, 20, &y[i].d, &y[i].dmin, y[i].scales, L);

    uint8_t* q = y[i].qs;
    for (int j = 0; j < kQK_K; j += 64, q += 32) {
      for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
    }
  }
}

void quantize_row_q5_K_ref(const float* x, BlockQ5K* y, int64_t n) {
  const int64_t nb = n / kQK_K;
  uint8_t L[kQK_K];
  for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
    quantize_k_asym_block(x, 31, -0.5f, 0.1f, 15, &y[i].d, &y[i].dmin, y[i].scales, L);

    uint8_t* qh = y[i].qh;
    uint8_t* ql = y[i].qs;
    std::memset(qh, 0, kQK_K / 8);
    uint8_t m1 = 1;
    uint8_t m2 = 2;
    for (int c = 0; c < kQK_K; c += 64, ql += 32) {
      for (int j = 0; j < 32; ++j) {
        int l1 = L[c + j];
        int l2 = L[c + j + 32];
        if (l1 > 15) {
          l1 -= 16;
          qh[j] |= m1;
        }
        if (l2 > 15) {
          l2 -= 16;
          qh[j] |= m2;
        }
        ql[j] = static_cast<uint8_t>(l1 | (l2 << 4));
      }
      m1 = static_cast<uint8_t>(m1 << 2);
      m2 = static_cast<uint8_t>(m2 << 2);
    }
  }
}

void quantize_row_q6_K_ref(const float* x, BlockQ6K* y, int64_t n) {
  const int64_t nb = n / kQK_K;
  int8_t L[kQK_K];
  float scales[kQK_K / 16];
  for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
    float max_scale = 0.0f;
    float max_abs_scale = 0.0f;
    for (int ib = 0; ib < kQK_K / 16; ++ib) {
      scales[ib] = make_qx_quants_rmse1(16, 32, x + 16 * ib, L + 16 * ib);
      const float abs_scale = std::fabs(scales[ib]);
      if (abs_scale > max_abs_scale) {
        max_abs_scale = abs_scale;
        max_scale = scales[ib];
      }
    }
    if (max_abs_scale < kGroupMaxEps) {
      std::memset(&y[i], 0, sizeof(BlockQ6K));
      y[i].d = fp32_to_fp16(0.0f);
      continue;
    }
    const float iscale = -128.0f / max_scale;
    y[i].d = fp32_to_fp16(1.0f / iscale);
    for (int ib = 0; ib < kQK_K / 16; ++ib) {
      const int s = nearest_int(iscale * scales[ib]);
      y[i].scales[ib] = static_cast<int8_t>(s < 127 ? s : 127);
    }
    const float dh = fp16_to_fp32(y[i].d);
    for (int j = 0; j < kQK_K / 16; ++j) {
      const float d = dh * static_cast<float>(y[i].scales[j]);
      if (d == 0.0f) continue;  // keep make_qx_quants' levels, as ggml does
      for (int ii = 0; ii < 16; ++ii) {
        int l = nearest_int(x[16 * j + ii] / d);
        l = l < -32 ? -32 : (l > 31 ? 31 : l);
        L[16 * j + ii] = static_cast<int8_t>(l + 32);
      }
    }

    uint8_t* ql = y[i].ql;
    uint8_t* qh = y[i].qh;
    for (int j = 0; j < kQK_K; j += 128, ql += 64, qh += 32) {
      for (int l = 0; l < 32; ++l) {
        const int a = L[j + l];
        const int b = L[j + l + 32];
        const int c = L[j + l + 64];
        const int e = L[j + l + 96];
        ql[l] = static_cast<uint8_t>((a & 0xF) | ((c & 0xF) << 4));
        ql[l + 32] = static_cast<uint8_t>((b & 0xF) | ((e & 0xF) << 4));
        qh[l] = static_cast<uint8_t>((a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6));
      }
    }
  }
}

void quantize_row_f16(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = fp32_to_fp16(x[i]);
}

void quantize_row_bf16(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = fp32_to_bf16(x[i]);
}

void quantize(GgmlType type, const float* src, void* dst, int64_t n) {
  require_convertible("quantize", type, n);
  switch (type) {
    case GgmlType::F32:
      if (n > 0) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case GgmlType::F16:
      return quantize_row_f16(src, static_cast<uint16_t*>(dst), n);
    case GgmlType::BF16:
      return quantize_row_bf16(src, static_cast<uint16_t*>(dst), n);
    case GgmlType::Q8_0:
      return quantize_row_q8_0_ref(src, static_cast<BlockQ8_0*>(dst), n);
    case GgmlType::Q4_K:
      return quantize_row_q4_K_ref(src, static_cast<BlockQ4K*>(dst), n);
    case GgmlType::Q5_K:
      return quantize_row_q5_K_ref(src, static_cast<BlockQ5K*>(dst), n);
    case GgmlType::Q6_K:
      return quantize_row_q6_K_ref(src, static_cast<BlockQ6K*>(dst), n);
    default:
      throw std::invalid_argument(
          fmt::format("quantize: type {} has no quantizer (n={})", ggml_type_name(type), n));
  }
}

}  // namespace fb
