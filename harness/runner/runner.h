#pragma once
// Runs scenarios: for each case the CPU reference and the CUDA kernel side by side, the fused
// variant against its unfused twin, and (bench) timing per DESIGN §5. Without a usable GPU, check
// compares the fused and unfused reference paths on the CPU and says what it skipped; bench times
// the CPU reference, labelled "cpu-reference".
#include <functional>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "harness/device/device_info.h"
#include "harness/runner/case_result.h"
#include "harness/scenario/scenario.h"
#include "harness/timing/timing.h"

namespace fb {

struct RunFilters {
  std::vector<std::string> scenarios;  // exact names or ECMAScript regexes (full match); empty = all
  std::vector<std::string> kernels;    // exact kernel names; empty = all
  std::vector<int64_t> contexts;       // empty = all
  std::vector<std::string> tags;       // scenario must carry one of them; empty = all
  std::vector<std::string> instances;  // exact instance names (e.g. "ffn_gate+ffn_up"); empty = all
  std::vector<std::string> variants;   // exact variant names; empty = all
  std::vector<uint64_t> seeds;         // replaces every scenario's seeds when non-empty
  std::vector<int64_t> tokens;         // T values; empty = the scenario's
  bool any() const {
    return !scenarios.empty() || !kernels.empty() || !contexts.empty() || !tags.empty() ||
           !instances.empty() || !variants.empty() || !seeds.empty() || !tokens.empty();
  }
};

struct RunOptions {
  bool bench = false;  // time the cases (else numerics only)
  bool cold = true;    // with bench: also a cold (L2 flushed) measurement
  bool b2b = true;     // with bench: also a back-to-back hot measurement of GPU kernel cases
  TimingOptions timing;
  RunFilters filters;
  std::string argv0 = "fusebench";  // for reproducer command lines
  std::string scenario_dir;         // non-default --scenario-dir, for reproducer command lines
  // Progress lines ("[3/40] ...") go here; stderr in the CLI.
  std::function<void(const std::string&)> progress;
};

struct RunReport {
  std::vector<CaseResult> cases;
  std::vector<std::string> notes;  // what was skipped wholesale and why, e.g. "no kernel applies to X"
};

bool scenario_selected(const Scenario& s, const RunFilters& f);

// Launches per back-to-back sample for a kernel whose single-launch hot median is `hot_median_ms`:
// enough that one sample spans about 100 us of work, so the fixed event + launch cost is a small
// share of it; clamped to [2, 200] (200 keeps the queue within the launch gate's reach).
int b2b_launches_per_sample(double hot_median_ms);

RunReport run_scenarios(const std::vector<Scenario>& scenarios, const RunOptions& options,
                        const DeviceInfo& device, const std::optional<DeviceBaselines>& baselines);

// Verdict of one comparison against its tolerance; sets c.verdict and c.why.
void judge(Comparison& c);

}  // namespace fb
