// Whole gemma4 steps as runner cases (DESIGN §3 "Whole steps", §5): scenarios with run = "step".
// Tiny scale: the model is made on the fly (make-model, full layers at the TQ4 kernel's head_dim
// 512: ref::gemma4_step_tiny_config) and the GPU step is judged against the fp64 CPU step from the
// same GGUF and cache state. Full scale: the GGUF comes from $FUSEBENCH_STEP_GGUF (fusebench
// make-model --model gemma4-31b --scale full), the caches are filled with seeded random valid
// content, and only fused vs unfused is compared (a CPU reference of 31 B parameters is out of reach).
#include <fmt/format.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>

#include "harness/runner/kernel_registry.h"
#include "harness/runner/kernels/whole_step_case.h"
#include "reference/gguf/gguf_file.h"
#include "reference/model/make_model.h"
#include "reference/step/gemma4_step.h"

#if FUSEBENCH_WITH_CUDA
#include "harness/step/gemma4_gpu_step.h"
#include "harness/step/repacked_weights.h"
#include "kernels/common/cuda_check.h"
#endif

namespace fb {
namespace {

namespace fs = std::filesystem;

// The model files and loaded weights, shared by every case of a run (loading the full model takes
// a minute; the cases differ only in context, T and variant).
struct LoadedModel {
  fs::path path;
  std::unique_ptr<GgufFile> file;
  std::map<bool, std::shared_ptr<const ref::Gemma4RefWeights>> ref;  // by fused load
#if FUSEBENCH_WITH_CUDA
  std::shared_ptr<Gemma4DeviceWeights> device;
  WeightLayouts layouts;  // the layouts `device` holds
#endif
};

std::mutex g_models_mutex;
std::map<std::string, std::shared_ptr<LoadedModel>>& models() {
  static std::map<std::string, std::shared_ptr<LoadedModel>> m;
  return m;
}

ModelConfig step_config(const ModelConfig& scenario_model) {
  return scenario_model.scale == ModelScale::tiny ? ref::gemma4_step_tiny_config() : scenario_model;
}

std::shared_ptr<LoadedModel> loaded_model(const ModelConfig& c) {
  std::lock_guard<std::mutex> lock(g_models_mutex);
  const std::string key = c.scale_name();
  auto& slot = models()[key];
  if (slot) return slot;
  auto m = std::make_shared<LoadedModel>();
  if (const char* env = std::getenv("FUSEBENCH_STEP_GGUF"); env && *env && c.scale == ModelScale::full) {
    m->path = env;
  } else if (c.scale == ModelScale::tiny) {
    m->path = fs::temp_directory_path() / fmt::format("fusebench_step_tiny_{}.gguf", ::getpid());
    MakeModelOptions o;
    o.seed = 0;
    make_model(c, m->path, o);
  } else {
    throw CaseSkipped(
        "a full-scale gemma4 step needs FUSEBENCH_STEP_GGUF=<file made by fusebench make-model --model "
        "gemma4-31b --scale full -o FILE> (scripts/gpu-check.d/step.sh makes one)");
  }
  m->file = std::make_unique<GgufFile>(GgufFile::open(m->path));
  slot = m;
  return m;
}

class StepCase final : public WholeStepCase {
 public:
  explicit StepCase(const CaseParams& p) : WholeStepCase(p, step_config(*p.model), "31 B") {
    m_model = loaded_model(m_config);
  }

#if FUSEBENCH_WITH_CUDA
  bool has_device() const override { return true; }
  void device_setup(cudaStream_t) override {
    {
      std::lock_guard<std::mutex> lock(g_models_mutex);
      load_layouts_for_phase(m_model->device, m_model->layouts, m_prefill, [&](WeightLayouts l) {
        return load_gemma4_device_weights(*m_model->file, m_config, l.packed, l.raw);
      });
    }
    m_step =
        std::make_unique<Gemma4GpuStep>(m_model->device, m_prefill, m_p.tokens, m_p.context,
                                        m_p.variant == "fused" ? StepVariant::fused : StepVariant::unfused);
    if (tiny())
      m_step->upload_kv(ref::make_kv_state(m_config, m_step->capacity(), m_p.context, m_p.seed));
    else
      m_step->fill_kv_random(m_p.seed);
    m_step->set_tokens(m_tokens);
    m_bytes = m_step->bytes();
    m_flops = m_step->flops();
  }
  void device_launch(cudaStream_t s) override {
    m_step->enqueue(s);
    m_launches = m_step->launches();
  }
  std::vector<float> device_output(cudaStream_t s) override { return m_step->logits(s); }
#endif

 private:
  std::filesystem::path model_path() const override { return m_model->path; }
  std::vector<float> cpu_step(bool fused_load) override {
    if (!tiny()) throw std::runtime_error("no CPU reference for a full-scale step");
    std::shared_ptr<const ref::Gemma4RefWeights> w;
    {
      std::lock_guard<std::mutex> lock(g_models_mutex);
      auto& slot = m_model->ref[fused_load];
      if (!slot)
        slot = std::make_shared<ref::Gemma4RefWeights>(
            ref::load_gemma4_ref_weights(*m_model->file, m_config, fused_load));
      w = slot;
    }
    // Same capacity rule as the GPU step (the reference only reads positions below kv_len).
    ref::Gemma4KvState kv =
        ref::make_kv_state(m_config, (m_p.context + m_p.tokens + 255) / 256 * 256, m_p.context, m_p.seed);
    return ref::gemma4_ref_step(*w, kv, m_tokens, m_p.context);
  }

  std::shared_ptr<LoadedModel> m_model;
#if FUSEBENCH_WITH_CUDA
  std::unique_ptr<Gemma4GpuStep> m_step;
#endif
};

KernelDef make_step_kernel(const char* name, Phase phase) {
  return whole_step_kernel(
      name, phase,
      phase == Phase::decode
          ? "whole gemma4 decode step (every layer + lm_head + softcap), CUDA-graph replay"
          : "whole gemma4 prefill step (dequant + cuBLAS, TQ4/SWA prefill, lm_head on the last token)",
      ModelFamily::gemma4, {{"id", "gemma4"}, {"name", "gemma4"}},
      [](const CaseParams& p) { return std::make_unique<StepCase>(p); });
}

}  // namespace

KernelDef make_gemma4_decode_step_kernel() { return make_step_kernel("gemma4_decode_step", Phase::decode); }
KernelDef make_gemma4_prefill_step_kernel() {
  return make_step_kernel("gemma4_prefill_step", Phase::prefill);
}

}  // namespace fb
