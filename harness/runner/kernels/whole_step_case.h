#pragma once
// What the whole-step cases (gemma4, qwen3.5-moe; run = "step" scenarios) have in common: the shape
// they report, the rule that only tiny models have a CPU reference (a fp64 step of 31-35 B
// parameters is out of reach, so full scale compares fused with unfused only), and the KernelDef
// wiring. Each model supplies its model file, its CPU step and its GPU step.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "harness/runner/kernel_registry.h"

namespace fb {

class WholeStepCase : public KernelCase {
 public:
  nlohmann::json shape() const override;
  uint64_t bytes() const override { return m_bytes; }
  uint64_t flops() const override { return m_flops; }
  bool has_reference() const override { return tiny(); }
  std::vector<float> reference() override { return cpu_step(false); }
  void run_reference_once() override { (void)cpu_step(false); }
  std::vector<float> cpu_variant_output() override;

 protected:
  // `full_size` names the full model's size in the skip message, e.g. "31 B".
  WholeStepCase(const CaseParams& p, const ModelConfig& config, const char* full_size);
  bool tiny() const { return m_config.scale == ModelScale::tiny; }
  // The fp64 CPU step over weights loaded unfused or through the load-time fusions.
  virtual std::vector<float> cpu_step(bool fused_load) = 0;
  virtual std::filesystem::path model_path() const = 0;

  CaseParams m_p;
  ModelConfig m_config;
  bool m_prefill = false;
  std::vector<int32_t> m_tokens;
  uint64_t m_bytes = 0, m_flops = 0;  // known once the device step exists
  int64_t m_launches = 0;

 private:
  const char* m_full_size;
};

// A fused/unfused step kernel of one model family, one instance, twin fused -> unfused.
KernelDef whole_step_kernel(const char* name, Phase phase, std::string description, ModelFamily family,
                            nlohmann::json instance,
                            std::function<std::unique_ptr<KernelCase>(const CaseParams&)> make);

}  // namespace fb
