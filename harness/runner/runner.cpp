#include "harness/runner/runner.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "harness/runner/device_guard.h"
#include "harness/runner/kernel_registry.h"
#include "harness/timing/nvtx.h"

#if FUSEBENCH_WITH_CUDA
#include <cuda_runtime_api.h>

#include "kernels/common/cuda_check.h"
#endif

namespace fb {

bool scenario_selected(const Scenario& s, const RunFilters& f) {
  if (!f.tags.empty() && std::none_of(f.tags.begin(), f.tags.end(), [&](const std::string& t) {
        return std::find(s.tags.begin(), s.tags.end(), t) != s.tags.end();
      })) {
    return false;
  }
  if (f.scenarios.empty()) return true;
  return std::any_of(f.scenarios.begin(), f.scenarios.end(), [&](const std::string& pat) {
    if (pat == s.name) return true;
    try {
      return std::regex_match(s.name, std::regex(pat));
    } catch (const std::regex_error&) {
      return false;
    }
  });
}

int b2b_launches_per_sample(double hot_median_ms) {
  constexpr double kSampleMs = 0.1, kMin = 2, kMax = 200;
  if (!(hot_median_ms > 0)) return static_cast<int>(kMax);  // 0 or NaN: as short as it gets
  // The epsilon keeps an exact quotient (0.1 / 0.05) from rounding up to the next integer.
  const double n = std::ceil(kSampleMs / hot_median_ms - 1e-9);
  return static_cast<int>(std::clamp(n, kMin, kMax));
}

void judge(Comparison& c) {
  const Metrics& m = c.metrics;
  const Tolerance& t = c.tolerance;
  c.verdict = Verdict::fail;
  if (m.nonfinite) {
    c.why = fmt::format("{} non-finite outputs where the reference is finite", m.nonfinite);
  } else if (t.bit_exact) {
    if (m.bit_exact)
      c.verdict = Verdict::pass;
    else
      c.why = fmt::format("not bit-exact: {}", m.summary());
  } else if (m.max_abs > t.max_abs) {
    c.why = fmt::format("max_abs {:.3g} @{} > {:.3g}", m.max_abs, m.max_abs_index, t.max_abs);
  } else if (m.max_rel > t.max_rel) {
    c.why = fmt::format("max_rel {:.3g} > {:.3g}", m.max_rel, t.max_rel);
  } else if (m.cosine < t.min_cosine) {
    c.why = fmt::format("cosine {:.8f} < {:.8f}", m.cosine, t.min_cosine);
  } else if (m.nmse > t.max_nmse) {
    c.why = fmt::format("nmse {:.3g} > {:.3g}", m.nmse, t.max_nmse);
  } else {
    c.verdict = Verdict::pass;
  }
}

namespace {

struct Planned {
  const Scenario* scenario;
  ModelConfig model;
  const KernelDef* kernel;
  nlohmann::json instance;
  std::vector<std::string> variants;  // twins first, so their outputs exist when the fused one runs
  std::string layout;
  int64_t tokens, context;
  uint64_t seed;
};

std::vector<std::string> pick(const std::vector<std::string>& available,
                              const std::vector<std::string>& wanted) {
  if (wanted.empty()) return available;
  std::vector<std::string> out;
  for (const auto& a : available)
    if (std::find(wanted.begin(), wanted.end(), a) != wanted.end()) out.push_back(a);
  return out;
}

// A scenario override adjusts the kernel-vs-reference bounds only: the fused-vs-unfused contract
// (usually bit-exact) is the kernel's own and a scenario cannot loosen it.
Tolerance tolerance_for(const KernelDef& k, const Scenario& s, const std::string& against) {
  Tolerance t = k.tolerance(against);
  if (against != "reference") return t;
  for (const ToleranceOverride& o : s.tolerances) {
    if (o.kernel != k.name) continue;
    t.bit_exact = false;
    if (o.max_abs) t.max_abs = *o.max_abs;
    if (o.max_rel) t.max_rel = *o.max_rel;
    if (o.min_cosine) t.min_cosine = *o.min_cosine;
    if (o.max_nmse) t.max_nmse = *o.max_nmse;
    t.source = fmt::format("scenario {}: {}", s.file.filename().string(), o.reason);
  }
  return t;
}

std::string repro(const RunOptions& o, const Planned& p, const std::string& variant, bool cpu) {
  // Exact names anchored as a regex (names may contain '.'), and every axis that selects the case.
  std::string cmd = fmt::format(
      "{} {} --scenario '^{}$' --kernel {} --variant {} --seed {}", o.argv0, o.bench ? "bench" : "check",
      std::regex_replace(p.scenario->name, std::regex(R"(\.)"), R"(\.)"), p.kernel->name, variant, p.seed);
  if (p.tokens) cmd += fmt::format(" --tokens {}", p.tokens);
  if (p.context) cmd += fmt::format(" --context {}", p.context);
  if (p.instance.contains("id")) cmd += fmt::format(" --instance '{}'", p.instance["id"].get<std::string>());
  if (!o.scenario_dir.empty()) cmd += fmt::format(" --scenario-dir '{}'", o.scenario_dir);
  if (cpu) cmd += " --cpu-only";
  return cmd;
}

std::vector<Planned> plan(const std::vector<Scenario>& scenarios, const RunOptions& o, RunReport& report) {
  std::vector<Planned> out;
  for (const Scenario& s : scenarios) {
    if (!scenario_selected(s, o.filters)) continue;
    if (s.run == RunUnit::layer) {
      report.notes.push_back(fmt::format("{}: run = {}: no {} implementation exists yet; nothing run", s.name,
                                         to_string(s.run), to_string(s.run)));
      continue;
    }
    ModelConfig model;
    try {
      model = model_config(s.model, s.scale);
    } catch (const std::invalid_argument&) {
      report.notes.push_back(
          fmt::format("{}: model '{}' is a GGUF path; kernel shapes come from the built-in "
                      "configs only for now, so nothing was run",
                      s.name, s.model));
      continue;
    }
    for (const ToleranceOverride& t : s.tolerances) {
      if (!find_kernel(t.kernel)) {
        throw std::invalid_argument(
            fmt::format("{}: tolerance override for unknown kernel '{}'", s.file.string(), t.kernel));
      }
    }
    std::vector<const KernelDef*> kernels;
    if (s.kernels.empty()) {
      // run = "step" picks the whole-step kernels of the phase; run = "kernel" everything else.
      const bool step = s.run == RunUnit::step;
      for (const auto& k : kernel_registry())
        if (std::find(k.phases.begin(), k.phases.end(), s.phase) != k.phases.end() && k.whole_step == step)
          kernels.push_back(&k);
    } else {
      for (const auto& name : s.kernels) {
        const KernelDef* k = find_kernel(name);
        if (!k) {
          std::string known;
          for (const auto& kk : kernel_registry()) known += (known.empty() ? "" : ", ") + kk.name;
          throw std::invalid_argument(
              fmt::format("{}: kernels: unknown kernel '{}' (known: {})", s.file.string(), name, known));
        }
        kernels.push_back(k);
      }
    }
    if (!o.filters.kernels.empty()) {
      std::erase_if(kernels, [&](const KernelDef* k) {
        return std::find(o.filters.kernels.begin(), o.filters.kernels.end(), k->name) ==
               o.filters.kernels.end();
      });
    }
    if (kernels.empty()) {
      report.notes.push_back(
          fmt::format("{}: no kernel in the registry applies to {} {}", s.name, s.model, to_string(s.phase)));
      continue;
    }
    for (const KernelDef* k : kernels) {
      const auto instances = k->instances(model, s.phase);
      if (instances.empty()) {
        report.notes.push_back(
            fmt::format("{}: {} has no instance for {} {}", s.name, k->name, s.model, to_string(s.phase)));
      }
      std::vector<int64_t> tokens = k->depends_on_tokens ? s.tokens : std::vector<int64_t>{0};
      if (k->depends_on_tokens && !o.filters.tokens.empty()) {
        std::erase_if(tokens, [&](int64_t t) {
          return std::find(o.filters.tokens.begin(), o.filters.tokens.end(), t) == o.filters.tokens.end();
        });
      }
      std::vector<int64_t> contexts = k->depends_on_context ? s.contexts : std::vector<int64_t>{0};
      if (k->depends_on_context && !o.filters.contexts.empty()) {
        std::erase_if(contexts, [&](int64_t c) {
          return std::find(o.filters.contexts.begin(), o.filters.contexts.end(), c) ==
                 o.filters.contexts.end();
        });
      }
      for (const auto& inst : instances) {
        auto listed = [&](const char* key) {
          return std::find(o.filters.instances.begin(), o.filters.instances.end(),
                           inst.value(key, std::string())) != o.filters.instances.end();
        };
        if (!o.filters.instances.empty() && !listed("name") && !listed("id")) continue;
        const std::vector<std::string> available =
            inst.contains("variants") ? inst["variants"].get<std::vector<std::string>>() : k->variants;
        // An instance with a single form (nothing to fuse) always runs: the scenario's variant list
        // chooses between forms, it does not drop kernels that have only one.
        std::vector<std::string> variants =
            pick(available.size() == 1 ? available : pick(available, s.variants), o.filters.variants);
        if (variants.empty()) {
          report.notes.push_back(fmt::format("{}: {} {}: none of its variants ({}) is selected", s.name,
                                             k->name, inst.value("id", std::string()),
                                             fmt::join(available, ",")));
          continue;
        }
        // A fused variant needs its twin's output; run the twin too even if filtered out.
        for (const auto& v : std::vector<std::string>(variants)) {
          if (auto twin = k->twin_of(v);
              twin && std::find(available.begin(), available.end(), *twin) != available.end() &&
              std::find(variants.begin(), variants.end(), *twin) == variants.end()) {
            variants.push_back(*twin);
          }
        }
        // Twins run first.
        std::stable_sort(variants.begin(), variants.end(), [&](const std::string& a, const std::string& b) {
          return !k->twin_of(a).has_value() && k->twin_of(b).has_value();
        });
        for (const auto& layout : pick(k->layouts, s.layouts))
          for (int64_t t : tokens)
            for (int64_t c : contexts)
              for (uint64_t seed : o.filters.seeds.empty() ? s.seeds : o.filters.seeds)
                out.push_back({&s, model, k, inst, variants, layout, t, c, seed});
      }
    }
  }
  return out;
}

}  // namespace

RunReport run_scenarios(const std::vector<Scenario>& scenarios, const RunOptions& o, const DeviceInfo& device,
                        const std::optional<DeviceBaselines>& baselines) {
  RunReport report;
  const std::vector<Planned> planned = plan(scenarios, o, report);
  size_t total = 0;
  for (const auto& p : planned) total += p.variants.size();
  const bool gpu = device.available;
  if (!gpu && total) {
    report.notes.push_back(
        fmt::format("no usable GPU ({}): cases ran on the CPU (backend cpu-reference): the "
                    "variant's partitioning vs the reference and vs its twin",
                    device.unavailable_reason));
  }

  size_t index = 0;
  for (const Planned& p : planned) {
    std::vector<float> reference;
    std::map<std::string, std::vector<float>> outputs;  // by variant, for twin comparisons
    for (const std::string& variant : p.variants) {
      ++index;
      CaseResult r;
      r.scenario = p.scenario->name;
      r.kernel = p.kernel->name;
      r.variant = variant;
      r.layout = p.layout;
      r.tokens = p.tokens;
      r.context = p.context;
      r.seed = p.seed;
      r.backend = gpu ? "cuda" : "cpu-reference";
      r.repro = repro(o, p, variant, !gpu);
      if (o.progress) {
        o.progress(fmt::format("[{}/{}] {} {} {} {}{}", index, total, p.scenario->name, p.kernel->name,
                               p.instance.value("id", p.instance.value("name", std::string())), variant,
                               p.context ? fmt::format(" ctx {}", p.context) : std::string()));
      }
      try {
        CaseParams params{p.scenario, &p.model, p.instance, variant, p.layout, p.tokens, p.context, p.seed};
        auto kc = p.kernel->make(params);
        r.shape = kc->shape();
        r.bytes = kc->bytes();
        r.flops = kc->flops();
        const bool has_ref = kc->has_reference();
        if (has_ref && reference.empty()) reference = kc->reference();
        if (has_ref && (std::any_of(reference.begin(), reference.end(), [](float v) { return !std::isfinite(v); }) ||
                        std::all_of(reference.begin(), reference.end(), [](float v) { return v == 0.0f; }))) {
          throw std::runtime_error(
              "the CPU reference output is all zeros or not finite: the inputs are wrong");
        }
        // The comparisons are the same on both backends; only where `got` comes from differs.
        auto compare_and_judge = [&](std::vector<float> got) {
          if (has_ref) {
            Comparison vs_ref{"reference", compare(reference, got),
                              tolerance_for(*p.kernel, *p.scenario, "reference")};
            judge(vs_ref);
            r.comparisons.push_back(vs_ref);
          }
          if (auto twin = p.kernel->twin_of(variant)) {
            if (auto it = outputs.find(*twin); it != outputs.end()) {
              std::optional<Comparison> own = kc->twin_comparison(it->second, got);
              Comparison vs_twin = own ? std::move(*own)
                                       : Comparison{*twin, compare(it->second, got),
                                                    tolerance_for(*p.kernel, *p.scenario, *twin)};
              judge(vs_twin);
              r.comparisons.push_back(vs_twin);
            }
          }
          outputs[variant] = std::move(got);
          r.verdict = std::all_of(r.comparisons.begin(), r.comparisons.end(),
                                  [](const Comparison& c) { return c.verdict == Verdict::pass; })
                          ? Verdict::pass
                          : Verdict::fail;
        };
        if (!gpu || !kc->has_device()) {
          r.backend = "cpu-reference";
          compare_and_judge(kc->cpu_variant_output());
          if (o.bench) r.hot = time_cpu([&] { kc->run_reference_once(); }, o.timing);
          report.cases.push_back(std::move(r));
          continue;
        }
#if FUSEBENCH_WITH_CUDA
        if (const auto free_b = device_free_bytes()) {
          const uint64_t need = kc->device_bytes() ? kc->device_bytes() : kc->bytes();
          if (std::string why = device_memory_shortfall(need, *free_b); !why.empty()) {
            r.verdict = Verdict::skip;
            r.skip_reason = std::move(why);
            report.cases.push_back(std::move(r));
            continue;
          }
        }
        Stream stream;
        kc->device_setup(stream.get());
        // A whole step knows its bytes (weights + KV actually read) only once its device model exists.
        r.bytes = kc->bytes();
        r.flops = kc->flops();
        {
          nvtx_range range(p.kernel->name.c_str());
          kc->device_launch(stream.get());
        }
        maybe_inject_cuda_error(p.kernel->name, variant, stream.get());
        FB_CUDA_CHECK(cudaGetLastError());
        compare_and_judge(kc->device_output(stream.get()));
        r.shape = kc->shape();
        if (o.bench) {
          auto launch = [&](cudaStream_t s) {
            nvtx_range range(p.kernel->name.c_str());
            kc->device_launch(s);
          };
          TimingOptions hot = o.timing;
          hot.cold = false;
          // Whole steps: captured once into a CUDA graph and replayed (DESIGN §5); no cold run, since
          // their weights (GBs) are far larger than L2 anyway.
          r.hot = p.kernel->whole_step ? time_cuda_graph(launch, stream.get(), hot)
                                       : time_cuda(launch, stream.get(), hot);
          if (o.cold && !p.kernel->whole_step) {
            TimingOptions cold = o.timing;
            cold.cold = true;
            r.cold = time_cuda(launch, stream.get(), cold);
          }
          if (o.b2b && !p.kernel->whole_step) {
            TimingOptions b2b = hot;
            b2b.launches_per_sample = b2b_launches_per_sample(r.hot->summary.median_ms);
            r.b2b = time_cuda(launch, stream.get(), b2b);
          }
          const double secs = r.hot->summary.median_ms * 1e-3;
          if (p.kernel->whole_step && secs > 0) r.tok_s = static_cast<double>(p.tokens) / secs;
          if (baselines && secs > 0) {
            if (baselines->copy_gbps > 0)
              r.copy_roofline_pct = 100.0 * (r.bytes / secs) / (baselines->copy_gbps * 1e9);
            if (baselines->bf16_gemm_tflops > 0 && r.flops)
              r.gemm_roofline_pct = 100.0 * (r.flops / secs) / (baselines->bf16_gemm_tflops * 1e12);
          }
        }
#endif
      } catch (const CaseSkipped& e) {
        r.verdict = Verdict::skip;
        r.skip_reason = e.what();
      } catch (const std::exception& e) {
        r.verdict = Verdict::fail;
        r.error = e.what();
        if (gpu) clear_cuda_error_after_failure();  // the next case must not inherit it
      }
      report.cases.push_back(std::move(r));
    }
  }
  return report;
}

}  // namespace fb
