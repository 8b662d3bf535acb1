#pragma once
// Host helpers of the ops/prefill GPU tests: NaN-poisoned bf16 outputs with guard words behind
// them, seeded N(0, 1) inputs, and a comparison that reports the worst element.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "kernels/common/cuda_check.h"
#include "reference/formats/half.h"
#include "reference/util/splitmix.h"

namespace fb::test {

constexpr uint16_t kPoisonBF16 = 0x7FBA;  // a signalling-NaN pattern no rounding produces
constexpr uint16_t kGuardBF16 = 0xF00D;
constexpr size_t kGuard = 64;

#define FB_SKIP_WITHOUT_GPU()                                                    \
  do {                                                                           \
    if (auto why = ::fb::cuda_device_unavailable_reason()) GTEST_SKIP() << *why; \
  } while (0)

// bf16-representable N(0, sigma) values, never all zero.
inline std::vector<float> random_bf16(size_t n, uint64_t seed, uint64_t stream, float sigma = 1.0f) {
  CounterRng rng(seed, stream);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = bf16_to_fp32(fp32_to_bf16(rng.normal(i) * sigma));
  return v;
}
inline std::vector<uint16_t> to_bits(const std::vector<float>& v) {
  std::vector<uint16_t> b(v.size());
  for (size_t i = 0; i < v.size(); ++i) b[i] = fp32_to_bf16(v[i]);
  return b;
}

// A device bf16 tensor with poisoned contents and guard words after it.
class Bf16Buf {
 public:
  explicit Bf16Buf(size_t n) : m_n(n), m_buf(n + kGuard) {
    std::vector<uint16_t> h(n + kGuard, kPoisonBF16);
    for (size_t i = n; i < n + kGuard; ++i) h[i] = kGuardBF16;
    FB_CUDA_CHECK(cudaMemcpy(m_buf.get(), h.data(), h.size() * 2, cudaMemcpyHostToDevice));
  }
  explicit Bf16Buf(const std::vector<float>& v) : Bf16Buf(v.size()) {
    const auto b = to_bits(v);
    FB_CUDA_CHECK(cudaMemcpy(m_buf.get(), b.data(), b.size() * 2, cudaMemcpyHostToDevice));
  }
  __nv_bfloat16* get() const { return reinterpret_cast<__nv_bfloat16*>(m_buf.get()); }
  // Downloads, fails the test if a guard word changed.
  std::vector<float> read(const std::string& what) const {
    std::vector<uint16_t> h(m_n + kGuard);
    FB_CUDA_CHECK(cudaDeviceSynchronize());
    FB_CUDA_CHECK(cudaMemcpy(h.data(), m_buf.get(), h.size() * 2, cudaMemcpyDeviceToHost));
    for (size_t i = m_n; i < h.size(); ++i) {
      EXPECT_EQ(h[i], kGuardBF16) << what << ": guard word " << i - m_n << " after the output overwritten";
    }
    std::vector<float> out(m_n);
    for (size_t i = 0; i < m_n; ++i) out[i] = bf16_to_fp32(h[i]);
    return out;
  }

 private:
  size_t m_n;
  DeviceBuffer<uint16_t> m_buf;
};

template <class T>
DeviceBuffer<T> upload(const std::vector<T>& v) {
  DeviceBuffer<T> d(v.size());
  FB_CUDA_CHECK(cudaMemcpy(d.get(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

struct Diff {
  size_t n = 0, mismatches = 0, nonfinite = 0, worst = 0;
  double max_abs = 0, max_ref = 0, nmse = 0, cosine = 1;
  bool bit_exact() const { return mismatches == 0 && nonfinite == 0; }
  std::string str(const std::vector<float>& ref, const std::vector<float>& got) const {
    std::ostringstream o;
    o << mismatches << " of " << n << " differ, " << nonfinite << " non-finite, max_abs " << max_abs << " @"
      << worst;
    if (worst < ref.size()) o << " (ref " << ref[worst] << " got " << got[worst] << ")";
    o << ", max|ref| " << max_ref << ", nmse " << nmse << ", cos " << cosine;
    return o.str();
  }
};

inline Diff diff(const std::vector<float>& ref, const std::vector<float>& got) {
  Diff d;
  d.n = ref.size();
  double num = 0, den = 0, dot = 0, gg = 0;
  for (size_t i = 0; i < ref.size() && i < got.size(); ++i) {
    const double r = ref[i], g = got[i];
    if (!std::isfinite(g) && !(std::isnan(r) && std::isnan(g))) {
      ++d.nonfinite;
      d.worst = i;
      continue;
    }
    if (std::memcmp(&ref[i], &got[i], sizeof(float)) != 0 && !(std::isnan(r) && std::isnan(g)))
      ++d.mismatches;
    if (!std::isfinite(r)) continue;
    const double e = std::abs(r - g);
    if (e > d.max_abs) d.max_abs = e, d.worst = i;
    d.max_ref = std::max(d.max_ref, std::abs(r));
    num += e * e, den += r * r, dot += r * g, gg += g * g;
  }
  if (ref.size() != got.size()) d.nonfinite += 1;
  d.nmse = den > 0 ? num / den : num;
  d.cosine = den > 0 && gg > 0 ? dot / std::sqrt(den * gg) : 1.0;
  return d;
}

// bf16 outputs of fp32 math against the rounded fp64 truth: an element may land on the other side
// of a rounding boundary, i.e. one bf16 ulp (2^-8 relative) apart, and rarely so.
inline void expect_bf16_close(const std::vector<float>& ref, const std::vector<float>& got,
                              const std::string& what, double max_abs_rel_to_max = 1.0 / 64,
                              double max_nmse = 1e-5, double max_mismatch_frac = 0.05) {
  const Diff d = diff(ref, got);
  EXPECT_EQ(d.nonfinite, 0u) << what << ": " << d.str(ref, got);
  EXPECT_LE(d.max_abs, max_abs_rel_to_max * d.max_ref) << what << ": " << d.str(ref, got);
  EXPECT_LE(d.nmse, max_nmse) << what << ": " << d.str(ref, got);
  EXPECT_LE(static_cast<double>(d.mismatches), max_mismatch_frac * static_cast<double>(d.n))
      << what << ": " << d.str(ref, got);
}

inline void expect_bit_exact(const std::vector<float>& a, const std::vector<float>& b,
                             const std::string& what) {
  const Diff d = diff(a, b);
  EXPECT_TRUE(d.bit_exact()) << what << ": " << d.str(a, b);
}

}  // namespace fb::test
