#include "reference/layouts/layouts.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "reference/formats/half.h"
#include "reference/formats/k_scales.h"

namespace fb {

namespace {

void check_shape(int64_t n, int64_t k) {
  if (n < 0 || k <= 0 || k % kQK_K != 0)
    throw std::invalid_argument("layout: k must be a positive multiple of 256");
}

// round-half-even like torch.round; the argument is finite and small.
float round_even(float x) { return std::nearbyint(x); }

template <class T>
void append(std::vector<T>& a, const std::vector<T>& b) {
  a.insert(a.end(), b.begin(), b.end());
}

}  // namespace

Q4KGroup q4k_group(const BlockQ4K& b, int sub) {
  const KScaleMin sm = get_scale_min_k4(sub, b.scales);
  return {fp16_to_fp32(b.d) * static_cast<float>(sm.scale),
          fp16_to_fp32(b.dmin) * static_cast<float>(sm.min)};
}

double q4k_conversion_bound(int q, Q4KGroup g) {
  if (g.S == 0.0f) return std::fabs(static_cast<double>(g.M));  // the zero is dropped (see header)
  const double u = std::ldexp(1.0, -8);                         // bf16: 8-bit significand, RNE
  return q * std::fabs(static_cast<double>(g.S)) * u +
         std::fabs(static_cast<double>(g.M)) * ((1 + u) * (1 + u) * (1 + std::ldexp(1.0, -24)) - 1);
}

CoalescedInt4 pack_q4k_coalesced(const BlockQ4K* blocks, int64_t n, int64_t k, ScaleEncoding enc) {
  check_shape(n, k);
  CoalescedInt4 t;
  t.n = n;
  t.k = k;
  t.enc = enc;
  const int64_t nb = k / kQK_K, ng = k / 32;
  t.qdata.assign(static_cast<size_t>(n * k / 2), 0);
  std::vector<uint16_t> sb(static_cast<size_t>(n * ng)), zb(static_cast<size_t>(n * ng));
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t b = 0; b < nb; ++b) {
      const BlockQ4K& blk = blocks[r * nb + b];
      for (int sub = 0; sub < 8; ++sub) {
        const Q4KGroup g = q4k_group(blk, sub);
        const size_t gi = static_cast<size_t>(r * ng + b * 8 + sub);
        sb[gi] = fp32_to_bf16(g.S);
        zb[gi] = fp32_to_bf16(g.S == 0.0f ? 0.0f : g.M / g.S);
      }
      for (int c = 0; c < 4; ++c) {
        for (int l = 0; l < 32; ++l) {
          const uint8_t byte = blk.qs[32 * c + l];
          const int lo = byte & 0xF, hi = byte >> 4;
          for (const auto& [kk, q] : {std::pair<int64_t, int>{b * 256 + 64 * c + l, lo},
                                      std::pair<int64_t, int>{b * 256 + 64 * c + 32 + l, hi}}) {
            uint8_t& dst = t.qdata[static_cast<size_t>(r * k / 2 + kk / 2)];
            dst = static_cast<uint8_t>(dst | (q << ((kk & 1) * 4)));
          }
        }
      }
    }
  }
  if (enc == ScaleEncoding::bf16) {
    t.scale_bf16 = std::move(sb);
    t.zero_bf16 = std::move(zb);
    return t;
  }
  t.scale_code.resize(sb.size());
  t.zero_code.resize(zb.size());
  t.scale_step.resize(static_cast<size_t>(n * nb));
  t.zero_step.resize(static_cast<size_t>(n * nb));
  auto encode = [&](const std::vector<uint16_t>& src, std::vector<uint8_t>& code,
                    std::vector<uint16_t>& step) {
    for (int64_t sblk = 0; sblk < n * nb; ++sblk) {
      float mx = 0.0f;
      for (int i = 0; i < 8; ++i) mx = std::max(mx, bf16_to_fp32(src[static_cast<size_t>(sblk * 8 + i)]));
      const uint16_t st = fp32_to_fp16(mx / 255.0f);
      step[static_cast<size_t>(sblk)] = st;
      const float stf = fp16_to_fp32(st);
      for (int i = 0; i < 8; ++i) {
        const float x = bf16_to_fp32(src[static_cast<size_t>(sblk * 8 + i)]);
        const float c = stf > 0.0f ? std::clamp(round_even(x / stf), 0.0f, 255.0f) : 0.0f;
        code[static_cast<size_t>(sblk * 8 + i)] = static_cast<uint8_t>(c);
      }
    }
  };
  encode(sb, t.scale_code, t.scale_step);
  encode(zb, t.zero_code, t.zero_step);
  return t;
}

int CoalescedInt4::q(int64_t row, int64_t col) const {
  const uint8_t b = qdata[static_cast<size_t>(row * k / 2 + col / 2)];
  return (col & 1) ? b >> 4 : b & 0xF;
}

float CoalescedInt4::scale(int64_t row, int64_t group) const {
  const size_t i = static_cast<size_t>(row * (k / 32) + group);
  if (enc == ScaleEncoding::bf16) return bf16_to_fp32(scale_bf16[i]);
  return static_cast<float>(scale_code[i]) *
         fp16_to_fp32(scale_step[static_cast<size_t>(row * (k / 256) + group / 8)]);
}

float CoalescedInt4::zero(int64_t row, int64_t group) const {
  const size_t i = static_cast<size_t>(row * (k / 32) + group);
  if (enc == ScaleEncoding::bf16) return bf16_to_fp32(zero_bf16[i]);
  return static_cast<float>(zero_code[i]) *
         fp16_to_fp32(zero_step[static_cast<size_t>(row * (k / 256) + group / 8)]);
}

double CoalescedInt4::weight(int64_t row, int64_t col) const {
  return (static_cast<double>(q(row, col)) - zero(row, col / 32)) * static_cast<double>(scale(row, col / 32));
}

uint64_t CoalescedInt4::device_bytes() const {
  return qdata.size() + 2 * (scale_bf16.size() + zero_bf16.size()) + scale_code.size() + zero_code.size() +
         2 * (scale_step.size() + zero_step.size());
}

PlanarInt6 pack_q6k_planar(const BlockQ6K* blocks, int64_t n, int64_t k, ScaleEncoding enc) {
  check_shape(n, k);
  PlanarInt6 t;
  t.n = n;
  t.k = k;
  t.enc = enc;
  const int64_t nb = k / kQK_K, ng = k / 16;
  t.ql.assign(static_cast<size_t>(n * k / 2), 0);
  t.qh.assign(static_cast<size_t>(n * k / 4), 0);
  std::vector<float> s(static_cast<size_t>(n * ng));
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t b = 0; b < nb; ++b) {
      const BlockQ6K& blk = blocks[r * nb + b];
      const float d = fp16_to_fp32(blk.d);
      for (int i = 0; i < 16; ++i)
        s[static_cast<size_t>(r * ng + b * 16 + i)] = d * static_cast<float>(blk.scales[i]);
      for (int h = 0; h < 2; ++h) {
        const uint8_t* ql = blk.ql + 64 * h;
        const uint8_t* qh = blk.qh + 32 * h;
        for (int l = 0; l < 32; ++l) {
          const int u[4] = {
              (ql[l] & 0xF) | ((qh[l] >> 0) & 3) << 4, (ql[l + 32] & 0xF) | ((qh[l] >> 2) & 3) << 4,
              (ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4, (ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4};
          for (int sidx = 0; sidx < 4; ++sidx) {
            const int64_t kk = b * 256 + 128 * h + 32 * sidx + l;
            uint8_t& lo = t.ql[static_cast<size_t>(r * k / 2 + kk / 2)];
            lo = static_cast<uint8_t>(lo | ((u[sidx] & 0xF) << ((kk & 1) * 4)));
            const int64_t chunk = kk / 32, e = kk % 32;
            const int byte = (e & 1) * 4 + e / 8, shift = 2 * ((e % 8) / 2);
            uint8_t& hi = t.qh[static_cast<size_t>(r * k / 4 + chunk * 8 + byte)];
            hi = static_cast<uint8_t>(hi | ((u[sidx] >> 4) << shift));
          }
        }
      }
    }
  }
  if (enc == ScaleEncoding::bf16) {
    t.scale_bf16.resize(s.size());
    for (size_t i = 0; i < s.size(); ++i) t.scale_bf16[i] = fp32_to_bf16(s[i]);
    return t;
  }
  t.scale_code.resize(s.size());
  t.scale_step.resize(static_cast<size_t>(n * nb));
  for (int64_t sblk = 0; sblk < n * nb; ++sblk) {
    float mx = 0.0f;
    for (int i = 0; i < 16; ++i) mx = std::max(mx, std::fabs(s[static_cast<size_t>(sblk * 16 + i)]));
    const uint16_t st = fp32_to_fp16(mx / 127.0f);
    t.scale_step[static_cast<size_t>(sblk)] = st;
    const float stf = fp16_to_fp32(st);
    for (int i = 0; i < 16; ++i) {
      const float x = s[static_cast<size_t>(sblk * 16 + i)];
      const float c = stf > 0.0f ? std::clamp(round_even(x / stf), -127.0f, 127.0f) : 0.0f;
      t.scale_code[static_cast<size_t>(sblk * 16 + i)] = static_cast<int8_t>(c);
    }
  }
  return t;
}

int PlanarInt6::q(int64_t row, int64_t col) const {
  const uint8_t b = ql[static_cast<size_t>(row * k / 2 + col / 2)];
  const int lo = (col & 1) ? b >> 4 : b & 0xF;
  const int64_t chunk = col / 32, e = col % 32;
  const uint8_t hb = qh[static_cast<size_t>(row * k / 4 + chunk * 8 + (e & 1) * 4 + e / 8)];
  return (lo | ((hb >> (2 * ((e % 8) / 2))) & 3) << 4) - 32;
}

float PlanarInt6::scale(int64_t row, int64_t group16) const {
  const size_t i = static_cast<size_t>(row * (k / 16) + group16);
  if (enc == ScaleEncoding::bf16) return bf16_to_fp32(scale_bf16[i]);
  return static_cast<float>(scale_code[i]) *
         fp16_to_fp32(scale_step[static_cast<size_t>(row * (k / 256) + group16 / 16)]);
}

double PlanarInt6::weight(int64_t row, int64_t col) const {
  return static_cast<double>(q(row, col)) * static_cast<double>(scale(row, col / 16));
}

uint64_t PlanarInt6::device_bytes() const {
  return ql.size() + qh.size() + 2 * scale_bf16.size() + scale_code.size() + 2 * scale_step.size();
}

CoalescedInt4 concat_rows(const CoalescedInt4& a, const CoalescedInt4& b) {
  if (a.k != b.k || a.enc != b.enc) throw std::invalid_argument("concat_rows: k or encoding differ");
  CoalescedInt4 t = a;
  t.n = a.n + b.n;
  append(t.qdata, b.qdata);
  append(t.scale_bf16, b.scale_bf16);
  append(t.zero_bf16, b.zero_bf16);
  append(t.scale_code, b.scale_code);
  append(t.zero_code, b.zero_code);
  append(t.scale_step, b.scale_step);
  append(t.zero_step, b.zero_step);
  return t;
}

PlanarInt6 concat_rows(const PlanarInt6& a, const PlanarInt6& b) {
  if (a.k != b.k || a.enc != b.enc) throw std::invalid_argument("concat_rows: k or encoding differ");
  PlanarInt6 t = a;
  t.n = a.n + b.n;
  append(t.ql, b.ql);
  append(t.qh, b.qh);
  append(t.scale_bf16, b.scale_bf16);
  append(t.scale_code, b.scale_code);
  append(t.scale_step, b.scale_step);
  return t;
}

}  // namespace fb
