// `fusebench report`: the tables and plots are made by scripts/fusebench_report.py (matplotlib is
// the plotting tool, and the llama.cpp readers live beside it in scripts/ggml_ingest.py); this
// subcommand finds the script and python3 and passes the arguments through, so the report is one
// `fusebench` command like the others.
#include "harness/report/report_command.h"

#include <fmt/format.h>
#include <spawn.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "harness/cli/exit_codes.h"

extern char** environ;

#ifndef FUSEBENCH_SOURCE_DIR
#define FUSEBENCH_SOURCE_DIR "."
#endif

namespace fb::report {

namespace {

struct ReportArgs {
  std::vector<std::string> results, llama_bench, ggml_perf;
  std::string outdir;
  bool no_plots = false;
};

std::filesystem::path script_path() {
  if (const char* d = std::getenv("FUSEBENCH_SCRIPTS_DIR"); d && *d)
    return std::filesystem::path(d) / "fusebench_report.py";
  return std::filesystem::path(FUSEBENCH_SOURCE_DIR) / "scripts" / "fusebench_report.py";
}

int run(const ReportArgs& a) {
  const auto script = script_path();
  if (!std::filesystem::exists(script))
    throw CliError(kExitIo, fmt::format("{} not found (set FUSEBENCH_SCRIPTS_DIR)", script.string()));
  std::vector<std::string> args = {"python3", script.string()};
  for (const auto& r : a.results) args.push_back(r);
  for (const auto& f : a.llama_bench) args.insert(args.end(), {"--llama-bench", f});
  for (const auto& f : a.ggml_perf) args.insert(args.end(), {"--ggml-perf", f});
  args.insert(args.end(), {"-o", a.outdir});
  if (a.no_plots) args.push_back("--no-plots");
  std::vector<char*> argv;
  for (auto& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawnp(&pid, "python3", nullptr, nullptr, argv.data(), environ) != 0)
    throw CliError(kExitUsage, "report needs python3 on PATH (and matplotlib for the plots)");
  int status = 0;
  if (waitpid(pid, &status, 0) < 0) throw CliError(kExitInternal, "waitpid failed");
  if (!WIFEXITED(status)) throw CliError(kExitInternal, "the report script was killed");
  return WEXITSTATUS(status);
}

}  // namespace

void add_report_command(CLI::App& app) {
  auto a = std::make_shared<ReportArgs>();
  CLI::App* cmd = app.add_subcommand(
      "report",
      "Markdown report and PNG plots from results files (bench, profile; .json.gz too): throughput\n"
      "vs context ('ctx | fused | unfused | llama.cpp | roofline'), per kernel 'ours | ggml | ratio'\n"
      "against ggml rows of the same shape and type, per-kernel time share; llama.cpp inputs are read\n"
      "by key: llama-bench -o json/jsonl, test-backend-ops perf (console or --output sql). Runs\n"
      "scripts/fusebench_report.py with python3 (plots need matplotlib).");
  cmd->add_option("RESULTS", a->results, "results files")->required()->check(CLI::ExistingFile);
  cmd->add_option("--llama-bench", a->llama_bench, "llama-bench JSON or JSONL output (repeatable)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--ggml-perf", a->ggml_perf, "test-backend-ops perf output, console or SQL (repeatable)")
      ->check(CLI::ExistingFile);
  cmd->add_option("-o,--outdir", a->outdir, "output directory (report.md, report.json, *.png)")->required();
  cmd->add_flag("--no-plots", a->no_plots, "tables only");
  cmd->footer(
      "Example: fusebench report results/nvidia-h200/*/bench-*.json.gz --ggml-perf ggml.perf.txt -o report/");
  cmd->callback([a] {
    const int rc = run(*a);
    if (rc != 0)
      throw CliError(rc == 2 ? kExitUsage : kExitBadInput, fmt::format("report script exited {}", rc));
  });
}

}  // namespace fb::report
