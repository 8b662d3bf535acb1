// fusebench_micro: the runner's kernel cases as Google Benchmark entry points, so GB's JSON output
// and tools/compare.py work on them too. Manual time from CUDA events around the launches only
// (DESIGN §5), gated like `fusebench bench`; setup, uploads and references stay outside the timed
// region. Names:
//   <kernel>/<model>/<phase>/<instance id>/<variant>
// Without a usable GPU each benchmark reports the reason via SkipWithError; --benchmark_list_tests
// works everywhere.
#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <memory>
#include <string>

#include "harness/device/device_info.h"
#include "harness/runner/kernel_registry.h"
#include "harness/timing/timing.h"

#if FUSEBENCH_WITH_CUDA
#include <cuda_runtime_api.h>

#include "kernels/common/cuda_check.h"
#endif

namespace fb {
namespace {

void run_case(benchmark::State& state, const KernelDef* kernel, ModelConfig model, Scenario scenario,
              nlohmann::json instance, std::string variant) {
  static const DeviceInfo device = query_device();
  if (!device.available) {
    state.SkipWithError(("no usable GPU: " + device.unavailable_reason).c_str());
    return;
  }
#if FUSEBENCH_WITH_CUDA
  // Exceptions must not escape a benchmark body (Google Benchmark would terminate): report them.
  try {
    CaseParams params{&scenario, &model, instance, variant, kernel->layouts.front(), 0, 0, 1};
    auto kc = kernel->make(params);
    if (!kc->has_device()) {
      state.SkipWithError("kernel has no device implementation in this build");
      return;
    }
    Stream stream;
    kc->device_setup(stream.get());
    kc->device_launch(stream.get());  // warm-up
    // One gated sample per iteration: the same method as `fusebench bench`, so launch latency is
    // not in the time and the two tools agree.
    TimingOptions one;
    one.warmup = 0;
    one.min_samples = 1;
    one.max_samples = 1;
    one.min_seconds = 0.0;
    auto launch = [&](cudaStream_t s) { kc->device_launch(s); };
    for (auto _ : state) {
      const Timing t = time_cuda(launch, stream.get(), one);
      state.SetIterationTime(t.samples.at(0).ms * 1e-3);
    }
    state.SetBytesProcessed(static_cast<int64_t>(kc->bytes()) * state.iterations());
    if (kc->flops()) {
      state.counters["flops"] = benchmark::Counter(static_cast<double>(kc->flops()) * state.iterations(),
                                                   benchmark::Counter::kIsRate);
    }
    state.SetLabel(device.name);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
#endif
}

void register_all() {
  for (const KernelDef& kernel : kernel_registry()) {
    for (auto family : {ModelFamily::gemma4, ModelFamily::qwen35moe}) {
      const ModelConfig model = model_config(family, ModelScale::full);
      for (Phase phase : kernel.phases) {
        Scenario scenario;
        scenario.name = fmt::format("micro-{}-{}", model.name, to_string(phase));
        scenario.model = model.name;
        scenario.phase = phase;
        for (const auto& inst : kernel.instances(model, phase)) {
          const auto variants =
              inst.contains("variants") ? inst["variants"].get<std::vector<std::string>>() : kernel.variants;
          for (const auto& variant : variants) {
            const std::string name =
                fmt::format("{}/{}/{}/{}/{}", kernel.name, model.name, to_string(phase),
                            inst.value("id", inst.value("name", std::string("?"))), variant);
            benchmark::RegisterBenchmark(name.c_str(), run_case, &kernel, model, scenario, inst, variant)
                ->UseManualTime()
                ->Unit(benchmark::kMicrosecond)
                ->MinTime(0.2);
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace fb

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  fb::register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
