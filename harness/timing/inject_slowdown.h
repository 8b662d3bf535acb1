#pragma once
// TEST-ONLY injected slowdown, for calibrating the regression gate (issue 6): with
// FUSEBENCH_INJECT_SLOWDOWN=<fraction> (e.g. 0.03) every GPU timing sample also runs a spin kernel
// inside the timed region whose duration is that fraction of the work's own measured time, so a
// "3 % slower build" is real GPU time the gate must catch. The results env records the fraction
// (env.injected_slowdown) and `fusebench compare` refuses such files unless told they are a test,
// so they can never pass for real results. Unset, empty or "0": off.
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>

struct CUstream_st;
using cudaStream_t = CUstream_st*;

namespace fb {

inline constexpr const char* kInjectSlowdownEnv = "FUSEBENCH_INJECT_SLOWDOWN";

// Header-only so the results env can record it without linking the timing library. Throws
// std::invalid_argument on a malformed or out-of-range value (0 < fraction <= 1).
inline std::optional<double> injected_slowdown_fraction() {
  const char* v = std::getenv(kInjectSlowdownEnv);
  if (v == nullptr || *v == '\0') return std::nullopt;
  char* end = nullptr;
  const double f = std::strtod(v, &end);
  if (end == v || *end != '\0' || !(f >= 0.0 && f <= 1.0))
    throw std::invalid_argument(std::string(kInjectSlowdownEnv) + "='" + v + "': want a fraction in [0, 1]");
  if (f == 0.0) return std::nullopt;
  return f;
}

// CUDA builds only (inject_slowdown.cu). A one-thread kernel that spins `cycles` SM clock cycles.
void launch_spin(cudaStream_t stream, long long cycles);
// Cycles the spin kernel runs per millisecond on this device now (timed with events, launch cost
// subtracted), so a duration in ms can be turned into cycles.
double spin_cycles_per_ms(cudaStream_t stream);

}  // namespace fb
