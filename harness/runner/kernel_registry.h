#pragma once
// The kernels the runner knows. A KernelDef says which phases it serves, its variants/layouts, which
// axes change its work (so a context-independent kernel runs once per scenario, not once per
// context), the shape instances it takes for a model, and how to build a case. A KernelCase owns
// its inputs and outputs for one (instance, variant, layout, tokens, context, seed).
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "harness/runner/case_result.h"
#include "harness/scenario/scenario.h"
#include "harness/timing/timing.h"
#include "reference/model/model_config.h"

namespace fb {

struct CaseParams {
  const Scenario* scenario = nullptr;
  const ModelConfig* model = nullptr;
  nlohmann::json instance;  // one element of KernelDef::instances()
  std::string variant;
  std::string layout;
  int64_t tokens = 0;
  int64_t context = 0;
  uint64_t seed = 0;
};

class KernelCase {
 public:
  virtual ~KernelCase() = default;
  virtual nlohmann::json shape() const = 0;
  virtual uint64_t bytes() const = 0;  // bytes the device work must move (reads + writes)
  virtual uint64_t flops() const = 0;
  // CPU truth for this case's output, already rounded to the kernel's output dtype.
  virtual std::vector<float> reference() = 0;
  // False where no CPU reference exists (full-scale whole steps): only the twin comparison runs.
  virtual bool has_reference() const { return true; }
  // Times the CPU reference itself (bench without a GPU, labelled cpu-reference).
  virtual void run_reference_once() = 0;
  // The variant's own partitioning of the work (one pass over a fused group, or one per part)
  // replayed on the CPU: what `check` compares against the reference and the twin without a GPU.
  virtual std::vector<float> cpu_variant_output() = 0;

  // Device side. has_device() is false in CPU-only builds.
  virtual bool has_device() const { return false; }
  // Device memory device_setup() will allocate; 0 = not declared (the runner then uses bytes() as
  // the estimate). A case needing more than is free is skipped with "needs X GiB, Y GiB free".
  virtual uint64_t device_bytes() const { return 0; }
  virtual void device_setup(cudaStream_t) {}   // allocate, upload inputs, poison outputs
  virtual void device_launch(cudaStream_t) {}  // the timed body: launches only
  virtual std::vector<float> device_output(cudaStream_t) { return {}; }  // download; checks guard words
  // The comparison with the twin, where a case judges fused vs unfused by something other than the
  // two outputs (std::nullopt: the runner compares the outputs, the usual case). Returned with its
  // tolerance set; the runner judges it. May run device work (after device_output). Full-scale
  // qwen3.5 prefill compares sublayer by sublayer: its 40 random layers amplify rounding past any
  // bound on the output (harness/step/qwen35_sublayer_check.h).
  virtual std::optional<Comparison> twin_comparison(const std::vector<float>& /*twin_output*/,
                                                    const std::vector<float>& /*output*/) {
    return std::nullopt;
  }
};

// Thrown by KernelDef::make or a case that cannot run here for a reason that is not a failure (a
// full-scale whole step without its model file); the runner records a skip with what().
struct CaseSkipped : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct KernelDef {
  std::string name;
  std::string description;
  std::vector<Phase> phases;
  std::vector<std::string> variants;  // first is the default
  std::vector<std::string> layouts;   // first is the default
  bool depends_on_tokens = true;
  bool depends_on_context = true;
  // A whole model step (scenarios with run = "step"): never picked by run = "kernel" scenarios;
  // timed as CUDA-graph replays and reported in tok/s.
  bool whole_step = false;
  // Variant whose output a variant must equal bit for bit (e.g. fused -> unfused), if any.
  std::function<std::optional<std::string>(const std::string& variant)> twin_of;
  std::function<std::vector<nlohmann::json>(const ModelConfig&, Phase)> instances;
  std::function<std::unique_ptr<KernelCase>(const CaseParams&)> make;
  std::function<Tolerance(const std::string& against)> tolerance;  // from the central table
};

const std::vector<KernelDef>& kernel_registry();
const KernelDef* find_kernel(const std::string& name);

}  // namespace fb
