#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>

#include "harness/cli/exit_codes.h"
#include "harness/model_tools/model_commands.h"
#include "reference/gguf/gguf_error.h"
#include "reference/model/make_model.h"

namespace fb {

namespace {

struct MakeModelArgs {
  std::string model;
  std::string scale = "tiny";
  uint64_t seed = 0;
  std::string recipe = "q4_k_m";
  unsigned threads = 0;
  std::string weights = "quantized";
  std::string out;
  bool quiet = false;
};

void run_make_model(const MakeModelArgs& a) {
  ModelConfig config;
  QuantRecipe recipe;
  try {
    config = model_config(a.model, a.scale);
    recipe = parse_quant_recipe(a.recipe);
  } catch (const std::invalid_argument& e) {
    throw CliError(kExitUsage, e.what());
  }
  const auto specs = model_tensors(config, recipe);
  uint64_t total = 0;
  for (const auto& s : specs) total += s.n_bytes();
  const auto parent = std::filesystem::absolute(a.out).parent_path();
  std::error_code ec;
  const auto space = std::filesystem::space(parent, ec);
  if (ec) throw CliError(kExitIo, fmt::format("cannot write to {}: {}", parent.string(), ec.message()));
  if (space.available < total + (total >> 6)) {
    throw CliError(kExitIo,
                   fmt::format("{} needs {:.2f} GiB, only {:.2f} GiB free in {}", a.out, total / 1073741824.0,
                               space.available / 1073741824.0, parent.string()));
  }
  fmt::print(stderr, "make-model: {} ({}), recipe {}, weights {}, seed {}: {} tensors, {:.3f} GiB -> {}\n",
             config.name, config.scale_name(), to_string(recipe), a.weights, a.seed, specs.size(),
             total / 1073741824.0, a.out);

  MakeModelOptions opt;
  opt.seed = a.seed;
  opt.recipe = recipe;
  opt.threads = a.threads;
  opt.fill = a.weights == "quantized" ? WeightFill::quantized : WeightFill::block_sampled;
  const auto t0 = std::chrono::steady_clock::now();
  uint64_t done = 0;
  double last_report = -1.0;
  const bool tty = ::isatty(2);
  if (!a.quiet) {
    // On a terminal, one line redrawn at most 5x a second; in a log, a line every 10 seconds.
    opt.on_tensor = [&, tty](size_t i, size_t n, const TensorSpec& s) {
      done += s.n_bytes();
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const bool last = i + 1 == n;
      if (!last && secs - last_report < (tty ? 0.2 : 10.0)) return;
      last_report = secs;
      fmt::print(stderr, "{}  [{:>4}/{}] {:5.1f}% {:7.1f} s  {:<40}{}", tty ? "\r" : "", i + 1, n,
                 100.0 * done / total, secs, s.name.substr(0, 40), tty && !last ? "" : "\n");
    };
  }
  MakeModelResult r;
  try {
    r = make_model(config, a.out, opt);
  } catch (const std::system_error& e) {
    throw CliError(kExitIo, fmt::format("writing {}: {}", a.out, e.what()));
  } catch (const GgufError& e) {
    throw CliError(kExitIo, e.what());
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fmt::print("wrote {}: {} tensors, {} parameters, {} bytes in {:.1f} s\n", a.out, r.n_tensors, r.n_params,
             r.n_bytes, secs);
}

}  // namespace

void add_make_model_command(CLI::App& app) {
  auto args = std::make_shared<MakeModelArgs>();
  CLI::App* cmd = app.add_subcommand(
      "make-model",
      "Write a synthetic model GGUF: llama.cpp tensor names, shapes and metadata; random weights quantized\n"
      "with ggml's reference quantizers per the Q4_K_M recipe. Deterministic for a seed.");
  cmd->add_option("--model", args->model, "gemma4-31b | qwen3.5-moe")
      ->required()
      ->check(CLI::IsMember({"gemma4-31b", "qwen3.5-moe"}));
  cmd->add_option("--scale", args->scale, "full (real shapes, ~18-20 GB) | tiny (same structure, small dims)")
      ->check(CLI::IsMember({"full", "tiny"}))
      ->capture_default_str();
  cmd->add_option("--seed", args->seed, "random seed (recorded in the file as fusebench.seed)")
      ->capture_default_str();
  cmd->add_option("--recipe", args->recipe,
                  "q4_k_m: llama-quant's Q4_K_M type mix; q4_k: all weights Q4_K (output Q6_K), so every\n"
                  "load-time fusion applies")
      ->check(CLI::IsMember({"q4_k_m", "q4_k"}))
      ->capture_default_str();
  cmd->add_option(
         "--weights", args->weights,
         "quantized: every row quantized from seeded floats; block-sampled: the first 256 rows of\n"
         "each quantized tensor made so, later rows sampled block by block from them (valid blocks,\n"
         "same distribution, ~disk speed; for timing and fused-vs-unfused checks)")
      ->check(CLI::IsMember({"quantized", "block-sampled"}))
      ->capture_default_str();
  cmd->add_option("--threads", args->threads, "quantization threads (0 = all cores)")->capture_default_str();
  cmd->add_option("-o,--output", args->out, "output .gguf path (written via a temp file, then renamed)")
      ->required();
  cmd->add_flag("-q,--quiet", args->quiet, "no progress on stderr");
  cmd->footer("Example: fusebench make-model --model gemma4-31b --scale tiny --seed 1 -o gemma-tiny.gguf");
  cmd->callback([args] { run_make_model(*args); });
}

}  // namespace fb
