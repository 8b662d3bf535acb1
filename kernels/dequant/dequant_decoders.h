#pragma once
// Per-thread decoders of the dequantization kernels: 4 consecutive outputs of one ggml block.
// Host and device code alike, so a CPU test pins the indexing and NaN rules without a GPU; the
// kernels in dequantize.cu are thin wrappers around these.
//
// The float results must equal the CPU reference (reference/formats/dequantize.cpp) bit for bit,
// as built on x86-64. The GPU returns the canonical NaN 0x7FFFFFFF for any NaN result, where SSE
// returns the first NaN operand with its quiet bit set, or 0xFFC00000 for an invalid operation
// (inf*0, inf-inf). The fast path is plain IEEE arithmetic with explicit round-to-nearest ops (a
// contracted FMA would change the rounding); it is redone under the x86 rules only when its
// result is NaN.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "reference/formats/blocks.h"
#include "reference/formats/half.h"
#include "reference/formats/host_device.h"

namespace fb::cuda::detail {

FB_HOST_DEVICE inline float fmul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;  // the project builds host code with -ffp-contract=off
#endif
}

FB_HOST_DEVICE inline float fsub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

FB_HOST_DEVICE inline bool is_nan(float a) {
#if defined(__CUDA_ARCH__)
  return isnan(a);
#else
  return std::isnan(a);
#endif
}

FB_HOST_DEVICE inline float x86_nan(float a, float b) {
  if (is_nan(a)) return bits_float(float_bits(a) | 0x00400000u);
  if (is_nan(b)) return bits_float(float_bits(b) | 0x00400000u);
  return bits_float(0xFFC00000u);
}

FB_HOST_DEVICE inline float mul_x86(float a, float b) {
  const float r = fmul_rn(a, b);
  return is_nan(r) ? x86_nan(a, b) : r;
}

FB_HOST_DEVICE inline float sub_x86(float a, float b) {
  const float r = fsub_rn(a, b);
  return is_nan(r) ? x86_nan(a, b) : r;
}

// ggml's `d1 * q - m1`, rounded twice. Only the result needs checking: NaN is sticky on the GPU.
FB_HOST_DEVICE inline float mul_sub_x86(float d1, float q, float m1) {
  const float r = fsub_rn(fmul_rn(d1, q), m1);
  return is_nan(r) ? sub_x86(mul_x86(d1, q), m1) : r;
}

// ggml's `d * sc * q`, left to right.
FB_HOST_DEVICE inline float mul_mul_x86(float d, float sc, float q) {
  const float r = fmul_rn(fmul_rn(d, sc), q);
  return is_nan(r) ? mul_x86(mul_x86(d, sc), q) : r;
}

// Four quant bytes as one word. Q6_K (210 B) and Q8_0 (34 B) blocks are only 2-byte aligned, so
// their words come in two halves; Q4_K/Q5_K blocks (144 B, 176 B) keep 4-byte alignment.
FB_HOST_DEVICE inline uint32_t load_u32_a2(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
  const uint16_t* h = reinterpret_cast<const uint16_t*>(p);
  return static_cast<uint32_t>(h[0]) | (static_cast<uint32_t>(h[1]) << 16);
#else
  uint32_t w;
  std::memcpy(&w, p, sizeof w);
  return w;
#endif
}

FB_HOST_DEVICE inline uint32_t load_u32_a4(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const uint32_t*>(p);
#else
  uint32_t w;
  std::memcpy(&w, p, sizeof w);
  return w;
#endif
}

FB_HOST_DEVICE inline uint32_t byte_of(uint32_t w, int k) { return (w >> (8 * k)) & 0xFFu; }

// ggml get_scale_min_k4: 8 six-bit scales and mins packed into 12 bytes.
FB_HOST_DEVICE inline void scale_min_k4(int j, const uint8_t* q, int& sc, int& m) {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// Each decoder: run(block, e, v) writes outputs e..e+3 of the block (e a multiple of 4) to v.

struct DecodeQ4K {
  using Block = BlockQ4K;
  static constexpr int kBlockElems = kQK_K;
  FB_HOST_DEVICE static void run(const Block& b, int e, float v[4]) {
    const int chunk = e >> 6;     // each 64 outputs read the same 32 bytes of qs...
    const int hi = (e >> 5) & 1;  // ...low nibbles first, then high nibbles
    const int l = e & 31;
    int sc, m;
    scale_min_k4(2 * chunk + hi, b.scales, sc, m);
    const float d1 = mul_x86(fp16_to_fp32(b.d), static_cast<float>(sc));
    const float m1 = mul_x86(fp16_to_fp32(b.dmin), static_cast<float>(m));
    const uint32_t q = load_u32_a4(b.qs + 32 * chunk + l) >> (4 * hi);
    for (int k = 0; k < 4; ++k) v[k] = mul_sub_x86(d1, static_cast<float>(byte_of(q, k) & 0xFu), m1);
  }
};

struct DecodeQ5K {
  using Block = BlockQ5K;
  static constexpr int kBlockElems = kQK_K;
  FB_HOST_DEVICE static void run(const Block& b, int e, float v[4]) {
    const int chunk = e >> 6;
    const int hi = (e >> 5) & 1;
    const int l = e & 31;
    const int sub = 2 * chunk + hi;  // also the qh bit that holds the 5th bit
    int sc, m;
    scale_min_k4(sub, b.scales, sc, m);
    const float d1 = mul_x86(fp16_to_fp32(b.d), static_cast<float>(sc));
    const float m1 = mul_x86(fp16_to_fp32(b.dmin), static_cast<float>(m));
    const uint32_t q = load_u32_a4(b.qs + 32 * chunk + l) >> (4 * hi);
    const uint32_t h = load_u32_a4(b.qh + l) >> sub;
    for (int k = 0; k < 4; ++k) {
      const uint32_t qk = (byte_of(q, k) & 0xFu) | ((byte_of(h, k) & 1u) << 4);
      v[k] = mul_sub_x86(d1, static_cast<float>(qk), m1);
    }
  }
};

struct DecodeQ6K {
  using Block = BlockQ6K;
  static constexpr int kBlockElems = kQK_K;
  FB_HOST_DEVICE static void run(const Block& b, int e, float v[4]) {
    const int half = e >> 7;           // 128 outputs per 64 ql bytes, 32 qh bytes, 8 scales
    const int quarter = (e >> 5) & 3;  // which nibble of ql, which bit pair of qh
    const int l = e & 31;
    const uint32_t ql = load_u32_a2(b.ql + 64 * half + 32 * (quarter & 1) + l) >> (4 * (quarter >> 1));
    const uint32_t qh = load_u32_a2(b.qh + 32 * half + l) >> (2 * quarter);
    const float d = fp16_to_fp32(b.d);
    const float sc = static_cast<float>(b.scales[8 * half + (l >> 4) + 2 * quarter]);
    for (int k = 0; k < 4; ++k) {
      const int q = static_cast<int>((byte_of(ql, k) & 0xFu) | ((byte_of(qh, k) & 3u) << 4)) - 32;
      v[k] = mul_mul_x86(d, sc, static_cast<float>(q));
    }
  }
};

struct DecodeQ8_0 {
  using Block = BlockQ8_0;
  static constexpr int kBlockElems = kQK8_0;
  FB_HOST_DEVICE static void run(const Block& b, int e, float v[4]) {
    const float d = fp16_to_fp32(b.d);
    const uint32_t q = load_u32_a2(reinterpret_cast<const uint8_t*>(b.qs) + e);
    for (int k = 0; k < 4; ++k) {
      const float qk = static_cast<float>(static_cast<int8_t>(byte_of(q, k)));
      v[k] = mul_x86(qk, d);  // ggml: x[i].qs[j]*d
    }
  }
};

// Plain types: one element per "block"; the conversions are the reference's own.
struct DecodeF32 {
  using Block = float;
  static constexpr int kBlockElems = 1;
  FB_HOST_DEVICE static float one(float x) { return x; }
};
struct DecodeF16 {
  using Block = uint16_t;
  static constexpr int kBlockElems = 1;
  FB_HOST_DEVICE static float one(uint16_t x) { return fp16_to_fp32(x); }
};
struct DecodeBF16 {
  using Block = uint16_t;
  static constexpr int kBlockElems = 1;
  FB_HOST_DEVICE static float one(uint16_t x) { return bf16_to_fp32(x); }
};

}  // namespace fb::cuda::detail
