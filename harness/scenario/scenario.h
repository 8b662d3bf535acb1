#pragma once
// A scenario: one human-edited TOML file under scenarios/ that says what to run (model, phase,
// token counts, contexts, kernels or layer or whole step, variants, layouts, seeds) and any
// tolerance overrides, each with its reason. Format and keys: scenarios/README.md.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace fb {

enum class Phase { decode, prefill };
enum class RunUnit { kernel, layer, step };
const char* to_string(Phase p);
const char* to_string(RunUnit r);

struct ToleranceOverride {
  std::string kernel;  // registry kernel name the override applies to
  std::optional<double> max_abs, max_rel, min_cosine, max_nmse;
  std::string reason;  // required: why the central table is not right for this case
};

struct Scenario {
  std::filesystem::path file;
  std::string name;  // unique across scenarios/; defaults to the file stem
  std::string description;
  std::string model;           // "gemma4-31b" | "qwen3.5-moe" | path to a .gguf
  std::string scale = "full";  // full | tiny (built-in models only)
  Phase phase = Phase::decode;
  std::vector<int64_t> tokens;    // T per step: decode 1..4, prefill e.g. 512, 2048
  std::vector<int64_t> contexts;  // context lengths (KV positions already filled)
  RunUnit run = RunUnit::kernel;
  std::vector<std::string> kernels;   // registry names; empty with run = kernel means "all that apply"
  std::vector<std::string> variants;  // e.g. fused, unfused; empty = every variant a kernel has
  std::vector<std::string> layouts;   // e.g. ggml, coalesced; empty = every layout a kernel has
  std::vector<uint64_t> seeds = {1};
  std::vector<ToleranceOverride> tolerances;
  std::vector<std::string> tags;  // e.g. "ci" for the tiny scenarios CI runs
};

// Thrown for any invalid scenario file; what() = "<file>:<line>:<col>: <field>: <message>".
class ScenarioError : public std::runtime_error {
 public:
  ScenarioError(std::filesystem::path file, int64_t line, int64_t column, std::string field,
                std::string message);
  const std::filesystem::path& file() const { return m_file; }
  int64_t line() const { return m_line; }      // 1-based; 0 when the error is about the file as a whole
  int64_t column() const { return m_column; }  // 1-based; 0 when unknown
  const std::string& field() const { return m_field; }  // e.g. "tolerance[1].max_nmse"; "" for syntax errors

 private:
  std::filesystem::path m_file;
  int64_t m_line;
  int64_t m_column;
  std::string m_field;
};

// Parses and validates one file: unknown keys are rejected, not ignored; every value is checked
// (types, ranges, known model names or existing GGUF path, known phase/run).
Scenario load_scenario(const std::filesystem::path& file);
Scenario parse_scenario(std::string_view toml_text, const std::filesystem::path& file_name);
// Every *.toml under `dir`, sorted by name; duplicate names are an error naming both files.
std::vector<Scenario> load_scenarios(const std::filesystem::path& dir);

// The scenarios/ directory: $FUSEBENCH_SCENARIOS, else the source tree's scenarios/ (compiled in),
// else scenarios/ next to the executable's ../share/fusebench.
std::filesystem::path default_scenario_dir();

}  // namespace fb
