#include "harness/runner/kernel_registry.h"

namespace fb {

// Each kernel family defines its KernelDef next to its case code (harness/runner/kernels/).
KernelDef make_dequant_bf16_kernel();

const std::vector<KernelDef>& kernel_registry() {
  static const std::vector<KernelDef> registry = {make_dequant_bf16_kernel()};
  return registry;
}

const KernelDef* find_kernel(const std::string& name) {
  for (const auto& k : kernel_registry())
    if (k.name == name) return &k;
  return nullptr;
}

}  // namespace fb
