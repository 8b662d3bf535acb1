// Decode matvec cases (issue 4 items 1-3): W4A8/W6A8 dp4a matvec for M = T = 1..4 tokens.
//
// matvec_w4a8: instances are the model's 2-D projections (Q4_K / Q6_K, K % 256 == 0); where a
//   load-time row-concat group exists (ffn_gate+ffn_up, attn_q+k+v, shared-expert gate+up) the
//   instance is the group, with variants "fused" (one launch over [part0; part1; ...]) and "unfused"
//   (one launch per part), which must agree bit for bit (same kernel, same per-row arithmetic).
//   Also single: ffn_gate alone (the 21504 x 5376 decode target shape) and the decode lm_head.
// gate_up_act: ffn_gate+ffn_up groups with the activation (gemma GELU-tanh, qwen SiLU) in the
//   epilogue ("fused", writes act(gate)*up) vs the fused matvec followed by a GLU kernel ("unfused").
// Layouts: "coalesced_u8" and "coalesced_bf16" (Q4_K -> coalesced int4; Q6_K tensors -> planar int6
//   with int8 codes / bf16 scales), and "ggml" (the GGUF blocks read in place, no repacking).
// Timed work: activation quantization + matvec(s) (+ GLU kernel for unfused gate_up_act).
// bytes = weight bytes of the layout + bf16 activations read + bf16 outputs written.
#include <fmt/format.h>

#include <cstring>
#include <map>
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

struct Part {
  std::string name;
  int64_t rows = 0;
};

// Q4_K blocks shaped like the ggml quantizer's output on centred weights: sub-block scales in the
// upper half of the 6-bit range and mins giving zero points of 6..9 quant steps. Raw random bytes
// (random_blocks) make zero = dmin*m/(d*sc) span 0..1000, which no real tensor has and which the
// bf16 zero of the coalesced layout cannot represent; the ggml quantizer itself is too slow for
// 200M-weight groups.
std::vector<uint8_t> realistic_q4k(int64_t rows, int64_t cols, uint64_t seed, uint64_t stream) {
  std::vector<uint8_t> v = random_blocks(GgmlType::Q4_K, rows, cols, seed, stream);  // qs, d
  const CounterRng rng(seed, stream ^ 0x0C4Bull);
  const size_t nb = v.size() / sizeof(BlockQ4K);
  for (size_t b = 0; b < nb; ++b) {
    BlockQ4K blk;
    std::memcpy(&blk, v.data() + b * sizeof blk, sizeof blk);
    const float d = fp16_to_fp32(blk.d);
    blk.dmin = fp32_to_fp16(10.0f * d);
    uint8_t sc[8], mn[8];
    for (int j = 0; j < 8; ++j) {
      const uint64_t r = rng.bits(b * 8 + j);
      sc[j] = static_cast<uint8_t>(32 + r % 32);
      const float zero = 6.0f + 3.0f * uniform01(r);
      mn[j] = static_cast<uint8_t>(std::min(63.0f, std::nearbyint(zero * sc[j] / 10.0f)));
    }
    for (int j = 0; j < 4; ++j) {
      blk.scales[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
      blk.scales[j + 4] = static_cast<uint8_t>(mn[j] | ((mn[j + 4] >> 4) << 6));
      blk.scales[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4));
    }
    std::memcpy(v.data() + b * sizeof blk, &blk, sizeof blk);
  }
  return v;
}

// One part's weights in the case's layout, host side.
struct PartWeights {
  int64_t rows = 0;
  std::vector<uint8_t> blocks;
  CoalescedInt4 i4;
  PlanarInt6 i6;
};

class MatvecCase final : public KernelCase {
 public:
  MatvecCase(const CaseParams& p, bool glu) : m_variant(p.variant), m_layout(p.layout), m_glu(glu) {
    const auto& inst = p.instance;
    m_name = inst.at("name").get<std::string>();
    m_type = *parse_ggml_type(inst.at("type").get<std::string>());
    m_k = inst.at("cols").get<int64_t>();
    m_m = p.tokens > 0 ? p.tokens : 1;
    if (m_m > 4) throw std::invalid_argument("matvec: decode only (tokens 1..4)");
    m_act = inst.value("act", std::string("gelu_tanh")) == "silu" ? GluAct::silu : GluAct::gelu_tanh;
    const bool q4 = m_type == GgmlType::Q4_K;
    for (const auto& part : inst.at("parts")) {
      m_parts.push_back({part.at("name").get<std::string>(), part.at("rows").get<int64_t>()});
      m_n += m_parts.back().rows;
    }
    const ScaleEncoding enc = m_layout == "coalesced_bf16" ? ScaleEncoding::bf16 : ScaleEncoding::code8;
    for (const Part& part : m_parts) {
      PartWeights w;
      w.rows = part.rows;
      const uint64_t stream = fnv1a64(part.name.data(), part.name.size());
      w.blocks = q4 ? realistic_q4k(part.rows, m_k, p.seed, stream)
                    : random_blocks(m_type, part.rows, m_k, p.seed, stream);
      if (m_layout != "ggml") {
        if (q4)
          w.i4 = pack_q4k_coalesced(reinterpret_cast<const BlockQ4K*>(w.blocks.data()), part.rows, m_k, enc);
        else
          w.i6 = pack_q6k_planar(reinterpret_cast<const BlockQ6K*>(w.blocks.data()), part.rows, m_k, enc);
      }
      m_blocks.insert(m_blocks.end(), w.blocks.begin(), w.blocks.end());
      m_weights.push_back(std::move(w));
    }
    const CounterRng rng(p.seed, 0xAC7ull);
    m_x.resize(static_cast<size_t>(m_m * m_k));
    for (size_t i = 0; i < m_x.size(); ++i) m_x[i] = fp32_to_bf16(rng.normal(i));
    m_q8.resize(static_cast<size_t>(m_m * m_k / 32));
    quantize_activations_q8(m_x.data(), m_m, m_k, m_q8.data());
  }

  nlohmann::json shape() const override {
    nlohmann::json parts = nlohmann::json::array();
    for (const Part& p : m_parts) parts.push_back({{"name", p.name}, {"rows", p.rows}});
    return {{"tensor", fmt::format("{}@{}x{}", m_name, m_n, m_k)},
            {"type", std::string(ggml_type_name(m_type))},
            {"rows", m_n},
            {"cols", m_k},
            {"tokens", m_m},
            {"parts", parts},
            {"layout", m_layout},
            {"weight_bytes", weight_bytes()},
            {"epilogue", m_glu ? to_string(m_act) : "none"},
            {"launches", launches()}};
  }
  uint64_t bytes() const override {
    return weight_bytes() + static_cast<uint64_t>(m_m * m_k) * 2 +
           static_cast<uint64_t>(m_m * out_cols()) * 2;
  }
  uint64_t flops() const override { return 2ull * static_cast<uint64_t>(m_m * m_n * m_k); }

  std::vector<float> reference() override { return round_bf16(truth()); }
  void run_reference_once() override { (void)truth(); }
  // The W4A8 arithmetic of this layout in fp64 (weights as stored, int8 activations), with the
  // bf16 rounding of gate/up before the GLU as the kernels do: what the device result tracks.
  std::vector<float> cpu_variant_output() override {
    const auto y = matvec_fp64(
        m_m, m_n, m_k, [&](int64_t r, double* d) { layout_row(r, d); },
        activations_q8_to_double(m_q8.data(), m_m, m_k));
    if (!m_glu) return round_bf16(y);
    const auto yb = round_bf16(y);
    std::vector<double> yd(yb.begin(), yb.end());
    return round_bf16(glu_fp64(yd, m_m, m_n / 2, m_act));
  }

#if FUSEBENCH_WITH_CUDA
  bool has_device() const override { return true; }
  void device_setup(cudaStream_t stream) override {
    auto up = [&](const void* src, size_t bytes) {
      DeviceBuffer<uint8_t> d(bytes);
      if (bytes) FB_CUDA_CHECK(cudaMemcpyAsync(d.get(), src, bytes, cudaMemcpyHostToDevice, stream));
      return d;
    };
    // fused (or glu) -> one weight set over all rows; unfused -> one per part.
    std::vector<PartWeights> sets;
    if (one_launch()) {
      PartWeights all;
      all.rows = m_n;
      all.blocks = m_blocks;
      if (m_layout != "ggml") {
        all.i4 = m_weights[0].i4;
        all.i6 = m_weights[0].i6;
        for (size_t i = 1; i < m_weights.size(); ++i) {
          if (m_type == GgmlType::Q4_K)
            all.i4 = concat_rows(all.i4, m_weights[i].i4);
          else
            all.i6 = concat_rows(all.i6, m_weights[i].i6);
        }
      }
      sets.push_back(std::move(all));
    } else {
      sets = m_weights;
    }
    m_dev.clear();
    for (const PartWeights& w : sets) {
      DevWeights d;
      d.view.format = format();
      d.view.n = w.rows;
      d.view.k = m_k;
      if (m_layout == "ggml") {
        d.bufs.push_back(up(w.blocks.data(), w.blocks.size()));
        d.view.qdata = d.bufs[0].get();
      } else if (m_type == GgmlType::Q4_K) {
        const CoalescedInt4& t = w.i4;
        const bool u8 = t.enc == ScaleEncoding::code8;
        d.bufs.push_back(up(t.qdata.data(), t.qdata.size()));
        d.bufs.push_back(u8 ? up(t.scale_code.data(), t.scale_code.size())
                            : up(t.scale_bf16.data(), t.scale_bf16.size() * 2));
        d.bufs.push_back(u8 ? up(t.zero_code.data(), t.zero_code.size())
                            : up(t.zero_bf16.data(), t.zero_bf16.size() * 2));
        d.bufs.push_back(up(t.scale_step.data(), t.scale_step.size() * 2));
        d.bufs.push_back(up(t.zero_step.data(), t.zero_step.size() * 2));
        d.view.qdata = d.bufs[0].get();
        d.view.scale = d.bufs[1].get();
        d.view.zero = d.bufs[2].get();
        d.view.scale_step = reinterpret_cast<const uint16_t*>(d.bufs[3].get());
        d.view.zero_step = reinterpret_cast<const uint16_t*>(d.bufs[4].get());
      } else {
        const PlanarInt6& t = w.i6;
        const bool i8 = t.enc == ScaleEncoding::code8;
        d.bufs.push_back(up(t.ql.data(), t.ql.size()));
        d.bufs.push_back(up(t.qh.data(), t.qh.size()));
        d.bufs.push_back(i8 ? up(t.scale_code.data(), t.scale_code.size())
                            : up(t.scale_bf16.data(), t.scale_bf16.size() * 2));
        d.bufs.push_back(up(t.scale_step.data(), t.scale_step.size() * 2));
        d.view.qdata = d.bufs[0].get();
        d.view.qhigh = d.bufs[1].get();
        d.view.scale = d.bufs[2].get();
        d.view.scale_step = reinterpret_cast<const uint16_t*>(d.bufs[3].get());
      }
      m_dev.push_back(std::move(d));
    }
    m_d_x = up(m_x.data(), m_x.size() * 2);
    m_d_q8 = DeviceBuffer<Q8Block>(m_q8.size());
    // [m][n] matvec results per launch (unfused: per part, assembled in device_output).
    m_d_y.clear();
    for (const DevWeights& d : m_dev)
      m_d_y.push_back(DeviceBuffer<uint16_t>(static_cast<size_t>(m_m * d.view.n)));
    const size_t out_elems = static_cast<size_t>(m_m * out_cols());
    m_d_out = make_guarded_output(out_elems, stream);
    for (auto& y : m_d_y)
      FB_CUDA_CHECK(cudaMemsetAsync(y.get(), 0xFF, y.bytes(), stream));  // bf16 NaN poison
  }
  // The first matvec goes through w4a8_matvec_bf16 (quantize + matvec, the matvec launched with PDL
  // so its weight loads start under the quantize kernel); further parts reuse the quantized q8.
  void device_launch(cudaStream_t stream) override {
    const auto* x = reinterpret_cast<const __nv_bfloat16*>(m_d_x.get());
    auto* out = reinterpret_cast<__nv_bfloat16*>(m_d_out.get());
    const auto ep =
        m_act == GluAct::silu ? cuda::MatvecEpilogue::glu_silu : cuda::MatvecEpilogue::glu_gelu_tanh;
    auto first = [&](__nv_bfloat16* y, cuda::MatvecEpilogue e) {
      cuda::w4a8_matvec_bf16(m_dev[0].view, x, m_m, m_d_q8.get(), y, e, stream);
    };
    if (m_glu && m_variant == "fused") {
      first(out, ep);
      return;
    }
    if (m_glu) {  // unfused: [gate; up] matvec to bf16, then the GLU kernel
      auto* y = reinterpret_cast<__nv_bfloat16*>(m_d_y[0].get());
      first(y, cuda::MatvecEpilogue::none);
      cuda::glu_bf16(y, m_m, m_n / 2, ep, out, stream);
      return;
    }
    if (m_dev.size() == 1) {
      first(out, cuda::MatvecEpilogue::none);
      return;
    }
    first(reinterpret_cast<__nv_bfloat16*>(m_d_y[0].get()), cuda::MatvecEpilogue::none);
    for (size_t i = 1; i < m_dev.size(); ++i) {
      cuda::w4a8_matvec(m_dev[i].view, m_d_q8.get(), m_m, reinterpret_cast<__nv_bfloat16*>(m_d_y[i].get()),
                        cuda::MatvecEpilogue::none, stream);
    }
  }
  std::vector<float> device_output(cudaStream_t stream) override {
    const size_t out_elems = static_cast<size_t>(m_m * out_cols());
    std::vector<uint16_t> raw = download_guarded_output(m_d_out, out_elems, stream, m_name);
    std::vector<std::vector<uint16_t>> parts;
    const bool per_part = !m_glu && m_dev.size() > 1;
    if (per_part) {
      for (auto& y : m_d_y) {
        parts.emplace_back(y.size());
        FB_CUDA_CHECK(
            cudaMemcpyAsync(parts.back().data(), y.get(), y.bytes(), cudaMemcpyDeviceToHost, stream));
      }
      FB_CUDA_CHECK(cudaStreamSynchronize(stream));
    }
    if (per_part) {  // [t][part rows] per part -> [t][all rows]
      int64_t col = 0;
      for (size_t i = 0; i < parts.size(); ++i) {
        const int64_t rows = m_dev[i].view.n;
        for (int64_t t = 0; t < m_m; ++t)
          std::memcpy(raw.data() + t * m_n + col, parts[i].data() + t * rows, static_cast<size_t>(rows) * 2);
        col += rows;
      }
    }
    std::vector<float> out(out_elems);
    for (size_t i = 0; i < out_elems; ++i) out[i] = bf16_to_fp32(raw[i]);
    return out;
  }
#endif

 private:
  bool one_launch() const { return m_glu || m_variant != "unfused"; }
  int launches() const {
    if (m_glu) return m_variant == "fused" ? 2 : 3;  // + activation quantization
    return 1 + (one_launch() ? 1 : static_cast<int>(m_parts.size()));
  }
  int64_t out_cols() const { return m_glu ? m_n / 2 : m_n; }
  uint64_t weight_bytes() const {
    if (m_layout == "ggml") return m_blocks.size();
    uint64_t b = 0;
    for (const PartWeights& w : m_weights)
      b += m_type == GgmlType::Q4_K ? w.i4.device_bytes() : w.i6.device_bytes();
    return b;
  }
#if FUSEBENCH_WITH_CUDA
  cuda::MatvecFormat format() const {
    const bool q4 = m_type == GgmlType::Q4_K;
    if (m_layout == "ggml") return q4 ? cuda::MatvecFormat::q4_k : cuda::MatvecFormat::q6_k;
    if (m_layout == "coalesced_bf16")
      return q4 ? cuda::MatvecFormat::int4_bf16 : cuda::MatvecFormat::int6_bf16;
    return q4 ? cuda::MatvecFormat::int4_u8 : cuda::MatvecFormat::int6_i8;
  }
#endif
  // Row r of the concatenated weight as this layout stores it.
  void layout_row(int64_t r, double* dst) const {
    size_t i = 0;
    while (r >= m_weights[i].rows) r -= m_weights[i++].rows;
    const PartWeights& w = m_weights[i];
    if (m_layout == "ggml") {
      ggml_weight_rows(m_type, w.blocks.data(), m_k)(r, dst);
      return;
    }
    for (int64_t c = 0; c < m_k; ++c)
      dst[c] = m_type == GgmlType::Q4_K ? w.i4.weight(r, c) : w.i6.weight(r, c);
  }
  std::vector<double> truth() const {
    auto y = matvec_fp64(m_m, m_n, m_k, ggml_weight_rows(m_type, m_blocks.data(), m_k),
                         activations_bf16_to_double(m_x.data(), m_m, m_k));
    return m_glu ? glu_fp64(y, m_m, m_n / 2, m_act) : y;
  }

  std::string m_variant, m_layout, m_name;
  bool m_glu = false;
  GluAct m_act = GluAct::gelu_tanh;
  GgmlType m_type = GgmlType::Q4_K;
  int64_t m_m = 1, m_n = 0, m_k = 0;
  std::vector<Part> m_parts;
  std::vector<PartWeights> m_weights;
  std::vector<uint8_t> m_blocks;  // all parts' ggml blocks, row-concatenated (the truth)
  std::vector<uint16_t> m_x;
  std::vector<Q8Block> m_q8;
#if FUSEBENCH_WITH_CUDA
  struct DevWeights {
    cuda::MatvecWeights view;
    std::vector<DeviceBuffer<uint8_t>> bufs;
  };
  std::vector<DevWeights> m_dev;
  DeviceBuffer<uint8_t> m_d_x;
  DeviceBuffer<Q8Block> m_d_q8;
  std::vector<DeviceBuffer<uint16_t>> m_d_y;
  DeviceBuffer<uint16_t> m_d_out;
#endif
};

std::string kind_of(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return name;
  std::string k = name.substr(name.find('.', 4) + 1);
  if (const auto dot = k.rfind(".weight"); dot != std::string::npos) k.resize(dot);
  return k;
}

// Row-concat groups the decode path fuses (reference/fusion/load_fusions rules); the first listed
// group wins for a kind.
const std::vector<std::vector<std::string>>& matvec_groups() {
  static const std::vector<std::vector<std::string>> g = {{"ffn_gate", "ffn_up"},
                                                          {"attn_q", "attn_k", "attn_v"},
                                                          {"attn_q", "attn_k"},
                                                          {"ffn_gate_shexp", "ffn_up_shexp"},
                                                          // qwen GDN in_proj [qkv | z | b | a] (issue 5)
                                                          {"attn_qkv", "attn_gate", "ssm_beta", "ssm_alpha"}};
  return g;
}

// Tensors of a few rows (qwen's ssm_alpha/ssm_beta, 32 rows) are not decode matvecs of their own:
// they travel in the GDN in_proj group. Their handful of outputs also makes NMSE/cosine statistics
// meaningless (one bf16 flip of 4 outputs moves the NMSE by 1e-3).
constexpr int64_t kMinRows = 64;

bool supported(GgmlType t, int64_t cols) {
  return (t == GgmlType::Q4_K || t == GgmlType::Q6_K) && cols % 256 == 0;
}

std::vector<nlohmann::json> matvec_instances(const ModelConfig& config, Phase phase, bool glu_only) {
  if (phase != Phase::decode) return {};
  const std::string act = config.family == ModelFamily::gemma4 ? "gelu_tanh" : "silu";
  std::vector<nlohmann::json> out;
  std::set<std::string> seen;
  auto add = [&](const std::string& name, GgmlType type, int64_t cols, const std::vector<Part>& parts,
                 bool fusable) {
    int64_t rows = 0;
    std::string key = fmt::format("{}/{}/{}", name, ggml_type_name(type), cols);
    for (const Part& p : parts) {
      key += fmt::format("/{}", p.rows);
      rows += p.rows;
    }
    if (!seen.insert(key).second) return;
    nlohmann::json j = {{"name", name},
                        {"id", fmt::format("{}@{}x{}:{}", name, rows, cols, ggml_type_name(type))},
                        {"type", std::string(ggml_type_name(type))},
                        {"cols", cols},
                        {"act", act},
                        {"parts", nlohmann::json::array()}};
    for (const Part& p : parts) j["parts"].push_back({{"name", p.name}, {"rows", p.rows}});
    j["variants"] =
        fusable ? std::vector<std::string>{"fused", "unfused"} : std::vector<std::string>{"single"};
    out.push_back(std::move(j));
  };
  for (QuantRecipe recipe : {QuantRecipe::q4_k, QuantRecipe::q4_k_m}) {
    std::map<int64_t, std::map<std::string, TensorSpec>> by_layer;
    for (const TensorSpec& s : model_tensors(config, recipe)) {
      if (s.name.rfind("blk.", 0) != 0 || s.ne.size() != 2) continue;  // experts (3-D), lm_head: elsewhere
      by_layer[std::stoll(s.name.substr(4))][kind_of(s.name)] = s;
    }
    for (const auto& [layer, kinds] : by_layer) {
      std::set<std::string> grouped;
      for (const auto& group : matvec_groups()) {
        std::vector<const TensorSpec*> members;
        for (const auto& k : group)
          if (auto it = kinds.find(k); it != kinds.end() && !grouped.count(k)) members.push_back(&it->second);
        if (members.size() != group.size()) continue;
        const TensorSpec& f = *members.front();
        if (!std::all_of(members.begin(), members.end(),
                         [&](const TensorSpec* m) { return m->type == f.type && m->ne[0] == f.ne[0]; }) ||
            !supported(f.type, f.ne[0]))
          continue;
        const bool gate_up = group.front() == "ffn_gate" || group.front() == "ffn_gate_shexp";
        if (glu_only && !gate_up) continue;
        std::vector<Part> parts;
        std::string name;
        for (const TensorSpec* m : members) {
          parts.push_back({kind_of(m->name), m->n_rows()});
          name += (name.empty() ? "" : "+") + kind_of(m->name);
          grouped.insert(kind_of(m->name));
        }
        add(name, f.type, f.ne[0], parts, !glu_only);
        if (glu_only) out.back()["variants"] = std::vector<std::string>{"fused", "unfused"};
        // The gate alone too: the single-tensor shape (e.g. 21504 x 5376) the decode targets name.
        if (!glu_only && gate_up) add(parts.front().name, f.type, f.ne[0], {parts.front()}, false);
      }
      if (glu_only) continue;
      for (const auto& [kind, spec] : kinds) {
        if (grouped.count(kind) || !supported(spec.type, spec.ne[0]) || spec.n_rows() < kMinRows) continue;
        add(kind, spec.type, spec.ne[0], {{kind, spec.n_rows()}}, false);
      }
    }
  }
  // Decode lm_head: the vocab x hidden output weight (tied: the token embedding), one matvec.
  if (!glu_only) {
    for (const TensorSpec& s : model_tensors(config, QuantRecipe::q4_k_m)) {
      if ((s.name == "output.weight" || (s.name == "token_embd.weight" && config.tied_embeddings)) &&
          s.ne.size() == 2 && supported(s.type, s.ne[0])) {
        add("lm_head", s.type, s.ne[0], {{"lm_head", s.n_rows()}}, false);
        break;
      }
    }
  }
  return out;
}

KernelDef make_def(bool glu) {
  KernelDef k;
  k.name = glu ? "gate_up_act" : "matvec_w4a8";
  k.description =
      glu ? "decode [gate; up] W4A8 matvec with act(gate)*up in the epilogue (GELU-tanh / SiLU)"
          : "decode W4A8/W6A8 dp4a matvec, M = 1..4; fused = one launch over row-concatenated groups";
  k.phases = {Phase::decode};
  k.variants = glu ? std::vector<std::string>{"fused", "unfused"}
                   : std::vector<std::string>{"fused", "unfused", "single"};
  k.layouts = {"coalesced_u8", "coalesced_bf16", "ggml"};
  k.depends_on_tokens = true;
  k.depends_on_context = false;
  k.twin_of = [](const std::string& v) -> std::optional<std::string> {
    if (v == "fused") return "unfused";
    return std::nullopt;
  };
  k.instances = [glu](const ModelConfig& c, Phase p) { return matvec_instances(c, p, glu); };
  k.make = [glu](const CaseParams& p) { return std::make_unique<MatvecCase>(p, glu); };
  const std::string name = k.name;
  k.tolerance = [name](const std::string& against) { return kernel_tolerance(name, against); };
  return k;
}

}  // namespace

KernelDef make_matvec_w4a8_kernel() { return make_def(false); }
KernelDef make_gate_up_act_kernel() { return make_def(true); }

}  // namespace fb
