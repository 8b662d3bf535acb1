// qwen3.5-moe GatedDeltaNet cases (issue 5 item 2; kernels/gdn, reference/gdn). The in_proj over the
// fused rows [qkv | z | b | a] is a matvec_w4a8 instance (matvec.cpp's GDN group).
//   gdn_conv:       depthwise causal conv (K = 4) + SiLU with its state; fused = the manual
//                   shifted multiply-add kernel, unfused = pad, fma conv, SiLU and state kernels.
//                   Output: the T x conv_dim activations, then the updated state [C][4].
//   gdn_delta_rule: L2 norm + gates + gated delta rule; fused = one kernel, unfused = l2norm,
//                   gates and recurrence kernels on fp32 intermediates. Output: o [T][v_heads][dv]
//                   (bf16), then the updated fp32 state [v_heads][dk][dv].
//   gdn_gated_norm: w * rmsnorm(o) * silu(z) per v-head.
// Inputs are read where the model has them: rows of an in_proj output [qkv | z | b | a]. Decode and
// prefill alike (prefill: the recurrence runs sequentially over T in one kernel). Context does not
// change the work (the state has a fixed size).
#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <stdexcept>

#include "harness/runner/kernel_registry.h"
#include "harness/runner/tolerances.h"
#include "reference/formats/half.h"
#include "reference/gdn/gdn_ref.h"
#include "reference/util/splitmix.h"

#if FUSEBENCH_WITH_CUDA
#include <cuda_runtime_api.h>

#include "harness/runner/kernels/guarded_output.h"
#include "kernels/common/cuda_check.h"
#include "kernels/gdn/gdn.cuh"
#endif

namespace fb {

namespace {

enum class Op { conv, delta_rule, gated_norm };

std::vector<float> bf16_values(size_t n, uint64_t seed, const std::string& what, float sigma,
                               float offset = 0) {
  const CounterRng rng(seed, fnv1a64(what.data(), what.size()));
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = bf16_to_fp32(fp32_to_bf16(offset + sigma * rng.normal(i)));
  return v;
}
std::vector<float> columns(const std::vector<float>& rows, int64_t T, int64_t ld, int64_t col0, int64_t n) {
  std::vector<float> out(static_cast<size_t>(T * n));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < n; ++i) out[t * n + i] = rows[t * ld + col0 + i];
  return out;
}
float round_bf(float v) { return bf16_to_fp32(fp32_to_bf16(v)); }
float silu_f(float v) { return v / (1.0f + std::exp(-v)); }

class GdnCase final : public KernelCase {
 public:
  GdnCase(const CaseParams& p, Op op) : m_op(op), m_variant(p.variant), m_T(p.tokens) {
    if (m_T < 1) throw std::invalid_argument("gdn: tokens must be >= 1");
    const Qwen35MoeDims& q = p.model->qwen;
    m_s = {q.gdn_k_heads, q.gdn_v_heads, q.gdn_head_k_dim, q.gdn_head_v_dim, q.conv_kernel};
    m_C = m_s.conv_dim();
    m_ld = m_C + m_s.value_dim() + 2 * m_s.v_heads;  // the fused in_proj output row
    m_eps = p.model->rms_eps;
    const uint64_t seed = p.seed;
    // Conv inputs ~ in_proj outputs (N(0,1)); conv weights as make_model draws them (N(0, 0.25^2)).
    m_inproj = bf16_values(static_cast<size_t>(m_T * m_ld), seed, "gdn.inproj", 1.0f);
    switch (op) {
      case Op::conv:
        m_conv_w = bf16_values(static_cast<size_t>(m_C * 4), seed, "gdn.conv_w", 0.25f);
        m_conv_state = bf16_values(static_cast<size_t>(m_C * 4), seed, "gdn.conv_state", 1.0f);
        break;
      case Op::delta_rule: {
        m_qkv = bf16_values(static_cast<size_t>(m_T * m_C), seed, "gdn.qkv", 1.0f);
        const CounterRng rng(seed, 0xA11ull);
        for (int64_t h = 0; h < m_s.v_heads; ++h) {
          m_A.push_back(-(1.0f + 15.0f * rng.uniform(2 * h)));  // -exp(A_log), make_model's range
          const double dt = std::exp(std::log(1e-3) + rng.uniform(2 * h + 1) * std::log(100.0));
          m_dt.push_back(static_cast<float>(std::log(std::expm1(dt))));
        }
        m_state = bf16_values(static_cast<size_t>(m_s.v_heads * m_s.dk * m_s.dv), seed, "gdn.state", 0.1f);
        break;
      }
      case Op::gated_norm:
        m_o = bf16_values(static_cast<size_t>(m_T * m_s.value_dim()), seed, "gdn.o", 0.5f);
        m_norm_w = bf16_values(static_cast<size_t>(m_s.dv), seed, "gdn.norm_w", 0.1f, 1.0f);
        break;
    }
  }

  nlohmann::json shape() const override {
    return {{"op", op_name()},        {"tokens", m_T},          {"conv_dim", m_C},
            {"k_heads", m_s.k_heads}, {"v_heads", m_s.v_heads}, {"dk", m_s.dk},
            {"dv", m_s.dv},           {"inproj_cols", m_ld},    {"launches", launches()}};
  }
  uint64_t bytes() const override {
    const uint64_t T = static_cast<uint64_t>(m_T);
    switch (m_op) {
      case Op::conv:  // x read, out written, state read + written, weights read
        return T * m_C * 4 + static_cast<uint64_t>(m_C) * 4 * (2 + 2 + 4);
      case Op::delta_rule:  // qkv + b/a read, o written, fp32 state read + written
        return T * (m_C * 2 + 4 * m_s.v_heads + m_s.value_dim() * 2) +
               2ull * 4 * m_s.v_heads * m_s.dk * m_s.dv;
      case Op::gated_norm:
        return T * m_s.value_dim() * 6;
    }
    return 0;
  }
  uint64_t flops() const override {
    const uint64_t T = static_cast<uint64_t>(m_T);
    switch (m_op) {
      case Op::conv:
        return T * m_C * 8;
      case Op::delta_rule:
        return T * 8ull * m_s.v_heads * m_s.dk * m_s.dv;
      case Op::gated_norm:
        return T * m_s.value_dim() * 8;
    }
    return 0;
  }

  std::vector<float> reference() override {
    switch (m_op) {
      case Op::conv: {
        auto state = m_conv_state;
        const auto y =
            ref::causal_conv_silu_fp64(columns(m_inproj, m_T, m_ld, 0, m_C), m_T, m_C, state, m_conv_w, 4);
        std::vector<float> out;
        for (double v : y) out.push_back(round_bf(static_cast<float>(v)));
        out.insert(out.end(), state.begin(), state.end());
        return out;
      }
      case Op::delta_rule: {
        std::vector<double> state(m_state.begin(), m_state.end());
        const auto o = ref::gated_delta_rule_fp64(m_s, m_T, q(), k(), v(), b(), a(), m_A, m_dt, state);
        std::vector<float> out;
        for (double x : o) out.push_back(round_bf(static_cast<float>(x)));
        for (double x : state) out.push_back(static_cast<float>(x));
        return out;
      }
      case Op::gated_norm:
        return ref::gated_rms_norm_bf16(m_o, z(), m_T * m_s.v_heads, m_s.dv, m_norm_w.data(), m_eps);
    }
    return {};
  }
  void run_reference_once() override { (void)reference(); }

  // fp32 replays of the kernels' arithmetic (the conv: manual tap-order sums vs fma accumulation).
  std::vector<float> cpu_variant_output() override {
    switch (m_op) {
      case Op::conv: {
        std::vector<float> out(static_cast<size_t>(m_T * m_C)), state = m_conv_state;
        for (int64_t c = 0; c < m_C; ++c) {
          float win[4] = {state[c * 4], state[c * 4 + 1], state[c * 4 + 2], state[c * 4 + 3]};
          const float* w = m_conv_w.data() + c * 4;
          for (int64_t t = 0; t < m_T; ++t) {
            win[0] = win[1], win[1] = win[2], win[2] = win[3], win[3] = m_inproj[t * m_ld + c];
            float acc;
            if (m_variant == "unfused") {
              acc = 0.0f;
              for (int j = 0; j < 4; ++j) acc = std::fma(win[j], w[j], acc);
            } else {
              acc = win[0] * w[0];
              for (int j = 1; j < 4; ++j) acc = acc + win[j] * w[j];
            }
            out[t * m_C + c] = round_bf(silu_f(acc));
          }
          for (int j = 0; j < 4; ++j) state[c * 4 + j] = win[j];
        }
        out.insert(out.end(), state.begin(), state.end());
        return out;
      }
      case Op::delta_rule: {
        auto state = m_state;
        auto o = ref::gated_delta_rule_f32(m_s, m_T, q(), k(), v(), b(), a(), m_A, m_dt, state);
        for (float& x : o) x = round_bf(x);
        o.insert(o.end(), state.begin(), state.end());
        return o;
      }
      case Op::gated_norm: {
        const auto zz = z();
        std::vector<float> out(m_o.size());
        const int64_t D = m_s.dv;
        for (int64_t r = 0; r < m_T * m_s.v_heads; ++r) {
          float ss = 0;
          for (int64_t i = 0; i < D; ++i) ss += m_o[r * D + i] * m_o[r * D + i];
          const float inv = 1.0f / std::sqrt(ss / static_cast<float>(D) + static_cast<float>(m_eps));
          for (int64_t i = 0; i < D; ++i)
            out[r * D + i] = round_bf(m_norm_w[i] * round_bf(m_o[r * D + i] * inv) * silu_f(zz[r * D + i]));
        }
        return out;
      }
    }
    return {};
  }

#if FUSEBENCH_WITH_CUDA
  bool has_device() const override { return true; }
  void device_setup(cudaStream_t stream) override {
    m_d_inproj = up_bf16(m_inproj, stream);
    const cuda::GdnDims d = dims();
    switch (m_op) {
      case Op::conv:
        m_d_w = up_f32(m_conv_w, stream);
        m_d_cstate = up_bf16(m_conv_state, stream);
        m_d_ws = DeviceBuffer<float>(cuda::conv_naive_workspace_floats(m_T, m_C, 4));
        m_d_out = make_guarded_output(static_cast<size_t>(m_T * m_C), stream);
        break;
      case Op::delta_rule:
        m_d_qkv = up_bf16(m_qkv, stream);
        m_d_A = up_f32(m_A, stream);
        m_d_dt = up_f32(m_dt, stream);
        m_d_state = up_f32(m_state, stream);
        m_d_qk = DeviceBuffer<float>(static_cast<size_t>(m_T * 2 * d.key_dim()));
        m_d_gates = DeviceBuffer<float>(static_cast<size_t>(m_T * d.v_heads * 2));
        m_d_out = make_guarded_output(static_cast<size_t>(m_T * d.value_dim()), stream);
        break;
      case Op::gated_norm:
        m_d_o = up_bf16(m_o, stream);
        m_d_w = up_f32(m_norm_w, stream);
        m_d_out = make_guarded_output(static_cast<size_t>(m_T * d.value_dim()), stream);
        break;
    }
  }
  void device_launch(cudaStream_t stream) override {
    const cuda::GdnDims d = dims();
    auto* x = reinterpret_cast<const __nv_bfloat16*>(m_d_inproj.get());
    auto* out = reinterpret_cast<__nv_bfloat16*>(m_d_out.get());
    switch (m_op) {
      case Op::conv: {
        auto* st = reinterpret_cast<__nv_bfloat16*>(m_d_cstate.get());
        if (m_variant == "unfused")
          cuda::causal_conv_silu_naive(x, m_ld, m_T, m_C, st, m_d_w.get(), 4, out, m_d_ws.get(), stream);
        else
          cuda::causal_conv_silu(x, m_ld, m_T, m_C, st, m_d_w.get(), 4, out, stream);
        return;
      }
      case Op::delta_rule: {
        auto* qkv = reinterpret_cast<const __nv_bfloat16*>(m_d_qkv.get());
        const __nv_bfloat16* ba = x + (m_ld - 2 * d.v_heads);
        if (m_variant == "unfused") {
          cuda::gdn_qk_l2norm(d, qkv, m_T, m_d_qk.get(), stream);
          cuda::gdn_gates(d, ba, m_ld, m_T, m_d_A.get(), m_d_dt.get(), m_d_gates.get(), stream);
          cuda::gated_delta_rule_prenormed(d, m_d_qk.get(), qkv, m_d_gates.get(), m_T, m_d_state.get(), out,
                                           stream);
        } else {
          cuda::gated_delta_rule(d, qkv, m_T, ba, m_ld, m_d_A.get(), m_d_dt.get(), m_d_state.get(), out,
                                 stream);
        }
        return;
      }
      case Op::gated_norm:
        cuda::gated_rms_norm(reinterpret_cast<const __nv_bfloat16*>(m_d_o.get()), x + m_C, m_ld, m_d_w.get(),
                             m_T, d.v_heads, d.dv, static_cast<float>(m_eps), out, stream);
        return;
    }
  }
  std::vector<float> device_output(cudaStream_t stream) override {
    const size_t n = static_cast<size_t>(m_op == Op::conv ? m_T * m_C : m_T * m_s.value_dim());
    const auto raw = download_guarded_output(m_d_out, n, stream, op_name());
    std::vector<float> out(n);
    for (size_t i = 0; i < n; ++i) out[i] = bf16_to_fp32(raw[i]);
    if (m_op == Op::conv) {
      std::vector<uint16_t> st(m_d_cstate.size());
      FB_CUDA_CHECK(
          cudaMemcpyAsync(st.data(), m_d_cstate.get(), m_d_cstate.bytes(), cudaMemcpyDeviceToHost, stream));
      FB_CUDA_CHECK(cudaStreamSynchronize(stream));
      for (uint16_t v : st) out.push_back(bf16_to_fp32(v));
    } else if (m_op == Op::delta_rule) {
      std::vector<float> st(m_d_state.size());
      FB_CUDA_CHECK(
          cudaMemcpyAsync(st.data(), m_d_state.get(), m_d_state.bytes(), cudaMemcpyDeviceToHost, stream));
      FB_CUDA_CHECK(cudaStreamSynchronize(stream));
      out.insert(out.end(), st.begin(), st.end());
    }
    return out;
  }
#endif

 private:
  const char* op_name() const {
    return m_op == Op::conv ? "gdn_conv" : m_op == Op::delta_rule ? "gdn_delta_rule" : "gdn_gated_norm";
  }
  int launches() const {
    if (m_variant != "unfused") return 1;
    return m_op == Op::conv ? 4 : 3;
  }
  std::vector<float> q() const { return columns(m_qkv, m_T, m_C, 0, m_s.key_dim()); }
  std::vector<float> k() const { return columns(m_qkv, m_T, m_C, m_s.key_dim(), m_s.key_dim()); }
  std::vector<float> v() const { return columns(m_qkv, m_T, m_C, 2 * m_s.key_dim(), m_s.value_dim()); }
  std::vector<float> b() const { return columns(m_inproj, m_T, m_ld, m_ld - 2 * m_s.v_heads, m_s.v_heads); }
  std::vector<float> a() const { return columns(m_inproj, m_T, m_ld, m_ld - m_s.v_heads, m_s.v_heads); }
  std::vector<float> z() const { return columns(m_inproj, m_T, m_ld, m_C, m_s.value_dim()); }
#if FUSEBENCH_WITH_CUDA
  cuda::GdnDims dims() const {
    return {static_cast<int>(m_s.k_heads), static_cast<int>(m_s.v_heads), static_cast<int>(m_s.dk),
            static_cast<int>(m_s.dv), 4};
  }
  static DeviceBuffer<uint16_t> up_bf16(const std::vector<float>& v, cudaStream_t stream) {
    std::vector<uint16_t> bits(v.size());
    for (size_t i = 0; i < v.size(); ++i) bits[i] = fp32_to_bf16(v[i]);
    DeviceBuffer<uint16_t> d(bits.size());
    FB_CUDA_CHECK(cudaMemcpyAsync(d.get(), bits.data(), d.bytes(), cudaMemcpyHostToDevice, stream));
    FB_CUDA_CHECK(cudaStreamSynchronize(stream));  // `bits` dies here
    return d;
  }
  static DeviceBuffer<float> up_f32(const std::vector<float>& v, cudaStream_t stream) {
    DeviceBuffer<float> d(v.size());
    FB_CUDA_CHECK(cudaMemcpyAsync(d.get(), v.data(), d.bytes(), cudaMemcpyHostToDevice, stream));
    return d;
  }
#endif

  Op m_op;
  std::string m_variant;
  int64_t m_T = 1, m_C = 0, m_ld = 0;
  double m_eps = 1e-6;
  ref::GdnShape m_s;
  std::vector<float> m_inproj, m_conv_w, m_conv_state, m_qkv, m_A, m_dt, m_state, m_o, m_norm_w;
#if FUSEBENCH_WITH_CUDA
  DeviceBuffer<uint16_t> m_d_inproj, m_d_cstate, m_d_qkv, m_d_o, m_d_out;
  DeviceBuffer<float> m_d_w, m_d_ws, m_d_A, m_d_dt, m_d_state, m_d_qk, m_d_gates;
#endif
};

KernelDef make_gdn_kernel(Op op, const char* name, const char* description, bool pair) {
  KernelDef k;
  k.name = name;
  k.description = description;
  k.phases = {Phase::decode, Phase::prefill};
  k.variants = pair ? std::vector<std::string>{"fused", "unfused"} : std::vector<std::string>{"single"};
  k.layouts = {"default"};
  k.depends_on_tokens = true;
  k.depends_on_context = false;
  k.twin_of = [](const std::string& v) -> std::optional<std::string> {
    if (v == "fused") return "unfused";
    return std::nullopt;
  };
  const std::string key = name;
  k.instances = [op, key](const ModelConfig& c, Phase) -> std::vector<nlohmann::json> {
    if (c.family != ModelFamily::qwen35moe) return {};
    const Qwen35MoeDims& q = c.qwen;
    const std::string id = op == Op::conv
                               ? fmt::format("conv@{}x{}", q.conv_dim(), q.conv_kernel)
                               : fmt::format("{}@{}x{}x{}", op == Op::delta_rule ? "heads" : "norm",
                                             q.gdn_v_heads, q.gdn_head_k_dim, q.gdn_head_v_dim);
    nlohmann::json inst = {{"id", id}, {"name", key}};
    return std::vector<nlohmann::json>{inst};
  };
  k.make = [op](const CaseParams& p) { return std::make_unique<GdnCase>(p, op); };
  k.tolerance = [key](const std::string& against) { return kernel_tolerance(key, against); };
  return k;
}

}  // namespace

std::vector<KernelDef> make_gdn_kernels() {
  return {
      make_gdn_kernel(
          Op::conv, "gdn_conv",
          "GDN depthwise causal conv (K=4) + SiLU with state: manual shifted multiply-add vs naive "
          "pad/conv/SiLU/state kernels",
          true),
      make_gdn_kernel(
          Op::delta_rule, "gdn_delta_rule",
          "GDN L2 norm + gates + gated delta rule (fp32 state): one kernel vs norm, gates, recurrence", true),
      make_gdn_kernel(Op::gated_norm, "gdn_gated_norm",
                      "GDN output gated RMSNorm w*rmsnorm(o)*silu(z) per v-head", false),
  };
}

}  // namespace fb
