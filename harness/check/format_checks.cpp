#include <fmt/format.h>

#include <vector>

#include "harness/check/checks.h"
#include "harness/runner/tolerances.h"
#include "reference/formats/dequantize.h"
#include "reference/formats/quantize.h"
#include "reference/util/splitmix.h"

namespace fb {

std::vector<CheckCase> run_format_checks(uint64_t seed) {
  constexpr int64_t kRows = 64, kCols = 1024;
  // N(0,1) with one value in a hundred an 8-sigma outlier: real weight rows have outliers, and they
  // are what stresses per-block scale selection.
  std::vector<float> x(kRows * kCols);
  const CounterRng rng(seed, 0xF0A7);
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = rng.normal(2 * i);
    if (rng.uniform(2 * i + 1) < 0.01f) x[i] = x[i] >= 0 ? 8.0f : -8.0f;
  }
  std::vector<CheckCase> out;
  for (GgmlType t : kConvertibleTypes) {
    const RoundTripTolerance& tol = round_trip_tolerance(t);
    const size_t row_bytes = ggml_row_bytes(t, kCols);
    std::vector<uint8_t> q(row_bytes * kRows);
    std::vector<float> y(x.size());
    for (int64_t r = 0; r < kRows; ++r) {
      quantize(t, x.data() + r * kCols, q.data() + r * row_bytes, kCols);
      dequantize(t, q.data() + r * row_bytes, y.data() + r * kCols, kCols);
    }
    const Metrics m = compare(x, y);
    CheckCase c;
    c.section = "formats";
    c.name = fmt::format("{} quantize->dequantize", ggml_type_name(t));
    c.criterion =
        tol.max_nmse == 0.0 ? "bit-exact" : fmt::format("nmse <= {:.3g} ({})", tol.max_nmse, tol.why);
    const bool ok = m.nonfinite == 0 && (tol.max_nmse == 0.0 ? m.bit_exact : m.nmse <= tol.max_nmse);
    c.status = ok ? CheckStatus::pass : CheckStatus::fail;
    c.detail = m.summary();
    c.repro = fmt::format("fusebench check --section formats --seed {}", seed);
    c.data = {
        {"type", std::string(ggml_type_name(t))}, {"rows", kRows}, {"cols", kCols}, {"metrics", to_json(m)}};
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace fb
