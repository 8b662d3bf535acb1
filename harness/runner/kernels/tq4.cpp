// tq4_sdpa: TurboQuant 4-bit KV attention of the gemma4 full layers (head_dim 512, 32 q heads over
// 4 kv heads, scale 1.0; notes/models.md §1.2, §4). The scenario context is the number of positions
// already cached; the step's T tokens sit at ctx .. ctx+T-1, so kv_len = ctx + T (the cache is
// allocated for exactly that, which fixes the split count) and query t attends keys <= ctx + t.
// Decode T = 1 is the split-K path; T > 1 is the causal prefill path (mask built in the kernel).
//
// Cache contents: indices drawn from the law of a rotated unit vector's coordinate (N(0, 1/d) cut by
// the bf16 boundaries, i.e. what compress produces) and norms of RMS-normed vectors (~sqrt(512)).
// The rows repeat with a period of 1024 positions: the kernel cannot tell (every row is read from its
// own address), but the fp64 reference then needs only one pass per period with multiplicities,
// which keeps the T = 2048 x 128K prefill reference at seconds instead of hours. Only the attention
// is timed; compress/append is a separate small kernel, checked in kernels/attention/tq4_sdpa_test.cu.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <thread>

#include "harness/runner/kernel_registry.h"
#include "harness/runner/tolerances.h"
#include "reference/attention/turboquant.h"
#include "reference/formats/half.h"
#include "reference/util/splitmix.h"

#if FUSEBENCH_WITH_CUDA
#include <cuda_runtime_api.h>

#include "harness/runner/kernels/guarded_output.h"
#include "kernels/attention/tq4_sdpa.cuh"
#include "kernels/common/cuda_check.h"
#endif

namespace fb {

namespace {

constexpr int64_t kPeriod = 1024;
// q sigma 0.15 against norms ~22.6: scores with a std of ~3.4, a softmax neither uniform nor one-hot.
// The GPU test also covers sigma 1 (RMS-normed q, scores ~ +-20).
constexpr float kQSigma = 0.15f;
constexpr uint64_t kRotationSeed = 42;  // upstream's generate_rotation_matrix(d, seed=42)

// Splits the kernel uses (kernels/attention/tq4_sdpa.cu: tq4_sdpa_num_splits), replayed on the CPU.
int64_t num_splits(int64_t T, int64_t n_kv, int64_t capacity) {
  const int64_t by_len = std::clamp<int64_t>((capacity + 63) / 64, 1, 128);
  const int64_t ctas = std::max<int64_t>(1, T * n_kv);
  return T == 1 ? by_len : std::min(by_len, std::max<int64_t>(1, (1024 + ctas - 1) / ctas));
}

template <class F>
void parallel_for(int64_t n, F&& f) {
  const int64_t nt = std::max<int64_t>(1, std::min<int64_t>(n, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (int64_t w = 0; w < nt; ++w)
    pool.emplace_back([&, w] {
      for (int64_t i = w; i < n; i += nt) f(i);
    });
  for (auto& th : pool) th.join();
}

class Tq4SdpaCase final : public KernelCase {
 public:
  explicit Tq4SdpaCase(const CaseParams& p) : m_T(p.tokens), m_ctx(p.context) {
    const auto& inst = p.instance;
    m_nq = inst.at("n_q_heads").get<int>();
    m_nkv = inst.at("n_kv_heads").get<int>();
    m_d = inst.at("head_dim").get<int>();
    if (m_T < 1 || m_ctx < 0) throw std::invalid_argument("tq4_sdpa: tokens >= 1 and context >= 0 required");
    if (m_nq % m_nkv != 0)
      throw std::invalid_argument("tq4_sdpa: n_q_heads must be a multiple of n_kv_heads");
    m_kv_len = m_ctx + m_T;
    m_cb = tq4::lloyd_max_codebook(m_d);
    m_rot = tq4::haar_rotation(m_d, kRotationSeed);
    const CounterRng rng(p.seed, fnv1a64("tq4.q", 5));
    m_q.resize(static_cast<size_t>(m_T * m_nq) * m_d);
    for (size_t i = 0; i < m_q.size(); ++i) m_q[i] = fp32_to_bf16(kQSigma * rng.normal(i));
    make_period(p.seed);
  }

  nlohmann::json shape() const override {
    return {{"T", m_T},
            {"context", m_ctx},
            {"kv_len", m_kv_len},
            {"n_q_heads", m_nq},
            {"n_kv_heads", m_nkv},
            {"head_dim", m_d},
            {"scale", 1.0},
            {"splits", num_splits(m_T, m_nkv, m_kv_len)},
            {"launches", 4},
            {"decode_path", decode_path()}};
  }
  // The split kernel of a T = 1 step (FB_TQ4_DECODE_PATH: fp32 | mma); prefill always runs fp32.
  std::string decode_path() const {
#if FUSEBENCH_WITH_CUDA
    if (m_T == 1) return cuda::tq4_sdpa_decode_path();
#endif
    return "fp32";
  }
  // Packed K and V + their bf16 norms, read once; q in and out, bf16. (Pi, 1 MB fp32, is read by
  // the two rotation launches and stays in L2; the fp32 split partials are scratch.)
  uint64_t bytes() const override {
    const uint64_t rows = static_cast<uint64_t>(m_nkv) * m_kv_len;
    return rows * (m_d / 2) * 2 + rows * 2 * 2 + 2ull * m_T * m_nq * m_d * 2;
  }
  uint64_t flops() const override {
    // q.k and p.v over the visible keys (causal: ctx + t + 1 for query t), plus the two rotations.
    const uint64_t visible = static_cast<uint64_t>(m_T) * m_ctx + static_cast<uint64_t>(m_T) * (m_T + 1) / 2;
    return 4ull * m_nq * m_d * visible + 4ull * m_T * m_nq * m_d * m_d;
  }

  std::vector<float> reference() override {
    std::vector<float> out(m_q.size());
    reference_into(out.data());
    return out;
  }
  void run_reference_once() override {
    m_scratch.resize(m_q.size());
    reference_into(m_scratch.data());
  }
  // The kernel's arithmetic replayed on the CPU: fp32 q_rot, fp32 scores in the log2 domain, the
  // same split count and chunk, tiles of 32 keys with the online exp2 softmax, the split reduce,
  // the fp32 un-rotation and one bf16 rounding.
  std::vector<float> cpu_variant_output() override {
    const int64_t S = num_splits(m_T, m_nkv, m_kv_len);
    const int64_t chunk = (m_kv_len + S - 1) / S;
    const int g = m_nq / m_nkv, d = m_d;
    const float sl2e = 1.0f * 1.4426950408889634f;
    std::vector<float> out(m_q.size());
    parallel_for(m_T * m_nq, [&](int64_t row) {
      const int64_t t = row / m_nq;
      const int h = static_cast<int>(row % m_nq), kvh = h / g;
      std::vector<float> qr(d), o(d, 0.0f), acc(d);
      for (int i = 0; i < d; ++i) {
        float s = 0;
        for (int j = 0; j < d; ++j)
          s = std::fma(m_rot.rotation[size_t(i) * d + j], bf16_to_fp32(m_q[row * d + j]), s);
        qr[i] = s * sl2e;
      }
      const int64_t visible = std::min(m_kv_len, std::max<int64_t>(m_kv_len - m_T + t + 1, 0));
      std::vector<float> ms(S), ls(S);
      std::vector<std::vector<float>> os(S);
      for (int64_t s = 0; s < S; ++s) {
        float m = -INFINITY, l = 0;
        std::fill(acc.begin(), acc.end(), 0.0f);
        const int64_t end = std::min(s * chunk + chunk, visible);
        for (int64_t n0 = s * chunk; n0 < end; n0 += 32) {
          const int64_t n1 = std::min(n0 + 32, end);
          float sc[32], mt = -INFINITY;
          for (int64_t n = n0; n < n1; ++n) {
            const uint8_t* kp = krow(kvh, n);
            float dot = 0;
            for (int i = 0; i < d; i += 2) {
              dot = std::fma(qr[i], m_cb.centroids[kp[i / 2] >> 4], dot);
              dot = std::fma(qr[i + 1], m_cb.centroids[kp[i / 2] & 15], dot);
            }
            sc[n - n0] = dot * bf16_to_fp32(knorm(kvh, n));
            mt = std::max(mt, sc[n - n0]);
          }
          const float mn = std::max(m, mt);
          const float alpha = std::exp2(m - mn);
          for (float& a : acc) a *= alpha;
          float sum = 0;
          for (int64_t n = n0; n < n1; ++n) {
            const float p = std::exp2(sc[n - n0] - mn);
            sum += p;
            const float pv = p * bf16_to_fp32(vnorm(kvh, n));
            const uint8_t* vp = vrow(kvh, n);
            for (int i = 0; i < d; i += 2) {
              acc[i] = std::fma(pv, m_cb.centroids[vp[i / 2] >> 4], acc[i]);
              acc[i + 1] = std::fma(pv, m_cb.centroids[vp[i / 2] & 15], acc[i + 1]);
            }
          }
          l = l * alpha + sum;
          m = mn;
        }
        ms[s] = m;
        ls[s] = l;
        os[s] = acc;
      }
      float M = -INFINITY, L = 0;
      for (int64_t s = 0; s < S; ++s) M = std::max(M, ms[s]);
      if (M != -INFINITY) {
        for (int64_t s = 0; s < S; ++s) {
          if (ms[s] == -INFINITY) continue;
          const float w = std::exp2(ms[s] - M);
          L = std::fma(w, ls[s], L);
          for (int i = 0; i < d; ++i) o[i] = std::fma(w, os[s][i], o[i]);
        }
      }
      const float inv = L > 0 ? 1.0f / L : 0.0f;
      for (int j = 0; j < d; ++j) {
        float s = 0;
        for (int i = 0; i < d; ++i) s = std::fma(m_rot.rotation[size_t(i) * d + j], o[i] * inv, s);
        out[row * d + j] = bf16_to_fp32(fp32_to_bf16(s));
      }
    });
    return out;
  }

#if FUSEBENCH_WITH_CUDA
  bool has_device() const override { return m_d == 512 && m_nq == 8 * m_nkv; }
  void device_setup(cudaStream_t stream) override {
    const size_t rows = static_cast<size_t>(m_nkv) * m_kv_len, row_bytes = m_d / 2;
    // The periodic host image is expanded into the full device cache, one period at a time.
    m_dkp = DeviceBuffer<uint8_t>(rows * row_bytes);
    m_dvp = DeviceBuffer<uint8_t>(rows * row_bytes);
    m_dkn = DeviceBuffer<uint16_t>(rows);
    m_dvn = DeviceBuffer<uint16_t>(rows);
    for (int h = 0; h < m_nkv; ++h) {
      for (int64_t p0 = 0; p0 < m_kv_len; p0 += kPeriod) {
        const int64_t n = std::min(kPeriod, m_kv_len - p0);
        const size_t dst = static_cast<size_t>(h) * m_kv_len + p0, src = static_cast<size_t>(h) * kPeriod;
        FB_CUDA_CHECK(cudaMemcpyAsync(m_dkp.get() + dst * row_bytes, m_kp.data() + src * row_bytes,
                                      n * row_bytes, cudaMemcpyHostToDevice, stream));
        FB_CUDA_CHECK(cudaMemcpyAsync(m_dvp.get() + dst * row_bytes, m_vp.data() + src * row_bytes,
                                      n * row_bytes, cudaMemcpyHostToDevice, stream));
        FB_CUDA_CHECK(
            cudaMemcpyAsync(m_dkn.get() + dst, m_kn.data() + src, n * 2, cudaMemcpyHostToDevice, stream));
        FB_CUDA_CHECK(
            cudaMemcpyAsync(m_dvn.get() + dst, m_vn.data() + src, n * 2, cudaMemcpyHostToDevice, stream));
      }
    }
    m_dcent = upload(m_cb.centroids, stream);
    m_dbound = upload(m_cb.boundaries, stream);
    m_drot = upload(m_rot.rotation, stream);
    m_drot_t = upload(m_rot.rotation_t, stream);
    m_dq = upload(m_q, stream);
    m_dlen = upload(std::vector<int32_t>{static_cast<int32_t>(m_kv_len)}, stream);
    const size_t n_out = m_q.size();
    m_dout = make_guarded_output(n_out, stream);  // bf16 NaN poison + guard words
    m_ws_bytes = cuda::tq4_sdpa_workspace_bytes(m_T, m_nq, cache());
    m_dws = DeviceBuffer<float>((m_ws_bytes + 3) / 4);
    FB_CUDA_CHECK(cudaStreamSynchronize(stream));  // the host vectors above are temporaries
  }
  void device_launch(cudaStream_t stream) override {
    cuda::tq4_sdpa(reinterpret_cast<const __nv_bfloat16*>(m_dq.get()), m_T, m_nq, m_dlen.get(), 1.0f, cache(),
                   tables(), m_dws.get(), m_ws_bytes, reinterpret_cast<__nv_bfloat16*>(m_dout.get()), stream);
  }
  std::vector<float> device_output(cudaStream_t stream) override {
    const std::vector<uint16_t> raw = download_guarded_output(m_dout, m_q.size(), stream, "tq4_sdpa");
    std::vector<float> out(m_q.size());
    for (size_t i = 0; i < out.size(); ++i) out[i] = bf16_to_fp32(raw[i]);
    return out;
  }
#endif

 private:
  // One period of rows per kv head: indices from the Gaussian cells (inverse CDF on 16-bit uniforms).
  void make_period(uint64_t seed) {
    const double sigma = 1.0 / std::sqrt(double(m_d));
    double cdf[15];
    for (int b = 0; b < 15; ++b)
      cdf[b] = 0.5 * std::erfc(-bf16_to_fp32(m_cb.boundaries[b]) / sigma / std::sqrt(2.0));
    auto index = [&](uint32_t u16) {
      const double u = (u16 + 0.5) / 65536.0;
      int idx = 0;
      for (double c : cdf) idx += c < u ? 1 : 0;
      return idx;
    };
    const size_t rows = static_cast<size_t>(m_nkv) * kPeriod, row_bytes = m_d / 2;
    m_kp.resize(rows * row_bytes);
    m_vp.resize(rows * row_bytes);
    m_kn.resize(rows);
    m_vn.resize(rows);
    const CounterRng rk(seed, fnv1a64("tq4.k", 5)), rv(seed, fnv1a64("tq4.v", 5));
    for (size_t i = 0; i < m_kp.size(); ++i) {
      const uint64_t a = rk.bits(i), b = rv.bits(i);
      m_kp[i] = static_cast<uint8_t>((index(a & 0xFFFF) << 4) | index((a >> 16) & 0xFFFF));
      m_vp[i] = static_cast<uint8_t>((index(b & 0xFFFF) << 4) | index((b >> 16) & 0xFFFF));
    }
    const float rms_norm = std::sqrt(static_cast<float>(m_d));
    for (size_t r = 0; r < rows; ++r) {
      m_kn[r] = fp32_to_bf16(rms_norm * (0.8f + 0.4f * rk.uniform(m_kp.size() + r)));
      m_vn[r] = fp32_to_bf16(rms_norm * (0.8f + 0.4f * rv.uniform(m_kp.size() + r)));
    }
  }
  const uint8_t* krow(int h, int64_t n) const {
    return m_kp.data() + (size_t(h) * kPeriod + n % kPeriod) * (m_d / 2);
  }
  const uint8_t* vrow(int h, int64_t n) const {
    return m_vp.data() + (size_t(h) * kPeriod + n % kPeriod) * (m_d / 2);
  }
  uint16_t knorm(int h, int64_t n) const { return m_kn[size_t(h) * kPeriod + n % kPeriod]; }
  uint16_t vnorm(int h, int64_t n) const { return m_vn[size_t(h) * kPeriod + n % kPeriod]; }

  // fp64 attention over the dequantized cache (tq4::tq4_attention_fp64's rotated-domain form), with
  // the periodic rows folded: key row r appears cnt_r times below the causal end.
  void reference_into(float* out) const {
    const int g = m_nq / m_nkv, d = m_d;
    parallel_for(m_T * m_nq, [&](int64_t row) {
      const int64_t t = row / m_nq;
      const int h = static_cast<int>(row % m_nq), kvh = h / g;
      std::vector<double> qr(d, 0.0), acc(d, 0.0);
      for (int i = 0; i < d; ++i) {
        double s = 0;
        for (int j = 0; j < d; ++j)
          s += double(m_rot.rotation[size_t(i) * d + j]) * bf16_to_fp32(m_q[row * d + j]);
        qr[i] = s;
      }
      const int64_t visible = std::min(m_kv_len, std::max<int64_t>(m_kv_len - m_T + t + 1, 0));
      const int64_t distinct = std::min(visible, kPeriod);
      std::vector<double> sc(distinct);
      double m = -INFINITY;
      for (int64_t r = 0; r < distinct; ++r) {
        const uint8_t* kp = krow(kvh, r);
        double dot = 0;
        for (int i = 0; i < d; i += 2)
          dot += qr[i] * m_cb.centroids[kp[i / 2] >> 4] + qr[i + 1] * m_cb.centroids[kp[i / 2] & 15];
        sc[r] = dot * bf16_to_fp32(knorm(kvh, r));  // scale 1.0
        m = std::max(m, sc[r]);
      }
      double l = 0;
      for (int64_t r = 0; r < distinct; ++r) {
        const double cnt = double(visible / kPeriod + (r < visible % kPeriod ? 1 : 0));
        const double p = cnt * std::exp(sc[r] - m);
        l += p;
        const double pv = p * bf16_to_fp32(vnorm(kvh, r));
        const uint8_t* vp = vrow(kvh, r);
        for (int i = 0; i < d; i += 2) {
          acc[i] += pv * m_cb.centroids[vp[i / 2] >> 4];
          acc[i + 1] += pv * m_cb.centroids[vp[i / 2] & 15];
        }
      }
      for (int j = 0; j < d; ++j) {
        double s = 0;
        for (int i = 0; i < d; ++i) s += double(m_rot.rotation[size_t(i) * d + j]) * acc[i];
        out[row * d + j] = bf16_to_fp32(fp32_to_bf16(static_cast<float>(l > 0 ? s / l : 0.0)));
      }
    });
  }

#if FUSEBENCH_WITH_CUDA
  template <class T>
  static DeviceBuffer<T> upload(const std::vector<T>& h, cudaStream_t stream) {
    DeviceBuffer<T> d(h.size());
    FB_CUDA_CHECK(cudaMemcpyAsync(d.get(), h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice, stream));
    FB_CUDA_CHECK(cudaStreamSynchronize(stream));  // `h` may be a temporary
    return d;
  }
  cuda::Tq4Cache cache() const {
    return {m_dkp.get(), m_dkn.get(), m_dvp.get(), m_dvn.get(), m_nkv, m_kv_len, m_d};
  }
  cuda::Tq4Tables tables() const {
    return {m_dcent.get(), m_dbound.get(), m_drot.get(), m_drot_t.get(), m_d};
  }
#endif

  int64_t m_T = 0, m_ctx = 0, m_kv_len = 0;
  int m_nq = 0, m_nkv = 0, m_d = 0;
  tq4::Codebook m_cb;
  tq4::Rotation m_rot;
  std::vector<uint16_t> m_q;
  std::vector<uint8_t> m_kp, m_vp;
  std::vector<uint16_t> m_kn, m_vn;
  std::vector<float> m_scratch;
#if FUSEBENCH_WITH_CUDA
  DeviceBuffer<uint8_t> m_dkp, m_dvp;
  DeviceBuffer<uint16_t> m_dkn, m_dvn, m_dbound, m_drot_t, m_dq, m_dout;
  DeviceBuffer<float> m_dcent, m_drot, m_dws;
  DeviceBuffer<int32_t> m_dlen;
  size_t m_ws_bytes = 0;
#endif
};

}  // namespace

KernelDef make_tq4_sdpa_kernel() {
  KernelDef k;
  k.name = "tq4_sdpa";
  k.description =
      "TurboQuant 4-bit KV attention (gemma4 full layers): split-K decode bounded by a device kv_len, causal "
      "prefill with the mask built in-kernel; GQA 8:1, head_dim 512, scale 1.0";
  k.phases = {Phase::decode, Phase::prefill};
  k.variants = {"fused"};  // LUT dequant + softmax + P.V in one pass; no unfused twin (see report)
  k.layouts = {"tq4"};
  k.depends_on_tokens = true;
  k.depends_on_context = true;
  k.twin_of = [](const std::string&) -> std::optional<std::string> { return std::nullopt; };
  k.instances = [](const ModelConfig& c, Phase) -> std::vector<nlohmann::json> {
    if (c.family != ModelFamily::gemma4) return {};  // qwen's tq4 use (no kv_len, bool mask) is not covered
    const auto& g = c.gemma;
    return {{{"name", "attn_full"},
             {"id", fmt::format("attn_full@{}q/{}kv/d{}", g.n_heads, g.n_kv_heads_full, g.head_dim_full)},
             {"n_q_heads", g.n_heads},
             {"n_kv_heads", g.n_kv_heads_full},
             {"head_dim", g.head_dim_full}}};
  };
  k.make = [](const CaseParams& p) { return std::make_unique<Tq4SdpaCase>(p); };
  k.tolerance = [](const std::string& against) { return kernel_tolerance("tq4_sdpa", against); };
  return k;
}

}  // namespace fb

namespace fb {

namespace {

// tq4_append: compress this step's K and V (T tokens x kv heads) and write them at the device-side
// position. Output compared: the 4-bit indices of K then V (as numbers 0..15), then the K and V norms.
class Tq4AppendCase final : public KernelCase {
 public:
  explicit Tq4AppendCase(const CaseParams& p) : m_T(p.tokens) {
    m_nkv = p.instance.at("n_kv_heads").get<int>();
    m_d = p.instance.at("head_dim").get<int>();
    if (m_T < 1) throw std::invalid_argument("tq4_append: tokens must be >= 1");
    m_cb = tq4::lloyd_max_codebook(m_d);
    m_rot = tq4::haar_rotation(m_d, kRotationSeed);
    const size_t n = static_cast<size_t>(m_T) * m_nkv * m_d;
    const CounterRng rk(p.seed, fnv1a64("tq4.append.k", 12)), rv(p.seed, fnv1a64("tq4.append.v", 12));
    m_k.resize(n);
    m_v.resize(n);
    for (size_t i = 0; i < n; ++i) {
      m_k[i] = fp32_to_bf16(rk.normal(i));  // RMS-normed K/V: unit elements
      m_v[i] = fp32_to_bf16(rv.normal(i));
    }
  }
  nlohmann::json shape() const override {
    return {{"T", m_T}, {"n_kv_heads", m_nkv}, {"head_dim", m_d}, {"launches", 1}};
  }
  // K and V in (bf16), packed rows and norms out; Pi^T (bf16) is read once from HBM, then from L2.
  uint64_t bytes() const override {
    const uint64_t vecs = 2ull * m_T * m_nkv;
    return vecs * m_d * 2 + vecs * (m_d / 2 + 2) + uint64_t(m_d) * m_d * 2;
  }
  uint64_t flops() const override { return 2ull * m_T * m_nkv * 2 * m_d * m_d; }
  std::vector<float> reference() override { return compress_cpu(); }
  void run_reference_once() override { (void)compress_cpu(); }
  // The reference's own arithmetic (fp64 sums): the kernel's fp32 order is not replayed here.
  std::vector<float> cpu_variant_output() override { return compress_cpu(); }

#if FUSEBENCH_WITH_CUDA
  bool has_device() const override { return m_d % 64 == 0 && m_d <= 2048; }
  void device_setup(cudaStream_t stream) override {
    const size_t vecs = static_cast<size_t>(m_T) * m_nkv;
    m_dk = upload(m_k, stream);
    m_dv = upload(m_v, stream);
    m_dbound = upload(m_cb.boundaries, stream);
    m_dcent = upload(m_cb.centroids, stream);
    m_drot = upload(m_rot.rotation, stream);
    m_drot_t = upload(m_rot.rotation_t, stream);
    m_dpos = upload(std::vector<int32_t>{0}, stream);
    // One guard row past the capacity: the cache is allocated for T + 1 positions, the last must stay.
    m_dkp = DeviceBuffer<uint8_t>(vecs * m_d / 2 + m_nkv * m_d / 2);
    m_dvp = DeviceBuffer<uint8_t>(m_dkp.size());
    m_dkn = DeviceBuffer<uint16_t>(vecs + m_nkv);
    m_dvn = DeviceBuffer<uint16_t>(vecs + m_nkv);
    FB_CUDA_CHECK(cudaMemsetAsync(m_dkp.get(), 0xEE, m_dkp.bytes(), stream));
    FB_CUDA_CHECK(cudaMemsetAsync(m_dvp.get(), 0xEE, m_dvp.bytes(), stream));
    FB_CUDA_CHECK(cudaMemsetAsync(m_dkn.get(), 0xFF, m_dkn.bytes(), stream));
    FB_CUDA_CHECK(cudaMemsetAsync(m_dvn.get(), 0xFF, m_dvn.bytes(), stream));
  }
  void device_launch(cudaStream_t stream) override {
    cuda::tq4_compress_append(reinterpret_cast<const __nv_bfloat16*>(m_dk.get()),
                              reinterpret_cast<const __nv_bfloat16*>(m_dv.get()), m_T, m_dpos.get(),
                              {m_dcent.get(), m_dbound.get(), m_drot.get(), m_drot_t.get(), m_d}, cache(),
                              stream);
  }
  std::vector<float> device_output(cudaStream_t stream) override {
    const int64_t cap = m_T + 1;
    std::vector<uint8_t> kp(m_dkp.size()), vp(m_dvp.size());
    std::vector<uint16_t> kn(m_dkn.size()), vn(m_dvn.size());
    FB_CUDA_CHECK(cudaMemcpyAsync(kp.data(), m_dkp.get(), kp.size(), cudaMemcpyDeviceToHost, stream));
    FB_CUDA_CHECK(cudaMemcpyAsync(vp.data(), m_dvp.get(), vp.size(), cudaMemcpyDeviceToHost, stream));
    FB_CUDA_CHECK(cudaMemcpyAsync(kn.data(), m_dkn.get(), kn.size() * 2, cudaMemcpyDeviceToHost, stream));
    FB_CUDA_CHECK(cudaMemcpyAsync(vn.data(), m_dvn.get(), vn.size() * 2, cudaMemcpyDeviceToHost, stream));
    FB_CUDA_CHECK(cudaStreamSynchronize(stream));
    // Cache rows are [head][position]; the comparison layout is [token][head] like the inputs.
    std::vector<float> out;
    out.reserve(static_cast<size_t>(m_T) * m_nkv * (m_d + 1) * 2);
    for (const auto* packed : {&kp, &vp})
      for (int64_t t = 0; t < m_T; ++t)
        for (int h = 0; h < m_nkv; ++h)
          for (int b = 0; b < m_d / 2; ++b) {
            const uint8_t byte = (*packed)[(static_cast<size_t>(h) * cap + t) * (m_d / 2) + b];
            out.push_back(byte >> 4);
            out.push_back(byte & 15);
          }
    for (const auto* norms : {&kn, &vn})
      for (int64_t t = 0; t < m_T; ++t)
        for (int h = 0; h < m_nkv; ++h)
          out.push_back(bf16_to_fp32((*norms)[static_cast<size_t>(h) * cap + t]));
    for (int h = 0; h < m_nkv; ++h) {
      const size_t row = static_cast<size_t>(h) * cap + m_T;
      if (kn[row] != 0xFFFF || vn[row] != 0xFFFF || kp[row * m_d / 2] != 0xEE || vp[row * m_d / 2] != 0xEE) {
        throw std::runtime_error(
            fmt::format("tq4_append: the guard row after position {} of head {} was written", m_T - 1, h));
      }
    }
    return out;
  }
#endif

 private:
  std::vector<float> compress_cpu() const {
    const size_t vecs = static_cast<size_t>(m_T) * m_nkv;
    std::vector<uint8_t> kp(vecs * m_d / 2), vp(kp.size());
    std::vector<uint16_t> kn(vecs), vn(vecs);
    parallel_for(static_cast<int64_t>(vecs), [&](int64_t i) {
      tq4::compress(m_k.data() + i * m_d, 1, m_cb, m_rot, kp.data() + i * (m_d / 2), kn.data() + i);
      tq4::compress(m_v.data() + i * m_d, 1, m_cb, m_rot, vp.data() + i * (m_d / 2), vn.data() + i);
    });
    std::vector<float> out;
    out.reserve(vecs * (m_d + 1) * 2);
    for (const auto* packed : {&kp, &vp})
      for (uint8_t byte : *packed) {
        out.push_back(byte >> 4);
        out.push_back(byte & 15);
      }
    for (uint16_t n : kn) out.push_back(bf16_to_fp32(n));
    for (uint16_t n : vn) out.push_back(bf16_to_fp32(n));
    return out;
  }

#if FUSEBENCH_WITH_CUDA
  template <class T>
  static DeviceBuffer<T> upload(const std::vector<T>& h, cudaStream_t stream) {
    DeviceBuffer<T> d(h.size());
    FB_CUDA_CHECK(cudaMemcpyAsync(d.get(), h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice, stream));
    FB_CUDA_CHECK(cudaStreamSynchronize(stream));
    return d;
  }
  cuda::Tq4Cache cache() const {
    return {m_dkp.get(), m_dkn.get(), m_dvp.get(), m_dvn.get(), m_nkv, m_T + 1, m_d};
  }
#endif

  int64_t m_T = 0;
  int m_nkv = 0, m_d = 0;
  tq4::Codebook m_cb;
  tq4::Rotation m_rot;
  std::vector<uint16_t> m_k, m_v;
#if FUSEBENCH_WITH_CUDA
  DeviceBuffer<uint16_t> m_dk, m_dv, m_dbound, m_drot_t, m_dkn, m_dvn;
  DeviceBuffer<float> m_dcent, m_drot;
  DeviceBuffer<int32_t> m_dpos;
  DeviceBuffer<uint8_t> m_dkp, m_dvp;
#endif
};

}  // namespace

KernelDef make_tq4_append_kernel() {
  KernelDef k;
  k.name = "tq4_append";
  k.description =
      "TurboQuant 4-bit KV compress + append of K and V (one launch), position read from device memory";
  k.phases = {Phase::decode, Phase::prefill};
  k.variants = {"fused"};
  k.layouts = {"tq4"};
  k.depends_on_tokens = true;
  k.depends_on_context = false;  // the position only moves where the rows land
  k.twin_of = [](const std::string&) -> std::optional<std::string> { return std::nullopt; };
  k.instances = [](const ModelConfig& c, Phase) -> std::vector<nlohmann::json> {
    if (c.family != ModelFamily::gemma4) return {};
    const auto& g = c.gemma;
    return {{{"name", "kv_full"},
             {"id", fmt::format("kv_full@{}kv/d{}", g.n_kv_heads_full, g.head_dim_full)},
             {"n_kv_heads", g.n_kv_heads_full},
             {"head_dim", g.head_dim_full}}};
  };
  k.make = [](const CaseParams& p) { return std::make_unique<Tq4AppendCase>(p); };
  k.tolerance = [](const std::string& against) { return kernel_tolerance("tq4_append", against); };
  return k;
}

}  // namespace fb
