#include "harness/gate/compare_command.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <set>

#include "harness/cli/exit_codes.h"
#include "harness/gate/load.h"

#ifndef FUSEBENCH_SOURCE_DIR
#define FUSEBENCH_SOURCE_DIR "."
#endif

namespace fb::gate {

namespace {

struct CompareArgs {
  std::string base, next, markdown, json;
  CompareOptions opt;
};

// Every baseline document of one GPU merged into one (cases concatenated; env of the first file,
// which the refusal check then compares against the new run).
nlohmann::json auto_baseline(const nlohmann::json& next) {
  const std::string gpu = next["env"]["device"].value("name", "");
  if (gpu.empty() || !next["env"]["device"].value("available", false))
    throw CliError(kExitUsage, "--compare-to auto: the new results were not measured on a GPU");
  const auto dir = baseline_root() / gpu_slug(gpu);
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.ends_with(".json") || name.ends_with(".json.gz")) files.push_back(e.path());
  }
  if (files.empty())
    throw CliError(kExitUsage, fmt::format("no baseline for {} under {}", gpu, dir.string()));
  std::sort(files.begin(), files.end());
  nlohmann::json merged;
  size_t used = 0;
  for (const auto& f : files) {
    nlohmann::json doc = load_results(f);
    if (doc.value("kind", "") != next.value("kind", "")) continue;
    ++used;
    if (merged.is_null()) {
      merged = std::move(doc);
    } else {
      for (auto& c : doc["cases"]) merged["cases"].push_back(std::move(c));
    }
  }
  if (merged.is_null())
    throw CliError(kExitUsage, fmt::format("no {} baseline under {}", next.value("kind", ""), dir.string()));
  fmt::print(stderr, "compare: baseline {} ({} of {} file(s) are {} results)\n", dir.string(), used,
             files.size(), next.value("kind", ""));
  return merged;
}

}  // namespace

std::filesystem::path baseline_root() {
  if (const char* d = std::getenv("FUSEBENCH_BASELINE_DIR"); d && *d) return d;
  return std::filesystem::path(FUSEBENCH_SOURCE_DIR) / "results" / "baselines";
}

std::string gpu_slug(const std::string& gpu_name) {
  std::string s;
  for (char ch : gpu_name) {
    if (std::isalnum(static_cast<unsigned char>(ch)))
      s += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    else if (!s.empty() && s.back() != '-')
      s += '-';
  }
  while (!s.empty() && s.back() == '-') s.pop_back();
  return s;
}

void add_gate_options(CLI::App* cmd, CompareOptions& o) {
  // Ranges: an out-of-range value would not fail, it would quietly make the gate pass or flag all.
  cmd->add_option("--alpha", o.gate.alpha, "Mann-Whitney U significance level")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--min-effect", o.gate.min_effect, "smallest relative change that matters (0.03 = 3 %)")
      ->check(CLI::Range(0.0, 10.0))
      ->capture_default_str();
  cmd->add_option("--noise-floor", o.gate.noise_floor,
                  "run-to-run drift allowance: the change interval is at least +-this wide")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  // The rule keeps ms (the samples' unit); microseconds read better on the command line.
  cmd->add_option_function<double>(
         "--resolution-us", [&o](double us) { o.gate.resolution_ms = 1e-3 * us; },
         "timer resolution: a median change smaller than this is never FASTER/SLOWER, only SAME or UNSURE "
         "(CUDA events: around 0.5 us)")
      ->check(CLI::Range(0.0, 1e6))
      ->default_str(fmt::format("{:g}", 1e3 * o.gate.resolution_ms));
  cmd->add_option("--confidence", o.gate.confidence, "two-sided bootstrap interval level")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--resamples", o.gate.resamples, "bootstrap resamples")
      ->check(CLI::Range(2, 1000000))
      ->capture_default_str();
  cmd->add_option("--gate-min-samples", o.gate.min_samples, "fewer kept samples on a side: UNSURE")
      ->capture_default_str();
  cmd->add_option("--numerics-factor", o.numerics_factor, "nmse may grow by this factor before it is worse")
      ->check(CLI::Range(1.0, 1e12))
      ->capture_default_str();
  cmd->add_flag("--force", o.force, "compare results from different GPUs or build configurations");
  cmd->add_flag("--fail-on-unsure", o.fail_on_unsure, "exit 1 when any case is UNSURE too");
  // Test-only (calibration): hidden from --help by the empty group.
  cmd->add_flag("--allow-injected", o.allow_injected, "accept results timed with an injected slowdown")
      ->group("");
}

int run_compare(const std::string& base_arg, const std::filesystem::path& next_path, const CompareOptions& o,
                const std::string& markdown, const std::string& json_out) {
  const nlohmann::json next = load_results(next_path);
  nlohmann::json base = base_arg == "auto" ? auto_baseline(next) : load_results(base_arg);
  if (base_arg == "auto") {
    // A baseline covers more cases than one bench run: keep those the new run has.
    std::set<std::string> keys;
    for (const auto& c : next["cases"]) keys.insert(case_key(c));
    auto& cases = base["cases"];
    nlohmann::json kept = nlohmann::json::array();
    for (auto& c : cases)
      if (keys.count(case_key(c))) kept.push_back(std::move(c));
    cases = std::move(kept);
  }
  if (const auto why = refusal_reasons(base, next, o); !why.empty()) {
    std::string msg =
        "refusing to compare (--force overrides a GPU or build mismatch, not an injected slowdown):";
    for (const auto& w : why) msg += "\n  " + w;
    throw CliError(kExitUsage, msg);
  }
  const Comparison c = compare_results(base, next, o);
  // No case in common (renamed instances, another scenario, a baseline of other kernels) would
  // otherwise read "0 slower ... -> ok": a gate that compared nothing must not pass.
  if (c.matched == 0)
    throw CliError(kExitUsage,
                   fmt::format("no case of {} matches a case of the baseline ({} vs {} cases): nothing to "
                               "compare (keys are scenario, kernel, instance, variant, layout, T, ctx, seed)",
                               next_path.string(), next["cases"].size(), base["cases"].size()));
  fmt::print("{}", render_text(c, o));
  if (!markdown.empty()) {
    std::ofstream out(markdown, std::ios::binary);
    out << render_markdown(c, o);
    if (!out.flush()) throw CliError(kExitIo, fmt::format("{}: cannot write", markdown));
    fmt::print(stderr, "compare: wrote {}\n", markdown);
  }
  if (!json_out.empty()) {
    std::ofstream out(json_out, std::ios::binary);
    out << to_json(c, o).dump(1) << "\n";
    if (!out.flush()) throw CliError(kExitIo, fmt::format("{}: cannot write", json_out));
  }
  return c.regressed(o) ? kExitCheckFailed : kExitOk;
}

void add_compare_command(CLI::App& app) {
  auto a = std::make_shared<CompareArgs>();
  CLI::App* cmd = app.add_subcommand(
      "compare",
      "Regression gate: match the cases of two results files (bench JSON, .json.gz too) and judge\n"
      "every hot and cold timing FASTER / SLOWER / SAME / UNSURE from the kept samples (Mann-Whitney U\n"
      "plus a bootstrap interval of the median change and a minimum effect size; a median change below\n"
      "--resolution-us, the CUDA event timer's resolution, is never FASTER / SLOWER); numerics that got\n"
      "worse (pass -> fail or skip, bit-exactness lost, more non-finite outputs, nmse grown by\n"
      "--numerics-factor) fail on their own. Results from different GPUs or build configurations are\n"
      "refused unless --force. Exit 0: no regression; 1: a case SLOWER or numerics worse; 2: usage\n"
      "error, refused, or no case in common (nothing compared).");
  cmd->add_option("BASE", a->base, "baseline results file, or 'auto': results/baselines/<gpu>/ for NEW's GPU")
      ->required();
  cmd->add_option("NEW", a->next, "new results file")->required()->check(CLI::ExistingFile);
  cmd->add_option("--markdown", a->markdown, "also write a Markdown summary here (for PR comments)");
  cmd->add_option("--json", a->json, "also write every decision as JSON here (calibration, dashboards)");
  add_gate_options(cmd, a->opt);
  cmd->footer(
      "Example: fusebench compare results/baselines/nvidia-h200/bench-gemma-decode.json.gz new.json "
      "--markdown gate.md");
  cmd->callback([a] {
    const int rc = run_compare(a->base, a->next, a->opt, a->markdown, a->json);
    if (rc != kExitOk) throw CliError(static_cast<ExitCode>(rc), "regression gate failed");
  });
}

}  // namespace fb::gate
