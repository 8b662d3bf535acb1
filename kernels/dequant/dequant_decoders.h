#pragma once
// Per-thread decoders of the dequantization kernels. Host and device code alike, so a CPU test pins
// the indexing and NaN rules without a GPU; the kernels in dequantize.cu are thin wrappers.
//
// Two entry points per type:
//  - run(block, e, v): 4 outputs, byte loads, any alignment the API allows. The fallback kernel.
//  - load<N>(tile, e) + decode<N>(raw, e, v): N = 4 or 8 outputs of a 256-output tile, split so the
//    kernel can issue the loads of several tiles before any arithmetic. Loads are wide (the K-quant
//    header is one 16-byte load) and the fast path hoists the NaN handling out of the per-element
//    work: decode returns `clean` when no output can be NaN, which is decided once per run from the
//    scales (see each decode). The per-element results are the same expressions either way.
//
// The float results must equal the CPU reference (reference/formats/dequantize.cpp) bit for bit,
// as built on x86-64. The GPU returns the canonical NaN 0x7FFFFFFF for any NaN result, where SSE
// returns the first NaN operand with its quiet bit set, or 0xFFC00000 for an invalid operation
// (inf*0, inf-inf). The fast path is plain IEEE arithmetic with explicit round-to-nearest ops (a
// contracted FMA would change the rounding); it is redone under the x86 rules only when its
// result is NaN.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "reference/formats/blocks.h"
#include "reference/formats/half.h"
#include "reference/formats/host_device.h"

// #pragma unroll for nvcc only: the host compiler of the CPU test warns on it.
#if defined(__CUDACC__)
#define FB_DEQ_UNROLL _Pragma("unroll")
#else
#define FB_DEQ_UNROLL
#endif

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

// ---- helpers of the tiled decoders ---------------------------------------------------------------

// fb::fp16_to_fp32 without its renormalisation loop (a divergent loop of up to 10 trips per F16 input
// on the GPU). Same bits for every pattern: a subnormal or zero m * 2^-24 is computed exactly as
// (2^-14 + m * 2^-24) - 2^-14, both operands normal, the difference representable (Sterbenz).
FB_HOST_DEVICE inline float half_to_float(uint32_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t em = h & 0x7FFFu;
  if (em >= 0x7C00u) {  // inf or NaN, NaN quieted with its payload kept
    const uint32_t mant = em & 0x3FFu;
    return bits_float(sign | 0x7F800000u | (mant << 13) | (mant != 0 ? 0x400000u : 0u));
  }
  if (em >= 0x0400u) return bits_float(sign | ((em << 13) + 0x38000000u));  // exponent + 112
  return bits_float(sign | float_bits(fsub_rn(bits_float(0x38800000u | (em << 13)), 0x1p-14f)));
}

// Byte k of w as the float 2^23 + byte: exact, and one PRMT on the GPU. Subtracting 2^23 (+ an
// offset) then gives the small integer exactly, one FADD instead of a quarter-rate I2F.
FB_HOST_DEVICE inline float byte_magic(uint32_t w, int k) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(__byte_perm(w, 0x4B000000u, 0x7440u | static_cast<unsigned>(k)));
#else
  return bits_float(0x4B000000u | byte_of(w, k));
#endif
}
constexpr float kMagic = 8388608.0f;  // 2^23

FB_HOST_DEVICE inline bool is_finite(float a) { return (float_bits(a) & 0x7F800000u) != 0x7F800000u; }

// Non-coherent (read-only path) loads; p must be aligned to the width. Host: plain memcpy.
FB_HOST_DEVICE inline uint32_t ldg_u16(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
  return __ldg(reinterpret_cast<const unsigned short*>(p));
#else
  uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
#endif
}
FB_HOST_DEVICE inline uint32_t ldg_u8(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
  return __ldg(p);
#else
  return *p;
#endif
}
// kWords consecutive 32-bit words at p, one vector load (p aligned to 4 * kWords bytes).
template <int kWords>
FB_HOST_DEVICE inline void ldg_words(const uint8_t* p, uint32_t* w) {
#if defined(__CUDA_ARCH__)
  if constexpr (kWords == 1) {
    w[0] = __ldg(reinterpret_cast<const unsigned int*>(p));
  } else if constexpr (kWords == 2) {
    const uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
    w[0] = v.x, w[1] = v.y;
  } else {
    static_assert(kWords % 4 == 0, "1, 2 or a multiple of 4 words");
    FB_DEQ_UNROLL
    for (int i = 0; i < kWords; i += 4) {
      const uint4 v = __ldg(reinterpret_cast<const uint4*>(p) + i / 4);
      w[i] = v.x, w[i + 1] = v.y, w[i + 2] = v.z, w[i + 3] = v.w;
    }
  }
#else
  std::memcpy(w, p, 4 * kWords);
#endif
}
// Words of a 2-byte-aligned run (Q6_K, Q8_0 blocks), as halves.
template <int kWords>
FB_HOST_DEVICE inline void ldg_words_a2(const uint8_t* p, uint32_t* w) {
  FB_DEQ_UNROLL
  for (int i = 0; i < kWords; ++i) w[i] = ldg_u16(p + 4 * i) | (ldg_u16(p + 4 * i + 2) << 16);
}

// Q4_K/Q5_K header: d | dmin << 16, then the 12 scale bytes in three words.
FB_HOST_DEVICE inline void scale_min_k4_words(int j, const uint32_t h[4], int& sc, int& m) {
  const int jj = j & 3;
  const uint32_t a = byte_of(h[1], jj), b = byte_of(h[2], jj), c = byte_of(h[3], jj);
  if (j < 4) {
    sc = static_cast<int>(a & 63);
    m = static_cast<int>(b & 63);
  } else {
    sc = static_cast<int>((c & 0xF) | ((a >> 6) << 4));
    m = static_cast<int>((c >> 4) | ((b >> 6) << 4));
  }
}

// Tiled decoders: a tile is 256 outputs (one K-quant block, 8 Q8_0 blocks, 256 plain elements) at
// tile + 0 .. kTileBytes; load<N>(tile, e) fetches what outputs e..e+N-1 need (e a multiple of N,
// N = 4 or 8: a run never leaves a K-quant sub-block), decode<N> computes them and returns `clean`
// when none of them can be NaN or subnormal (then the bf16 rounding may use the hardware cvt).

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

  static constexpr int kTileBytes = sizeof(Block);
  static constexpr int kSrcAlign = 16;  // 144-byte blocks: the header is one 16-byte load
  template <int N>
  struct Raw {
    uint32_t h[4];  // d | dmin << 16, scales[0..11]
    uint32_t q[N / 4];
  };
  template <int N>
  FB_HOST_DEVICE static Raw<N> load(const uint8_t* t, int e) {
    Raw<N> r;
    ldg_words<4>(t, r.h);
    ldg_words<N / 4>(t + offsetof(Block, qs) + 32 * (e >> 6) + (e & 31), r.q);
    return r;
  }
  // d1 = fp16 * 6-bit integer and d1 * q (q < 16) are exact, and so are m1 = dmin * m; so with d1 and
  // m1 finite no output is NaN, and every nonzero output is a multiple of 2^-24 (never subnormal).
  template <int N>
  FB_HOST_DEVICE static bool decode(const Raw<N>& r, int e, float* v) {
    const int sub = e >> 5;
    int sc, m;
    scale_min_k4_words(sub, r.h, sc, m);
    const float d1 = mul_x86(half_to_float(r.h[0] & 0xFFFFu), static_cast<float>(sc));
    const float m1 = mul_x86(half_to_float(r.h[0] >> 16), static_cast<float>(m));
    const bool clean = is_finite(d1) && is_finite(m1);
    FB_DEQ_UNROLL
    for (int i = 0; i < N / 4; ++i) {
      const uint32_t w = (r.q[i] >> (4 * (sub & 1))) & 0x0F0F0F0Fu;
      if (clean) {
        FB_DEQ_UNROLL
        for (int k = 0; k < 4; ++k)
          v[4 * i + k] = fsub_rn(fmul_rn(d1, fsub_rn(byte_magic(w, k), kMagic)), m1);
      } else {
        for (int k = 0; k < 4; ++k) v[4 * i + k] = mul_sub_x86(d1, fsub_rn(byte_magic(w, k), kMagic), m1);
      }
    }
    return clean;
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

  static constexpr int kTileBytes = sizeof(Block);
  static constexpr int kSrcAlign = 16;  // 176-byte blocks
  template <int N>
  struct Raw {
    uint32_t h[4];
    uint32_t qh[N / 4];
    uint32_t q[N / 4];
  };
  template <int N>
  FB_HOST_DEVICE static Raw<N> load(const uint8_t* t, int e) {
    Raw<N> r;
    ldg_words<4>(t, r.h);
    ldg_words<N / 4>(t + offsetof(Block, qh) + (e & 31), r.qh);
    ldg_words<N / 4>(t + offsetof(Block, qs) + 32 * (e >> 6) + (e & 31), r.q);
    return r;
  }
  // As Q4_K, with q < 32: d1 * q still exact (17 + 5 bits).
  template <int N>
  FB_HOST_DEVICE static bool decode(const Raw<N>& r, int e, float* v) {
    const int sub = e >> 5;  // also the qh bit that holds the 5th bit
    int sc, m;
    scale_min_k4_words(sub, r.h, sc, m);
    const float d1 = mul_x86(half_to_float(r.h[0] & 0xFFFFu), static_cast<float>(sc));
    const float m1 = mul_x86(half_to_float(r.h[0] >> 16), static_cast<float>(m));
    const bool clean = is_finite(d1) && is_finite(m1);
    FB_DEQ_UNROLL
    for (int i = 0; i < N / 4; ++i) {
      const uint32_t w =
          ((r.q[i] >> (4 * (sub & 1))) & 0x0F0F0F0Fu) | (((r.qh[i] >> sub) & 0x01010101u) << 4);
      if (clean) {
        FB_DEQ_UNROLL
        for (int k = 0; k < 4; ++k)
          v[4 * i + k] = fsub_rn(fmul_rn(d1, fsub_rn(byte_magic(w, k), kMagic)), m1);
      } else {
        for (int k = 0; k < 4; ++k) v[4 * i + k] = mul_sub_x86(d1, fsub_rn(byte_magic(w, k), kMagic), m1);
      }
    }
    return clean;
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

  static constexpr int kTileBytes = sizeof(Block);
  static constexpr int kSrcAlign = 2;  // 210-byte blocks: halves only
  template <int N>
  struct Raw {
    uint32_t ql[N / 4];
    uint32_t qh[N / 4];
    uint32_t sc;  // the int8 scale's byte
    uint32_t d;
  };
  template <int N>
  FB_HOST_DEVICE static Raw<N> load(const uint8_t* t, int e) {
    const int half = e >> 7, quarter = (e >> 5) & 3, l = e & 31;
    Raw<N> r;
    ldg_words_a2<N / 4>(t + offsetof(Block, ql) + 64 * half + 32 * (quarter & 1) + l, r.ql);
    ldg_words_a2<N / 4>(t + offsetof(Block, qh) + 32 * half + l, r.qh);
    r.sc = ldg_u8(t + offsetof(Block, scales) + 8 * half + (l >> 4) + 2 * quarter);
    r.d = ldg_u16(t + offsetof(Block, d));
    return r;
  }
  // d * sc (11 + 7 bits) and d * sc * q (+ 6 bits) are exact: with d * sc finite no output is NaN,
  // and every nonzero output is a multiple of 2^-24.
  template <int N>
  FB_HOST_DEVICE static bool decode(const Raw<N>& r, int e, float* v) {
    const int quarter = (e >> 5) & 3;
    const float d = half_to_float(r.d);
    const float sc = static_cast<float>(static_cast<int8_t>(r.sc));
    const float ds = fmul_rn(d, sc);
    const bool clean = is_finite(ds);
    FB_DEQ_UNROLL
    for (int i = 0; i < N / 4; ++i) {
      const uint32_t w = ((r.ql[i] >> (4 * (quarter >> 1))) & 0x0F0F0F0Fu) |
                         (((r.qh[i] >> (2 * quarter)) & 0x03030303u) << 4);
      // q - 32 directly: 2^23 + q minus 2^23 + 32.
      if (clean) {
        FB_DEQ_UNROLL
        for (int k = 0; k < 4; ++k) v[4 * i + k] = fmul_rn(ds, fsub_rn(byte_magic(w, k), kMagic + 32.0f));
      } else {
        for (int k = 0; k < 4; ++k)
          v[4 * i + k] = mul_mul_x86(d, sc, fsub_rn(byte_magic(w, k), kMagic + 32.0f));
      }
    }
    return clean;
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

  static constexpr int kTileBytes = 8 * sizeof(Block);  // 8 blocks = 256 outputs
  static constexpr int kSrcAlign = 2;
  template <int N>
  struct Raw {
    uint32_t q[N / 4];
    uint32_t d;
  };
  template <int N>
  FB_HOST_DEVICE static Raw<N> load(const uint8_t* t, int e) {
    const uint8_t* b = t + sizeof(Block) * (e >> 5);
    Raw<N> r;
    ldg_words_a2<N / 4>(b + offsetof(Block, qs) + (e & 31), r.q);
    r.d = ldg_u16(b + offsetof(Block, d));
    return r;
  }
  // int8 * fp16 is exact: with d finite no output is NaN or subnormal.
  template <int N>
  FB_HOST_DEVICE static bool decode(const Raw<N>& r, int e, float* v) {
    (void)e;
    const float d = half_to_float(r.d);
    const bool clean = is_finite(d);
    FB_DEQ_UNROLL
    for (int i = 0; i < N / 4; ++i) {
      const uint32_t w = r.q[i] ^ 0x80808080u;  // int8 + 128, as unsigned bytes
      if (clean) {
        FB_DEQ_UNROLL
        for (int k = 0; k < 4; ++k) v[4 * i + k] = fmul_rn(fsub_rn(byte_magic(w, k), kMagic + 128.0f), d);
      } else {
        for (int k = 0; k < 4; ++k) v[4 * i + k] = mul_x86(fsub_rn(byte_magic(w, k), kMagic + 128.0f), d);
      }
    }
    return clean;
  }
};

// Plain types: one element per "block"; the conversions give the reference's bits. A tile is 256
// elements; outputs may be NaN or subnormal, so decode never reports clean.
template <class Derived, class Elem>
struct DecodePlain {
  using Block = Elem;
  static constexpr int kBlockElems = 1;
  static constexpr int kTileBytes = 256 * sizeof(Elem);
  static constexpr int kSrcAlign = 16;  // 8 or 16 bytes a run
  FB_HOST_DEVICE static float one(Elem x) {
    if constexpr (sizeof(Elem) == 4) {
      return Derived::from_bits(float_bits(x));
    } else {
      return Derived::from_bits(x);
    }
  }
  template <int N>
  struct Raw {
    uint32_t w[N * sizeof(Elem) / 4];
  };
  template <int N>
  FB_HOST_DEVICE static Raw<N> load(const uint8_t* t, int e) {
    Raw<N> r;
    ldg_words<N * sizeof(Elem) / 4>(t + sizeof(Elem) * e, r.w);
    return r;
  }
  template <int N>
  FB_HOST_DEVICE static bool decode(const Raw<N>& r, int e, float* v) {
    (void)e;
    FB_DEQ_UNROLL
    for (int k = 0; k < N; ++k) {
      v[k] = Derived::from_bits(sizeof(Elem) == 4 ? r.w[k] : (r.w[k / 2] >> (16 * (k & 1))) & 0xFFFFu);
    }
    return false;
  }
};
struct DecodeF32 : DecodePlain<DecodeF32, float> {
  FB_HOST_DEVICE static float from_bits(uint32_t b) { return bits_float(b); }
};
struct DecodeF16 : DecodePlain<DecodeF16, uint16_t> {
  FB_HOST_DEVICE static float from_bits(uint32_t b) { return half_to_float(b); }
};
struct DecodeBF16 : DecodePlain<DecodeBF16, uint16_t> {
  FB_HOST_DEVICE static float from_bits(uint32_t b) { return bits_float(b << 16); }
};

}  // namespace fb::cuda::detail
