#pragma once
// One executed case of `fusebench check` / `bench`: what ran, how it compared, how long it took.
// Serialized into the results JSON's "cases" array (schema: results/schema).
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "harness/check/metrics.h"
#include "harness/timing/timing.h"

namespace fb {

enum class Verdict { pass, fail, skip };
const char* to_string(Verdict v);

// The thresholds one comparison was judged by (from the central table, maybe overridden).
struct Tolerance {
  bool bit_exact = false;  // when true the numeric bounds are ignored: bits must match
  double max_abs = INFINITY, max_rel = INFINITY, min_cosine = -1.0, max_nmse = INFINITY;
  std::string source;  // "table: <key>" or "scenario <file>: <reason>"
};

struct Comparison {
  std::string against;  // "reference" (CPU fp64 truth) | "unfused" (the kernel's unfused twin) | ...
  Metrics metrics;
  Tolerance tolerance;
  Verdict verdict = Verdict::pass;
  std::string why;  // first violated bound, e.g. "nmse 2.1e-5 > 1e-5"
};

struct CaseResult {
  std::string scenario;
  std::string kernel;
  std::string variant;  // e.g. "fused" | "unfused" | "default"
  std::string layout;   // e.g. "ggml" | "coalesced" | "default"
  std::string backend;  // "cuda" | "cpu-reference"
  int64_t tokens = 0;
  int64_t context = 0;
  uint64_t seed = 0;
  nlohmann::json shape =
      nlohmann::json::object();  // kernel-specific, e.g. {"rows":..,"cols":..,"type":"q4_K"}
  Verdict verdict = Verdict::pass;
  std::string skip_reason;
  std::string error;  // a CUDA or other error that failed this case
  std::vector<Comparison> comparisons;
  std::optional<Timing> hot, cold;
  // Hot, N launches back to back per sample (Timing::launches_per_sample): the per-launch time
  // without the event + launch floor, for comparing with peers' back-to-back means. Kernel cases
  // only; roofline % and the gate stay on `hot`.
  std::optional<Timing> b2b;
  uint64_t bytes = 0;  // bytes the timed work must move (reads + writes)
  uint64_t flops = 0;
  std::optional<double> tok_s;              // steps only
  std::optional<double> copy_roofline_pct;  // bytes / hot median vs measured copy rate
  std::optional<double> gemm_roofline_pct;  // flops / hot median vs measured bf16 GEMM rate
  std::string repro;                        // command line that reruns exactly this case
};

nlohmann::json to_json(const Tolerance& t);
nlohmann::json to_json(const Comparison& c);
nlohmann::json to_json(const CaseResult& r);

}  // namespace fb
