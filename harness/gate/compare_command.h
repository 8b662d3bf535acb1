#pragma once
#include <CLI/CLI.hpp>
#include <filesystem>
#include <string>

#include "harness/gate/compare.h"

namespace fb::gate {

// `fusebench compare BASE NEW` (README "Commands"). Exit 0 no regression, 1 a case got SLOWER or
// its numerics worse, 2 usage error or documents that may not be compared (different GPU/build).
void add_compare_command(CLI::App& app);

// Options shared by `compare` and `bench --compare-to`.
void add_gate_options(CLI::App* cmd, CompareOptions& o);

// Directory of committed baselines: $FUSEBENCH_BASELINE_DIR, else results/baselines in the source tree.
std::filesystem::path baseline_root();
// "NVIDIA H200" -> "nvidia-h200": the directory name of a GPU's baselines.
std::string gpu_slug(const std::string& gpu_name);

// Compares the results file `next` with `base` ("auto": every baseline file of next's GPU, merged,
// cases not in `next` ignored). Prints the text table, writes Markdown when `markdown` is not
// empty, and returns the exit code (throws CliError for refusals and unreadable input).
int run_compare(const std::string& base, const std::filesystem::path& next, const CompareOptions& o,
                const std::string& markdown, const std::string& json_out = "");

}  // namespace fb::gate
