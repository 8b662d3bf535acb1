// dequant_bf16: ggml blocks -> bf16, the first half of the prefill baseline (dequant + cuBLAS GEMM).
// Instances are the model's quantized weights; where a load-time fusion applies (gate+up, q+k+v,
// GDN in_proj, shared-expert gate+up) the instance is the fused group and has two variants:
// "fused" (one launch over the row-concatenated blocks) and "unfused" (one launch per part). Both
// must equal the CPU reference bit for bit, and fused must equal unfused bit for bit (DESIGN §4).
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <stdexcept>

#include "harness/runner/kernel_registry.h"
#include "harness/runner/kernels/random_blocks.h"
#include "harness/runner/tolerances.h"
#include "reference/formats/dequantize.h"
#include "reference/formats/half.h"
#include "reference/fusion/load_fusions.h"
#include "reference/model/model_tensors.h"
#include "reference/util/splitmix.h"

#if FUSEBENCH_WITH_CUDA
#include <cuda_runtime_api.h>

#include "harness/runner/kernels/guarded_output.h"
#include "kernels/common/cuda_check.h"
#include "kernels/dequant/dequantize.cuh"
#endif

namespace fb {

namespace {

struct Part {
  std::string name;
  int64_t rows = 0;
};

class DequantBf16Case final : public KernelCase {
 public:
  explicit DequantBf16Case(const CaseParams& p) : m_variant(p.variant) {
    const auto& inst = p.instance;
    m_name = inst.at("name").get<std::string>();
    m_type = *parse_ggml_type(inst.at("type").get<std::string>());
    m_cols = inst.at("cols").get<int64_t>();
    for (const auto& part : inst.at("parts")) {
      m_parts.push_back({part.at("name").get<std::string>(), part.at("rows").get<int64_t>()});
      m_rows += m_parts.back().rows;
    }
    m_row_bytes = ggml_row_bytes(m_type, m_cols);
    // Every variant gets the same bytes for the same seed: the twin comparison is then exact.
    m_weights.reserve(static_cast<size_t>(m_rows) * m_row_bytes);
    for (const Part& part : m_parts) {
      const auto b =
          random_blocks(m_type, part.rows, m_cols, p.seed, fnv1a64(part.name.data(), part.name.size()));
      m_weights.insert(m_weights.end(), b.begin(), b.end());
    }
  }

  nlohmann::json shape() const override {
    nlohmann::json parts = nlohmann::json::array();
    for (const Part& p : m_parts) parts.push_back({{"name", p.name}, {"rows", p.rows}});
    return {{"tensor", fmt::format("{}@{}x{}", m_name, m_rows, m_cols)},
            {"type", std::string(ggml_type_name(m_type))},
            {"rows", m_rows},
            {"cols", m_cols},
            {"parts", parts},
            {"launches", launches()}};
  }
  uint64_t bytes() const override { return m_weights.size() + static_cast<uint64_t>(m_rows * m_cols) * 2; }
  // Memory-bound conversion: no GEMM-comparable flops (a GEMM roofline % would be meaningless).
  uint64_t flops() const override { return 0; }

  std::vector<float> reference() override {
    std::vector<float> out(static_cast<size_t>(m_rows * m_cols));
    dequant_cpu(out.data());
    for (float& v : out) v = bf16_to_fp32(fp32_to_bf16(v));
    return out;
  }
  void run_reference_once() override {
    m_scratch.resize(static_cast<size_t>(m_rows * m_cols));
    dequant_cpu(m_scratch.data());
  }
  std::vector<float> cpu_variant_output() override {
    std::vector<float> out(static_cast<size_t>(m_rows * m_cols));
    if (m_variant == "fused" || m_parts.size() == 1) {
      dequantize(m_type, m_weights.data(), out.data(), m_rows * m_cols);  // one pass over the group
    } else {
      int64_t row = 0;
      for (const Part& p : m_parts) {
        dequantize(m_type, m_weights.data() + row * m_row_bytes, out.data() + row * m_cols, p.rows * m_cols);
        row += p.rows;
      }
    }
    for (float& v : out) v = bf16_to_fp32(fp32_to_bf16(v));
    return out;
  }

#if FUSEBENCH_WITH_CUDA
  bool has_device() const override { return true; }
  void device_setup(cudaStream_t stream) override {
    m_d_weights = DeviceBuffer<uint8_t>(m_weights.size());
    m_d_out = make_guarded_output(static_cast<size_t>(m_rows * m_cols), stream);
    FB_CUDA_CHECK(cudaMemcpyAsync(m_d_weights.get(), m_weights.data(), m_weights.size(),
                                  cudaMemcpyHostToDevice, stream));
  }
  void device_launch(cudaStream_t stream) override {
    auto* out = reinterpret_cast<__nv_bfloat16*>(m_d_out.get());
    if (m_variant == "fused" || m_parts.size() == 1) {
      cuda::dequantize(m_type, m_d_weights.get(), out, m_rows, m_cols, stream);
      return;
    }
    int64_t row = 0;
    for (const Part& p : m_parts) {
      cuda::dequantize(m_type, m_d_weights.get() + row * m_row_bytes, out + row * m_cols, p.rows, m_cols,
                       stream);
      row += p.rows;
    }
  }
  std::vector<float> device_output(cudaStream_t stream) override {
    const std::vector<uint16_t> raw =
        download_guarded_output(m_d_out, static_cast<size_t>(m_rows * m_cols), stream, m_name);
    std::vector<float> out(static_cast<size_t>(m_rows * m_cols));
    for (size_t i = 0; i < out.size(); ++i) out[i] = bf16_to_fp32(raw[i]);
    return out;
  }
#endif

 private:
  int launches() const { return m_variant == "fused" ? 1 : static_cast<int>(m_parts.size()); }
  void dequant_cpu(float* out) const {
    for (int64_t r = 0; r < m_rows; ++r) {
      dequantize(m_type, m_weights.data() + r * m_row_bytes, out + r * m_cols, m_cols);
    }
  }

  std::string m_variant;
  std::string m_name;
  GgmlType m_type = GgmlType::Q4_K;
  int64_t m_cols = 0, m_rows = 0;
  size_t m_row_bytes = 0;
  std::vector<Part> m_parts;
  std::vector<uint8_t> m_weights;
  std::vector<float> m_scratch;
#if FUSEBENCH_WITH_CUDA
  DeviceBuffer<uint8_t> m_d_weights;
  DeviceBuffer<uint16_t> m_d_out;
#endif
};

// "blk.12.ffn_gate.weight" -> "ffn_gate"; expert tensors keep their _exps suffix.
std::string kind_of(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return name;
  std::string k = name.substr(name.find('.', 4) + 1);
  if (const auto dot = k.rfind(".weight"); dot != std::string::npos) k.resize(dot);
  return k;
}

std::vector<nlohmann::json> dequant_instances(const ModelConfig& config, Phase phase) {
  if (phase != Phase::prefill) return {};  // decode reads weights in the matvec, never as bf16
  // The uniform recipe makes every fusion group same-typed; the Q4_K_M mix adds the Q6_K/Q5_K
  // single tensors that the prefill path also dequantizes.
  std::vector<nlohmann::json> out;
  std::set<std::string> seen;
  auto add = [&](const std::string& name, GgmlType type, int64_t cols, const std::vector<Part>& parts,
                 bool fusable) {
    std::string key = fmt::format("{}/{}/{}", name, ggml_type_name(type), cols);
    for (const Part& p : parts) key += fmt::format("/{}", p.rows);
    if (!seen.insert(key).second) return;
    int64_t rows = 0;
    for (const Part& p : parts) rows += p.rows;
    // The same tensor kind can have several shapes (gemma4's sliding vs full layers): the id, which
    // --instance and the reproducers use, carries the shape.
    nlohmann::json j = {{"name", name},
                        {"id", fmt::format("{}@{}x{}", name, rows, cols)},
                        {"type", std::string(ggml_type_name(type))},
                        {"cols", cols},
                        {"parts", nlohmann::json::array()}};
    for (const Part& p : parts) j["parts"].push_back({{"name", p.name}, {"rows", p.rows}});
    j["variants"] =
        fusable ? std::vector<std::string>{"fused", "unfused"} : std::vector<std::string>{"single"};
    out.push_back(std::move(j));
  };
  for (QuantRecipe recipe : {QuantRecipe::q4_k, QuantRecipe::q4_k_m}) {
    const auto specs = model_tensors(config, recipe);
    std::map<int64_t, std::map<std::string, const TensorSpec*>> by_layer;
    for (const TensorSpec& s : specs) {
      if (s.type == GgmlType::F32 || s.name.rfind("blk.", 0) != 0) continue;  // lm_head is chunked: issue 4
      by_layer[std::stoll(s.name.substr(4))][kind_of(s.name)] = &s;
    }
    for (const auto& [layer, kinds] : by_layer) {
      // The loader's own rules and guards (reference/fusion): a group here is exactly a group that
      // load-time fusion would produce from a file with these tensors.
      for (const FusionRule& rule : fusion_rules()) {
        std::vector<const TensorSpec*> members;
        bool complete = true;
        for (const auto& part : rule.parts) {
          if (auto it = kinds.find(part); it != kinds.end()) {
            members.push_back(it->second);
          } else if (part != rule.optional_part) {
            complete = false;
          }
        }
        if (!complete || members.size() < 2) continue;
        const bool same = std::all_of(members.begin(), members.end(), [&](const TensorSpec* m) {
          return m->type == members.front()->type && m->ne[0] == members.front()->ne[0] && m->ne.size() == 2;
        });
        if (!same) continue;
        std::vector<Part> parts;
        std::string name;
        for (const TensorSpec* m : members) {
          parts.push_back({kind_of(m->name), m->n_rows()});
          name += (name.empty() ? "" : "+") + kind_of(m->name);
        }
        add(name, members.front()->type, members.front()->ne[0], parts, true);
      }
      if (recipe != QuantRecipe::q4_k_m) continue;
      for (const auto& [kind, spec] : kinds) {
        add(kind, spec->type, spec->ne[0], {{kind, spec->n_rows()}}, false);
      }
    }
  }
  return out;
}

}  // namespace

KernelDef make_dequant_bf16_kernel() {
  KernelDef k;
  k.name = "dequant_bf16";
  k.description =
      "ggml blocks -> bf16 (prefill baseline's dequant); fused = one launch over row-concatenated groups";
  k.phases = {Phase::prefill};
  k.variants = {"fused", "unfused", "single"};
  k.layouts = {"ggml"};
  k.depends_on_tokens = false;
  k.depends_on_context = false;
  k.twin_of = [](const std::string& v) -> std::optional<std::string> {
    if (v == "fused") return "unfused";
    return std::nullopt;
  };
  k.instances = dequant_instances;
  k.make = [](const CaseParams& p) { return std::make_unique<DequantBf16Case>(p); };
  k.tolerance = [](const std::string& against) { return kernel_tolerance("dequant_bf16", against); };
  return k;
}

}  // namespace fb
