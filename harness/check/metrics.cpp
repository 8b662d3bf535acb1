#include "harness/check/metrics.h"

#include <fmt/format.h>

#include <bit>
#include <cmath>
#include <cstdlib>
#include <stdexcept>

namespace fb {

namespace {

// Maps a float's bits onto a line where adjacent floats differ by one (negatives mirrored), so the
// difference of two keys is their distance in ulps; +0 and -0 are one apart.
int64_t ordered(float f) {
  const auto u = static_cast<int64_t>(std::bit_cast<uint32_t>(f));
  return u & 0x80000000 ? 0x80000000 - u - 1 : u;
}

uint64_t ulp_bucket(float a, float b) {
  const uint64_t d = static_cast<uint64_t>(std::llabs(ordered(a) - ordered(b)));
  return std::bit_ceil(d);
}

}  // namespace

Metrics compare(std::span<const float> ref, std::span<const float> got) {
  if (ref.size() != got.size()) {
    throw std::invalid_argument(
        fmt::format("compare: {} reference values vs {} outputs", ref.size(), got.size()));
  }
  Metrics m;
  m.n = ref.size();
  double dot = 0, rr = 0, gg = 0, err2 = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double r = ref[i], g = got[i];
    if (std::bit_cast<uint32_t>(ref[i]) != std::bit_cast<uint32_t>(got[i])) {
      m.bit_exact = false;
      ++m.mismatches;
    }
    if (!std::isfinite(g) || !std::isfinite(r)) {
      // NaN/Inf never pass: any non-finite value whose exact bits the other side does not repeat
      // (a NaN reference with a finite output included) counts, so tolerances cannot hide it.
      if (std::bit_cast<uint32_t>(ref[i]) != std::bit_cast<uint32_t>(got[i])) ++m.nonfinite;
      continue;
    }
    if (std::bit_cast<uint32_t>(ref[i]) != std::bit_cast<uint32_t>(got[i]))
      ++m.ulp_histogram[ulp_bucket(ref[i], got[i])];
    const double d = std::abs(g - r);
    if (d > m.max_abs) {
      m.max_abs = d;
      m.max_abs_index = i;
    }
    m.max_rel = std::max(m.max_rel, d / std::max(std::abs(r), 1e-30));
    dot += r * g;
    rr += r * r;
    gg += g * g;
    err2 += (g - r) * (g - r);
  }
  m.cosine = (rr > 0 && gg > 0) ? dot / std::sqrt(rr * gg) : (rr == gg ? 1.0 : 0.0);
  m.nmse = rr > 0 ? err2 / rr : (err2 > 0 ? INFINITY : 0.0);
  return m;
}

std::string Metrics::summary() const {
  if (bit_exact) return fmt::format("bit-exact over {} values", n);
  return fmt::format("{} of {} differ, max_abs {:.3g} @{}, max_rel {:.3g}, cos {:.8f}, nmse {:.3g}{}",
                     mismatches, n, max_abs, max_abs_index, max_rel, cosine, nmse,
                     nonfinite ? fmt::format(", {} non-finite", nonfinite) : std::string());
}

}  // namespace fb
