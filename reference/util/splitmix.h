#pragma once
// Counter-based random numbers: every value is a pure function of (seed, stream, index), so data
// generated in parallel chunks is identical whatever the thread count or chunking.
#include <cmath>
#include <cstdint>

namespace fb {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

inline uint64_t hash_combine(uint64_t a, uint64_t b) { return splitmix64(a ^ splitmix64(b)); }

// Uniform in [0, 1) with 24 random bits.
inline float uniform01(uint64_t bits) { return static_cast<float>(bits >> 40) * (1.0f / 16777216.0f); }

// Standard normal from two 32-bit halves of one 64-bit draw (Box-Muller, one output).
inline float normal_from_bits(uint64_t bits) {
  const double u1 = (static_cast<double>(bits >> 32) + 1.0) * (1.0 / 4294967297.0);  // (0, 1]
  const double u2 = static_cast<double>(bits & 0xFFFFFFFFull) * (1.0 / 4294967296.0);
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
}

class CounterRng {
 public:
  CounterRng(uint64_t seed, uint64_t stream) : m_key(hash_combine(seed, stream)) {}
  uint64_t bits(uint64_t index) const { return splitmix64(m_key + index * 0x9E3779B97F4A7C15ull); }
  float uniform(uint64_t index) const { return uniform01(bits(index)); }
  float normal(uint64_t index) const { return normal_from_bits(bits(index)); }

 private:
  uint64_t m_key;
};

// Stable 64-bit FNV-1a of a string, to derive a per-tensor stream from its name.
inline uint64_t fnv1a64(const char* s, uint64_t n) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (uint64_t i = 0; i < n; ++i) h = (h ^ static_cast<unsigned char>(s[i])) * 0x100000001B3ull;
  return h;
}

}  // namespace fb
