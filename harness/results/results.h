#pragma once
// The results JSON (DESIGN §6), schema results/schema/fusebench-results.schema.json, version in
// kResultsSchemaVersion. Self-describing: env (GPU, SMs, clocks, driver, CUDA, host, git sha +
// dirty, build type, argv, seed), baselines, and per case the scenario, kernel, variant, shape,
// numerics, samples, summary, bytes, flops, tok/s and % of roofline.
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "harness/device/device_info.h"

namespace fb {

inline constexpr const char* kResultsSchemaId = "fusebench-results";
inline constexpr int kResultsSchemaVersion = 1;
// Additive changes within a version (new optional keys, so older files still validate and load);
// written as "schema_minor", absent (= 0) in older files. 1: timings' launches_per_sample, cases' b2b.
inline constexpr int kResultsSchemaMinor = 1;

struct RunEnv {
  std::string host;
  std::string os;
  std::string git_sha;     // compiled in at configure time, or $FUSEBENCH_GIT_SHA; "unknown" if neither
  bool git_dirty = false;  // also true when unknown: an unvouched tree counts as dirty
  std::string build_type;
  std::string compiler;
  std::string cuda_compiler;  // empty in CPU-only builds
  std::vector<std::string> argv;
  uint64_t seed = 0;
  std::string started_utc;  // ISO 8601
  // TEST-ONLY: FUSEBENCH_INJECT_SLOWDOWN's fraction when set (harness/timing/inject_slowdown.h), so a
  // results file timed with an injected slowdown can never pass for a real one.
  std::optional<double> injected_slowdown;
  DeviceInfo device;
};

// Throws std::invalid_argument when $FUSEBENCH_GIT_SHA / $FUSEBENCH_GIT_DIRTY are set but malformed:
// better to fail at start than to write an unusable results file after a long run.
RunEnv capture_env(int argc, const char* const* argv, uint64_t seed);
nlohmann::json to_json(const RunEnv& env);

// Writes `doc` to `path` atomically: a temp file in the same directory, flushed and fsynced, then
// renamed over `path`; a run killed mid-write leaves the old file or none.
void write_json_atomically(const std::filesystem::path& path, const nlohmann::json& doc);

// Checks the structural invariants the schema states (required keys, types, version) in C++, so a
// results file can be validated without Python; returns the list of problems (empty = valid), each
// "<JSON pointer>: <what is wrong>". It interprets the schema file itself (embedded at build time,
// see results_schema_text), so the C++ and Python validators cannot drift apart; it then checks
// what JSON Schema cannot say: summary counts match the case verdicts, and a timing's sample columns
// have equal length.
std::vector<std::string> validate_results(const nlohmann::json& doc);

// The text of results/schema/fusebench-results.schema.json as of the build.
std::string_view results_schema_text();

}  // namespace fb
