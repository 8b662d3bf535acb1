#pragma once
#include <CLI/CLI.hpp>

namespace fb::profile {

// `fusebench profile SCENARIO` (README "Commands").
void add_profile_command(CLI::App& app, int argc, const char* const* argv);

}  // namespace fb::profile
