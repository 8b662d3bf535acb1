#pragma once
// Building blocks of ggml's reference K-quantizers (ggml-quants.c), kept inline so the per-block
// loops compile to straight scalar code. Internal to reference/formats; the public API is quantize.h.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "reference/formats/half.h"
#include "reference/formats/k_scales.h"

namespace fb {

// ggml's GROUP_MAX_EPS: a group whose largest |x| is below this counts as all zero.
inline constexpr float kGroupMaxEps = 1e-15f;

// Adding 1.5*2^23 puts the integer part in the low mantissa bits, so the FPU's round-to-nearest-even
// does the rounding. Out-of-range inputs wrap exactly as ggml's do (its assert is off in release).
inline int nearest_int(float f) {
  const float v = f + 12582912.0f;
  int32_t i;
  std::memcpy(&i, &v, sizeof i);
  return (i & 0x007FFFFF) - 0x00400000;
}

// C's float -> int8_t conversion as x86-64 compilers emit it (cvttss2si to 32 bits, keep the low
// byte): only reachable with NaN/inf or |r| >= 128, i.e. a subnormal Q8_0 scale, but deterministic.
inline int8_t float_to_int8_like_c(float r) {
  int32_t i = INT32_MIN;
  if (r > -2147483904.0f && r < 2147483648.0f) i = static_cast<int32_t>(r);
  return static_cast<int8_t>(static_cast<uint8_t>(static_cast<uint32_t>(i) & 0xFFu));
}

// Per-element weights of the no-imatrix K-quant path: RMS of the 32-block plus |x|.
inline void k_sub_block_weights(const float* x, float* w) {
  float sum_x2 = 0.0f;
  for (int l = 0; l < 32; ++l) sum_x2 += x[l] * x[l];
  const float av_x = std::sqrt(sum_x2 / 32.0f);
  for (int l = 0; l < 32; ++l) w[l] = av_x + std::fabs(x[l]);
}

// Asymmetric fit x ~ scale*L - the_min with L in [0, nmax]: start from the min/max grid, then try
// nstep+1 stretched grids and keep the weighted least-squares fit with the smallest weighted squared
// error (strict <, so the earliest wins ties). ggml's use_mad is always false on this path.
inline float make_qkx2_quants(int n, int nmax, const float* x, const float* w, uint8_t* L, float* the_min,
                              uint8_t* Laux, float rmin, float rdelta, int nstep) {
  float min = x[0];
  float max = x[0];
  float sum_w = w[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.0f;
  }
  float iscale = static_cast<float>(nmax) / (max - min);
  float scale = 1.0f / iscale;
  float best_error = 0.0f;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * (x[i] - min));
    l = l < 0 ? 0 : (l > nmax ? nmax : l);
    L[i] = static_cast<uint8_t>(l);
    float diff = scale * static_cast<float>(L[i]) + min - x[i];
    diff = diff * diff;
    best_error += w[i] * diff;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * static_cast<float>(is) + static_cast<float>(nmax)) / (max - min);
    float sum_l = 0.0f;
    float sum_l2 = 0.0f;
    float sum_xl = 0.0f;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * (x[i] - min));
      l = l < 0 ? 0 : (l > nmax ? nmax : l);
      Laux[i] = static_cast<uint8_t>(l);
      const float fl = static_cast<float>(l);
      sum_l += w[i] * fl;
      sum_l2 += w[i] * fl * fl;
      sum_xl += w[i] * fl * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0.0f;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * static_cast<float>(Laux[i]) + this_min - x[i];
        diff = diff * diff;
        cur_error += w[i] * diff;
      }
      if (cur_error < best_error) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

// Symmetric fit x ~ scale*(L - nmax), L in [0, 2*nmax), weighted by x^2 (ggml's rmse_type 1 with no
// importance weights): 19 grids iscale = -(nmax + 0.1*is)/max, is in -9..9, keeping the best by
// the least-squares criterion sumlx^2/suml2.
inline float make_qx_quants_rmse1(int n, int nmax, const float* x, int8_t* L) {
  float max = 0.0f;
  float amax = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.0f;
  }
  float iscale = static_cast<float>(-nmax) / max;
  float sumlx = 0.0f;
  float suml2 = 0.0f;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = l < -nmax ? -nmax : (l > nmax - 1 ? nmax - 1 : l);
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = x[i] * x[i];
    const float fl = static_cast<float>(l);
    sumlx += w * x[i] * fl;
    suml2 += w * fl * fl;
  }
  float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(is)) / max;
    sumlx = 0.0f;
    suml2 = 0.0f;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * x[i]);
      l = l < -nmax ? -nmax : (l > nmax - 1 ? nmax - 1 : l);
      const float w = x[i] * x[i];
      const float fl = static_cast<float>(l);
      sumlx += w * x[i] * fl;
      suml2 += w * fl * fl;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * x[i]);
        l = l < -nmax ? -nmax : (l > nmax - 1 ? nmax - 1 : l);
        L[i] = static_cast<int8_t>(l + nmax);
      }
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// Quantizes the 8 sub-block scales and mins to 6 bits against their maxima and packs them in
// get_scale_min_k4's layout. The int -> uint8 narrowing happens before the clamp to 63, as in ggml.
inline void pack_k_scales(const float* scales, const float* mins, float max_scale, float max_min,
                          uint8_t* packed) {
  const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
  const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
  for (int j = 0; j < 8; ++j) {
    uint8_t ls = static_cast<uint8_t>(nearest_int(inv_scale * scales[j]));
    uint8_t lm = static_cast<uint8_t>(nearest_int(inv_min * mins[j]));
    ls = ls < 63 ? ls : 63;
    lm = lm < 63 ? lm : 63;
    if (j < 4) {
      packed[j] = ls;
      packed[j + 4] = lm;
    } else {
      packed[j + 4] = static_cast<uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
      packed[j - 4] = static_cast<uint8_t>(packed[j - 4] | ((ls >> 4) << 6));
      packed[j] = static_cast<uint8_t>(packed[j] | ((lm >> 4) << 6));
    }
  }
}

// Second pass of Q4_K/Q5_K: re-derive each level against the scales as stored (fp16 d/dmin times
// the 6-bit codes). A sub-block whose stored scale is zero keeps its first-pass levels.
inline void requantize_k_asym(const float* x, uint16_t d16, uint16_t dmin16, const uint8_t* packed, int nmax,
                              uint8_t* L) {
  for (int j = 0; j < 8; ++j) {
    const KScaleMin sm = get_scale_min_k4(j, packed);
    const float d = fp16_to_fp32(d16) * static_cast<float>(sm.scale);
    if (d == 0.0f) continue;
    const float dm = fp16_to_fp32(dmin16) * static_cast<float>(sm.min);
    for (int ii = 0; ii < 32; ++ii) {
      int l = nearest_int((x[32 * j + ii] + dm) / d);
      l = l < 0 ? 0 : (l > nmax ? nmax : l);
      L[32 * j + ii] = static_cast<uint8_t>(l);
    }
  }
}

// First pass of Q4_K/Q5_K on one 256-element super-block: fit each 32-element sub-block with
// make_qkx2_quants(nmax, rmin, rdelta, nstep), pack the 6-bit scales/mins into scales[12], store the
// fp16 super-block scales in *d / *dmin, then requantize L[256] against the stored scales. The
// caller packs L into its own layout.
inline void quantize_k_asym_block(const float* x, int nmax, float rmin, float rdelta, int nstep, uint16_t* d,
                                  uint16_t* dmin, uint8_t* scales, uint8_t* L) {
  uint8_t Laux[32];
  float weights[32];
  float sub_mins[8];
  float sub_scales[8];
  float max_scale = 0.0f;
  float max_min = 0.0f;
  for (int j = 0; j < 8; ++j) {
    k_sub_block_weights(x + 32 * j, weights);
    sub_scales[j] =
        make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &sub_mins[j], Laux, rmin, rdelta, nstep);
    if (sub_scales[j] > max_scale) max_scale = sub_scales[j];
    if (sub_mins[j] > max_min) max_min = sub_mins[j];
  }
  pack_k_scales(sub_scales, sub_mins, max_scale, max_min, scales);
  *d = fp32_to_fp16(max_scale / 63.0f);
  *dmin = fp32_to_fp16(max_min / 63.0f);
  requantize_k_asym(x, *d, *dmin, scales, nmax, L);
}

}  // namespace fb
