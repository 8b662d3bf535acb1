#pragma once
// `fusebench gguf inspect|dequant|quantize`: look inside GGUF files and move single tensors between
// GGUF and NumPy .npy (float32, shape (rows, cols)). Failures throw fb::CliError with an exit code
// from harness/cli/exit_codes.h; main() prints them.
#include <filesystem>
#include <iosfwd>
#include <string>

namespace CLI {
class App;
}

namespace fb {

// Registers `gguf` and its subcommands on `app`; their callbacks write to std::cout / std::cerr.
void add_gguf_command(CLI::App& app);

struct GgufInspectOptions {
  std::filesystem::path file;
  bool json = false;  // machine-readable output on `out`
  bool full = false;  // every array item and full strings instead of the first few
};
void gguf_inspect(const GgufInspectOptions& opts, std::ostream& out);

struct GgufDequantOptions {
  std::filesystem::path file;
  std::string tensor;
  std::filesystem::path output;
};
// Notes (flattening, what was written) go to `err`.
void gguf_dequant(const GgufDequantOptions& opts, std::ostream& err);

struct GgufQuantizeOptions {
  std::filesystem::path input;
  std::string type;  // q4_K q5_K q6_K q8_0 f16 bf16 f32 (case-insensitive)
  std::string name = "tensor";
  std::filesystem::path output;
};
void gguf_quantize(const GgufQuantizeOptions& opts, std::ostream& err);

}  // namespace fb
