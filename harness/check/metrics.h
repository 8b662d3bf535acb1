#pragma once
// Comparison metrics of DESIGN §4, accumulated in double: bit-exactness, mismatch count, max-abs
// (with index), max-rel, cosine and NMSE. NaN/Inf in the tested output never pass.
#include <cstdint>
#include <map>
#include <span>
#include <string>

namespace fb {

struct Metrics {
  uint64_t n = 0;
  bool bit_exact = true;
  uint64_t mismatches = 0;  // elements whose bits differ
  uint64_t nonfinite = 0;   // NaN/Inf on either side whose bits the other side does not repeat
  double max_abs = 0.0;
  uint64_t max_abs_index = 0;
  double max_rel = 0.0;  // |got-ref| / max(|ref|, tiny)
  double cosine = 1.0;
  double nmse = 0.0;  // sum (got-ref)^2 / sum ref^2
  // Distance in fp32 units in the last place between finite values whose bits differ, bucketed by
  // powers of two: key u counts distances in (u/2, u] (1, 2, 4, 8, ...). A bf16 output's one-ulp
  // difference lands in the 65536 bucket. Empty when bit-exact.
  std::map<uint64_t, uint64_t> ulp_histogram;

  std::string summary() const;  // "max_abs 1.2e-3 @17, max_rel ..., cos ..., nmse ..."
};

Metrics compare(std::span<const float> ref, std::span<const float> got);

}  // namespace fb
