// Whole qwen3.5-moe decode steps as runner cases (DESIGN §3 "Whole steps", §5): scenarios with
// run = "step" and model qwen3.5-moe. Tiny scale: the model is made on the fly (make-model, q4_k
// recipe: the step's kernels take Q4_K experts and no Q5_K) and the GPU step is judged against the
// fp64 CPU step from the same GGUF and state. Full scale: the GGUF comes from
// $FUSEBENCH_QWEN35_STEP_GGUF (fusebench make-model --model qwen3.5-moe --scale full --recipe q4_k),
// caches and GDN states get seeded random valid content, and only fused vs unfused is compared.
// Full-scale prefill compares fused with unfused sublayer by sublayer on the twin's input
// (harness/step/qwen35_sublayer_check.h), not by the two chains' logits: 40 random synthetic layers
// amplify rounding (one bf16 ulp per token moves the twin's own T 512 output to cosine 0.975 on an
// H200), so the logits measure the model; they are kept as an unjudged figure in the shape.
#include "reference/step/qwen35_step.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "harness/check/metrics.h"
#include "harness/runner/kernel_registry.h"
#include "harness/runner/kernels/whole_step_case.h"
#include "reference/gguf/gguf_file.h"
#include "reference/model/make_model.h"
#include "reference/model/model_tensors.h"
#include "reference/step/gemma4_step.h"

#if FUSEBENCH_WITH_CUDA
#include "harness/runner/tolerances.h"
#include "harness/step/qwen35_gpu_step.h"
#include "harness/step/qwen35_sublayer_check.h"
#include "harness/step/repacked_weights.h"
#include "kernels/common/cuda_check.h"
#endif

namespace fb {
namespace {

namespace fs = std::filesystem;

struct QwenModel {
  fs::path path;
  bool made = false;  // a temp file this process wrote
  std::unique_ptr<GgufFile> file;
  std::map<bool, std::shared_ptr<const ref::Qwen35RefWeights>> ref;  // by fused load
#if FUSEBENCH_WITH_CUDA
  std::shared_ptr<Qwen35DeviceWeights> device;
  WeightLayouts layouts;  // the dense layouts `device` holds
#endif
  ~QwenModel() {
    file.reset();
    if (made) {
      std::error_code ec;
      fs::remove(path, ec);
    }
  }
};

std::mutex g_mutex;

#if FUSEBENCH_WITH_CUDA
// The check launch's expert choice (see Qwen35StepCase::device_setup): the unfused twin's recorded
// routing per (scale, tokens, context, seed), for the fused case that runs after it (twins first).
struct RoutingTape {
  std::vector<std::vector<int32_t>> ids;
  std::vector<std::vector<float>> weights;
};
std::map<std::string, RoutingTape>& twin_routing() {
  static std::map<std::string, RoutingTape> m;
  return m;
}
#endif

std::map<std::string, std::shared_ptr<QwenModel>>& qwen_models() {
  static std::map<std::string, std::shared_ptr<QwenModel>> m;
  return m;
}

std::shared_ptr<QwenModel> qwen_model(const ModelConfig& c) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto& slot = qwen_models()[c.scale_name()];
  if (slot) return slot;
  auto m = std::make_shared<QwenModel>();
  if (const char* env = std::getenv("FUSEBENCH_QWEN35_STEP_GGUF");
      env && *env && c.scale == ModelScale::full) {
    m->path = env;
  } else if (c.scale == ModelScale::tiny) {
    m->path = fs::temp_directory_path() / fmt::format("fusebench_qwen35_step_tiny_{}.gguf", ::getpid());
    MakeModelOptions o;
    o.seed = 0;
    o.recipe = QuantRecipe::q4_k;
    make_model(c, m->path, o);
    m->made = true;
  } else {
    throw CaseSkipped(
        "a full-scale qwen3.5-moe step needs FUSEBENCH_QWEN35_STEP_GGUF=<file made by fusebench make-model "
        "--model qwen3.5-moe --scale full --recipe q4_k -o FILE> (scripts/gpu-check.d/qwen.sh makes one)");
  }
  m->file = std::make_unique<GgufFile>(GgufFile::open(m->path));
  slot = m;
  return m;
}

class Qwen35StepCase final : public WholeStepCase {
 public:
  explicit Qwen35StepCase(const CaseParams& p) : WholeStepCase(p, *p.model, "35 B") {
    if (m_prefill ? p.tokens < 2 : p.tokens != 1)
      throw std::invalid_argument("qwen3.5 step: decode takes T = 1, prefill T >= 2");
    m_model = qwen_model(m_config);
  }

#if FUSEBENCH_WITH_CUDA
  bool has_device() const override { return true; }
  void device_setup(cudaStream_t) override {
    {
      std::lock_guard<std::mutex> lock(g_mutex);
      load_layouts_for_phase(m_model->device, m_model->layouts, m_prefill, [&](WeightLayouts l) {
        return load_qwen35_device_weights(*m_model->file, m_config, l.packed, l.raw);
      });
    }
    m_step = std::make_unique<Qwen35GpuStep>(
        m_model->device, m_p.tokens, m_p.context,
        m_p.variant == "fused" ? Qwen35Variant::fused : Qwen35Variant::unfused);
    if (tiny())
      m_step->upload_state(ref::make_qwen35_state(m_config, m_step->capacity(), m_p.context, m_p.seed));
    else
      m_step->fill_state_random(m_p.seed);
    m_step->set_tokens(m_tokens);
    // The check launch runs on a given expert choice: the top-k of a token whose k-th and k+1-th
    // router logits nearly tie flips under any rounding difference, and a flipped expert changes
    // that token's layer output by a whole expert's share, which then spreads through the GDN state
    // and attention to later tokens (tiny prefill T 100: cosine 0.974 from flips alone, >= 0.999
    // with the reference's routing; harness/step/qwen35_gpu_step_test.cpp measures it and checks the
    // router on its own inputs). Tiny: the fp64 step's routing; full scale: the unfused twin
    // records its routing and the fused variant runs on it. Timed launches use their own router.
    const std::string key = routing_key();
    if (tiny()) {
      ref::Qwen35Trace trace;
      (void)ref_step(false, &trace);
      m_step->force_routing(trace.routing_ids, trace.routing_weights);
    } else if (m_p.variant != "fused") {
      m_step->set_record_routing(true);
      m_recording = true;
    } else {
      std::lock_guard<std::mutex> lock(g_mutex);
      if (auto it = twin_routing().find(key); it != twin_routing().end()) {
        m_step->force_routing(it->second.ids, it->second.weights);
        twin_routing().erase(it);
      }
    }
    m_bytes = m_step->bytes();
    m_flops = m_step->flops();
  }
  // Each launch (and graph replay) advances the GDN states as decode does; the check uses the first.
  void device_launch(cudaStream_t s) override {
    m_step->enqueue(s);
    m_launches = m_step->launches();
  }
  std::vector<float> device_output(cudaStream_t s) override {
    std::vector<float> out = m_step->logits(s);
    if (m_recording) {
      RoutingTape tape{m_step->recorded_routing_ids(s), m_step->recorded_routing_weights(s)};
      m_step->set_record_routing(false);
      m_recording = false;
      std::lock_guard<std::mutex> lock(g_mutex);
      twin_routing()[routing_key()] = std::move(tape);
    }
    m_step->force_routing({}, {});
    return out;
  }
  // Full-scale prefill, fused: the per-sublayer check (about two more steps' work); its worst
  // sublayer is the verdict, the logits comparison only a figure (see the file comment).
  std::optional<Comparison> twin_comparison(const std::vector<float>& twin_output,
                                            const std::vector<float>& output) override {
    if (tiny() || !m_prefill || m_p.variant != "fused") return std::nullopt;
    const Tolerance tol = kernel_tolerance("qwen35_prefill_sublayer", "unfused");
    Stream stream;
    const Qwen35SublayerCheck check =
        check_qwen35_sublayers(m_model->device, m_config, m_tokens, m_p.context, m_p.seed, tol, stream.get());
    const Qwen35SublayerDiff& w = check.worst_sublayer();
    const Metrics chain = compare(twin_output, output);
    const std::string worst_name = Qwen35SublayerCheck::name(w);
    const std::string why_not_chain = fmt::format(
        "not judged: the synthetic model's {} random layers amplify rounding (one bf16 ulp on one element "
        "per token moves the twin's own output to cos 0.975 on an H200, qwen35_full_prefill_gpu_test), so "
        "the logits measure the model, not the kernels",
        m_config.n_layers);
    m_check = {{"judged_by",
                fmt::format("each of the {} sublayers run fused and unfused on the unfused twin's input "
                            "and routing, contributions compared ({}); the comparison is the "
                            "sublayer closest to its bound",
                            check.sublayers.size(), tol.source)},
               {"worst_sublayer",
                {{"sublayer", w.sublayer},
                 {"layer", w.layer},
                 {"kind", w.kind},
                 {"cosine", w.contribution.cosine},
                 {"nmse", w.contribution.nmse},
                 {"max_abs", w.contribution.max_abs},
                 {"tolerance_used", w.tolerance_used}}},
               {"sublayers_bit_exact", check.bit_exact_count()},
               {"whole_chain_logits",
                {{"cosine", chain.cosine},
                 {"nmse", chain.nmse},
                 {"max_abs", chain.max_abs},
                 {"judged", false},
                 {"why", why_not_chain}}}};
    fmt::print(stderr,
               "{} fused ctx {}: fused vs unfused judged per sublayer ({} sublayers on the twin's input and "
               "routing, {} bit-exact): worst {}: contribution {} ({:.3g} of the bound, {}). Whole-chain "
               "logits: {} ({})\n",
               m_p.scenario->name, m_p.context, check.sublayers.size(), check.bit_exact_count(), worst_name,
               w.contribution.summary(), w.tolerance_used, tol.source, chain.summary(), why_not_chain);
    // NaN/Inf never pass: non-finite logits fail the case whatever the sublayers gave (the final norm
    // and lm_head belong to no sublayer).
    Comparison c;  // the runner judges it
    if (chain.nonfinite) {
      c.against = "unfused";
      c.metrics = chain;
      c.tolerance = kernel_tolerance("qwen35_prefill_step", "unfused");
    } else {
      c.against = "unfused (per sublayer)";
      c.metrics = w.contribution;
      c.tolerance = tol;
    }
    return c;
  }
#endif
  nlohmann::json shape() const override {
    nlohmann::json j = WholeStepCase::shape();
    if (!m_check.is_null()) j["fused_vs_unfused"] = m_check;
    return j;
  }

 private:
  std::filesystem::path model_path() const override { return m_model->path; }
  std::vector<float> cpu_step(bool fused_load) override { return ref_step(fused_load, nullptr); }
  std::string routing_key() const {
    return fmt::format("{}/{}/{}/{}", m_config.scale_name(), m_p.tokens, m_p.context, m_p.seed);
  }
  std::vector<float> ref_step(bool fused_load, ref::Qwen35Trace* trace) {
    if (!tiny()) throw std::runtime_error("no CPU reference for a full-scale step");
    std::shared_ptr<const ref::Qwen35RefWeights> w;
    {
      std::lock_guard<std::mutex> lock(g_mutex);
      auto& slot = m_model->ref[fused_load];
      if (!slot)
        slot = std::make_shared<ref::Qwen35RefWeights>(
            ref::load_qwen35_ref_weights(*m_model->file, m_config, fused_load));
      w = slot;
    }
    ref::Qwen35State st = ref::make_qwen35_state(m_config, m_p.context + m_p.tokens, m_p.context, m_p.seed);
    return ref::qwen35_ref_step(*w, st, m_tokens, m_p.context, trace);
  }

  std::shared_ptr<QwenModel> m_model;
  nlohmann::json m_check;  // the per-sublayer check's summary, once it ran
#if FUSEBENCH_WITH_CUDA
  std::unique_ptr<Qwen35GpuStep> m_step;
  bool m_recording = false;
#endif
};

KernelDef make_qwen35_step_kernel(const char* name, Phase phase) {
  return whole_step_kernel(
      name, phase,
      phase == Phase::decode
          ? "whole qwen3.5-moe decode step (30 GDN + 10 gated-attention layers, MoE top-8 + shared "
            "expert, lm_head), CUDA-graph replay"
          : "whole qwen3.5-moe prefill step (dequant + cuBLAS linears, sequential GDN, causal SDPA, "
            "MoE decode kernels over T x slots, lm_head on the last token)",
      ModelFamily::qwen35moe, {{"id", "qwen35"}, {"name", "qwen3.5-moe"}},
      [](const CaseParams& p) { return std::make_unique<Qwen35StepCase>(p); });
}

}  // namespace

KernelDef make_qwen35_decode_step_kernel() {
  return make_qwen35_step_kernel("qwen35_decode_step", Phase::decode);
}
KernelDef make_qwen35_prefill_step_kernel() {
  return make_qwen35_step_kernel("qwen35_prefill_step", Phase::prefill);
}

}  // namespace fb
