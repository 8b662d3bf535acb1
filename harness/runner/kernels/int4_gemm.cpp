// prefill_int4_gemm: the prefill (M > 4) linear on coalesced int4 weights (issue 4 item 4).
//   fused:   kernels/prefill/int4_gemm.cuh, dequantization inside the GEMM main loop (the bf16
//            weights live in shared memory only).
//   unfused: the twin: the whole weight dequantized to bf16 by the same device function, then the
//            cuBLAS bf16 GEMM (what the exported model's inline dequant + F.linear does).
// Instances: every distinct (N, K) of the model's Q4_K 2-D layer weights over both quant recipes,
// gate+up as the load-time row-concatenated [2I, K] group. Layouts: the two scale encodings.
// The weights are Q4_K blocks shaped like a quantizer's output (zero points of 6..9 steps, so the
// layout's bf16 zero is representative), packed by reference/layouts.
// Output and reference: as prefill_gemm, a seeded sample of (token row, weight row) pairs against
// fp64 over the bf16 weights of kernels/prefill/int4_dequant_rule.h; the device computes all of it.
#include <fmt/format.h>

#include <cstring>
#include <map>
#include <set>
#include <stdexcept>

#include "harness/runner/kernel_registry.h"
#include "harness/runner/tolerances.h"
#include "kernels/prefill/int4_dequant_rule.h"
#include "reference/formats/blocks.h"
#include "reference/formats/centred_q4k.h"
#include "reference/formats/half.h"
#include "reference/layouts/layouts.h"
#include "reference/model/model_tensors.h"
#include "reference/ops/ops.h"
#include "reference/util/splitmix.h"

#if FUSEBENCH_WITH_CUDA
#include <cuda_runtime_api.h>

#include "harness/runner/kernels/guarded_output.h"
#include "kernels/common/cuda_check.h"
#include "kernels/prefill/int4_gemm.cuh"
#include "kernels/prefill/prefill.cuh"
#endif

namespace fb {

namespace {

constexpr int64_t kSampleTokens = 24;
constexpr int64_t kSampleWeightRows = 160;

std::vector<int64_t> sample_indices(int64_t n, int64_t count, uint64_t seed, uint64_t stream,
                                    const std::vector<int64_t>& must) {
  std::vector<int64_t> out;
  std::set<int64_t> seen;
  for (int64_t m : must)
    if (m >= 0 && m < n && seen.insert(m).second) out.push_back(m);
  const CounterRng rng(seed, stream);
  for (uint64_t i = 0; static_cast<int64_t>(out.size()) < std::min(n, count); ++i) {
    const auto v = static_cast<int64_t>(rng.bits(i) % static_cast<uint64_t>(n));
    if (seen.insert(v).second) out.push_back(v);
  }
  return out;
}

class Int4GemmCase final : public KernelCase {
 public:
  explicit Int4GemmCase(const CaseParams& p) : m_variant(p.variant), m_layout(p.layout) {
    const auto& inst = p.instance;
    m_name = inst.at("id").get<std::string>();
    m_n = inst.at("rows").get<int64_t>();
    m_k = inst.at("cols").get<int64_t>();
    m_m = p.tokens;
    if (m_m < 1) throw std::invalid_argument("prefill_int4_gemm: tokens must be >= 1");
    const auto blocks = centred_q4k_blocks(m_n, m_k, p.seed, fnv1a64(m_name.data(), m_name.size()));
    m_w = pack_q4k_coalesced(blocks.data(), m_n, m_k,
                             m_layout == "coalesced_u8" ? ScaleEncoding::code8 : ScaleEncoding::bf16);
    const CounterRng rng(p.seed, 0xAC7ull);
    m_x.resize(static_cast<size_t>(m_m * m_k));
    for (size_t i = 0; i < m_x.size(); ++i) m_x[i] = fp32_to_bf16(rng.normal(i));
    m_rows = sample_indices(m_m, kSampleTokens, p.seed, 1, {0, m_m - 1});
    m_cols = sample_indices(m_n, kSampleWeightRows + 2, p.seed, 2, {0, m_n - 1});
  }

  nlohmann::json shape() const override {
    return {{"tensor", m_name},
            {"type", "q4_K"},
            {"M", m_m},
            {"N", m_n},
            {"K", m_k},
            {"layout", m_layout},
            {"form", m_variant == "fused" ? "fused dequant-GEMM (bf16 weights in shared memory only)"
                                          : "dequant to a full bf16 weight + cuBLAS GEMM"},
            {"checked", fmt::format("fp64 reference on a seeded sample of {} token rows x {} weight rows "
                                    "(first/last always in); the device computes all {}x{}",
                                    m_rows.size(), m_cols.size(), m_m, m_n)}};
  }
  uint64_t bytes() const override {
    uint64_t b = m_w.device_bytes() + static_cast<uint64_t>(m_m * m_k + m_m * m_n) * 2;
    if (m_variant != "fused") b += static_cast<uint64_t>(m_n * m_k) * 2 * 2;  // bf16 weight written + read
    return b;
  }
  uint64_t flops() const override { return 2ull * static_cast<uint64_t>(m_m) * m_n * m_k; }

  std::vector<float> reference() override {
    std::vector<float> x(m_x.size());
    for (size_t i = 0; i < x.size(); ++i) x[i] = bf16_to_fp32(m_x[i]);
    std::vector<std::vector<float>> w(m_cols.size(), std::vector<float>(static_cast<size_t>(m_k)));
    std::vector<const float*> wp, xp;
    for (size_t j = 0; j < m_cols.size(); ++j) {
      const int64_t r = m_cols[j];
      for (int64_t c = 0; c < m_k; ++c)
        w[j][c] = bf16_to_fp32(fp32_to_bf16(int4_dequant_fp32(static_cast<uint32_t>(m_w.q(r, c)),
                                                              m_w.scale(r, c / 32), m_w.zero(r, c / 32))));
      wp.push_back(w[j].data());
    }
    for (int64_t r : m_rows) xp.push_back(x.data() + r * m_k);
    return ref::gemm_sampled_bf16(xp, wp, m_k);
  }
  void run_reference_once() override { (void)reference(); }
  // No CPU emulation of the tensor-core accumulation order: the CPU backend checks the reference.
  std::vector<float> cpu_variant_output() override { return reference(); }

#if FUSEBENCH_WITH_CUDA
  bool has_device() const override { return true; }
  void device_setup(cudaStream_t stream) override {
    auto up = [&](const void* src, size_t bytes) {
      DeviceBuffer<uint8_t> d(std::max<size_t>(bytes, 16));
      if (bytes) FB_CUDA_CHECK(cudaMemcpyAsync(d.get(), src, bytes, cudaMemcpyHostToDevice, stream));
      return d;
    };
    const bool u8 = m_w.enc == ScaleEncoding::code8;
    m_d_q = up(m_w.qdata.data(), m_w.qdata.size());
    m_d_s = u8 ? up(m_w.scale_code.data(), m_w.scale_code.size())
               : up(m_w.scale_bf16.data(), m_w.scale_bf16.size() * 2);
    m_d_z = u8 ? up(m_w.zero_code.data(), m_w.zero_code.size())
               : up(m_w.zero_bf16.data(), m_w.zero_bf16.size() * 2);
    m_d_ss = up(m_w.scale_step.data(), m_w.scale_step.size() * 2);
    m_d_zs = up(m_w.zero_step.data(), m_w.zero_step.size() * 2);
    m_view = {m_n,
              m_k,
              u8,
              m_d_q.get(),
              m_d_s.get(),
              m_d_z.get(),
              reinterpret_cast<const uint16_t*>(m_d_ss.get()),
              reinterpret_cast<const uint16_t*>(m_d_zs.get())};
    m_d_x = DeviceBuffer<uint16_t>(m_x.size());
    FB_CUDA_CHECK(cudaMemcpyAsync(m_d_x.get(), m_x.data(), m_x.size() * 2, cudaMemcpyHostToDevice, stream));
    m_d_y = make_guarded_output(static_cast<size_t>(m_m * m_n), stream);
    if (m_variant != "fused") {
      m_handle = std::make_unique<cuda::CublasHandle>();
      m_d_w = DeviceBuffer<uint16_t>(static_cast<size_t>(m_n * m_k));
    }
    FB_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  void device_launch(cudaStream_t stream) override {
    const auto* x = reinterpret_cast<const __nv_bfloat16*>(m_d_x.get());
    auto* y = reinterpret_cast<__nv_bfloat16*>(m_d_y.get());
    if (m_variant == "fused") {
      cuda::int4_gemm(m_view, x, m_m, y, m_n, cuda::Int4GemmTile::automatic, stream);
      return;
    }
    auto* w = reinterpret_cast<__nv_bfloat16*>(m_d_w.get());
    cuda::int4_dequantize_bf16(m_view, w, stream);
    cuda::gemm_bf16(m_handle->get(), x, w, y, m_m, m_n, m_k, m_n, stream);
  }
  std::vector<float> device_output(cudaStream_t stream) override {
    const std::vector<uint16_t> raw =
        download_guarded_output(m_d_y, static_cast<size_t>(m_m * m_n), stream, m_name);
    for (size_t i = 0; i < raw.size(); ++i) {  // an unwritten (poisoned) element fails outside the sample too
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
  std::string m_variant, m_layout, m_name;
  int64_t m_m = 0, m_n = 0, m_k = 0;
  CoalescedInt4 m_w;
  std::vector<uint16_t> m_x;
  std::vector<int64_t> m_rows, m_cols;
#if FUSEBENCH_WITH_CUDA
  cuda::Int4GemmWeights m_view;
  DeviceBuffer<uint8_t> m_d_q, m_d_s, m_d_z, m_d_ss, m_d_zs;
  DeviceBuffer<uint16_t> m_d_x, m_d_y, m_d_w;
  std::unique_ptr<cuda::CublasHandle> m_handle;
#endif
};

std::string kind_of(const std::string& name) {  // "blk.12.ffn_gate.weight" -> "ffn_gate"
  std::string k = name.substr(name.find('.', 4) + 1);
  if (const auto dot = k.rfind(".weight"); dot != std::string::npos) k.resize(dot);
  return k;
}

std::vector<nlohmann::json> int4_gemm_instances(const ModelConfig& config, Phase phase) {
  if (phase != Phase::prefill) return {};
  std::vector<nlohmann::json> out;
  std::set<std::pair<int64_t, int64_t>> seen;
  auto add = [&](const std::string& name, int64_t rows, int64_t cols) {
    if (cols % 256 != 0 || !seen.insert({rows, cols}).second) return;
    out.push_back({{"name", name},
                   {"id", fmt::format("{}@{}x{}:int4", name, rows, cols)},
                   {"rows", rows},
                   {"cols", cols},
                   {"variants", {"fused", "unfused"}}});
  };
  for (QuantRecipe recipe : {QuantRecipe::q4_k, QuantRecipe::q4_k_m}) {
    std::map<int64_t, std::map<std::string, TensorSpec>> by_layer;
    for (const TensorSpec& s : model_tensors(config, recipe)) {
      if (s.type != GgmlType::Q4_K || s.ne.size() != 2 || s.name.rfind("blk.", 0) != 0) continue;
      by_layer[std::stoll(s.name.substr(4))][kind_of(s.name)] = s;
    }
    for (const auto& [layer, kinds] : by_layer) {
      const auto g = kinds.find("ffn_gate"), u = kinds.find("ffn_up");
      const bool merge = g != kinds.end() && u != kinds.end() && g->second.ne[0] == u->second.ne[0];
      if (merge) add("ffn_gate+ffn_up", g->second.n_rows() + u->second.n_rows(), g->second.ne[0]);
      for (const auto& [kind, spec] : kinds)
        if (!merge || (kind != "ffn_gate" && kind != "ffn_up")) add(kind, spec.n_rows(), spec.ne[0]);
    }
  }
  return out;
}

}  // namespace

KernelDef make_prefill_int4_gemm_kernel() {
  KernelDef k;
  k.name = "prefill_int4_gemm";
  k.description =
      "prefill linear on coalesced int4: fused dequant-GEMM on tensor cores (fused) vs dequant to bf16 + "
      "cuBLAS (unfused)";
  k.phases = {Phase::prefill};
  k.variants = {"fused", "unfused"};
  k.layouts = {"coalesced_bf16", "coalesced_u8"};
  k.depends_on_tokens = true;
  k.depends_on_context = false;
  k.twin_of = [](const std::string& v) -> std::optional<std::string> {
    if (v == "fused") return "unfused";
    return std::nullopt;
  };
  k.instances = int4_gemm_instances;
  k.make = [](const CaseParams& p) { return std::make_unique<Int4GemmCase>(p); };
  k.tolerance = [](const std::string& against) { return kernel_tolerance("prefill_int4_gemm", against); };
  return k;
}

}  // namespace fb
