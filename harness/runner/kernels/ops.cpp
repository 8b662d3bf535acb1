// The small ops of the dense path (kernels/ops, reference/ops): rms_norm (gemma hidden + v_norm,
// qwen 1+w), head_norm_rope (per-head q/k norm fused with RoPE vs the two kernels), gelu_tanh_mul
// (prefill's act(gate)*up vs gelu then mul), residual_norm (post-norm + residual + layer scalar vs
// three kernels), softcap (final logits) and embed (Q6_K dequant-on-gather * sqrt(hidden)).
// Decode (T = 1..4) and prefill (T = 512, 2048) alike; none depends on the context. RoPE positions
// are the last T of a 131072 context (capped by the model's): the largest angles, where sincosf
// takes its slow range reduction. Fused variants equal their twins bit for bit (ops.cuh).
#include "reference/ops/ops.h"

#include <fmt/format.h>

#include <cmath>
#include <stdexcept>

#include "harness/runner/kernel_registry.h"
#include "harness/runner/kernels/random_blocks.h"
#include "harness/runner/tolerances.h"
#include "reference/formats/dequantize.h"
#include "reference/formats/half.h"
#include "reference/model/model_tensors.h"
#include "reference/util/splitmix.h"

#if FUSEBENCH_WITH_CUDA
#include <cuda_runtime_api.h>

#include "harness/runner/kernels/guarded_output.h"
#include "kernels/common/cuda_check.h"
#include "kernels/ops/ops.cuh"
#endif

namespace fb {

namespace {

enum class Op { rms_norm, head_norm_rope, gelu_tanh_mul, residual_norm, softcap, embed };

std::vector<float> random_values(size_t n, uint64_t seed, const std::string& what, float sigma,
                                 float offset = 0.0f) {
  const CounterRng rng(seed, fnv1a64(what.data(), what.size()));
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = bf16_to_fp32(fp32_to_bf16(offset + sigma * rng.normal(i)));
  return v;
}

ref::NormWeight norm_mode(const std::string& s) {
  if (s == "direct") return ref::NormWeight::direct;
  if (s == "one_plus") return ref::NormWeight::one_plus;
  if (s == "none") return ref::NormWeight::none;
  throw std::invalid_argument("ops: unknown norm mode " + s);
}

class OpsCase final : public KernelCase {
 public:
  OpsCase(const CaseParams& p, Op op) : m_op(op), m_variant(p.variant), m_inst(p.instance), m_T(p.tokens) {
    if (m_T < 1) throw std::invalid_argument("ops: tokens must be >= 1");
    m_eps = p.model->rms_eps;
    const uint64_t seed = p.seed;
    const std::string id = m_inst.at("id").get<std::string>();
    switch (op) {
      case Op::rms_norm:
      case Op::head_norm_rope: {
        m_heads = m_inst.value("heads", int64_t{1});
        m_cols = m_inst.at("cols").get<int64_t>();
        m_rows = m_T * m_heads;
        m_mode = norm_mode(m_inst.at("mode").get<std::string>());
        m_a = random_values(static_cast<size_t>(m_rows * m_cols), seed, id + ".x", 3.0f);
        m_w = random_values(static_cast<size_t>(m_cols), seed, id + ".w", 0.3f,
                            m_mode == ref::NormWeight::direct ? 1.0f : 0.0f);
        if (op == Op::head_norm_rope) {
          m_rope = {m_cols, m_inst.at("rot_dim").get<int64_t>(), m_inst.at("n_freq").get<int64_t>(),
                    m_inst.at("freq_den").get<int64_t>(), m_inst.at("theta").get<double>()};
          const int64_t ctx =
              std::min<int64_t>(p.model->context_length > 0 ? p.model->context_length : 131072, 131072);
          const int64_t first = std::max<int64_t>(0, ctx - m_T);
          for (int64_t t = 0; t < m_T; ++t) m_pos.push_back(static_cast<int32_t>(first + t));
        }
        m_out_elems = m_rows * m_cols;
        break;
      }
      case Op::gelu_tanh_mul:
        m_cols = m_inst.at("inter").get<int64_t>();
        m_rows = m_T;
        m_a = random_values(static_cast<size_t>(m_T * 2 * m_cols), seed, id + ".gate_up", 1.0f);
        m_out_elems = m_T * m_cols;
        break;
      case Op::residual_norm:
        m_cols = m_inst.at("cols").get<int64_t>();
        m_rows = m_T;
        m_a = random_values(static_cast<size_t>(m_T * m_cols), seed, id + ".x", 4.0f);
        m_b = random_values(static_cast<size_t>(m_T * m_cols), seed, id + ".h", 0.5f);
        m_w = random_values(static_cast<size_t>(m_cols), seed, id + ".w", 0.3f, 1.0f);
        if (m_inst.at("scalar").get<bool>()) m_scalar = {bf16_to_fp32(fp32_to_bf16(0.8125f))};
        m_out_elems = m_T * m_cols;
        break;
      case Op::softcap:
        m_cols = m_inst.at("cols").get<int64_t>();
        // Decode: T rows of logits. Prefill: the model takes the last token's logits only.
        m_rows = p.scenario != nullptr && p.scenario->phase == Phase::prefill ? 1 : m_T;
        m_a = random_values(static_cast<size_t>(m_rows * m_cols), seed, id + ".logits", 20.0f);
        m_cap = m_inst.at("cap").get<double>();
        m_out_elems = m_rows * m_cols;
        break;
      case Op::embed: {
        m_cols = m_inst.at("cols").get<int64_t>();
        m_vocab = m_inst.at("vocab").get<int64_t>();
        m_type = *parse_ggml_type(m_inst.at("type").get<std::string>());
        m_table = random_blocks(m_type, m_vocab, m_cols, seed, fnv1a64(id.data(), id.size()));
        const CounterRng rng(seed, 0x70C5ull);
        for (int64_t t = 0; t < m_T; ++t) m_tokens.push_back(static_cast<int32_t>(rng.bits(t) % m_vocab));
        m_tokens.back() = static_cast<int32_t>(m_vocab - 1);
        m_out_elems = m_T * m_cols;
        break;
      }
    }
  }

  nlohmann::json shape() const override {
    nlohmann::json j = m_inst;
    j.erase("variants");
    j["tensor"] = m_inst.at("id");
    j["tokens"] = m_T;
    j["rows"] = m_rows;
    if (m_op == Op::head_norm_rope) j["positions"] = fmt::format("{}..{}", m_pos.front(), m_pos.back());
    if (m_op == Op::embed) j["table"] = "ggml rows, dequantized on gather (no bf16 table)";
    j["launches"] = launches();
    return j;
  }
  uint64_t bytes() const override {
    const uint64_t out_bytes = static_cast<uint64_t>(m_out_elems) * (m_op == Op::softcap ? 4 : 2);
    switch (m_op) {
      case Op::embed:
        return ggml_row_bytes(m_type, m_cols) * static_cast<uint64_t>(m_T) + out_bytes + m_T * 4;
      case Op::residual_norm:
        return static_cast<uint64_t>(2 * m_T * m_cols) * 2 + out_bytes + m_cols * 4;
      default:
        return static_cast<uint64_t>(m_a.size()) * 2 + out_bytes + m_w.size() * 4;
    }
  }
  uint64_t flops() const override { return 0; }  // memory-bound: judged against the copy rate

  std::vector<float> reference() override {
    switch (m_op) {
      case Op::rms_norm:
        return ref::rms_norm_bf16(m_a, m_rows, m_cols, m_w.data(), m_mode, m_eps);
      case Op::head_norm_rope:
        return ref::rope_bf16(ref::rms_norm_bf16(m_a, m_rows, m_cols, m_w.data(), m_mode, m_eps), m_T,
                              m_heads, m_pos, m_rope);
      case Op::gelu_tanh_mul:
        return ref::gelu_tanh_mul_bf16(m_a, m_T, m_cols);
      case Op::residual_norm:
        return ref::residual_norm_scale_bf16(m_a, m_b, m_rows, m_cols, m_w.data(), m_eps,
                                             m_scalar.empty() ? nullptr : m_scalar.data());
      case Op::softcap:
        return ref::softcap_f32(m_a, m_cap);
      case Op::embed: {
        const size_t rb = ggml_row_bytes(m_type, m_cols);
        std::vector<float> row(static_cast<size_t>(m_cols));
        std::vector<float> out;
        for (int32_t tok : m_tokens) {
          dequantize(m_type, m_table.data() + static_cast<size_t>(tok) * rb, row.data(), m_cols);
          const auto r =
              ref::embed_bf16([&](int32_t) { return row.data(); }, {tok}, m_cols, ref::embed_scale(m_cols));
          out.insert(out.end(), r.begin(), r.end());
        }
        return out;
      }
    }
    return {};
  }
  void run_reference_once() override { (void)reference(); }
  // Fused and unfused forms keep the model's rounding points, so on the CPU both are the reference.
  std::vector<float> cpu_variant_output() override { return reference(); }

#if FUSEBENCH_WITH_CUDA
  bool has_device() const override { return true; }
  void device_setup(cudaStream_t stream) override {
    auto up_bf16 = [&](DeviceBuffer<uint16_t>& d, const std::vector<float>& v) {
      std::vector<uint16_t> b(v.size());
      for (size_t i = 0; i < v.size(); ++i) b[i] = fp32_to_bf16(v[i]);
      d = DeviceBuffer<uint16_t>(b.size());
      FB_CUDA_CHECK(cudaMemcpyAsync(d.get(), b.data(), b.size() * 2, cudaMemcpyHostToDevice, stream));
      FB_CUDA_CHECK(cudaStreamSynchronize(stream));  // b is a local
    };
    auto up = [&](auto& d, const auto& v) {
      using T = typename std::decay_t<decltype(v)>::value_type;
      d = std::decay_t<decltype(d)>(v.size());
      FB_CUDA_CHECK(cudaMemcpyAsync(d.get(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice, stream));
    };
    if (!m_a.empty()) up_bf16(m_d_a, m_a);
    if (!m_b.empty()) up_bf16(m_d_b, m_b);
    if (!m_w.empty()) up(m_d_w, m_w);
    if (!m_scalar.empty()) up(m_d_scalar, m_scalar);
    if (!m_pos.empty()) up(m_d_pos, m_pos);
    if (!m_tokens.empty()) up(m_d_tokens, m_tokens);
    if (!m_table.empty()) up(m_d_table, m_table);
    const size_t out_words = static_cast<size_t>(m_out_elems) * (m_op == Op::softcap ? 2 : 1);
    m_d_out = make_guarded_output(out_words, stream);  // 0xFF bytes: NaN in bf16 and fp32
    if (m_op == Op::head_norm_rope || m_op == Op::gelu_tanh_mul || m_op == Op::residual_norm)
      m_d_tmp = DeviceBuffer<uint16_t>(static_cast<size_t>(m_out_elems));
    FB_CUDA_CHECK(cudaStreamSynchronize(stream));
    if (m_op == Op::head_norm_rope)
      m_rope_params = cuda::make_rope_params(
          static_cast<int>(m_rope.head_dim), static_cast<int>(m_rope.rot_dim),
          static_cast<int>(m_rope.n_freq), static_cast<int>(m_rope.freq_den), m_rope.theta);
  }
  void device_launch(cudaStream_t s) override {
    using bf = __nv_bfloat16;
    const auto* a = reinterpret_cast<const bf*>(m_d_a.get());
    const auto* b = reinterpret_cast<const bf*>(m_d_b.get());
    auto* out = reinterpret_cast<bf*>(m_d_out.get());
    auto* tmp = reinterpret_cast<bf*>(m_d_tmp.get());
    const float eps = static_cast<float>(m_eps);
    const bool fused = m_variant != "unfused";
    const cuda::NormWeight mode = m_mode == ref::NormWeight::direct     ? cuda::NormWeight::direct
                                  : m_mode == ref::NormWeight::one_plus ? cuda::NormWeight::one_plus
                                                                        : cuda::NormWeight::none;
    switch (m_op) {
      case Op::rms_norm:
        cuda::rms_norm(a, m_d_w.get(), mode, eps, out, m_rows, static_cast<int>(m_cols), s);
        break;
      case Op::head_norm_rope:
        if (fused) {
          cuda::head_norm_rope(a, m_d_w.get(), mode, eps, m_d_pos.get(), m_rope_params, out, m_T,
                               static_cast<int>(m_heads), s);
        } else {
          cuda::rms_norm(a, m_d_w.get(), mode, eps, tmp, m_rows, static_cast<int>(m_cols), s);
          cuda::rope(tmp, m_d_pos.get(), m_rope_params, out, m_T, static_cast<int>(m_heads), s);
        }
        break;
      case Op::gelu_tanh_mul:
        if (fused) {
          cuda::gelu_tanh_mul(a, out, m_T, m_cols, s);
        } else {
          cuda::gelu_tanh(a, 2 * m_cols, tmp, m_cols, m_T, m_cols, s);
          cuda::mul(tmp, m_cols, a + m_cols, 2 * m_cols, out, m_cols, m_T, m_cols, s);
        }
        break;
      case Op::residual_norm: {
        const float* sc = m_scalar.empty() ? nullptr : m_d_scalar.get();
        if (fused) {
          cuda::residual_norm_scale(a, b, m_d_w.get(), eps, sc, out, m_rows, static_cast<int>(m_cols), s);
        } else {
          cuda::rms_norm(b, m_d_w.get(), cuda::NormWeight::direct, eps, tmp, m_rows, static_cast<int>(m_cols),
                         s);
          cuda::add(a, tmp, out, m_rows * m_cols, s);
          if (sc) cuda::scale(out, sc, out, m_rows * m_cols, s);
        }
        break;
      }
      case Op::softcap:
        cuda::softcap(a, reinterpret_cast<float*>(m_d_out.get()), m_rows * m_cols, static_cast<float>(m_cap),
                      s);
        break;
      case Op::embed:
        cuda::embed(m_type, m_d_table.get(), m_vocab, m_cols, m_d_tokens.get(), m_T, ref::embed_scale(m_cols),
                    out, s);
        break;
    }
  }
  std::vector<float> device_output(cudaStream_t stream) override {
    const size_t out_words = static_cast<size_t>(m_out_elems) * (m_op == Op::softcap ? 2 : 1);
    const std::vector<uint16_t> raw =
        download_guarded_output(m_d_out, out_words, stream, m_inst.at("id").get<std::string>());
    std::vector<float> out(static_cast<size_t>(m_out_elems));
    if (m_op == Op::softcap) {
      std::memcpy(out.data(), raw.data(), out.size() * 4);
    } else {
      for (size_t i = 0; i < out.size(); ++i) out[i] = bf16_to_fp32(raw[i]);
    }
    return out;
  }
#endif

 private:
  int launches() const {
    if (m_variant != "unfused") return 1;
    if (m_op == Op::residual_norm) return m_scalar.empty() ? 2 : 3;
    return 2;
  }

  Op m_op;
  std::string m_variant;
  nlohmann::json m_inst;
  int64_t m_T = 0, m_rows = 0, m_cols = 0, m_heads = 1, m_out_elems = 0, m_vocab = 0;
  double m_eps = 1e-6, m_cap = 30.0;
  ref::NormWeight m_mode = ref::NormWeight::direct;
  ref::RopeSpec m_rope;
  GgmlType m_type = GgmlType::Q6_K;
  std::vector<float> m_a, m_b, m_w, m_scalar;
  std::vector<int32_t> m_pos, m_tokens;
  std::vector<uint8_t> m_table;
#if FUSEBENCH_WITH_CUDA
  DeviceBuffer<uint16_t> m_d_a, m_d_b, m_d_out, m_d_tmp;
  DeviceBuffer<float> m_d_w, m_d_scalar;
  DeviceBuffer<int32_t> m_d_pos, m_d_tokens;
  DeviceBuffer<uint8_t> m_d_table;
  cuda::RopeParams m_rope_params;
#endif
};

const std::vector<std::string> kFusedPair = {"fused", "unfused"};
const std::vector<std::string> kSingle = {"single"};

nlohmann::json inst(const std::string& id, std::vector<std::string> variants, nlohmann::json fields) {
  fields["id"] = id;
  fields["name"] = id.substr(0, id.find('@'));
  fields["variants"] = std::move(variants);
  return fields;
}

// RoPE of a gemma/qwen head (notes/models.md §1.2, §5.2), as RopeSpec fields.
nlohmann::json rope_fields(int64_t heads, int64_t head_dim, int64_t rot_dim, int64_t n_freq, int64_t den,
                           double theta, const char* mode) {
  return {{"heads", heads},  {"cols", head_dim}, {"rot_dim", rot_dim}, {"n_freq", n_freq},
          {"freq_den", den}, {"theta", theta},   {"mode", mode}};
}

std::vector<nlohmann::json> instances_for(Op op, const ModelConfig& c) {
  std::vector<nlohmann::json> out;
  const bool gemma = c.family == ModelFamily::gemma4;
  const Gemma4Dims& g = c.gemma;
  const Qwen35MoeDims& q = c.qwen;
  switch (op) {
    case Op::rms_norm:
      if (gemma) {
        // Every hidden-size norm (input, post-attention, pre/post-FFN, final) has this shape; the
        // post-norms feeding a residual run fused in residual_norm.
        out.push_back(
            inst(fmt::format("hidden@{}", c.hidden), kSingle, {{"cols", c.hidden}, {"mode", "direct"}}));
        out.push_back(
            inst(fmt::format("v_norm_sliding@{}x{}", g.n_kv_heads_sliding, g.head_dim_sliding), kSingle,
                 {{"heads", g.n_kv_heads_sliding}, {"cols", g.head_dim_sliding}, {"mode", "none"}}));
        out.push_back(inst(fmt::format("v_norm_full@{}x{}", g.n_kv_heads_full, g.head_dim_full), kSingle,
                           {{"heads", g.n_kv_heads_full}, {"cols", g.head_dim_full}, {"mode", "none"}}));
      } else {
        out.push_back(
            inst(fmt::format("hidden@{}", c.hidden), kSingle, {{"cols", c.hidden}, {"mode", "one_plus"}}));
      }
      break;
    case Op::head_norm_rope:
      if (gemma) {
        const int64_t hs = g.head_dim_sliding, hf = g.head_dim_full;
        out.push_back(inst(fmt::format("q_sliding@{}x{}", g.n_heads, hs), kFusedPair,
                           rope_fields(g.n_heads, hs, hs, hs / 2, hs, g.rope_theta_sliding, "direct")));
        out.push_back(
            inst(fmt::format("k_sliding@{}x{}", g.n_kv_heads_sliding, hs), kFusedPair,
                 rope_fields(g.n_kv_heads_sliding, hs, hs, hs / 2, hs, g.rope_theta_sliding, "direct")));
        out.push_back(
            inst(fmt::format("q_full@{}x{}", g.n_heads, hf), kFusedPair,
                 rope_fields(g.n_heads, hf, hf, g.rotary_pairs_full, hf, g.rope_theta_full, "direct")));
        out.push_back(inst(
            fmt::format("k_full@{}x{}", g.n_kv_heads_full, hf), kFusedPair,
            rope_fields(g.n_kv_heads_full, hf, hf, g.rotary_pairs_full, hf, g.rope_theta_full, "direct")));
      } else {
        out.push_back(inst(fmt::format("q@{}x{}", q.n_heads, q.head_dim), kFusedPair,
                           rope_fields(q.n_heads, q.head_dim, q.rotary_dim, q.rotary_dim / 2, q.rotary_dim,
                                       q.rope_theta, "one_plus")));
        out.push_back(inst(fmt::format("k@{}x{}", q.n_kv_heads, q.head_dim), kFusedPair,
                           rope_fields(q.n_kv_heads, q.head_dim, q.rotary_dim, q.rotary_dim / 2, q.rotary_dim,
                                       q.rope_theta, "one_plus")));
      }
      break;
    case Op::gelu_tanh_mul:
      if (gemma)
        out.push_back(inst(fmt::format("ffn@{}", g.intermediate), kFusedPair, {{"inter", g.intermediate}}));
      break;
    case Op::residual_norm:
      if (gemma) {
        out.push_back(inst(fmt::format("post_attention@{}", c.hidden), kFusedPair,
                           {{"cols", c.hidden}, {"scalar", false}}));
        out.push_back(inst(fmt::format("post_ffw+layer_scalar@{}", c.hidden), kFusedPair,
                           {{"cols", c.hidden}, {"scalar", true}}));
      }
      break;
    case Op::softcap:
      if (gemma)
        out.push_back(
            inst(fmt::format("logits@{}", c.vocab), kSingle, {{"cols", c.vocab}, {"cap", g.final_softcap}}));
      break;
    case Op::embed:
      if (gemma) {
        for (const TensorSpec& s : model_tensors(c, QuantRecipe::q4_k_m)) {
          if (s.name != "token_embd.weight") continue;
          out.push_back(inst(
              fmt::format("token_embd@{}x{}", s.n_rows(), s.ne[0]), kSingle,
              {{"vocab", s.n_rows()}, {"cols", s.ne[0]}, {"type", std::string(ggml_type_name(s.type))}}));
        }
      }
      break;
  }
  return out;
}

KernelDef make_ops_kernel(Op op, const char* name, const char* description) {
  KernelDef k;
  k.name = name;
  k.description = description;
  k.phases = {Phase::decode, Phase::prefill};
  const bool pair = op == Op::head_norm_rope || op == Op::gelu_tanh_mul || op == Op::residual_norm;
  k.variants = pair ? kFusedPair : kSingle;
  k.layouts = {"default"};
  k.depends_on_tokens = true;
  k.depends_on_context = false;
  k.twin_of = [](const std::string& v) -> std::optional<std::string> {
    if (v == "fused") return "unfused";
    return std::nullopt;
  };
  k.instances = [op](const ModelConfig& c, Phase) { return instances_for(op, c); };
  k.make = [op](const CaseParams& p) { return std::make_unique<OpsCase>(p, op); };
  const std::string key = name;
  k.tolerance = [key](const std::string& against) { return kernel_tolerance(key, against); };
  return k;
}

}  // namespace

std::vector<KernelDef> make_ops_kernels() {
  return {
      make_ops_kernel(Op::rms_norm, "rms_norm",
                      "RMSNorm over rows: gemma hidden (w), v_norm (no weight), qwen (1+w)"),
      make_ops_kernel(
          Op::head_norm_rope, "head_norm_rope",
          "per-head q/k RMSNorm + RoPE (full / proportional partial) in one pass vs norm then rope"),
      make_ops_kernel(Op::gelu_tanh_mul, "gelu_tanh_mul",
                      "bf16(gelu_tanh(gate)) * up over [gate|up] rows vs two kernels"),
      make_ops_kernel(Op::residual_norm, "residual_norm",
                      "x + post-norm(h) (* layer scalar) in one pass vs norm, add, scale"),
      make_ops_kernel(Op::softcap, "softcap", "final logit softcap tanh(x/30)*30, bf16 -> fp32"),
      make_ops_kernel(Op::embed, "embed", "embedding gather, Q6_K dequant-on-gather, * sqrt(hidden) in fp32"),
  };
}

}  // namespace fb
