#include "harness/runner/kernel_registry.h"

namespace fb {

// Each kernel family defines its KernelDef next to its case code (harness/runner/kernels/).
KernelDef make_dequant_bf16_kernel();
KernelDef make_swa_decode_kernel();
KernelDef make_swa_prefill_kernel();
std::vector<KernelDef> make_ops_kernels();
KernelDef make_prefill_gemm_kernel();
KernelDef make_lm_head_prefill_kernel();
KernelDef make_matvec_w4a8_kernel();
KernelDef make_gate_up_act_kernel();
KernelDef make_prefill_int4_gemm_kernel();
KernelDef make_lm_head_decode_kernel();
KernelDef make_tq4_sdpa_kernel();
KernelDef make_tq4_append_kernel();
std::vector<KernelDef> make_gdn_kernels();
std::vector<KernelDef> make_moe_kernels();
KernelDef make_gemma4_decode_step_kernel();
KernelDef make_gemma4_prefill_step_kernel();
KernelDef make_qwen35_decode_step_kernel();
KernelDef make_qwen_attn_decode_kernel();
KernelDef make_qwen35_prefill_step_kernel();

const std::vector<KernelDef>& kernel_registry() {
  static const std::vector<KernelDef> registry = [] {
    std::vector<KernelDef> r = {make_dequant_bf16_kernel(), make_swa_decode_kernel(), make_swa_prefill_kernel()};
    for (KernelDef& k : make_ops_kernels()) r.push_back(std::move(k));
    r.push_back(make_prefill_gemm_kernel());
    r.push_back(make_lm_head_prefill_kernel());
    r.push_back(make_matvec_w4a8_kernel());
    r.push_back(make_gate_up_act_kernel());
    r.push_back(make_prefill_int4_gemm_kernel());
    r.push_back(make_lm_head_decode_kernel());
    r.push_back(make_tq4_sdpa_kernel());
    r.push_back(make_tq4_append_kernel());
    for (KernelDef& k : make_gdn_kernels()) r.push_back(std::move(k));
    for (KernelDef& k : make_moe_kernels()) r.push_back(std::move(k));
    r.push_back(make_gemma4_decode_step_kernel());
    r.push_back(make_gemma4_prefill_step_kernel());
    r.push_back(make_qwen35_decode_step_kernel());
    r.push_back(make_qwen_attn_decode_kernel());
    r.push_back(make_qwen35_prefill_step_kernel());
    return r;
  }();
  return registry;
}

const KernelDef* find_kernel(const std::string& name) {
  for (const auto& k : kernel_registry())
    if (k.name == name) return &k;
  return nullptr;
}

}  // namespace fb
