#include "harness/runner/case_result.h"

#include <cmath>

#include "harness/check/check_case.h"

namespace fb {

const char* to_string(Verdict v) {
  switch (v) {
    case Verdict::pass:
      return "pass";
    case Verdict::fail:
      return "fail";
    case Verdict::skip:
      return "skip";
  }
  return "?";
}

namespace {
// JSON has no infinity: an absent bound is written as null.
nlohmann::json bound(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }
nlohmann::json opt(const std::optional<double>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}
}  // namespace

nlohmann::json to_json(const Tolerance& t) {
  return {{"bit_exact", t.bit_exact},   {"max_abs", bound(t.max_abs)},   {"max_rel", bound(t.max_rel)},
          {"min_cosine", t.min_cosine}, {"max_nmse", bound(t.max_nmse)}, {"source", t.source}};
}

nlohmann::json to_json(const Comparison& c) {
  return {{"against", c.against},
          {"metrics", to_json(c.metrics)},
          {"tolerance", to_json(c.tolerance)},
          {"verdict", to_string(c.verdict)},
          {"why", c.why}};
}

nlohmann::json to_json(const CaseResult& r) {
  nlohmann::json comparisons = nlohmann::json::array();
  for (const auto& c : r.comparisons) comparisons.push_back(to_json(c));
  return {{"scenario", r.scenario},
          {"kernel", r.kernel},
          {"variant", r.variant},
          {"layout", r.layout},
          {"backend", r.backend},
          {"tokens", r.tokens},
          {"context", r.context},
          {"seed", r.seed},
          {"shape", r.shape},
          {"verdict", to_string(r.verdict)},
          {"skip_reason", r.skip_reason},
          {"error", r.error},
          {"comparisons", comparisons},
          {"hot", r.hot ? to_json(*r.hot) : nlohmann::json(nullptr)},
          {"cold", r.cold ? to_json(*r.cold) : nlohmann::json(nullptr)},
          {"b2b", r.b2b ? to_json(*r.b2b) : nlohmann::json(nullptr)},
          {"bytes", r.bytes},
          {"flops", r.flops},
          {"tok_s", opt(r.tok_s)},
          {"copy_roofline_pct", opt(r.copy_roofline_pct)},
          {"gemm_roofline_pct", opt(r.gemm_roofline_pct)},
          {"repro", r.repro}};
}

}  // namespace fb
