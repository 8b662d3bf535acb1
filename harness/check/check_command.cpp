#include "harness/check/check_command.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "harness/check/checks.h"
#include "harness/cli/exit_codes.h"

namespace fb {

namespace {

struct CheckArgs {
  uint64_t seed = 1;
  std::vector<std::string> sections;
  std::vector<std::string> models;
  std::string json;
  std::string work_dir;
};

void write_json_atomically(const std::filesystem::path& path, const nlohmann::json& doc) {
  const auto tmp = std::filesystem::path(path.string() + ".tmp");
  {
    std::ofstream f(tmp, std::ios::trunc);
    if (!f) throw CliError(kExitIo, fmt::format("cannot write {}", tmp.string()));
    f << doc.dump(2) << '\n';
    if (!f.flush()) throw CliError(kExitIo, fmt::format("cannot write {}", tmp.string()));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec)
    throw CliError(kExitIo,
                   fmt::format("cannot rename {} to {}: {}", tmp.string(), path.string(), ec.message()));
}

void print_table(const std::vector<CheckCase>& cases) {
  size_t w_name = 4, w_crit = 9;
  for (const auto& c : cases) {
    w_name = std::max(w_name, c.section.size() + 1 + c.name.size());
    w_crit = std::max(w_crit, std::min<size_t>(c.criterion.size(), 48));
  }
  fmt::print("{:<6} {:<{}}  {:<{}}  {}\n", "result", "case", w_name, "criterion", w_crit, "measured");
  for (const auto& c : cases) {
    std::string crit = c.criterion.size() > 48 ? c.criterion.substr(0, 45) + "..." : c.criterion;
    fmt::print("{:<6} {:<{}}  {:<{}}  {}\n", to_string(c.status), c.section + "/" + c.name, w_name, crit,
               w_crit, c.detail);
  }
}

void run_check(const CheckArgs& a) {
  const std::set<std::string> sections(a.sections.begin(), a.sections.end());
  auto wanted = [&](const char* s) { return sections.empty() || sections.count(s); };
  for (const auto& m : a.models) {
    if (!std::filesystem::exists(m))
      throw CliError(kExitBadInput, fmt::format("--model {}: no such file", m));
  }
  const bool own_dir = a.work_dir.empty();
  const std::filesystem::path work =
      own_dir ? std::filesystem::temp_directory_path() / fmt::format("fusebench-check-{}", ::getpid())
              : std::filesystem::path(a.work_dir);
  std::filesystem::create_directories(work);

  const auto t0 = std::chrono::steady_clock::now();
  std::vector<CheckCase> cases;
  auto append = [&](const char* name, auto&& fn) {
    if (!wanted(name)) return;
    fmt::print(stderr, "check: {} ...\n", name);
    for (auto& c : fn()) cases.push_back(std::move(c));
  };
  append("formats", [&] { return run_format_checks(a.seed); });
  append("fusion", [&] { return run_fusion_checks(a.seed, work, {a.models.begin(), a.models.end()}); });
  append("gpu", [&] { return run_gpu_checks(a.seed); });
  if (own_dir) std::filesystem::remove_all(work);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  print_table(cases);
  size_t n_pass = 0, n_fail = 0, n_skip = 0;
  for (const auto& c : cases) {
    n_pass += c.status == CheckStatus::pass;
    n_fail += c.status == CheckStatus::fail;
    n_skip += c.status == CheckStatus::skip;
  }
  std::set<std::string> skipped_reasons;
  for (const auto& c : cases)
    if (c.status == CheckStatus::skip) skipped_reasons.insert(c.section + ": " + c.detail);
  for (const auto& r : skipped_reasons) fmt::print("skipped {}\n", r);
  for (const auto& c : cases) {
    if (c.status == CheckStatus::fail)
      fmt::print("FAILED {}/{}: {}\n  reproduce: {}\n", c.section, c.name, c.detail, c.repro);
  }
  fmt::print("{} passed, {} failed, {} skipped ({:.1f} s, seed {})\n", n_pass, n_fail, n_skip, secs, a.seed);

  if (!a.json.empty()) {
    nlohmann::json doc = {{"schema", "fusebench.check/1"},
                          {"seed", a.seed},
                          {"seconds", secs},
                          {"summary", {{"passed", n_pass}, {"failed", n_fail}, {"skipped", n_skip}}},
                          {"cases", nlohmann::json::array()}};
    for (const auto& c : cases) doc["cases"].push_back(to_json(c));
    write_json_atomically(a.json, doc);
    fmt::print(stderr, "check: wrote {}\n", a.json);
  }
  if (n_fail) throw CliError(kExitCheckFailed, fmt::format("{} check(s) failed", n_fail));
}

}  // namespace

void add_check_command(CLI::App& app) {
  auto args = std::make_shared<CheckArgs>();
  CLI::App* cmd = app.add_subcommand(
      "check",
      "Run the numerics checks and print a verdict table: block-format round trips against the\n"
      "tolerance table (formats), load-time fusions bit-exact on tiny models of both families\n"
      "(fusion), and CUDA kernels bit-exact against the CPU reference (gpu; skipped, with the\n"
      "reason, when there is no usable GPU). Exits 1 if any check fails.");
  cmd->add_option("--seed", args->seed, "seed of every random input")->capture_default_str();
  cmd->add_option("--section", args->sections, "run only these sections (repeatable)")
      ->check(CLI::IsMember({"formats", "fusion", "gpu"}));
  cmd->add_option("--model", args->models, "also check the load-time fusions of this GGUF file (repeatable)");
  cmd->add_option("--json", args->json, "write the verdicts as JSON here (atomically)");
  cmd->add_option("--work-dir", args->work_dir, "keep the generated tiny models here instead of a temp dir");
  cmd->footer("Example: fusebench check --section fusion --model my-gemma.gguf --json check.json");
  cmd->callback([args] { run_check(*args); });
}

}  // namespace fb
