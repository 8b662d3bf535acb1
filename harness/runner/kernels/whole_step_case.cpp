#include "harness/runner/kernels/whole_step_case.h"

#include <fmt/format.h>

#include <optional>
#include <utility>

#include "harness/runner/tolerances.h"
#include "reference/step/gemma4_step.h"

namespace fb {

WholeStepCase::WholeStepCase(const CaseParams& p, const ModelConfig& config, const char* full_size)
    : m_p(p),
      m_config(config),
      m_prefill(p.scenario->phase == Phase::prefill),
      m_tokens(ref::step_tokens(config.vocab, p.tokens, p.seed)),
      m_full_size(full_size) {}

nlohmann::json WholeStepCase::shape() const {
  nlohmann::json j = {{"model", m_config.name},
                      {"scale", m_config.scale_name()},
                      {"phase", m_prefill ? "prefill" : "decode"},
                      {"T", m_p.tokens},
                      {"context", m_p.context},
                      {"layers", m_config.n_layers},
                      {"gguf", model_path().filename().string()}};
  if (m_launches) j["launches"] = m_launches;
  if (!tiny()) j["reference"] = "none at full scale: fused is compared with unfused only";
  return j;
}

std::vector<float> WholeStepCase::cpu_variant_output() {
  if (!tiny())
    throw CaseSkipped(
        fmt::format("full-scale steps run on the GPU only (no CPU reference of {} parameters)", m_full_size));
  return cpu_step(m_p.variant == "fused");
}

KernelDef whole_step_kernel(const char* name, Phase phase, std::string description, ModelFamily family,
                            nlohmann::json instance,
                            std::function<std::unique_ptr<KernelCase>(const CaseParams&)> make) {
  KernelDef k;
  k.name = name;
  k.description = std::move(description);
  k.phases = {phase};
  k.variants = {"fused", "unfused"};
  k.layouts = {"device"};
  k.whole_step = true;
  k.twin_of = [](const std::string& v) -> std::optional<std::string> {
    if (v == "fused") return std::string("unfused");
    return std::nullopt;
  };
  k.instances = [family, instance = std::move(instance)](const ModelConfig& c, Phase) {
    std::vector<nlohmann::json> out;
    if (c.family == family) out.push_back(instance);
    return out;
  };
  k.make = std::move(make);
  const std::string key = name;
  k.tolerance = [key](const std::string& against) { return kernel_tolerance(key, against); };
  return k;
}

}  // namespace fb
