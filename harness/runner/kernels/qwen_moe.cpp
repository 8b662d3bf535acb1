// qwen3.5-moe sparse MoE cases (issue 5 items 3 and 4; kernels/moe, reference/moe), decode T = 1..4.
// The shared expert is slot top_k of every token (expert id E, appended after the routed experts at
// load time; weight sigmoid(w_sh . x) from the router), so each case covers item 4 too.
//   moe_router: router logits (F32 weights) -> top-k -> softmax, plus the shared gate. Output: the
//               dense [T][E + 1] gate matrix (a wrong pick shows as two large errors).
//   moe_gemm1:  [gate | up] per (token, slot) pair, W4A8; fused = one launch over each expert's
//               [gate; up] rows that quantizes x itself, unfused = quantize, a gate and an up
//               launch. Output h [P][2 * inter].
//   moe_gemm2:  silu(gate) * up, down projection, routing weight and the slot sum; fused = one
//               kernel, unfused = silu_mul, quantize, down, weighted-sum kernels. Output y [T][hidden].
// Layouts: "sym_int4" (executorch fused_moe: u = q + 8, bf16 scale per 32) and "ggml" (Q4_K blocks
// in place). Routing comes from route_fp64 on seeded router weights; GEMM2's input h is seeded bf16
// N(0, 1), the scale of GEMM1's outputs. bytes = the weights of the distinct experts the routing
// touches (what a decode step reads) + activations.
#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <set>
#include <stdexcept>

#include "harness/runner/kernel_registry.h"
#include "harness/runner/kernels/random_blocks.h"
#include "harness/runner/tolerances.h"
#include "reference/formats/blocks.h"
#include "reference/formats/half.h"
#include "reference/matvec/matvec_ref.h"
#include "reference/moe/moe_ref.h"
#include "reference/util/splitmix.h"

#if FUSEBENCH_WITH_CUDA
#include <cuda_runtime_api.h>

#include "harness/runner/kernels/guarded_output.h"
#include "kernels/common/cuda_check.h"
#include "kernels/moe/moe.cuh"
#endif

namespace fb {

namespace {

enum class Op { router, gemm1, gemm2 };

std::vector<float> bf16_values(size_t n, uint64_t seed, const std::string& what, float sigma) {
  const CounterRng rng(seed, fnv1a64(what.data(), what.size()));
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = bf16_to_fp32(fp32_to_bf16(sigma * rng.normal(i)));
  return v;
}
std::vector<float> f32_values(size_t n, uint64_t seed, const std::string& what, float sigma) {
  const CounterRng rng(seed, fnv1a64(what.data(), what.size()));
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = sigma * rng.normal(i);
  return v;
}

// Symmetric INT4 experts with random quants and bf16 scales around amax/7.5 of N(0, 0.02^2) weights
// (quantizing 500M floats would take minutes; the kernels only see the stored fields).
SymInt4Experts random_sym_int4(int64_t experts, int64_t n, int64_t k, uint64_t seed,
                               const std::string& what) {
  SymInt4Experts w;
  w.experts = experts, w.n = n, w.k = k, w.group = 32;
  w.qdata.resize(static_cast<size_t>(experts * n * k / 2));
  w.scale.resize(static_cast<size_t>(experts * n * k / 32));
  const CounterRng rq(seed, fnv1a64(what.data(), what.size()));
  for (size_t i = 0; i < w.qdata.size(); i += 8) {
    const uint64_t bits = rq.bits(i / 8);
    for (size_t j = 0; j < 8 && i + j < w.qdata.size(); ++j)
      w.qdata[i + j] = static_cast<uint8_t>(bits >> (8 * j));
  }
  const CounterRng rs(seed, fnv1a64(what.data(), what.size()) ^ 0x5CA1Eull);
  for (size_t i = 0; i < w.scale.size(); ++i)
    w.scale[i] = fp32_to_bf16(0.02f * 2.5f / 7.5f * (0.7f + 0.6f * rs.uniform(i)));
  return w;
}

class MoeCase final : public KernelCase {
 public:
  MoeCase(const CaseParams& p, Op op) : m_op(op), m_variant(p.variant), m_layout(p.layout), m_T(p.tokens) {
    if (m_T < 1 || m_T > 4) throw std::invalid_argument("moe: decode cases take T = 1..4");
    const Qwen35MoeDims& q = p.model->qwen;
    m_H = p.model->hidden, m_I = q.expert_intermediate, m_E = q.n_experts, m_k = q.top_k;
    m_slots = m_k + 1;
    const uint64_t seed = p.seed;
    m_x = bf16_values(static_cast<size_t>(m_T * m_H), seed, "moe.x", 1.0f);
    m_wr = f32_values(static_cast<size_t>(m_E * m_H), seed, "moe.router", 0.02f);
    m_ws = f32_values(static_cast<size_t>(m_H), seed, "moe.shared_gate", 0.02f);
    m_route = route_fp64(m_x, m_wr, m_ws.data(), m_T, m_H, m_E, m_k);
    if (op == Op::router) return;
    const bool gemm1 = op == Op::gemm1;
    m_n = gemm1 ? 2 * m_I : m_H;
    m_K = gemm1 ? m_H : m_I;
    const std::string what = gemm1 ? "moe.w13" : "moe.w2";
    if (m_layout == "ggml")
      m_blocks = random_blocks(GgmlType::Q4_K, (m_E + 1) * m_n, m_K, seed, fnv1a64(what.data(), what.size()));
    else
      m_sym = random_sym_int4(m_E + 1, m_n, m_K, seed, what);
    if (gemm1) {
      const auto bits = x_bits();
      m_q8.resize(static_cast<size_t>(m_T * m_H / 32));
      quantize_activations_q8(bits.data(), m_T, m_H, m_q8.data());
    } else {
      m_h = bf16_values(static_cast<size_t>(pairs() * 2 * m_I), seed, "moe.h", 1.0f);
    }
  }

  nlohmann::json shape() const override {
    nlohmann::json j = {{"op", op_name()}, {"tokens", m_T},    {"hidden", m_H}, {"experts", m_E},
                        {"top_k", m_k},    {"slots", m_slots}, {"inter", m_I},  {"layout", m_layout}};
    if (m_op != Op::router) {
      j["rows"] = m_n, j["cols"] = m_K, j["distinct_experts"] = distinct_experts();
      j["expert_bytes"] = expert_bytes();
    }
    return j;
  }
  uint64_t bytes() const override {
    const uint64_t T = static_cast<uint64_t>(m_T);
    switch (m_op) {
      case Op::router:
        return static_cast<uint64_t>(m_E + 1) * m_H * 4 + T * m_H * 2 + T * m_slots * 8;
      case Op::gemm1:
        return distinct_experts() * expert_bytes() + T * m_H * 2 + static_cast<uint64_t>(pairs()) * m_n * 2;
      case Op::gemm2:
        return distinct_experts() * expert_bytes() + static_cast<uint64_t>(pairs()) * 2 * m_I * 2 +
               T * m_H * 2;
    }
    return 0;
  }
  uint64_t flops() const override {
    if (m_op == Op::router) return 2ull * m_T * (m_E + 1) * m_H;
    return 2ull * pairs() * m_n * m_K;
  }

  std::vector<float> reference() override {
    switch (m_op) {
      case Op::router: {
        const auto g = dense_gates(m_route, m_E + 1);
        return {g.begin(), g.end()};
      }
      case Op::gemm1: {
        const std::vector<double> x(m_x.begin(), m_x.end());
        return round_bf16(moe_gemm1_fp64(rows(), m_n, m_K, x, m_route));
      }
      case Op::gemm2: {
        const std::vector<double> h(m_h.begin(), m_h.end());
        return round_bf16(moe_gemm2_fp64(rows(), m_H, m_I, h, m_route));
      }
    }
    return {};
  }
  void run_reference_once() override { (void)reference(); }

  // The W4A8 arithmetic in fp64 (stored weights x quantized activations) with the kernels' rounding
  // points; fused and unfused compute the same values (their contract is bit-exactness).
  std::vector<float> cpu_variant_output() override {
    switch (m_op) {
      case Op::router:
        return reference();
      case Op::gemm1:
        return round_bf16(
            moe_gemm1_fp64(rows(), m_n, m_K, activations_q8_to_double(m_q8.data(), m_T, m_H), m_route));
      case Op::gemm2: {
        const int64_t P = pairs();
        std::vector<uint16_t> act(static_cast<size_t>(P * m_I));
        for (int64_t p = 0; p < P; ++p)
          for (int64_t j = 0; j < m_I; ++j) {
            const float g = m_h[p * 2 * m_I + j], u = m_h[p * 2 * m_I + m_I + j];
            act[p * m_I + j] = fp32_to_bf16(g / (1.0f + std::exp(-g)) * u);
          }
        std::vector<Q8Block> q8(static_cast<size_t>(P * m_I / 32));
        quantize_activations_q8(act.data(), P, m_I, q8.data());
        const auto a = activations_q8_to_double(q8.data(), P, m_I);
        const ExpertRows w = rows();
        std::vector<float> y(static_cast<size_t>(m_T * m_H));
        std::vector<double> row(static_cast<size_t>(m_I));
        for (int64_t t = 0; t < m_T; ++t)
          for (int64_t n = 0; n < m_H; ++n) {
            float sum = 0.0f;
            for (int64_t s = 0; s < m_slots; ++s) {
              const int64_t p = t * m_slots + s;
              w(m_route.ids[p], n, row.data());
              double acc = 0;
              for (int64_t j = 0; j < m_I; ++j) acc += row[j] * a[p * m_I + j];
              sum += bf16_to_fp32(fp32_to_bf16(static_cast<float>(acc) * m_route.weights[p]));
            }
            y[t * m_H + n] = bf16_to_fp32(fp32_to_bf16(sum));
          }
        return y;
      }
    }
    return {};
  }

#if FUSEBENCH_WITH_CUDA
  bool has_device() const override { return true; }
  void device_setup(cudaStream_t stream) override {
    auto up = [&](const void* src, size_t bytes) {
      DeviceBuffer<uint8_t> d(bytes);
      FB_CUDA_CHECK(cudaMemcpyAsync(d.get(), src, bytes, cudaMemcpyHostToDevice, stream));
      return d;
    };
    const auto bits = x_bits();
    m_d_x = up(bits.data(), bits.size() * 2);
    FB_CUDA_CHECK(cudaStreamSynchronize(stream));
    const int64_t P = pairs();
    m_d_ids = up(m_route.ids.data(), m_route.ids.size() * 4);
    m_d_w = up(m_route.weights.data(), m_route.weights.size() * 4);
    if (m_op == Op::router) {
      m_d_wr = up(m_wr.data(), m_wr.size() * 4);
      m_d_ws = up(m_ws.data(), m_ws.size() * 4);
      m_d_logits = DeviceBuffer<float>(static_cast<size_t>(m_T * (m_E + 1)));
      // Outputs poisoned so an unwritten slot cannot pass.
      FB_CUDA_CHECK(cudaMemsetAsync(m_d_ids.get(), 0xFF, m_d_ids.size(), stream));
      FB_CUDA_CHECK(cudaMemsetAsync(m_d_w.get(), 0xFF, m_d_w.size(), stream));
      return;
    }
    // Expert tensors: the fused one, and for the unfused GEMM1 the gate and up halves.
    auto upload_experts = [&](const SymInt4Experts& s, const std::vector<uint8_t>& blocks, int64_t n) {
      DevExperts d;
      d.view.format = m_layout == "ggml" ? cuda::ExpertFormat::q4_k : cuda::ExpertFormat::sym_int4;
      d.view.experts = m_E + 1, d.view.n = n, d.view.k = m_K, d.view.group = 32;
      if (m_layout == "ggml") {
        d.q = up(blocks.data(), blocks.size());
      } else {
        d.q = up(s.qdata.data(), s.qdata.size());
        d.s = up(s.scale.data(), s.scale.size() * 2);
      }
      FB_CUDA_CHECK(cudaStreamSynchronize(stream));
      d.view.qdata = d.q.get();
      d.view.scale = d.s.get();
      return d;
    };
    m_dev.clear();
    if (m_op == Op::gemm1 && m_variant == "unfused") {
      const uint64_t rb = ggml_row_bytes(GgmlType::Q4_K, m_K);
      for (int64_t half = 0; half < 2; ++half) {
        if (m_layout == "ggml")
          m_dev.push_back(upload_experts({}, expert_rows(m_blocks, m_E + 1, m_n, rb, half * m_I, m_I), m_I));
        else
          m_dev.push_back(upload_experts(expert_rows(m_sym, half * m_I, m_I), {}, m_I));
      }
    } else {
      m_dev.push_back(upload_experts(m_sym, m_blocks, m_n));
    }
    if (m_op == Op::gemm1) {
      m_d_q8 = DeviceBuffer<Q8Block>(static_cast<size_t>(m_T * m_H / 32));
      m_d_out = make_guarded_output(static_cast<size_t>(P * m_n), stream);
    } else {
      std::vector<uint16_t> hb(m_h.size());
      for (size_t i = 0; i < hb.size(); ++i) hb[i] = fp32_to_bf16(m_h[i]);
      m_d_h = up(hb.data(), hb.size() * 2);
      FB_CUDA_CHECK(cudaStreamSynchronize(stream));
      m_d_act = DeviceBuffer<uint16_t>(static_cast<size_t>(P * m_I));
      m_d_q8 = DeviceBuffer<Q8Block>(static_cast<size_t>(P * m_I / 32));
      m_d_acc = DeviceBuffer<float>(static_cast<size_t>(P * m_H));
      m_d_out = make_guarded_output(static_cast<size_t>(m_T * m_H), stream);
    }
  }
  void device_launch(cudaStream_t stream) override {
    auto* x = reinterpret_cast<const __nv_bfloat16*>(m_d_x.get());
    auto* ids = reinterpret_cast<int32_t*>(m_d_ids.get());
    auto* w = reinterpret_cast<float*>(m_d_w.get());
    auto* out = reinterpret_cast<__nv_bfloat16*>(m_d_out.get());
    const int slots = static_cast<int>(m_slots);
    switch (m_op) {
      case Op::router:
        cuda::moe_router(x, reinterpret_cast<const float*>(m_d_wr.get()),
                         reinterpret_cast<const float*>(m_d_ws.get()), m_T, m_H, static_cast<int>(m_E),
                         static_cast<int>(m_k), m_d_logits.get(), ids, w, stream);
        return;
      case Op::gemm1:
        if (m_dev.size() == 1) {  // fused: the activation quantize is folded into the one launch
          cuda::moe_gemm1_quant(m_dev[0].view, x, ids, m_T, slots, out, m_n, 0, stream);
        } else {
          cuda::moe_quantize_q8(x, m_T, m_H, m_d_q8.get(), stream);
          cuda::moe_gemm1(m_dev[0].view, m_d_q8.get(), ids, m_T, slots, out, m_n, 0, stream);
          cuda::moe_gemm1(m_dev[1].view, m_d_q8.get(), ids, m_T, slots, out, m_n, m_I, stream);
        }
        return;
      case Op::gemm2: {
        auto* h = reinterpret_cast<const __nv_bfloat16*>(m_d_h.get());
        if (m_variant == "unfused") {
          auto* act = reinterpret_cast<__nv_bfloat16*>(m_d_act.get());
          cuda::moe_silu_mul(h, pairs(), m_I, act, stream);
          cuda::moe_quantize_q8(act, pairs(), m_I, m_d_q8.get(), stream);
          cuda::moe_down(m_dev[0].view, m_d_q8.get(), ids, pairs(), m_d_acc.get(), stream);
          cuda::moe_weighted_sum(m_d_acc.get(), w, m_T, slots, m_H, out, stream);
        } else {
          cuda::moe_gemm2_silu(m_dev[0].view, h, ids, w, m_T, slots, out, stream);
        }
        return;
      }
    }
  }
  std::vector<float> device_output(cudaStream_t stream) override {
    if (m_op == Op::router) {
      Routing r = m_route;
      FB_CUDA_CHECK(
          cudaMemcpyAsync(r.ids.data(), m_d_ids.get(), m_d_ids.size(), cudaMemcpyDeviceToHost, stream));
      FB_CUDA_CHECK(
          cudaMemcpyAsync(r.weights.data(), m_d_w.get(), m_d_w.size(), cudaMemcpyDeviceToHost, stream));
      FB_CUDA_CHECK(cudaStreamSynchronize(stream));
      for (int32_t id : r.ids)
        if (id < 0 || id > m_E) throw std::runtime_error(fmt::format("moe_router wrote expert id {}", id));
      const auto g = dense_gates(r, m_E + 1);
      std::vector<float> out(g.begin(), g.end());
      for (float v : r.weights)  // a NaN weight must fail even where the dense matrix sums it away
        if (!std::isfinite(v)) out[0] = v;
      return out;
    }
    const size_t n = static_cast<size_t>(m_op == Op::gemm1 ? pairs() * m_n : m_T * m_H);
    const auto raw = download_guarded_output(m_d_out, n, stream, op_name());
    std::vector<float> out(n);
    for (size_t i = 0; i < n; ++i) out[i] = bf16_to_fp32(raw[i]);
    return out;
  }
#endif

 private:
  const char* op_name() const {
    return m_op == Op::router ? "moe_router" : m_op == Op::gemm1 ? "moe_gemm1" : "moe_gemm2";
  }
  int64_t pairs() const { return m_T * m_slots; }
  std::vector<uint16_t> x_bits() const {
    std::vector<uint16_t> b(m_x.size());
    for (size_t i = 0; i < b.size(); ++i) b[i] = fp32_to_bf16(m_x[i]);
    return b;
  }
  uint64_t distinct_experts() const {
    return std::set<int32_t>(m_route.ids.begin(), m_route.ids.end()).size();
  }
  uint64_t expert_bytes() const {
    if (m_layout == "ggml") return static_cast<uint64_t>(m_n) * ggml_row_bytes(GgmlType::Q4_K, m_K);
    return static_cast<uint64_t>(m_n) * (m_K / 2 + m_K / 32 * 2);
  }
  ExpertRows rows() const {
    return m_layout == "ggml" ? ggml_expert_rows(GgmlType::Q4_K, m_blocks.data(), m_n, m_K)
                              : sym_int4_rows(m_sym);
  }

  Op m_op;
  std::string m_variant, m_layout;
  int64_t m_T = 1, m_H = 0, m_I = 0, m_E = 0, m_k = 0, m_slots = 0, m_n = 0, m_K = 0;
  std::vector<float> m_x, m_wr, m_ws, m_h;
  Routing m_route;
  SymInt4Experts m_sym;
  std::vector<uint8_t> m_blocks;
  std::vector<Q8Block> m_q8;
#if FUSEBENCH_WITH_CUDA
  struct DevExperts {
    cuda::ExpertWeights view;
    DeviceBuffer<uint8_t> q, s;
  };
  std::vector<DevExperts> m_dev;
  DeviceBuffer<uint8_t> m_d_x, m_d_ids, m_d_w, m_d_wr, m_d_ws, m_d_h;
  DeviceBuffer<uint16_t> m_d_act, m_d_out;
  DeviceBuffer<Q8Block> m_d_q8;
  DeviceBuffer<float> m_d_logits, m_d_acc;
#endif
};

KernelDef make_moe_kernel(Op op, const char* name, const char* description) {
  KernelDef k;
  k.name = name;
  k.description = description;
  k.phases = {Phase::decode};
  const bool pair = op != Op::router;
  k.variants = pair ? std::vector<std::string>{"fused", "unfused"} : std::vector<std::string>{"single"};
  k.layouts = pair ? std::vector<std::string>{"sym_int4", "ggml"} : std::vector<std::string>{"default"};
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
    const int64_t rows = op == Op::gemm1 ? 2 * q.expert_intermediate : c.hidden;
    const int64_t cols = op == Op::gemm1 ? c.hidden : q.expert_intermediate;
    const std::string id =
        op == Op::router ? fmt::format("router@{}x{}+shared", q.n_experts, c.hidden)
                         : fmt::format("experts@{}x{}x{}:top{}+shared", q.n_experts, rows, cols, q.top_k);
    nlohmann::json inst = {{"id", id}, {"name", key}};
    return std::vector<nlohmann::json>{inst};
  };
  k.make = [op](const CaseParams& p) { return std::make_unique<MoeCase>(p, op); };
  k.tolerance = [key](const std::string& against) { return kernel_tolerance(key, against); };
  return k;
}

}  // namespace

std::vector<KernelDef> make_moe_kernels() {
  return {
      make_moe_kernel(Op::router, "moe_router",
                      "MoE router: F32 logits, top-k of E, softmax over k, shared-expert sigmoid gate"),
      make_moe_kernel(
          Op::gemm1, "moe_gemm1",
          "MoE GEMM1 [gate|up] per (token, expert) incl. shared expert, W4A8, expert ids on device; "
          "fused [gate;up] rows vs gate and up launches"),
      make_moe_kernel(
          Op::gemm2, "moe_gemm2",
          "MoE GEMM2 with silu(gate)*up, routing weight and top-k sum fused vs silu_mul, quantize, "
          "down, weighted-sum kernels"),
  };
}

}  // namespace fb
