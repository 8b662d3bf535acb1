// lm_head_decode: the decode (T = 1..4) lm_head, issue 4 item 5 decode half: the output weight
// (gemma4: the tied token_embd, N = 262144 x K = 5376, Q6_K) through the W4A8/W6A8 dp4a matvec of
// kernels/gemv (activation quantization + one matvec launch over all N rows). Layouts as
// matvec_w4a8: "coalesced_u8" (planar int6 with int8 scale codes for Q6_K; coalesced int4 u8 for
// Q4_K), "coalesced_bf16", "ggml" (the GGUF blocks read in place).
// Output and reference: an fp64 matvec over 1.4 G weights per token is slow on one CPU core, so the
// case's output is a seeded sample of weight rows (first/last always in) for every token; the device
// computes all N logits (the timed work) and the sample is cut from it.
// bytes = weight bytes of the layout + bf16 x read + bf16 logits written.
#include <fmt/format.h>

#include <set>
#include <stdexcept>

#include "harness/runner/kernel_registry.h"
#include "harness/runner/kernels/random_blocks.h"
#include "harness/runner/tolerances.h"
#include "reference/formats/blocks.h"
#include "reference/formats/half.h"
#include "reference/layouts/layouts.h"
#include "reference/matvec/matvec_ref.h"
#include "reference/model/model_tensors.h"
#include "reference/util/splitmix.h"

#if FUSEBENCH_WITH_CUDA
#include <cuda_runtime_api.h>

#include "harness/runner/kernels/guarded_output.h"
#include "kernels/common/cuda_check.h"
#include "kernels/gemv/w4a8_matvec.cuh"
#endif

namespace fb {

namespace {

constexpr int64_t kSampleRows = 2048;

class LmHeadDecodeCase final : public KernelCase {
 public:
  explicit LmHeadDecodeCase(const CaseParams& p) : m_layout(p.layout) {
    const auto& inst = p.instance;
    m_name = inst.at("id").get<std::string>();
    m_type = *parse_ggml_type(inst.at("type").get<std::string>());
    m_n = inst.at("rows").get<int64_t>();
    m_k = inst.at("cols").get<int64_t>();
    m_m = p.tokens > 0 ? p.tokens : 1;
    if (m_m > 4) throw std::invalid_argument("lm_head_decode: decode only (tokens 1..4)");
    m_blocks = random_blocks(m_type, m_n, m_k, p.seed, fnv1a64(m_name.data(), m_name.size()));
    const ScaleEncoding enc = m_layout == "coalesced_bf16" ? ScaleEncoding::bf16 : ScaleEncoding::code8;
    if (m_layout != "ggml") {
      if (m_type == GgmlType::Q4_K)
        m_i4 = pack_q4k_coalesced(reinterpret_cast<const BlockQ4K*>(m_blocks.data()), m_n, m_k, enc);
      else
        m_i6 = pack_q6k_planar(reinterpret_cast<const BlockQ6K*>(m_blocks.data()), m_n, m_k, enc);
    }
    const CounterRng rng(p.seed, 0xAC7ull);
    m_x.resize(static_cast<size_t>(m_m * m_k));
    for (size_t i = 0; i < m_x.size(); ++i) m_x[i] = fp32_to_bf16(rng.normal(i));
    m_q8.resize(static_cast<size_t>(m_m * m_k / 32));
    quantize_activations_q8(m_x.data(), m_m, m_k, m_q8.data());
    std::set<int64_t> seen = {0, m_n - 1};
    m_cols = {0, m_n - 1};
    const CounterRng pick(p.seed, 3);
    for (uint64_t i = 0; static_cast<int64_t>(m_cols.size()) < std::min(m_n, kSampleRows); ++i) {
      const auto v = static_cast<int64_t>(pick.bits(i) % static_cast<uint64_t>(m_n));
      if (seen.insert(v).second) m_cols.push_back(v);
    }
  }

  nlohmann::json shape() const override {
    return {{"tensor", m_name},
            {"type", std::string(ggml_type_name(m_type))},
            {"rows", m_n},
            {"cols", m_k},
            {"tokens", m_m},
            {"layout", m_layout},
            {"weight_bytes", weight_bytes()},
            {"checked", fmt::format("fp64 reference on a seeded sample of {} logits per token (first/last "
                                    "always in); the device computes all {}",
                                    m_cols.size(), m_n)}};
  }
  uint64_t bytes() const override {
    return weight_bytes() + static_cast<uint64_t>(m_m * m_k) * 2 + static_cast<uint64_t>(m_m * m_n) * 2;
  }
  uint64_t flops() const override { return 2ull * static_cast<uint64_t>(m_m * m_n * m_k); }

  // Truth: ggml dequant of the original blocks x bf16 x, fp64, on the sampled rows.
  std::vector<float> reference() override {
    const auto rows = ggml_weight_rows(m_type, m_blocks.data(), m_k);
    return round_bf16(
        sampled(activations_bf16_to_double(m_x.data(), m_m, m_k), [&](int64_t r, double* d) { rows(r, d); }));
  }
  void run_reference_once() override { (void)reference(); }
  // The kernel's arithmetic in fp64: the layout's weights x the int8 activations.
  std::vector<float> cpu_variant_output() override {
    const auto acts = activations_q8_to_double(m_q8.data(), m_m, m_k);
    if (m_layout == "ggml") return reference_with(acts, ggml_weight_rows(m_type, m_blocks.data(), m_k));
    return round_bf16(sampled(acts, [&](int64_t r, double* d) {
      for (int64_t c = 0; c < m_k; ++c)
        d[c] = m_type == GgmlType::Q4_K ? m_i4.weight(r, c) : m_i6.weight(r, c);
    }));
  }

#if FUSEBENCH_WITH_CUDA
  bool has_device() const override { return true; }
  void device_setup(cudaStream_t stream) override {
    auto up = [&](const void* src, size_t bytes) {
      DeviceBuffer<uint8_t> d(std::max<size_t>(bytes, 16));
      if (bytes) FB_CUDA_CHECK(cudaMemcpyAsync(d.get(), src, bytes, cudaMemcpyHostToDevice, stream));
      return d;
    };
    const bool q4 = m_type == GgmlType::Q4_K;
    m_view = {};
    m_view.n = m_n;
    m_view.k = m_k;
    m_bufs.clear();
    if (m_layout == "ggml") {
      m_view.format = q4 ? cuda::MatvecFormat::q4_k : cuda::MatvecFormat::q6_k;
      m_bufs.push_back(up(m_blocks.data(), m_blocks.size()));
      m_view.qdata = m_bufs[0].get();
    } else if (q4) {
      const bool u8 = m_i4.enc == ScaleEncoding::code8;
      m_view.format = u8 ? cuda::MatvecFormat::int4_u8 : cuda::MatvecFormat::int4_bf16;
      m_bufs.push_back(up(m_i4.qdata.data(), m_i4.qdata.size()));
      m_bufs.push_back(u8 ? up(m_i4.scale_code.data(), m_i4.scale_code.size())
                          : up(m_i4.scale_bf16.data(), m_i4.scale_bf16.size() * 2));
      m_bufs.push_back(u8 ? up(m_i4.zero_code.data(), m_i4.zero_code.size())
                          : up(m_i4.zero_bf16.data(), m_i4.zero_bf16.size() * 2));
      m_bufs.push_back(up(m_i4.scale_step.data(), m_i4.scale_step.size() * 2));
      m_bufs.push_back(up(m_i4.zero_step.data(), m_i4.zero_step.size() * 2));
      m_view.qdata = m_bufs[0].get();
      m_view.scale = m_bufs[1].get();
      m_view.zero = m_bufs[2].get();
      m_view.scale_step = reinterpret_cast<const uint16_t*>(m_bufs[3].get());
      m_view.zero_step = reinterpret_cast<const uint16_t*>(m_bufs[4].get());
    } else {
      const bool i8 = m_i6.enc == ScaleEncoding::code8;
      m_view.format = i8 ? cuda::MatvecFormat::int6_i8 : cuda::MatvecFormat::int6_bf16;
      m_bufs.push_back(up(m_i6.ql.data(), m_i6.ql.size()));
      m_bufs.push_back(up(m_i6.qh.data(), m_i6.qh.size()));
      m_bufs.push_back(i8 ? up(m_i6.scale_code.data(), m_i6.scale_code.size())
                          : up(m_i6.scale_bf16.data(), m_i6.scale_bf16.size() * 2));
      m_bufs.push_back(up(m_i6.scale_step.data(), m_i6.scale_step.size() * 2));
      m_view.qdata = m_bufs[0].get();
      m_view.qhigh = m_bufs[1].get();
      m_view.scale = m_bufs[2].get();
      m_view.scale_step = reinterpret_cast<const uint16_t*>(m_bufs[3].get());
    }
    m_d_x = up(m_x.data(), m_x.size() * 2);
    m_d_q8 = DeviceBuffer<Q8Block>(m_q8.size());
    m_d_y = make_guarded_output(static_cast<size_t>(m_m * m_n), stream);
    FB_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  void device_launch(cudaStream_t stream) override {
    const auto* x = reinterpret_cast<const __nv_bfloat16*>(m_d_x.get());
    cuda::w4a8_matvec_bf16(m_view, x, m_m, m_d_q8.get(), reinterpret_cast<__nv_bfloat16*>(m_d_y.get()),
                           cuda::MatvecEpilogue::none, stream);
  }
  std::vector<float> device_output(cudaStream_t stream) override {
    const std::vector<uint16_t> raw =
        download_guarded_output(m_d_y, static_cast<size_t>(m_m * m_n), stream, m_name);
    for (size_t i = 0; i < raw.size(); ++i) {  // unwritten (poisoned) logits fail outside the sample too
      if ((raw[i] & 0x7F80) == 0x7F80 && (raw[i] & 0x7F) != 0)
        throw std::runtime_error(fmt::format("{}: logit {} is NaN (unwritten or invalid)", m_name, i));
    }
    std::vector<float> out;
    out.reserve(static_cast<size_t>(m_m) * m_cols.size());
    for (int64_t t = 0; t < m_m; ++t)
      for (int64_t c : m_cols) out.push_back(bf16_to_fp32(raw[static_cast<size_t>(t * m_n + c)]));
    return out;
  }
#endif

 private:
  // [t][sampled row] fp64 dot products of the sampled weight rows with the activations.
  std::vector<double> sampled(const std::vector<double>& acts,
                              const std::function<void(int64_t, double*)>& row) {
    const auto n = static_cast<int64_t>(m_cols.size());
    return matvec_fp64(
        m_m, n, m_k, [&](int64_t j, double* d) { row(m_cols[static_cast<size_t>(j)], d); }, acts);
  }
  std::vector<float> reference_with(const std::vector<double>& acts,
                                    const std::function<void(int64_t, double*)>& row) {
    return round_bf16(sampled(acts, row));
  }
  uint64_t weight_bytes() const {
    if (m_layout == "ggml") return m_blocks.size();
    return m_type == GgmlType::Q4_K ? m_i4.device_bytes() : m_i6.device_bytes();
  }

  std::string m_layout, m_name;
  GgmlType m_type = GgmlType::Q6_K;
  int64_t m_m = 1, m_n = 0, m_k = 0;
  std::vector<uint8_t> m_blocks;
  CoalescedInt4 m_i4;
  PlanarInt6 m_i6;
  std::vector<uint16_t> m_x;
  std::vector<Q8Block> m_q8;
  std::vector<int64_t> m_cols;
#if FUSEBENCH_WITH_CUDA
  cuda::MatvecWeights m_view;
  std::vector<DeviceBuffer<uint8_t>> m_bufs;
  DeviceBuffer<uint8_t> m_d_x;
  DeviceBuffer<Q8Block> m_d_q8;
  DeviceBuffer<uint16_t> m_d_y;
#endif
};

// The output projection: output.weight, or token_embd.weight where the embeddings are tied.
std::vector<nlohmann::json> lm_head_instances(const ModelConfig& config, Phase phase) {
  if (phase != Phase::decode) return {};
  for (const TensorSpec& s : model_tensors(config, QuantRecipe::q4_k_m)) {
    const bool head = s.name == "output.weight" || (s.name == "token_embd.weight" && config.tied_embeddings);
    if (!head || s.ne.size() != 2 || s.ne[0] % 256 != 0) continue;
    if (s.type != GgmlType::Q4_K && s.type != GgmlType::Q6_K) continue;
    return {{{"name", "lm_head"},
             {"id", fmt::format("lm_head@{}x{}:{}", s.n_rows(), s.ne[0], ggml_type_name(s.type))},
             {"type", std::string(ggml_type_name(s.type))},
             {"rows", s.n_rows()},
             {"cols", s.ne[0]},
             {"variants", {"single"}}}};
  }
  return {};
}

}  // namespace

KernelDef make_lm_head_decode_kernel() {
  KernelDef k;
  k.name = "lm_head_decode";
  k.description = "decode lm_head (N = vocab): W6A8/W4A8 dp4a matvec over the output weight, M = 1..4";
  k.phases = {Phase::decode};
  k.variants = {"single"};
  k.layouts = {"coalesced_u8", "coalesced_bf16", "ggml"};
  k.depends_on_tokens = true;
  k.depends_on_context = false;
  k.twin_of = [](const std::string&) -> std::optional<std::string> { return std::nullopt; };
  k.instances = lm_head_instances;
  k.make = [](const CaseParams& p) { return std::make_unique<LmHeadDecodeCase>(p); };
  k.tolerance = [](const std::string& against) { return kernel_tolerance("lm_head_decode", against); };
  return k;
}

}  // namespace fb
