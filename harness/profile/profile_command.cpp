#include "harness/profile/profile_command.h"

#include <fmt/format.h>

#include <memory>

#include "harness/cli/exit_codes.h"
#include "harness/profile/cupti_capture.h"
#include "harness/results/results.h"
#include "harness/runner/runner.h"

namespace fb::profile {

namespace {

struct ProfileArgs {
  RunFilters filters;
  std::string scenario_dir, json;
  double min_seconds = 0.05;
  int min_samples = 10;
};

void run(const ProfileArgs& a, int argc, const char* const* argv) {
  // First, before any CUDA call or NVTX range: CUPTI sees only what happens after it is enabled.
  Capture capture;
  try {
    capture.start();
  } catch (const std::runtime_error& e) {
    throw CliError(kExitUsage, fmt::format("profile: {}", e.what()));
  }
  RunEnv env = capture_env(argc, argv, a.filters.seeds.empty() ? 0 : a.filters.seeds.front());
  if (!env.device.available)
    throw CliError(kExitUsage, fmt::format("profile needs a GPU: {}", env.device.unavailable_reason));
  std::vector<Scenario> scenarios;
  try {
    scenarios = load_scenarios(a.scenario_dir.empty() ? default_scenario_dir()
                                                      : std::filesystem::path(a.scenario_dir));
  } catch (const ScenarioError& e) {
    throw CliError(kExitBadInput, e.what());
  }
  RunOptions opt;
  opt.bench = true;
  opt.cold = false;  // shares of the hot steady state; the L2 flush is not the step's work
  opt.timing.min_seconds = a.min_seconds;
  opt.timing.min_samples = a.min_samples;
  opt.filters = a.filters;
  opt.argv0 = argc > 0 ? argv[0] : "fusebench";
  opt.scenario_dir = a.scenario_dir;
  std::vector<Group> groups;
  // One group per case (or step): its label without the "[i/N] " counter.
  opt.progress = [&](const std::string& line) {
    fmt::print(stderr, "{}\n", line);
    const auto cut = line.find("] ");
    groups.push_back({groups.size() + 1, cut == std::string::npos ? line : line.substr(cut + 2)});
    capture.begin_group(groups.back().id);
  };
  RunReport report;
  try {
    report = run_scenarios(scenarios, opt, env.device, std::nullopt);
  } catch (const std::invalid_argument& e) {
    throw CliError(kExitBadInput, e.what());
  }
  const ActivityLog log = capture.stop();
  if (report.cases.empty()) {
    for (const auto& n : report.notes) fmt::print(stderr, "note: {}\n", n);
    throw CliError(kExitUsage, "the filters selected no scenario case (see `fusebench list`)");
  }
  const nlohmann::json prof = aggregate(log, groups);
  fmt::print("{}", render_table(prof));
  for (const auto& n : report.notes) fmt::print("note: {}\n", n);
  size_t passed = 0, failed = 0, skipped = 0;
  for (const auto& r : report.cases) {
    passed += r.verdict == Verdict::pass;
    failed += r.verdict == Verdict::fail;
    skipped += r.verdict == Verdict::skip;
  }
  if (!a.json.empty()) {
    nlohmann::json doc = {{"schema", kResultsSchemaId},
                          {"schema_version", kResultsSchemaVersion},
                          {"schema_minor", kResultsSchemaMinor},
                          {"kind", "profile"},
                          {"env", to_json(env)},
                          {"baselines", nullptr},
                          {"cases", nlohmann::json::array()},
                          {"summary", {{"passed", passed}, {"failed", failed}, {"skipped", skipped}}},
                          {"profile", prof}};
    for (const auto& r : report.cases) doc["cases"].push_back(to_json(r));
    if (const auto problems = validate_results(doc); !problems.empty())
      throw CliError(kExitInternal,
                     fmt::format("profile document fails its own schema: {}", problems.front()));
    try {
      write_json_atomically(a.json, doc);
    } catch (const std::runtime_error& e) {
      throw CliError(kExitIo, e.what());
    }
    fmt::print(stderr, "profile: wrote {}\n", a.json);
  }
  if (failed) throw CliError(kExitCheckFailed, fmt::format("{} case(s) failed their numerics", failed));
}

}  // namespace

void add_profile_command(CLI::App& app, int argc, const char* const* argv) {
  auto a = std::make_shared<ProfileArgs>();
  CLI::App* cmd = app.add_subcommand(
      "profile",
      "Per-kernel time share of each case (or decode/prefill step) of a scenario, from CUPTI activity\n"
      "records mapped to the NVTX ranges of the `fusebench` domain; works without nsys. Each case runs\n"
      "a short hot timing loop under capture; the table lists, per case, every GPU kernel with its\n"
      "NVTX range, calls, time per call and share of the case's kernel time. --json writes a results\n"
      "document (kind profile) with a `profile` section that `fusebench compare` and `report` read.");
  cmd->add_option("SCENARIO", a->filters.scenarios, "scenario name or regex (repeatable)")->required();
  cmd->add_option("--kernel", a->filters.kernels, "kernel name (repeatable)");
  cmd->add_option("--context", a->filters.contexts, "context length (repeatable)");
  cmd->add_option("--tokens", a->filters.tokens, "T (repeatable)");
  cmd->add_option("--variant", a->filters.variants, "variant (repeatable)");
  cmd->add_option("--instance", a->filters.instances, "kernel instance (repeatable)");
  cmd->add_option("--seed", a->filters.seeds, "replace the scenarios' seeds");
  cmd->add_option("--scenario-dir", a->scenario_dir, "directory of scenario .toml files");
  cmd->add_option("--json", a->json, "write the results JSON (kind profile) here");
  cmd->add_option("--min-seconds", a->min_seconds, "timed seconds per case under capture")
      ->capture_default_str();
  cmd->add_option("--min-samples", a->min_samples, "samples per case under capture")->capture_default_str();
  cmd->footer("Example: fusebench profile gemma4-31b-decode --context 8192 --json profile.json");
  cmd->callback([a, argc, argv] { run(*a, argc, argv); });
}

}  // namespace fb::profile
