#include "harness/runner/run_commands.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>

#include "harness/check/checks.h"
#include "harness/cli/exit_codes.h"
#include "harness/device/device_info.h"
#include "harness/gate/compare_command.h"
#include "harness/results/results.h"
#include "harness/runner/kernel_registry.h"
#include "harness/runner/runner.h"

namespace fb {

namespace {

struct RunArgs {
  RunFilters filters;
  std::vector<std::string> sections;  // builtin check sections
  bool no_builtin = false;
  std::vector<std::string> models;
  std::string json;
  std::string scenario_dir;
  bool cpu_only = false;
  bool no_cold = false;
  bool no_b2b = false;
  double min_seconds = 0.5;
  int min_samples = 20;
  std::string compare_to, gate_markdown;  // bench --compare-to: the regression gate after the run
  gate::CompareOptions gate;
};

std::vector<Scenario> load_or_die(const std::string& dir) {
  try {
    return load_scenarios(dir.empty() ? default_scenario_dir() : std::filesystem::path(dir));
  } catch (const ScenarioError& e) {
    throw CliError(kExitBadInput, e.what());
  } catch (const std::filesystem::filesystem_error& e) {
    throw CliError(kExitIo, e.what());
  }
}

void add_filter_options(CLI::App* cmd, RunArgs& a) {
  cmd->add_option("--scenario", a.filters.scenarios, "scenario name or regex (repeatable); default: all");
  cmd->add_option("--kernel", a.filters.kernels, "kernel name (repeatable); default: all that apply");
  cmd->add_option("--context", a.filters.contexts, "context length (repeatable); default: the scenario's");
  cmd->add_option("--tag", a.filters.tags, "only scenarios carrying this tag (repeatable), e.g. ci");
  cmd->add_option("--instance", a.filters.instances, "only this kernel instance, e.g. ffn_gate+ffn_up");
  cmd->add_option("--variant", a.filters.variants, "only this variant (its unfused twin still runs)");
  cmd->add_option("--seed", a.filters.seeds, "replace the scenarios' seeds (repeatable)");
  cmd->add_option("--tokens", a.filters.tokens, "only this T (tokens per step; repeatable)");
  cmd->add_option("--scenario-dir", a.scenario_dir,
                  "directory of scenario .toml files (default: scenarios/)");
  cmd->add_option("--json", a.json, "write the results JSON here (atomically; schema results/schema)");
  cmd->add_flag("--cpu-only", a.cpu_only, "do not use a GPU even if one is present");
}

CaseResult from_builtin(const CheckCase& c) {
  CaseResult r;
  r.scenario = "builtin";
  r.kernel = c.section;
  r.variant = "default";
  r.layout = "default";
  r.backend = c.section == "gpu" ? "cuda" : "cpu-reference";
  r.shape = {{"check", c.name}, {"criterion", c.criterion}, {"detail", c.detail}, {"data", c.data}};
  r.verdict = c.status == CheckStatus::pass   ? Verdict::pass
              : c.status == CheckStatus::fail ? Verdict::fail
                                              : Verdict::skip;
  if (r.verdict == Verdict::skip) r.skip_reason = c.detail;
  if (r.verdict == Verdict::fail) r.error = c.detail;
  r.repro = c.repro;
  return r;
}

std::string fmt_us(double ms) {
  return ms < 1.0 ? fmt::format("{:.2f} us", ms * 1e3) : fmt::format("{:.3f} ms", ms);
}

void print_cases(const std::vector<CaseResult>& cases, bool bench) {
  fmt::print("{:<5} {:<28} {:<14} {:<32} {:<8} {:>7} {:>4}  {}\n", "", "scenario", "kernel", "instance",
             "variant", "ctx", "seed",
             bench ? "hot median (IQR) | cold | b2b | %copy-roofline" : "comparisons");
  for (const auto& r : cases) {
    std::string what;
    if (bench && r.hot) {
      what =
          fmt::format("{} ({}){}{}{}{}", fmt_us(r.hot->summary.median_ms), fmt_us(r.hot->summary.iqr_ms),
                      r.cold ? " | " + fmt_us(r.cold->summary.median_ms) : std::string(),
                      // Labelled: with --no-cold the columns shift, and b2b must not read as cold.
                      r.b2b ? " | b2b " + fmt_us(r.b2b->summary.median_ms) : std::string(),
                      r.copy_roofline_pct ? fmt::format(" | {:.1f}%", *r.copy_roofline_pct) : std::string(),
                      r.backend == "cpu-reference" ? " [CPU reference timing]" : "");
    } else if (!r.error.empty()) {
      what = "error: " + r.error;
    } else if (r.verdict == Verdict::skip) {
      what = "skipped: " + r.skip_reason;
    } else {
      for (const auto& c : r.comparisons)
        what += fmt::format("{}vs {}: {}", what.empty() ? "" : "; ", c.against,
                            c.verdict == Verdict::pass ? c.metrics.summary() : c.why);
    }
    std::string instance =
        r.shape.is_object() && r.shape.contains("tensor")  ? r.shape["tensor"].get<std::string>()
        : r.shape.is_object() && r.shape.contains("check") ? r.shape["check"].get<std::string>()
                                                           : "";
    if (r.shape.is_object() && r.shape.contains("type")) instance += " " + r.shape["type"].get<std::string>();
    fmt::print("{:<5} {:<28} {:<14} {:<32} {:<8} {:>7} {:>4}  {}\n", to_string(r.verdict),
               r.scenario.substr(0, 28), r.kernel, instance.substr(0, 32), r.variant,
               r.context ? std::to_string(r.context) : "-",
               r.scenario == "builtin" ? "-" : std::to_string(r.seed), what);
  }
}

int finish(const std::vector<CaseResult>& cases, const std::vector<std::string>& notes, const RunEnv& env,
           const std::optional<DeviceBaselines>& baselines, const std::string& kind, const std::string& json,
           double secs, bool bench) {
  print_cases(cases, bench);
  size_t passed = 0, failed = 0, skipped = 0;
  for (const auto& r : cases) {
    passed += r.verdict == Verdict::pass;
    failed += r.verdict == Verdict::fail;
    skipped += r.verdict == Verdict::skip;
  }
  for (const auto& n : notes) fmt::print("note: {}\n", n);
  for (const auto& r : cases) {
    if (r.verdict != Verdict::fail) continue;
    fmt::print("FAILED {} {} {}: {}\n  reproduce: {}\n", r.scenario, r.kernel, r.variant,
               r.error.empty() ? (r.comparisons.empty() ? "" : r.comparisons.back().why) : r.error, r.repro);
  }
  fmt::print("{} passed, {} failed, {} skipped ({:.1f} s)\n", passed, failed, skipped, secs);
  if (!json.empty()) {
    nlohmann::json doc = {{"schema", kResultsSchemaId},
                          {"schema_version", kResultsSchemaVersion},
                          {"schema_minor", kResultsSchemaMinor},
                          {"kind", kind},
                          {"env", to_json(env)},
                          {"baselines", baselines ? to_json(*baselines) : nlohmann::json(nullptr)},
                          {"cases", nlohmann::json::array()},
                          {"summary", {{"passed", passed}, {"failed", failed}, {"skipped", skipped}}}};
    for (const auto& r : cases) doc["cases"].push_back(to_json(r));
    if (const auto problems = validate_results(doc); !problems.empty()) {
      throw CliError(kExitInternal,
                     fmt::format("results document fails its own schema: {}", problems.front()));
    }
    try {
      write_json_atomically(json, doc);
    } catch (const std::runtime_error& e) {
      throw CliError(kExitIo, e.what());
    }
    fmt::print(stderr, "{}: wrote {}\n", kind, json);
  }
  if (failed) throw CliError(kExitCheckFailed, fmt::format("{} case(s) failed", failed));
  return 0;
}

DeviceInfo device_for(const RunArgs& a, RunEnv& env) {
  if (a.cpu_only) {
    env.device.available = false;
    env.device.unavailable_reason = "--cpu-only";
  }
  return env.device;
}

void run(const RunArgs& a, bool bench, int argc, const char* const* argv) {
  RunEnv env = capture_env(argc, argv, a.filters.seeds.empty() ? 0 : a.filters.seeds.front());
  const DeviceInfo device = device_for(a, env);
  auto scenarios = load_or_die(a.scenario_dir);
  RunArgs args = a;
  std::vector<std::string> notes;
  if (!device.available && args.filters.scenarios.empty() && args.filters.tags.empty()) {
    // Full-scale scenarios need a GPU; on a CPU box run the tiny CI scenarios and say so.
    args.filters.tags = {"ci"};
    notes.push_back(
        fmt::format("no usable GPU ({}): running the tiny scenarios (tag ci) on the CPU reference",
                    device.unavailable_reason));
  }
  std::optional<DeviceBaselines> baselines;
  if (bench && device.available) {
    fmt::print(stderr, "bench: measuring copy bandwidth and bf16 GEMM rate on {}\n", device.name);
    baselines = measure_baselines();
    fmt::print("baselines on {}: copy {:.0f} GB/s, bf16 GEMM {:.0f} TFLOP/s\n", device.name,
               baselines->copy_gbps, baselines->bf16_gemm_tflops);
  }
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<CaseResult> cases;
  if (!bench && !a.no_builtin) {
    const std::set<std::string> sections(a.sections.begin(), a.sections.end());
    auto wanted = [&](const char* s) { return sections.empty() || sections.count(s); };
    const auto work = std::filesystem::temp_directory_path() / fmt::format("fusebench-check-{}", ::getpid());
    std::filesystem::create_directories(work);
    // Removed however the sections end: the tiny models must not pile up in /tmp.
    struct RemoveDir {
      std::filesystem::path p;
      ~RemoveDir() {
        std::error_code ec;
        std::filesystem::remove_all(p, ec);
      }
    } cleanup{work};
    const uint64_t seed = a.filters.seeds.empty() ? 1 : a.filters.seeds.front();
    std::vector<CheckCase> builtin;
    auto append = [&](std::vector<CheckCase> v) { builtin.insert(builtin.end(), v.begin(), v.end()); };
    if (wanted("formats")) append(run_format_checks(seed));
    if (wanted("fusion")) append(run_fusion_checks(seed, work, {a.models.begin(), a.models.end()}));
    if (wanted("gpu") && !a.cpu_only) append(run_gpu_checks(seed));
    for (const auto& c : builtin) cases.push_back(from_builtin(c));
  }
  RunOptions opt;
  opt.bench = bench;
  opt.cold = !a.no_cold;
  opt.b2b = !a.no_b2b;
  opt.timing.min_seconds = a.min_seconds;
  opt.timing.min_samples = a.min_samples;
  opt.filters = args.filters;
  opt.argv0 = argc > 0 ? argv[0] : "fusebench";
  opt.scenario_dir = a.scenario_dir;
  opt.progress = [](const std::string& line) { fmt::print(stderr, "{}\n", line); };
  RunReport report;
  try {
    report = run_scenarios(scenarios, opt, device, baselines);
  } catch (const std::invalid_argument& e) {
    throw CliError(kExitBadInput, e.what());
  }
  // A gate whose filters select nothing must not pass silently (a typo in --kernel would do that).
  if (report.cases.empty() && a.filters.any()) {
    for (const auto& n : report.notes) fmt::print(stderr, "note: {}\n", n);
    throw CliError(kExitUsage, "the filters selected no scenario case (see `fusebench list`)");
  }
  for (auto& c : report.cases) cases.push_back(std::move(c));
  notes.insert(notes.end(), report.notes.begin(), report.notes.end());
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::optional<CliError> cases_failed;
  try {
    finish(cases, notes, env, baselines, bench ? "bench" : "check", a.json, secs, bench);
  } catch (const CliError& e) {
    if (a.compare_to.empty() || e.code() != kExitCheckFailed) throw;
    // The results file is written: the gate still runs, so its summary (which lists the failed
    // numerics) reaches --gate-markdown; the exit stays the failure's.
    cases_failed = e;
  }
  if (!a.compare_to.empty()) {
    const int rc = gate::run_compare(a.compare_to, a.json, a.gate, a.gate_markdown);
    if (cases_failed) throw *cases_failed;
    if (rc != kExitOk) throw CliError(static_cast<ExitCode>(rc), "regression gate failed");
  }
}

}  // namespace

void add_check_command(CLI::App& app, int argc, const char* const* argv) {
  auto a = std::make_shared<RunArgs>();
  CLI::App* cmd = app.add_subcommand(
      "check",
      "Numerics: the built-in checks (block formats vs the tolerance table, load-time fusions bit-exact\n"
      "on tiny models of both families, CUDA dequant bit-exact vs CPU) and every scenario case: the CUDA\n"
      "kernel against the CPU reference and the fused variant against its unfused twin. Without a\n"
      "usable GPU it runs the tiny (ci) scenarios' CPU references and says what it skipped.\n"
      "Exit 1 if any case fails; each failure prints a reproducer.");
  add_filter_options(cmd, *a);
  cmd->add_option("--section", a->sections, "built-in sections to run (repeatable)")
      ->check(CLI::IsMember({"formats", "fusion", "gpu"}));
  cmd->add_flag("--no-builtin", a->no_builtin, "skip the built-in sections; scenarios only");
  cmd->add_option("--model", a->models, "also check the load-time fusions of this GGUF file (repeatable)");
  cmd->footer(
      "Example: fusebench check --scenario gemma4-31b-prefill --kernel dequant_bf16 --json check.json");
  cmd->callback([a, argc, argv] { run(*a, false, argc, argv); });
}

void add_bench_command(CLI::App& app, int argc, const char* const* argv) {
  auto a = std::make_shared<RunArgs>();
  CLI::App* cmd = app.add_subcommand(
      "bench",
      "Time every scenario case (CUDA events: warm-up, >= --min-samples samples and >= --min-seconds,\n"
      "median + IQR, all samples kept, hot and L2-flushed cold, SM clock per sample; kernel cases also\n"
      "back-to-back (b2b): N launches per sample, per-launch time) after measuring the GPU's copy\n"
      "bandwidth and bf16 GEMM rate; report % of roofline (from hot). Numerics are checked too.\n"
      "Without a GPU it times the CPU reference of the tiny scenarios, labelled as such.");
  add_filter_options(cmd, *a);
  cmd->add_flag("--no-cold", a->no_cold, "skip the cold (L2-flushed) measurement");
  cmd->add_flag("--no-b2b", a->no_b2b,
                "skip the back-to-back measurement (kernel cases: N launches per sample, ~100 us, "
                "per-launch time)");
  cmd->add_option("--min-seconds", a->min_seconds, "minimum timed seconds per measurement")
      ->capture_default_str();
  cmd->add_option("--min-samples", a->min_samples, "minimum samples per measurement")->capture_default_str();
  auto* gate_group = cmd->add_option_group("gate", "regression gate after the run (as `fusebench compare`)");
  gate_group
      ->add_option("--compare-to", a->compare_to,
                   "baseline results file, or 'auto': results/baselines/<this GPU>/; needs --json")
      ->needs(cmd->get_option("--json"));
  gate_group->add_option("--gate-markdown", a->gate_markdown, "write the gate's Markdown summary here");
  gate::add_gate_options(gate_group, a->gate);
  cmd->footer("Example: fusebench bench --scenario gemma4-31b-prefill --json results/bench.json");
  cmd->callback([a, argc, argv] { run(*a, true, argc, argv); });
}

void add_list_command(CLI::App& app) {
  auto a = std::make_shared<RunArgs>();
  CLI::App* cmd =
      app.add_subcommand("list", "List scenarios (after filters), kernels with variants and layouts.");
  cmd->add_option("--scenario", a->filters.scenarios, "scenario name or regex (repeatable)");
  cmd->add_option("--tag", a->filters.tags, "only scenarios carrying this tag");
  cmd->add_option("--scenario-dir", a->scenario_dir,
                  "directory of scenario .toml files (default: scenarios/)");
  cmd->callback([a] {
    const auto scenarios = load_or_die(a->scenario_dir);
    fmt::print("scenarios ({}):\n",
               a->scenario_dir.empty() ? default_scenario_dir().string() : a->scenario_dir);
    fmt::print("  {:<30} {:<12} {:<5} {:<8} {:<7} {:<14} {:<34} {}\n", "name", "model", "scale", "phase",
               "run", "tokens", "contexts", "kernels");
    for (const auto& s : scenarios) {
      if (!scenario_selected(s, a->filters)) continue;
      fmt::print("  {:<30} {:<12} {:<5} {:<8} {:<7} {:<14} {:<34} {}\n", s.name, s.model, s.scale,
                 to_string(s.phase), to_string(s.run), fmt::format("{}", fmt::join(s.tokens, ",")),
                 fmt::format("{}", fmt::join(s.contexts, ",")),
                 s.kernels.empty() ? "(all that apply)" : fmt::format("{}", fmt::join(s.kernels, ",")));
    }
    fmt::print("kernels:\n");
    for (const auto& k : kernel_registry()) {
      std::vector<std::string> phases;
      for (Phase p : k.phases) phases.push_back(to_string(p));
      fmt::print("  {:<16} phases {:<16} variants {:<24} layouts {:<10}\n      {}\n", k.name,
                 fmt::format("{}", fmt::join(phases, ",")), fmt::format("{}", fmt::join(k.variants, ",")),
                 fmt::format("{}", fmt::join(k.layouts, ",")), k.description);
    }
  });
}

}  // namespace fb
