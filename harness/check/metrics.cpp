#include "harness/check/metrics.h"

#include <fmt/format.h>

#include <bit>
#include <cmath>
#include <stdexcept>

namespace fb {

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
    if (!std::isfinite(g) && std::isfinite(r)) {
      ++m.nonfinite;
      continue;
    }
    if (!std::isfinite(g) || !std::isfinite(r)) continue;
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
