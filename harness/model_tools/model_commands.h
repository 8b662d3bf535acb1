#pragma once
#include <CLI/CLI.hpp>

namespace fb {

// `fusebench make-model --model M --scale S --seed N -o FILE.gguf`
void add_make_model_command(CLI::App& app);
// `fusebench fuse FILE.gguf [-o FUSED.gguf]`: report (and optionally apply) load-time fusions.
void add_fuse_command(CLI::App& app);

}  // namespace fb
