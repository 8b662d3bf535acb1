// prefill_gemm and lm_head_prefill: the prefill (M > 4) linear baseline of notes/models.md §3.1.
//
// prefill_gemm: y[T, N] = x[T, K] * W[N, K]^T for every distinct (type, N, K) of the model's 2-D
// layer weights (gate+up as the load-time row-concatenated [2I, K] group). Layouts: "ggml" times
// the baseline as the model runs it (dequantize to bf16 + cuBLAS GEMM); "bf16" times the GEMM alone
// on already-dequantized weights, i.e. cuBLAS's own rate at this shape. flops = 2*T*N*K.
//
// lm_head_prefill: N = vocab rows of the output weight (Q6_K), chunked by 32768 rows into one reused
// bf16 buffer ("fused": dequant and GEMM interleaved per chunk, the full bf16 weight never exists)
// vs "unfused" (dequantize all, then the same per-chunk GEMMs; see kernels/prefill/prefill.cuh for
// why those shapes). They must match bit for bit. The device memory each form holds is in the shape.
// The model takes the last token's logits only; T rows here measure the chunked prefill GEMM.
// Decode's lm_head is the matvec of kernels/gemv (another kernel family).
//
// Output and reference: an fp64 GEMM at T = 2048 x 43008 x 5376 takes minutes on a CPU, so the
// case's output is a seeded sample of (token row, weight row) pairs, named in the shape; the device
// computes the full output (the timed work) and the sample is cut from it.
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>
#include <stdexcept>

#include "harness/runner/kernel_registry.h"
#include "harness/runner/kernels/random_blocks.h"
#include "harness/runner/tolerances.h"
#include "reference/formats/dequantize.h"
#include "reference/formats/half.h"
#include "reference/model/model_tensors.h"
#include "reference/ops/ops.h"
#include "reference/util/splitmix.h"

#if FUSEBENCH_WITH_CUDA
#include <cuda_runtime_api.h>

#include "harness/runner/kernels/guarded_output.h"
#include "kernels/common/cuda_check.h"
#include "kernels/dequant/dequantize.cuh"
#include "kernels/prefill/prefill.cuh"
#endif

namespace fb {

namespace {

constexpr int64_t kSampleTokens = 24;
constexpr int64_t kSampleWeightRows = 160;

enum class Form { gemm, lm_head };

// Seeded distinct indices in [0, n), `must` first; all of them when n is small.
std::vector<int64_t> sample_indices(int64_t n, int64_t count, uint64_t seed, uint64_t stream,
                                    std::vector<int64_t> must) {
  std::vector<int64_t> out;
  std::set<int64_t> seen;
  for (int64_t m : must)
    if (m >= 0 && m < n && seen.insert(m).second) out.push_back(m);
  if (n <= count) {
    for (int64_t i = 0; i < n; ++i)
      if (seen.insert(i).second) out.push_back(i);
    return out;
  }
  const CounterRng rng(seed, stream);
  for (uint64_t i = 0; static_cast<int64_t>(out.size()) < count; ++i) {
    const auto v = static_cast<int64_t>(rng.bits(i) % static_cast<uint64_t>(n));
    if (seen.insert(v).second) out.push_back(v);
  }
  return out;
}

// Chunk rows of the lm_head: the model's 32768 for N > 65536 (int4_dispatch.py); below that the
// model does not chunk, so the tiny configs use N/4 (rounded to 256) to still exercise the loop.
int64_t chunk_rows_for(int64_t n) {
  if (n > 65536) return 32768;
  return std::max<int64_t>(256, n / 4 / 256 * 256);
}

class PrefillCase final : public KernelCase {
 public:
  PrefillCase(const CaseParams& p, Form form) : m_form(form), m_variant(p.variant), m_layout(p.layout) {
    const auto& inst = p.instance;
    m_name = inst.at("id").get<std::string>();
    m_type = *parse_ggml_type(inst.at("type").get<std::string>());
    m_n = inst.at("rows").get<int64_t>();
    m_k = inst.at("cols").get<int64_t>();
    m_m = p.tokens;
    if (m_m < 1) throw std::invalid_argument("prefill: tokens must be >= 1");
    m_chunk = form == Form::lm_head ? chunk_rows_for(m_n) : m_n;
    m_wq = random_blocks(m_type, m_n, m_k, p.seed, fnv1a64(m_name.data(), m_name.size()));
    const CounterRng rng(p.seed, 0xAC7ull);
    m_x.resize(static_cast<size_t>(m_m * m_k));
    for (size_t i = 0; i < m_x.size(); ++i) m_x[i] = fp32_to_bf16(rng.normal(i));
    m_rows = sample_indices(m_m, kSampleTokens, p.seed, 1, {0, m_m - 1});
    std::vector<int64_t> must = {0, m_n - 1};
    for (int64_t c0 = m_chunk; c0 < m_n; c0 += m_chunk) must.insert(must.end(), {c0 - 1, c0});
    m_cols = sample_indices(m_n, kSampleWeightRows + static_cast<int64_t>(must.size()), p.seed, 2, must);
  }

  nlohmann::json shape() const override {
    nlohmann::json j = {
        {"tensor", m_name},
        {"type", std::string(ggml_type_name(m_type))},
        {"M", m_m},
        {"N", m_n},
        {"K", m_k},
        {"checked",
         fmt::format("fp64 reference on a seeded sample of {} token rows x {} weight rows "
                     "(first/last{} always in); the device computes all {}x{}",
                     m_rows.size(), m_cols.size(),
                     m_form == Form::lm_head ? ", both sides of every chunk boundary" : "", m_m, m_n)}};
    if (m_form == Form::gemm) {
      j["layout"] = m_layout == "bf16" ? "bf16 weights: cuBLAS GEMM only"
                                       : "ggml blocks: dequant -> bf16 + cuBLAS GEMM";
    } else {
      const uint64_t base = m_wq.size() + static_cast<uint64_t>(m_m * m_k + m_m * m_n) * 2;
      const uint64_t held = static_cast<uint64_t>((chunked() ? m_chunk : m_n) * m_k) * 2;
      j["form"] = chunked() ? "chunked: one reused chunk buffer"
                            : "unchunked: full bf16 weight, same per-chunk GEMMs";
      j["chunk_rows"] = m_chunk;
      j["chunks"] = (m_n + m_chunk - 1) / m_chunk;
      j["bf16_weight_bytes_held"] = held;
      j["full_bf16_weight_bytes"] = static_cast<uint64_t>(m_n * m_k) * 2;
#if FUSEBENCH_WITH_CUDA
      j["peak_device_bytes"] = base + held + cuda::CublasHandle::kWorkspaceBytes;
      j["peak_device_bytes_note"] =
          "allocations of the case: weights, x, logits, bf16 buffer, cuBLAS workspace";
#else
      j["peak_device_bytes"] = base + held;
#endif
    }
    return j;
  }
  uint64_t bytes() const override {
    uint64_t b = m_wq.size() + static_cast<uint64_t>(m_m * m_k + m_m * m_n) * 2;
    if (m_form == Form::gemm && m_layout == "bf16")
      b = static_cast<uint64_t>(m_n * m_k + m_m * m_k + m_m * m_n) * 2;
    else
      b += static_cast<uint64_t>(m_n * m_k) * 2 * 2;  // the bf16 weights written and read back
    return b;
  }
  uint64_t flops() const override { return 2ull * static_cast<uint64_t>(m_m) * m_n * m_k; }

  std::vector<float> reference() override {
    std::vector<float> x(m_x.size());
    for (size_t i = 0; i < x.size(); ++i) x[i] = bf16_to_fp32(m_x[i]);
    const size_t rb = ggml_row_bytes(m_type, m_k);
    std::vector<std::vector<float>> w(m_cols.size(), std::vector<float>(static_cast<size_t>(m_k)));
    std::vector<const float*> wp, xp;
    for (size_t j = 0; j < m_cols.size(); ++j) {
      dequantize(m_type, m_wq.data() + m_cols[j] * rb, w[j].data(), m_k);
      for (float& v : w[j]) v = bf16_to_fp32(fp32_to_bf16(v));  // the bf16 weights the GEMM reads
      wp.push_back(w[j].data());
    }
    for (int64_t r : m_rows) xp.push_back(x.data() + r * m_k);
    return ref::gemm_sampled_bf16(xp, wp, m_k);
  }
  void run_reference_once() override { (void)reference(); }
  // No CPU twin of cuBLAS: the CPU backend checks the reference path itself.
  std::vector<float> cpu_variant_output() override { return reference(); }

#if FUSEBENCH_WITH_CUDA
  bool has_device() const override { return true; }
  void device_setup(cudaStream_t stream) override {
    m_handle = std::make_unique<cuda::CublasHandle>();
    m_d_wq = DeviceBuffer<uint8_t>(m_wq.size());
    m_d_x = DeviceBuffer<uint16_t>(m_x.size());
    m_d_y = make_guarded_output(static_cast<size_t>(m_m * m_n), stream);  // bf16 NaN poison + guard words
    const int64_t buf_rows = m_form == Form::lm_head && chunked() ? m_chunk : m_n;
    m_d_w = DeviceBuffer<uint16_t>(static_cast<size_t>(buf_rows * m_k));
    FB_CUDA_CHECK(cudaMemcpyAsync(m_d_wq.get(), m_wq.data(), m_wq.size(), cudaMemcpyHostToDevice, stream));
    FB_CUDA_CHECK(cudaMemcpyAsync(m_d_x.get(), m_x.data(), m_x.size() * 2, cudaMemcpyHostToDevice, stream));
    // bf16 layout: the weights are dequantized once here, outside the timed launch (bit-exact to CPU).
    if (m_form == Form::gemm && m_layout == "bf16")
      cuda::dequantize(m_type, m_d_wq.get(), w(), m_n, m_k, stream);
    FB_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  void device_launch(cudaStream_t stream) override {
    const auto* x = reinterpret_cast<const __nv_bfloat16*>(m_d_x.get());
    auto* y = reinterpret_cast<__nv_bfloat16*>(m_d_y.get());
    if (m_form == Form::gemm) {
      if (m_layout == "bf16") {
        cuda::gemm_bf16(m_handle->get(), x, w(), y, m_m, m_n, m_k, m_n, stream);
      } else {
        cuda::linear_dequant_gemm(m_handle->get(), m_type, m_d_wq.get(), m_n, m_k, x, m_m, y, w(), stream);
      }
    } else if (chunked()) {
      cuda::lm_head_chunked(m_handle->get(), m_type, m_d_wq.get(), m_n, m_k, x, m_m, y, w(), m_chunk, stream);
    } else {
      cuda::lm_head_unchunked(m_handle->get(), m_type, m_d_wq.get(), m_n, m_k, x, m_m, y, w(), m_chunk,
                              stream);
    }
  }
  std::vector<float> device_output(cudaStream_t stream) override {
    const std::vector<uint16_t> raw =
        download_guarded_output(m_d_y, static_cast<size_t>(m_m * m_n), stream, m_name);
    // A NaN anywhere (an unwritten element) must fail even outside the sample.
    for (size_t i = 0; i < raw.size(); ++i) {
      if ((raw[i] & 0x7F80) == 0x7F80 && (raw[i] & 0x7F) != 0)
        throw std::runtime_error(
            fmt::format("{}: output element {} is NaN (unwritten or invalid)", m_name, i));
    }
    std::vector<float> out;
    out.reserve(m_rows.size() * m_cols.size());
    for (int64_t r : m_rows)
      for (int64_t c : m_cols) out.push_back(bf16_to_fp32(raw[static_cast<size_t>(r * m_n + c)]));
    return out;
  }
#endif

 private:
  bool chunked() const { return m_variant != "unfused"; }
#if FUSEBENCH_WITH_CUDA
  __nv_bfloat16* w() const { return reinterpret_cast<__nv_bfloat16*>(m_d_w.get()); }
#endif

  Form m_form;
  std::string m_variant, m_layout, m_name;
  GgmlType m_type = GgmlType::Q4_K;
  int64_t m_m = 0, m_n = 0, m_k = 0, m_chunk = 0;
  std::vector<uint8_t> m_wq;
  std::vector<uint16_t> m_x;
  std::vector<int64_t> m_rows, m_cols;
#if FUSEBENCH_WITH_CUDA
  std::unique_ptr<cuda::CublasHandle> m_handle;
  DeviceBuffer<uint8_t> m_d_wq;
  DeviceBuffer<uint16_t> m_d_x, m_d_y, m_d_w;
#endif
};

// "blk.12.ffn_gate.weight" -> "ffn_gate".
std::string kind_of(const std::string& name) {
  std::string k = name.substr(name.find('.', 4) + 1);
  if (const auto dot = k.rfind(".weight"); dot != std::string::npos) k.resize(dot);
  return k;
}

nlohmann::json instance(const std::string& name, GgmlType type, int64_t rows, int64_t cols,
                        std::vector<std::string> variants) {
  return {{"name", name},
          {"id", fmt::format("{}@{}x{}:{}", name, rows, cols, ggml_type_name(type))},
          {"type", std::string(ggml_type_name(type))},
          {"rows", rows},
          {"cols", cols},
          {"variants", std::move(variants)}};
}

// One instance per distinct (type, N, K) of the 2-D layer weights over both quant recipes, gate and
// up merged into the [2I, K] group when they share type and K (the load-time fusion).
std::vector<nlohmann::json> gemm_instances(const ModelConfig& config, Phase phase) {
  if (phase != Phase::prefill) return {};
  std::vector<nlohmann::json> out;
  std::set<std::string> seen;
  for (QuantRecipe recipe : {QuantRecipe::q4_k, QuantRecipe::q4_k_m}) {
    std::map<int64_t, std::map<std::string, const TensorSpec*>> by_layer;
    const auto specs = model_tensors(config, recipe);
    for (const TensorSpec& s : specs) {
      if (s.type == GgmlType::F32 || s.ne.size() != 2 || s.name.rfind("blk.", 0) != 0) continue;
      by_layer[std::stoll(s.name.substr(4))][kind_of(s.name)] = &s;
    }
    for (const auto& [layer, kinds] : by_layer) {
      std::vector<std::pair<std::string, const TensorSpec*>> items;
      const auto g = kinds.find("ffn_gate"), u = kinds.find("ffn_up");
      const bool merge = g != kinds.end() && u != kinds.end() && g->second->type == u->second->type &&
                         g->second->ne[0] == u->second->ne[0];
      for (const auto& [kind, spec] : kinds) {
        if (merge && (kind == "ffn_gate" || kind == "ffn_up")) continue;
        items.emplace_back(kind, spec);
      }
      auto add = [&](const std::string& name, GgmlType type, int64_t rows, int64_t cols) {
        if (!seen.insert(fmt::format("{}/{}/{}", ggml_type_name(type), rows, cols)).second) return;
        out.push_back(instance(name, type, rows, cols, {"single"}));
      };
      if (merge)
        add("ffn_gate+ffn_up", g->second->type, g->second->n_rows() + u->second->n_rows(), g->second->ne[0]);
      for (const auto& [kind, spec] : items) add(kind, spec->type, spec->n_rows(), spec->ne[0]);
    }
  }
  return out;
}

std::vector<nlohmann::json> lm_head_instances(const ModelConfig& config, Phase phase) {
  if (phase != Phase::prefill) return {};
  for (const TensorSpec& s : model_tensors(config, QuantRecipe::q4_k_m)) {
    if (s.name == "output.weight" || (s.name == "token_embd.weight" && config.tied_embeddings)) {
      return {instance("lm_head", s.type, s.n_rows(), s.ne[0], {"fused", "unfused"})};
    }
  }
  return {};
}

}  // namespace

KernelDef make_prefill_gemm_kernel() {
  KernelDef k;
  k.name = "prefill_gemm";
  k.description =
      "prefill linear baseline: ggml -> bf16 dequant + cuBLAS bf16 GEMM (layout ggml), GEMM alone (layout "
      "bf16)";
  k.phases = {Phase::prefill};
  k.variants = {"single"};
  k.layouts = {"ggml", "bf16"};
  k.depends_on_tokens = true;
  k.depends_on_context = false;
  k.twin_of = [](const std::string&) -> std::optional<std::string> { return std::nullopt; };
  k.instances = gemm_instances;
  k.make = [](const CaseParams& p) { return std::make_unique<PrefillCase>(p, Form::gemm); };
  k.tolerance = [](const std::string& against) { return kernel_tolerance("prefill_gemm", against); };
  return k;
}

KernelDef make_lm_head_prefill_kernel() {
  KernelDef k;
  k.name = "lm_head_prefill";
  k.description =
      "lm_head at prefill: dequant chunked by 32768 rows into one bf16 buffer + cuBLAS GEMM (fused) "
      "vs full dequant + the same GEMMs (unfused); bit-exact";
  k.phases = {Phase::prefill};
  k.variants = {"fused", "unfused"};
  k.layouts = {"ggml"};
  k.depends_on_tokens = true;
  k.depends_on_context = false;
  k.twin_of = [](const std::string& v) -> std::optional<std::string> {
    if (v == "fused") return "unfused";
    return std::nullopt;
  };
  k.instances = lm_head_instances;
  k.make = [](const CaseParams& p) { return std::make_unique<PrefillCase>(p, Form::lm_head); };
  k.tolerance = [](const std::string& against) { return kernel_tolerance("lm_head_prefill", against); };
  return k;
}

}  // namespace fb
