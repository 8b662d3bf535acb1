// qwen3.5-moe full-attention decode case (issue 5 item 1; kernels/attention/qwen_attn, fb::ref ops):
//   qwen_attn_decode: from the fused q|gate/k/v projection rows to the gated attention output.
//     fused:   qwen_attn_prep (q|gate split, (1+w) q/k RMSNorm, partial RoPE, K/V appended into the
//              bf16 cache) -> qwen_sdpa with the sigmoid output gate fused into the split combine;
//     unfused: qwen_split_qkv -> rms_norm -> rope (q and k) -> qwen_kv_append -> qwen_sdpa ->
//              qwen_sigmoid_gate_mul (bit-identical to fused).
//   Output: y [T][n_heads * head_dim] = bf16(attn * bf16(sigmoid(gate))).
// Inputs: projection rows N(0,1) bf16, norm weights w ~ N(0, 0.2^2) (used as 1 + w), caches bf16
// N(0,1) at positions < context, tokens at positions context .. context+T-1 (causal among them).
#include <fmt/format.h>

#include <cmath>
#include <stdexcept>

#include "harness/runner/kernel_registry.h"
#include "harness/runner/tolerances.h"
#include "reference/formats/half.h"
#include "reference/ops/ops.h"
#include "reference/util/splitmix.h"

#if FUSEBENCH_WITH_CUDA
#include <cuda_runtime_api.h>

#include "harness/runner/kernels/guarded_output.h"
#include "kernels/attention/qwen_attn.cuh"
#include "kernels/common/cuda_check.h"
#include "kernels/ops/ops.cuh"
#endif

namespace fb {
namespace {

std::vector<float> bf16_values(size_t n, uint64_t seed, const std::string& what, float sigma) {
  const CounterRng rng(seed, fnv1a64(what.data(), what.size()));
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = bf16_to_fp32(fp32_to_bf16(sigma * rng.normal(i)));
  return v;
}

class QwenAttnCase final : public KernelCase {
 public:
  explicit QwenAttnCase(const CaseParams& p) : m_variant(p.variant), m_T(p.tokens), m_ctx(p.context) {
    if (m_T < 1 || m_ctx < 0) throw std::invalid_argument("qwen_attn_decode: tokens >= 1, context >= 0");
    const Qwen35MoeDims& q = p.model->qwen;
    m_nh = q.n_heads, m_nkv = q.n_kv_heads, m_hd = q.head_dim, m_rot = q.rotary_dim, m_theta = q.rope_theta;
    m_eps = p.model->rms_eps;
    m_ld = 2 * m_nh * m_hd + 2 * m_nkv * m_hd;
    m_cap = m_ctx + m_T;
    m_proj = bf16_values(static_cast<size_t>(m_T * m_ld), p.seed, "qattn.proj", 1.0f);
    m_qn = bf16_values(static_cast<size_t>(m_hd), p.seed, "qattn.q_norm", 0.2f);
    m_kn = bf16_values(static_cast<size_t>(m_hd), p.seed, "qattn.k_norm", 0.2f);
    m_k = bf16_values(static_cast<size_t>(m_nkv * m_cap * m_hd), p.seed, "qattn.k", 1.0f);
    m_v = bf16_values(m_k.size(), p.seed, "qattn.v", 1.0f);
    for (int64_t t = 0; t < m_T; ++t) m_pos.push_back(static_cast<int32_t>(m_ctx + t));
  }

  nlohmann::json shape() const override {
    return {{"tokens", m_T},     {"context", m_ctx},
            {"n_heads", m_nh},   {"n_kv_heads", m_nkv},
            {"head_dim", m_hd},  {"rotary_dim", m_rot},
            {"proj_cols", m_ld}, {"launches", m_variant == "unfused" ? 10 : 3}};
  }
  uint64_t bytes()
      const override {  // projection rows + K/V read up to the last position + y + K/V rows written
    const uint64_t kv = 2ull * static_cast<uint64_t>(m_nkv * m_cap * m_hd) * 2;
    return static_cast<uint64_t>(m_T * m_ld) * 2 + kv + static_cast<uint64_t>(m_T * m_nh * m_hd) * 2;
  }
  uint64_t flops() const override { return 4ull * m_T * m_nh * m_hd * static_cast<uint64_t>(m_cap); }

  std::vector<float> reference() override {
    const ref::RopeSpec spec{m_hd, m_rot, m_rot / 2, m_rot, m_theta};
    auto slice = [&](int64_t col0, int64_t heads, int64_t stride) {
      std::vector<float> out;
      for (int64_t t = 0; t < m_T; ++t)
        for (int64_t h = 0; h < heads; ++h)
          for (int64_t i = 0; i < m_hd; ++i) out.push_back(m_proj[t * m_ld + col0 + h * stride + i]);
      return out;
    };
    const auto q = ref::rope_bf16(ref::rms_norm_bf16(slice(0, m_nh, 2 * m_hd), m_T * m_nh, m_hd, m_qn.data(),
                                                     ref::NormWeight::one_plus, m_eps),
                                  m_T, m_nh, m_pos, spec);
    const auto gate = slice(m_hd, m_nh, 2 * m_hd);
    const auto k = ref::rope_bf16(ref::rms_norm_bf16(slice(2 * m_nh * m_hd, m_nkv, m_hd), m_T * m_nkv, m_hd,
                                                     m_kn.data(), ref::NormWeight::one_plus, m_eps),
                                  m_T, m_nkv, m_pos, spec);
    const auto v = slice(2 * m_nh * m_hd + m_nkv * m_hd, m_nkv, m_hd);
    std::vector<float> kc = m_k, vc = m_v;
    for (int64_t t = 0; t < m_T; ++t)
      for (int64_t h = 0; h < m_nkv; ++h)
        for (int64_t i = 0; i < m_hd; ++i) {
          kc[(h * m_cap + m_pos[t]) * m_hd + i] = k[(t * m_nkv + h) * m_hd + i];
          vc[(h * m_cap + m_pos[t]) * m_hd + i] = v[(t * m_nkv + h) * m_hd + i];
        }
    std::vector<float> y(static_cast<size_t>(m_T * m_nh * m_hd));
    const int64_t G = m_nh / m_nkv;
    const double scale = 1.0 / std::sqrt(static_cast<double>(m_hd));
    std::vector<double> s, acc(static_cast<size_t>(m_hd));
    for (int64_t t = 0; t < m_T; ++t)
      for (int64_t h = 0; h < m_nh; ++h) {
        const int64_t kvh = h / G, len = m_pos[t] + 1;
        s.assign(static_cast<size_t>(len), 0.0);
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j < len; ++j) {
          double d = 0;
          for (int64_t i = 0; i < m_hd; ++i)
            d += static_cast<double>(q[(t * m_nh + h) * m_hd + i]) * kc[(kvh * m_cap + j) * m_hd + i];
          s[j] = d * scale, mx = std::max(mx, s[j]);
        }
        for (double& x : s) sum += (x = std::exp(x - mx));
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = 0; j < len; ++j)
          for (int64_t i = 0; i < m_hd; ++i) acc[i] += s[j] * vc[(kvh * m_cap + j) * m_hd + i];
        for (int64_t i = 0; i < m_hd; ++i) {
          const size_t o = static_cast<size_t>((t * m_nh + h) * m_hd + i);
          const float a = ref::round_bf16(acc[i] / sum);
          const float g = ref::round_bf16(1.0 / (1.0 + std::exp(-static_cast<double>(gate[o]))));
          y[o] = ref::round_bf16(static_cast<double>(a) * g);
        }
      }
    return y;
  }
  void run_reference_once() override { (void)reference(); }
  // No separate fp32 CPU replay: both variants compute the same expressions (bit-identical on the
  // GPU), so the CPU stand-in for either is the reference itself.
  std::vector<float> cpu_variant_output() override { return reference(); }

#if FUSEBENCH_WITH_CUDA
  bool has_device() const override { return true; }
  void device_setup(cudaStream_t stream) override {
    m_d_proj = up_bf16(m_proj, stream);
    m_d_k = up_bf16(m_k, stream);
    m_d_v = up_bf16(m_v, stream);
    m_d_qn = up(m_qn, stream);
    m_d_kn = up(m_kn, stream);
    m_d_pos = DeviceBuffer<int32_t>(m_pos.size());
    FB_CUDA_CHECK(cudaMemcpy(m_d_pos.get(), m_pos.data(), m_pos.size() * 4, cudaMemcpyHostToDevice));
    const size_t nq = static_cast<size_t>(m_T * m_nh * m_hd), nkv = static_cast<size_t>(m_T * m_nkv * m_hd);
    m_d_q = DeviceBuffer<uint16_t>(nq), m_d_qs = DeviceBuffer<uint16_t>(nq),
    m_d_gate = DeviceBuffer<uint16_t>(nq);
    m_d_attn = DeviceBuffer<uint16_t>(nq);
    m_d_ks = DeviceBuffer<uint16_t>(nkv), m_d_vs = DeviceBuffer<uint16_t>(nkv),
    m_d_kn2 = DeviceBuffer<uint16_t>(nkv);
    m_d_ws = DeviceBuffer<float>(cuda::qwen_sdpa_workspace_floats(dims(), m_T, m_cap));
    m_d_out = make_guarded_output(nq, stream);
    m_rope = cuda::make_rope_params(static_cast<int>(m_hd), static_cast<int>(m_rot),
                                    static_cast<int>(m_rot / 2), static_cast<int>(m_rot), m_theta);
    FB_CUDA_CHECK(cudaDeviceSynchronize());  // pageable uploads land before the stream's launches
  }
  void device_launch(cudaStream_t s) override {
    const cuda::QwenAttnDims d = dims();
    const float eps = static_cast<float>(m_eps);
    auto B = [](const DeviceBuffer<uint16_t>& b) { return reinterpret_cast<__nv_bfloat16*>(b.get()); };
    const __nv_bfloat16* proj = B(m_d_proj);
    __nv_bfloat16* out = B(m_d_out);
    if (m_variant == "unfused") {
      cuda::qwen_split_qkv(d, proj, m_ld, m_T, B(m_d_qs), B(m_d_gate), B(m_d_ks), B(m_d_vs), s);
      cuda::rms_norm(B(m_d_qs), m_d_qn.get(), cuda::NormWeight::one_plus, eps, B(m_d_q), m_T * m_nh,
                     static_cast<int>(m_hd), s);
      cuda::rope(B(m_d_q), m_d_pos.get(), m_rope, B(m_d_q), m_T, static_cast<int>(m_nh), s);
      cuda::rms_norm(B(m_d_ks), m_d_kn.get(), cuda::NormWeight::one_plus, eps, B(m_d_kn2), m_T * m_nkv,
                     static_cast<int>(m_hd), s);
      cuda::rope(B(m_d_kn2), m_d_pos.get(), m_rope, B(m_d_kn2), m_T, static_cast<int>(m_nkv), s);
      cuda::qwen_kv_append(d, B(m_d_kn2), B(m_d_vs), m_T, m_d_pos.get(), B(m_d_k), B(m_d_v), m_cap, s);
      cuda::qwen_sdpa(d, B(m_d_q), B(m_d_k), B(m_d_v), m_cap, m_T, m_d_pos.get(), nullptr, 0, 0, m_d_ws.get(),
                      B(m_d_attn), s);
      cuda::qwen_sigmoid_gate_mul(B(m_d_attn), B(m_d_gate), m_nh * m_hd, m_hd, m_T, static_cast<int>(m_nh),
                                  static_cast<int>(m_hd), out, s);
    } else {
      cuda::qwen_attn_prep(d, proj, m_ld, m_T, m_d_qn.get(), m_d_kn.get(), eps, m_d_pos.get(), m_rope,
                           B(m_d_q), B(m_d_k), B(m_d_v), m_cap, s);
      cuda::qwen_sdpa(d, B(m_d_q), B(m_d_k), B(m_d_v), m_cap, m_T, m_d_pos.get(), proj + m_hd, m_ld, 2 * m_hd,
                      m_d_ws.get(), out, s);
    }
  }
  std::vector<float> device_output(cudaStream_t stream) override {
    const size_t n = static_cast<size_t>(m_T * m_nh * m_hd);
    const auto raw = download_guarded_output(m_d_out, n, stream, "qwen_attn_decode");
    std::vector<float> out(n);
    for (size_t i = 0; i < n; ++i) out[i] = bf16_to_fp32(raw[i]);
    return out;
  }
#endif

 private:
#if FUSEBENCH_WITH_CUDA
  cuda::QwenAttnDims dims() const {
    return {static_cast<int>(m_nh), static_cast<int>(m_nkv), static_cast<int>(m_hd)};
  }
  static DeviceBuffer<uint16_t> up_bf16(const std::vector<float>& v, cudaStream_t) {
    std::vector<uint16_t> bits(v.size());
    for (size_t i = 0; i < v.size(); ++i) bits[i] = fp32_to_bf16(v[i]);
    DeviceBuffer<uint16_t> d(bits.size());
    FB_CUDA_CHECK(cudaMemcpy(d.get(), bits.data(), d.bytes(), cudaMemcpyHostToDevice));
    return d;
  }
  static DeviceBuffer<float> up(const std::vector<float>& v, cudaStream_t) {
    DeviceBuffer<float> d(v.size());
    FB_CUDA_CHECK(cudaMemcpy(d.get(), v.data(), d.bytes(), cudaMemcpyHostToDevice));
    return d;
  }
  DeviceBuffer<uint16_t> m_d_proj, m_d_k, m_d_v, m_d_q, m_d_qs, m_d_gate, m_d_attn, m_d_ks, m_d_vs, m_d_kn2,
      m_d_out;
  DeviceBuffer<float> m_d_qn, m_d_kn, m_d_ws;
  DeviceBuffer<int32_t> m_d_pos;
  cuda::RopeParams m_rope;
#endif
  std::string m_variant;
  int64_t m_T = 1, m_ctx = 0, m_cap = 0, m_nh = 0, m_nkv = 0, m_hd = 0, m_rot = 0, m_ld = 0;
  double m_theta = 1e7, m_eps = 1e-6;
  std::vector<float> m_proj, m_qn, m_kn, m_k, m_v;
  std::vector<int32_t> m_pos;
};

}  // namespace

KernelDef make_qwen_attn_decode_kernel() {
  KernelDef k;
  k.name = "qwen_attn_decode";
  k.description =
      "qwen full attention from the fused q|gate/k/v rows: split + (1+w) norm + partial RoPE + KV append, "
      "bf16-KV split-K SDPA with the sigmoid output gate fused into the combine vs the unfused chain";
  k.phases = {Phase::decode};
  k.variants = {"fused", "unfused"};
  k.layouts = {"default"};
  k.depends_on_tokens = true;
  k.depends_on_context = true;
  k.twin_of = [](const std::string& v) -> std::optional<std::string> {
    if (v == "fused") return "unfused";
    return std::nullopt;
  };
  k.instances = [](const ModelConfig& c, Phase) -> std::vector<nlohmann::json> {
    if (c.family != ModelFamily::qwen35moe) return {};
    const Qwen35MoeDims& q = c.qwen;
    return {nlohmann::json{{"id", fmt::format("attn@{}x{}x{}", q.n_heads, q.n_kv_heads, q.head_dim)},
                           {"name", "qwen_attn_decode"}}};
  };
  k.make = [](const CaseParams& p) { return std::make_unique<QwenAttnCase>(p); };
  k.tolerance = [](const std::string& against) { return kernel_tolerance("qwen_attn_decode", against); };
  return k;
}

}  // namespace fb
