// swa_decode / swa_prefill: gemma4 sliding-window attention over the bf16 ring buffer (window 1024,
// ring 2048, head_dim 256, 32 q heads over 16 kv heads, scale 1.0; notes/models.md §1.2).
// The scenario context is the number of tokens already cached (the step's first position): the
// window caps the work at 1024 keys, but the ring position (where the window wraps) changes with the
// context, so every context runs. The ring is filled with seeded random keys/values everywhere (as
// after a long history); the step's own K/V come from new_k/new_v, as in the kernels. Only the
// attention launch is timed; the ring append is a separate small kernel (tested in
// kernels/attention/sliding_window_test.cu).
#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

#include "harness/runner/kernel_registry.h"
#include "harness/runner/tolerances.h"
#include "reference/attention/sliding_window.h"
#include "reference/formats/half.h"
#include "reference/util/splitmix.h"

#if FUSEBENCH_WITH_CUDA
#include <cuda_runtime_api.h>

#include "harness/runner/kernels/guarded_output.h"
#include "kernels/attention/sliding_window.cuh"
#include "kernels/common/cuda_check.h"
#endif

namespace fb {

namespace {

// q is drawn with sigma 0.15 and k with 1: q.k over 256 dims then has a std of ~2.4, a softmax that
// is neither uniform nor one-hot (gemma's q/k norms keep real scores in a similar range).
constexpr float kQSigma = 0.15f;

enum class SwaKind { decode, prefill };

std::vector<uint16_t> random_bf16(size_t n, uint64_t seed, const char* what, float sigma) {
  CounterRng rng(seed, fnv1a64(what, std::char_traits<char>::length(what)));
  std::vector<uint16_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = fp32_to_bf16(sigma * rng.normal(i));
  return v;
}

class SwaCase final : public KernelCase {
 public:
  SwaCase(const CaseParams& p, SwaKind kind) : m_kind(kind), m_T(p.tokens), m_pos(p.context) {
    const auto& inst = p.instance;
    m_id = inst.value("id", std::string("swa"));
    m_shape = {inst.at("n_q_heads").get<int64_t>(), inst.at("n_kv_heads").get<int64_t>(),
               inst.at("head_dim").get<int64_t>(), inst.at("window").get<int64_t>()};
    validate(m_shape);
    if (m_T < 1) throw std::invalid_argument("swa: tokens must be >= 1");
    const size_t D = static_cast<size_t>(m_shape.head_dim);
    m_q = random_bf16(static_cast<size_t>(m_T * m_shape.n_q_heads) * D, p.seed, "swa.q", kQSigma);
    const size_t ring = static_cast<size_t>(m_shape.n_kv_heads * m_shape.ring_slots()) * D;
    m_ring_k = random_bf16(ring, p.seed, "swa.ring_k", 1.0f);
    m_ring_v = random_bf16(ring, p.seed, "swa.ring_v", 1.0f);
    const size_t fresh = static_cast<size_t>(m_T * m_shape.n_kv_heads) * D;
    m_new_k = random_bf16(fresh, p.seed, "swa.new_k", 1.0f);
    m_new_v = random_bf16(fresh, p.seed, "swa.new_v", 1.0f);
  }

  nlohmann::json shape() const override {
    return {{"tensor", m_id},
            {"n_q_heads", m_shape.n_q_heads},
            {"n_kv_heads", m_shape.n_kv_heads},
            {"head_dim", m_shape.head_dim},
            {"window", m_shape.window},
            {"ring_slots", m_shape.ring_slots()},
            {"T", m_T},
            {"pos", m_pos},
            {"ring_slot_of_pos", ring_slot(m_shape, m_pos)},
            {"keys_read", keys_read()},
            {"kernel", m_kind == SwaKind::decode ? "decode" : "prefill"}};
  }
  // Every key of the union of the step's windows read once (K and V), plus q in and out.
  uint64_t bytes() const override {
    const uint64_t kv = static_cast<uint64_t>(keys_read() * m_shape.n_kv_heads * m_shape.head_dim) * 2 * 2;
    return kv + 2 * m_q.size() * 2;
  }
  uint64_t flops() const override {
    uint64_t visible = 0;
    for (int64_t t = 0; t < m_T; ++t)
      visible += static_cast<uint64_t>(std::min(m_shape.window, m_pos + t + 1));
    return visible * static_cast<uint64_t>(m_shape.n_q_heads * m_shape.head_dim) * 4;  // QK and PV
  }

  std::vector<float> reference() override {
    if (m_ref.empty()) {
      const auto out = compute();
      m_ref.resize(out.size());
      for (size_t i = 0; i < out.size(); ++i)
        m_ref[i] = bf16_to_fp32(fp32_to_bf16(static_cast<float>(out[i])));
    }
    return m_ref;
  }
  void run_reference_once() override { (void)compute(); }
  // One kernel, no fused/unfused split: the variant's output is the reference itself.
  std::vector<float> cpu_variant_output() override { return reference(); }

#if FUSEBENCH_WITH_CUDA
  bool has_device() const override { return true; }
  void device_setup(cudaStream_t stream) override {
    auto up = [&](DeviceBuffer<uint16_t>& d, const std::vector<uint16_t>& h, size_t extra) {
      d = DeviceBuffer<uint16_t>(h.size() + extra);
      FB_CUDA_CHECK(cudaMemcpyAsync(d.get(), h.data(), h.size() * 2, cudaMemcpyHostToDevice, stream));
    };
    up(m_d_q, m_q, 0);
    up(m_d_ring_k, m_ring_k, 0);
    up(m_d_ring_v, m_ring_v, 0);
    up(m_d_new_k, m_new_k, 0);
    up(m_d_new_v, m_new_v, 0);
    m_d_out = make_guarded_output(m_q.size(), stream);  // bf16 NaN poison + guard words
    m_d_pos = DeviceBuffer<int32_t>(1);
    m_pos32 = static_cast<int32_t>(m_pos);
    FB_CUDA_CHECK(cudaMemcpyAsync(m_d_pos.get(), &m_pos32, 4, cudaMemcpyHostToDevice, stream));
    FB_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  void device_launch(cudaStream_t stream) override {
    const cuda::SlidingWindowDims dims{static_cast<int>(m_shape.n_q_heads),
                                       static_cast<int>(m_shape.n_kv_heads),
                                       static_cast<int>(m_shape.head_dim), static_cast<int>(m_shape.window)};
    auto bf = [](const DeviceBuffer<uint16_t>& b) { return reinterpret_cast<__nv_bfloat16*>(b.get()); };
    if (m_kind == SwaKind::decode) {
      cuda::sliding_window_decode(dims, bf(m_d_q), bf(m_d_ring_k), bf(m_d_ring_v), bf(m_d_new_k),
                                  bf(m_d_new_v), static_cast<int>(m_T), m_d_pos.get(), 1.0f, bf(m_d_out),
                                  stream);
    } else {
      cuda::sliding_window_prefill(dims, bf(m_d_q), bf(m_d_ring_k), bf(m_d_ring_v), bf(m_d_new_k),
                                   bf(m_d_new_v), static_cast<int>(m_T), m_d_pos.get(), 1.0f, bf(m_d_out),
                                   stream);
    }
  }
  std::vector<float> device_output(cudaStream_t stream) override {
    const std::vector<uint16_t> raw = download_guarded_output(m_d_out, m_q.size(), stream, "swa");
    std::vector<float> out(m_q.size());
    for (size_t i = 0; i < out.size(); ++i) out[i] = bf16_to_fp32(raw[i]);
    return out;
  }
#endif

 private:
  int64_t keys_read() const { return m_pos + m_T - std::max<int64_t>(0, m_pos - m_shape.window + 1); }
  std::vector<double> compute() const {
    return sliding_window_attention(m_shape, m_q.data(), m_ring_k.data(), m_ring_v.data(), m_new_k.data(),
                                    m_new_v.data(), m_T, m_pos, 1.0);
  }

  SwaKind m_kind;
  std::string m_id;
  int64_t m_T = 0, m_pos = 0;
  SlidingWindowShape m_shape;
  std::vector<uint16_t> m_q, m_ring_k, m_ring_v, m_new_k, m_new_v;
  std::vector<float> m_ref;
#if FUSEBENCH_WITH_CUDA
  DeviceBuffer<uint16_t> m_d_q, m_d_ring_k, m_d_ring_v, m_d_new_k, m_d_new_v, m_d_out;
  DeviceBuffer<int32_t> m_d_pos;
  int32_t m_pos32 = 0;
#endif
};

std::vector<nlohmann::json> swa_instances(const ModelConfig& c) {
  if (c.family != ModelFamily::gemma4) return {};
  const Gemma4Dims& g = c.gemma;
  return {{{"name", "swa"},
           {"id", fmt::format("swa@{}x{}x{}w{}", g.n_heads, g.n_kv_heads_sliding, g.head_dim_sliding,
                              g.sliding_window)},
           {"n_q_heads", g.n_heads},
           {"n_kv_heads", g.n_kv_heads_sliding},
           {"head_dim", g.head_dim_sliding},
           {"window", g.sliding_window}}};
}

KernelDef make_swa_kernel(SwaKind kind) {
  KernelDef k;
  const bool dec = kind == SwaKind::decode;
  k.name = dec ? "swa_decode" : "swa_prefill";
  k.description =
      dec ? "sliding-window attention decode (T <= 4) over the bf16 ring; GQA-packed, window split "
            "over a CTA cluster merged through DSMEM"
          : "sliding-window attention prefill over the bf16 ring; mma.sync bf16 flash attention, "
            "causal + window mask in-kernel";
  k.phases = {dec ? Phase::decode : Phase::prefill};
  k.variants = {"single"};
  k.layouts = {"ring"};
  k.depends_on_tokens = true;
  k.depends_on_context = true;  // the window caps the work, but the ring position moves with the context
  k.twin_of = [](const std::string&) -> std::optional<std::string> { return std::nullopt; };
  k.instances = [kind](const ModelConfig& c, Phase ph) {
    return ph == (kind == SwaKind::decode ? Phase::decode : Phase::prefill) ? swa_instances(c)
                                                                            : std::vector<nlohmann::json>{};
  };
  k.make = [kind](const CaseParams& p) { return std::make_unique<SwaCase>(p, kind); };
  const std::string name = k.name;
  k.tolerance = [name](const std::string& against) { return kernel_tolerance(name, against); };
  return k;
}

}  // namespace

KernelDef make_swa_decode_kernel() { return make_swa_kernel(SwaKind::decode); }
KernelDef make_swa_prefill_kernel() { return make_swa_kernel(SwaKind::prefill); }

}  // namespace fb
