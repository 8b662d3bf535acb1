#pragma once
// The numerics tolerance table of `fusebench check` (DESIGN §4): one place, each bound with why.
// Bit-exact contracts are not listed: they compare bits, never a threshold.
#include <string>
#include <string_view>

#include "harness/runner/case_result.h"
#include "reference/formats/ggml_type.h"

namespace fb {

// Quantize -> dequantize round trip of N(0, 1) data with 1 % outliers at 8 sigma (see
// format_checks.cpp), NMSE against the input. f16/bf16: the rounding bound (2^-p)^2/3 of a p-bit
// significand. Block formats: ~1.5x the value measured on seed 1 (in the comment; x86-64,
// ggml-exact quantizers), so a quantizer that gets 1.5x noisier fails.
struct RoundTripTolerance {
  GgmlType type;
  double max_nmse;
  std::string_view why;
};

inline constexpr RoundTripTolerance kRoundTripTolerances[] = {
    {GgmlType::F32, 0.0, "exact copy"},
    {GgmlType::F16, 8.0e-8, "11-bit significand: rel. error <= 2^-11 (measured 2.6e-8)"},
    {GgmlType::BF16, 5.1e-6, "8-bit significand: rel. error <= 2^-8 (measured 1.6e-6)"},
    {GgmlType::Q8_0, 1.0e-4,
     "255 levels over +-amax of 32; outlier blocks coarsen the step (measured 6.8e-5)"},
    {GgmlType::Q6_K, 1.0e-3, "64 levels per 16 with 8-bit scales (measured 6.3e-4)"},
    {GgmlType::Q5_K, 3.0e-3, "32 levels per 32 with 6-bit scale/min (measured 2.1e-3)"},
    {GgmlType::Q4_K, 1.2e-2, "16 levels per 32 with 6-bit scale/min (measured 8.2e-3)"},
};

inline const RoundTripTolerance& round_trip_tolerance(GgmlType t) {
  for (const auto& r : kRoundTripTolerances)
    if (r.type == t) return r;
  return kRoundTripTolerances[0];
}

// Kernel x comparison tolerances of the runner. `against` is "reference" (CPU fp64 truth rounded
// to the output dtype) or "unfused" (the kernel's unfused twin). A scenario may override an entry
// only with a written reason (scenario [[tolerance]]).
struct KernelTolerance {
  std::string_view kernel;
  std::string_view against;
  Tolerance tolerance;
};

inline const KernelTolerance kKernelTolerances[] = {
    // Dequant is exact arithmetic on the same fp32 expression as ggml, then one RNE rounding to
    // bf16 on both sides: bits must match (DESIGN §4).
    {"dequant_bf16", "reference",
     Tolerance{true, INFINITY, INFINITY, -1.0, INFINITY, "table: dequant_bf16/reference"}},
    // Row-concatenation changes which launch writes a row, not the arithmetic.
    {"dequant_bf16", "unfused",
     Tolerance{true, INFINITY, INFINITY, -1.0, INFINITY, "table: dequant_bf16/unfused"}},
};

// The table entry, or a bit-exact tolerance marked "table: missing" (so a kernel without an entry
// cannot pass by accident with loose bounds).
inline Tolerance kernel_tolerance(std::string_view kernel, std::string_view against) {
  for (const auto& t : kKernelTolerances)
    if (t.kernel == kernel && t.against == against) return t.tolerance;
  Tolerance strict;
  strict.bit_exact = true;
  strict.source = "table: missing entry for " + std::string(kernel) + "/" + std::string(against);
  return strict;
}

}  // namespace fb
