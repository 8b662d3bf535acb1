#pragma once
#include <CLI/CLI.hpp>

namespace fb {

// `fusebench list`, `fusebench check`, `fusebench bench` (README "Commands").
void add_list_command(CLI::App& app);
void add_check_command(CLI::App& app, int argc, const char* const* argv);
void add_bench_command(CLI::App& app, int argc, const char* const* argv);

}  // namespace fb
