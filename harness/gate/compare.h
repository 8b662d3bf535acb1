#pragma once
// `fusebench compare BASE NEW` as a library: match the cases of two results documents, judge each
// timing (hot and cold) with the gate statistics, flag numerics that got worse, refuse documents
// from different GPUs or build configurations unless forced, and render text and Markdown.
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "harness/gate/stats.h"

namespace fb::gate {

struct CompareOptions {
  GateOptions gate;
  bool force = false;           // compare across GPUs / build configurations anyway
  bool allow_injected = false;  // test-only: accept results timed with an injected slowdown
  bool fail_on_unsure = false;
  double numerics_factor = 2.0;  // nmse may grow by this factor before it counts as worse
  double nmse_floor = 1e-12;     // nmse changes below this are rounding, not a regression
};

struct Row {
  std::string key;          // scenario/kernel/instance/variant/layout/T/ctx/seed
  std::string measurement;  // "hot" | "cold"
  double base_ms = 0, next_ms = 0;
  size_t base_n = 0, next_n = 0;
  Decision decision;
};

struct NumericsRow {
  std::string key, against, what;
};

struct ShareRow {  // per-kernel share of a profiled group, when both documents carry a profile
  std::string group, kernel;
  double base_pct = 0, next_pct = 0;
};

struct Comparison {
  std::vector<Row> rows;
  std::vector<NumericsRow> numerics;
  std::vector<ShareRow> shares;
  std::vector<std::string> only_base, only_next;  // case keys present on one side only
  size_t matched = 0;                             // cases present in both (timed or not)
  std::vector<std::string> env_notes;             // differences that were allowed (forced or harmless)
  std::string base_label, next_label;             // "<gpu> <sha>" for headings
  size_t count(Change c) const;
  bool regressed(const CompareOptions& o) const;  // the exit-1 condition
};

// Why the two documents may not be compared (different GPU, build type, compilers, backend,
// injected slowdown), empty when they may. Ignored with CompareOptions::force (except injection,
// which needs allow_injected).
std::vector<std::string> refusal_reasons(const nlohmann::json& base, const nlohmann::json& next,
                                         const CompareOptions& o);

// Stable identity of a case across runs.
std::string case_key(const nlohmann::json& c);

// Kept samples of a timing object: those not flagged throttled (all of them if every one was).
std::vector<double> kept_samples(const nlohmann::json& timing);
// The same samples in thousands of SM cycles (ms x per-sample MHz); empty when a clock is unknown.
std::vector<double> kept_cycles(const nlohmann::json& timing);

Comparison compare_results(const nlohmann::json& base, const nlohmann::json& next, const CompareOptions& o);

std::string render_text(const Comparison& c, const CompareOptions& o);
std::string render_markdown(const Comparison& c, const CompareOptions& o);
// Every decision with its statistics, the numerics findings and the options used.
nlohmann::json to_json(const Comparison& c, const CompareOptions& o);

}  // namespace fb::gate
