#pragma once
#include <CLI/CLI.hpp>

namespace fb::report {

// `fusebench report RESULTS... [--llama-bench F] [--ggml-perf F] -o DIR` (README "Commands").
void add_report_command(CLI::App& app);

}  // namespace fb::report
