#pragma once
#include <CLI/CLI.hpp>

namespace fb {

// `fusebench check`: run the numerics and fusion checks, print a verdict table, exit 1 on any
// violation.
void add_check_command(CLI::App& app);

}  // namespace fb
