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
#include "harness/runner/tolerances.h"
#include "reference/gguf/gguf_file.h"
#include "reference/model/make_model.h"
#include "reference/step/gemma4_step.h"

#if FUSEBENCH_WITH_CUDA
#include "harness/step/gemma4_gpu_step.h"
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
  bool packed = false, raw = false;
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

class StepCase final : public KernelCase {
 public:
  StepCase(const CaseParams& p, const char* kernel) : m_p(p), m_kernel(kernel) {
    m_config = step_config(*p.model);
    m_prefill = p.scenario->phase == Phase::prefill;
    m_model = loaded_model(m_config);
    m_tokens = ref::step_tokens(m_config.vocab, p.tokens, p.seed);
  }

  nlohmann::json shape() const override {
    nlohmann::json j = {{"model", m_config.name},
                        {"scale", m_config.scale_name()},
                        {"phase", m_prefill ? "prefill" : "decode"},
                        {"T", m_p.tokens},
                        {"context", m_p.context},
                        {"layers", m_config.n_layers},
                        {"gguf", m_model->path.filename().string()}};
    if (m_launches) j["launches"] = m_launches;
    if (!tiny()) j["reference"] = "none at full scale: fused is compared with unfused only";
    return j;
  }
  uint64_t bytes() const override { return m_bytes; }
  uint64_t flops() const override { return m_flops; }
  bool has_reference() const override { return tiny(); }

  std::vector<float> reference() override { return cpu_step(false); }
  void run_reference_once() override { (void)cpu_step(false); }
  std::vector<float> cpu_variant_output() override {
    if (!tiny())
      throw CaseSkipped("full-scale steps run on the GPU only (no CPU reference of 31 B parameters)");
    return cpu_step(m_p.variant == "fused");
  }

#if FUSEBENCH_WITH_CUDA
  bool has_device() const override { return true; }
  void device_setup(cudaStream_t) override {
    {
      std::lock_guard<std::mutex> lock(g_models_mutex);
      const bool need_packed = !m_prefill, need_raw = m_prefill;
      if (!m_model->device || (need_packed && !m_model->packed) || (need_raw && !m_model->raw)) {
        const bool packed = m_model->packed || need_packed, raw = m_model->raw || need_raw;
        m_model->device.reset();  // free before loading the union
        m_model->device = load_gemma4_device_weights(*m_model->file, m_config, packed, raw);
        m_model->packed = packed;
        m_model->raw = raw;
      }
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
  bool tiny() const { return m_config.scale == ModelScale::tiny; }
  std::vector<float> cpu_step(bool fused_load) {
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

  CaseParams m_p;
  const char* m_kernel;
  ModelConfig m_config;
  bool m_prefill = false;
  std::shared_ptr<LoadedModel> m_model;
  std::vector<int32_t> m_tokens;
  uint64_t m_bytes = 0, m_flops = 0;
  int64_t m_launches = 0;
#if FUSEBENCH_WITH_CUDA
  std::unique_ptr<Gemma4GpuStep> m_step;
#endif
};

KernelDef make_step_kernel(const char* name, Phase phase) {
  KernelDef k;
  k.name = name;
  k.description =
      phase == Phase::decode
          ? "whole gemma4 decode step (every layer + lm_head + softcap), CUDA-graph replay"
          : "whole gemma4 prefill step (dequant + cuBLAS, TQ4/SWA prefill, lm_head on the last token)";
  k.phases = {phase};
  k.variants = {"fused", "unfused"};
  k.layouts = {"device"};
  k.whole_step = true;
  k.twin_of = [](const std::string& v) -> std::optional<std::string> {
    if (v == "fused") return std::string("unfused");
    return std::nullopt;
  };
  k.instances = [](const ModelConfig& c, Phase) {
    std::vector<nlohmann::json> out;
    if (c.family == ModelFamily::gemma4) out.push_back({{"id", "gemma4"}, {"name", "gemma4"}});
    return out;
  };
  k.make = [name](const CaseParams& p) { return std::make_unique<StepCase>(p, name); };
  k.tolerance = [name](const std::string& against) { return kernel_tolerance(name, against); };
  return k;
}

}  // namespace

KernelDef make_gemma4_decode_step_kernel() { return make_step_kernel("gemma4_decode_step", Phase::decode); }
KernelDef make_gemma4_prefill_step_kernel() {
  return make_step_kernel("gemma4_prefill_step", Phase::prefill);
}

}  // namespace fb
