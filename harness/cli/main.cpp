// fusebench: one binary, CLI11 subcommands. Exit codes: harness/cli/exit_codes.h (README).
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "harness/cli/exit_codes.h"
#include "harness/gate/compare_command.h"
#include "harness/gguf_tools/gguf_command.h"
#include "harness/model_tools/model_commands.h"
#include "harness/profile/profile_command.h"
#include "harness/report/report_command.h"
#include "harness/runner/run_commands.h"

int main(int argc, char** argv) {
  CLI::App app{
      "fusebench: numerics and speed of fused LLM-inference kernels (gemma4-31b, qwen3.5-moe)\n"
      "against Eigen/fp64 CPU references, their unfused twins, and llama.cpp.",
      "fusebench"};
  app.set_version_flag("--version", "fusebench 0.1.0");
  app.require_subcommand(1);
  app.footer(
      "Exit codes: 0 ok, 1 a check failed, 2 usage error, 3 malformed or unsuitable input, "
      "4 I/O error, 70 internal error.\nRun 'fusebench <command> --help' for details.");
  fb::add_list_command(app);
  fb::add_check_command(app, argc, argv);
  fb::add_bench_command(app, argc, argv);
  fb::add_make_model_command(app);
  fb::add_fuse_command(app);
  fb::add_gguf_command(app);
  fb::gate::add_compare_command(app);
  fb::profile::add_profile_command(app, argc, argv);
  fb::report::add_report_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return fb::kExitUsage;
  } catch (const fb::CliError& e) {
    std::fflush(stdout);
    fmt::print(stderr, "fusebench: {}\n", e.what());
    return e.code();
  } catch (const std::exception& e) {
    std::fflush(stdout);
    fmt::print(stderr, "fusebench: internal error: {}\n", e.what());
    return fb::kExitInternal;
  }
  return fb::kExitOk;
}
