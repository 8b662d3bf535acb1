#include "reference/step/gemma4_step.h"

#include <fmt/format.h>

#include <cmath>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>

#include "reference/attention/sliding_window.h"
#include "reference/formats/dequantize.h"
#include "reference/formats/half.h"
#include "reference/fusion/load_fusions.h"
#include "reference/model/model_tensors.h"
#include "reference/ops/ops.h"
#include "reference/util/splitmix.h"

namespace fb::ref {

ModelConfig gemma4_step_tiny_config() {
  ModelConfig c = model_config(ModelFamily::gemma4, ModelScale::tiny);
  c.gemma.n_kv_heads_full = 1;
  c.gemma.head_dim_full = 512;
  c.gemma.rotary_pairs_full = 64;  // 1/4 of the 256 pairs, as at full scale
  return c;
}

namespace {

const GgufTensorInfo& tensor(const GgufFile& f, const std::string& name) {
  const GgufTensorInfo* t = f.find_tensor(name);
  if (!t) throw std::invalid_argument(fmt::format("{}: tensor {} missing", f.name(), name));
  return *t;
}

std::vector<float> dequant_all(const GgufFile& f, const GgufTensorInfo& t) {
  std::vector<float> out(static_cast<size_t>(t.n_elements()));
  dequantize(t.ggml_type(), f.tensor_data(t).data(), out.data(), t.n_elements());
  return out;
}

std::vector<float> load(const GgufFile& f, const std::string& name) {
  return dequant_all(f, tensor(f, name));
}

// y[t][n] = bf16(sum_k x[t][k] w[n][k]) accumulated in fp64.
std::vector<float> linear(const std::vector<float>& x, int64_t T, int64_t K, const std::vector<float>& w) {
  const int64_t N = static_cast<int64_t>(w.size()) / K;
  std::vector<float> y(static_cast<size_t>(T * N));
  auto work = [&](int64_t n0, int64_t n1) {
    for (int64_t t = 0; t < T; ++t)
      for (int64_t n = n0; n < n1; ++n) {
        double s = 0;
        const float* xr = &x[t * K];
        const float* wr = &w[n * K];
        for (int64_t k = 0; k < K; ++k) s += static_cast<double>(xr[k]) * wr[k];
        y[t * N + n] = round_bf16(s);
      }
  };
  const int64_t threads = std::min<int64_t>(std::max(1u, std::thread::hardware_concurrency()), 16);
  if (T * N * K < (int64_t{1} << 22) || threads == 1) {
    work(0, N);
  } else {
    std::vector<std::thread> pool;
    for (int64_t i = 0; i < threads; ++i) pool.emplace_back(work, N * i / threads, N * (i + 1) / threads);
    for (auto& th : pool) th.join();
  }
  return y;
}

std::vector<uint16_t> to_bits(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = fp32_to_bf16(v[i]);
  return out;
}

}  // namespace

Gemma4RefWeights load_gemma4_ref_weights(const GgufFile& f, const ModelConfig& c, bool fused) {
  Gemma4RefWeights w;
  w.config = c;
  w.embd = load(f, "token_embd.weight");
  w.output_norm = load(f, "output_norm.weight");
  // Fused load: each fused group dequantized once, its rows split back into the parts.
  const std::map<std::string, std::vector<float>> split =
      fused ? dequantize_fused_parts(f, &w.fusion_log) : std::map<std::string, std::vector<float>>{};
  auto get = [&](const std::string& name) {
    auto it = split.find(name);
    return it != split.end() ? it->second : load(f, name);
  };
  const Gemma4Dims& g = c.gemma;
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string p = fmt::format("blk.{}.", i);
    Gemma4RefLayer L;
    L.full = c.is_full_attention(i);
    L.n_kv = L.full ? g.n_kv_heads_full : g.n_kv_heads_sliding;
    L.head_dim = L.full ? g.head_dim_full : g.head_dim_sliding;
    L.wq = get(p + "attn_q.weight");
    L.wk = get(p + "attn_k.weight");
    if (!L.full) L.wv = get(p + "attn_v.weight");
    L.wo = get(p + "attn_output.weight");
    L.wgate = get(p + "ffn_gate.weight");
    L.wup = get(p + "ffn_up.weight");
    L.wdown = get(p + "ffn_down.weight");
    L.attn_norm = load(f, p + "attn_norm.weight");
    L.q_norm = load(f, p + "attn_q_norm.weight");
    L.k_norm = load(f, p + "attn_k_norm.weight");
    L.post_attn_norm = load(f, p + "post_attention_norm.weight");
    L.ffn_norm = load(f, p + "ffn_norm.weight");
    L.post_ffw_norm = load(f, p + "post_ffw_norm.weight");
    L.layer_scalar = load(f, p + "layer_output_scale.weight").at(0);
    if (static_cast<int64_t>(L.wq.size()) != g.n_heads * L.head_dim * c.hidden)
      throw std::invalid_argument(fmt::format("{}: {}attn_q shape does not match the config", f.name(), p));
    w.layers.push_back(std::move(L));
  }
  return w;
}

Gemma4KvState make_kv_state(const ModelConfig& c, int64_t capacity, int64_t filled, uint64_t seed) {
  const Gemma4Dims& g = c.gemma;
  Gemma4KvState s;
  s.capacity = capacity;
  s.codebook = tq4::lloyd_max_codebook(static_cast<int>(g.head_dim_full));
  s.rotation = tq4::haar_rotation(static_cast<int>(g.head_dim_full), kTq4RotationSeed);
  for (int64_t i = 0; i < c.n_layers; ++i) {
    Gemma4KvLayer L;
    const CounterRng rng(seed, static_cast<uint64_t>(i) + 0x6b76ull);
    if (c.is_full_attention(i)) {
      const int64_t hd = g.head_dim_full, nkv = g.n_kv_heads_full;
      L.k_packed.assign(static_cast<size_t>(nkv * capacity * hd / 2), 0);
      L.v_packed = L.k_packed;
      L.k_norms.assign(static_cast<size_t>(nkv * capacity), 0);
      L.v_norms = L.k_norms;
      for (int64_t h = 0; h < nkv; ++h)
        for (int64_t p = 0; p < std::min(filled, capacity); ++p) {
          const uint64_t base = static_cast<uint64_t>((h * capacity + p) * (hd + 2));
          for (int64_t b = 0; b < hd / 2; ++b) {
            const uint64_t bits = rng.bits(base + b);
            L.k_packed[(h * capacity + p) * hd / 2 + b] = static_cast<uint8_t>(bits);
            L.v_packed[(h * capacity + p) * hd / 2 + b] = static_cast<uint8_t>(bits >> 8);
          }
          const double root = std::sqrt(static_cast<double>(hd));
          L.k_norms[h * capacity + p] = fp32_to_bf16(
              static_cast<float>(qk_norm_scale(hd) * root * (0.8 + 0.4 * rng.uniform(base + hd))));
          L.v_norms[h * capacity + p] =
              fp32_to_bf16(static_cast<float>(kKvScale * root * (0.8 + 0.4 * rng.uniform(base + hd + 1))));
        }
    } else {
      const int64_t n = g.n_kv_heads_sliding * 2 * g.sliding_window * g.head_dim_sliding;
      const double k_scale = qk_norm_scale(g.head_dim_sliding);
      L.ring_k.resize(static_cast<size_t>(n));
      L.ring_v.resize(static_cast<size_t>(n));
      for (int64_t j = 0; j < n; ++j) {
        L.ring_k[j] = fp32_to_bf16(static_cast<float>(k_scale * rng.normal(2 * j)));
        L.ring_v[j] = fp32_to_bf16(static_cast<float>(kKvScale * rng.normal(2 * j + 1)));
      }
    }
    s.layers.push_back(std::move(L));
  }
  return s;
}

std::vector<int32_t> step_tokens(int64_t vocab, int64_t T, uint64_t seed) {
  const CounterRng rng(seed, 0x746f6bull);
  std::vector<int32_t> t(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) t[i] = static_cast<int32_t>(rng.bits(i) % static_cast<uint64_t>(vocab));
  return t;
}

std::vector<float> gemma4_ref_step(const Gemma4RefWeights& w, Gemma4KvState& kv,
                                   const std::vector<int32_t>& tokens, int64_t pos) {
  const ModelConfig& c = w.config;
  const Gemma4Dims& g = c.gemma;
  const int64_t T = static_cast<int64_t>(tokens.size()), H = c.hidden, I = g.intermediate, nh = g.n_heads;
  if (T < 1) throw std::invalid_argument("gemma4_ref_step: no tokens");
  if (pos + T > kv.capacity)
    throw std::invalid_argument("gemma4_ref_step: positions beyond the cache capacity");
  const double eps = c.rms_eps;
  std::vector<int32_t> positions(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) positions[t] = static_cast<int32_t>(pos + t);
  std::vector<float> x = embed_bf16([&](int32_t tok) { return &w.embd[static_cast<size_t>(tok) * H]; },
                                    tokens, H, embed_scale(H));
  for (size_t li = 0; li < w.layers.size(); ++li) {
    const Gemma4RefLayer& L = w.layers[li];
    Gemma4KvLayer& C = kv.layers[li];
    const int64_t hd = L.head_dim, nkv = L.n_kv;
    const RopeSpec spec = L.full ? RopeSpec{hd, hd, g.rotary_pairs_full, hd, g.rope_theta_full}
                                 : RopeSpec{hd, hd, hd / 2, hd, g.rope_theta_sliding};
    const std::vector<float> xn = rms_norm_bf16(x, T, H, L.attn_norm.data(), NormWeight::direct, eps);
    const std::vector<float> q = linear(xn, T, H, L.wq);
    const std::vector<float> k = linear(xn, T, H, L.wk);
    const std::vector<float> v = L.full ? k : linear(xn, T, H, L.wv);  // K = V on full layers
    const std::vector<float> qr = rope_bf16(
        rms_norm_bf16(q, T * nh, hd, L.q_norm.data(), NormWeight::direct, eps), T, nh, positions, spec);
    const std::vector<float> kr = rope_bf16(
        rms_norm_bf16(k, T * nkv, hd, L.k_norm.data(), NormWeight::direct, eps), T, nkv, positions, spec);
    const std::vector<float> vn = rms_norm_bf16(v, T * nkv, hd, nullptr, NormWeight::none, eps);
    std::vector<float> attn(static_cast<size_t>(T * nh * hd));
    if (L.full) {
      // Compress this step's K/V into the cache first: the attention reads them back quantized.
      std::vector<uint16_t> kb = to_bits(kr), vb = to_bits(vn);
      std::vector<uint8_t> packed(static_cast<size_t>(hd / 2));
      uint16_t norm = 0;
      for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < nkv; ++h) {
          const int64_t slot = h * kv.capacity + pos + t;
          tq4::compress(&kb[(t * nkv + h) * hd], 1, kv.codebook, kv.rotation, packed.data(), &norm);
          std::copy(packed.begin(), packed.end(), C.k_packed.begin() + slot * hd / 2);
          C.k_norms[slot] = norm;
          tq4::compress(&vb[(t * nkv + h) * hd], 1, kv.codebook, kv.rotation, packed.data(), &norm);
          std::copy(packed.begin(), packed.end(), C.v_packed.begin() + slot * hd / 2);
          C.v_norms[slot] = norm;
        }
      std::vector<double> qd(qr.begin(), qr.end()), out(qr.size());
      tq4::tq4_attention_fp64(qd.data(), C.k_packed.data(), C.k_norms.data(), C.v_packed.data(),
                              C.v_norms.data(), kv.codebook, kv.rotation, T, static_cast<int>(nh),
                              static_cast<int>(nkv), kv.capacity, pos + T, 1.0, out.data());
      for (size_t j = 0; j < out.size(); ++j) attn[j] = round_bf16(out[j]);
    } else {
      const SlidingWindowShape shape{nh, nkv, hd, g.sliding_window};
      const std::vector<uint16_t> qb = to_bits(qr), kb = to_bits(kr), vb = to_bits(vn);
      const std::vector<double> out = sliding_window_attention(
          shape, qb.data(), C.ring_k.data(), C.ring_v.data(), kb.data(), vb.data(), T, pos, 1.0);
      for (size_t j = 0; j < out.size(); ++j) attn[j] = round_bf16(out[j]);
      sliding_window_append(shape, kb.data(), vb.data(), T, pos, C.ring_k.data(), C.ring_v.data());
    }
    const std::vector<float> o = linear(attn, T, nh * hd, L.wo);
    x = residual_norm_scale_bf16(x, o, T, H, L.post_attn_norm.data(), eps, nullptr);
    const std::vector<float> xf = rms_norm_bf16(x, T, H, L.ffn_norm.data(), NormWeight::direct, eps);
    const std::vector<float> gate = linear(xf, T, H, L.wgate), up = linear(xf, T, H, L.wup);
    std::vector<float> gate_up(static_cast<size_t>(T * 2 * I));
    for (int64_t t = 0; t < T; ++t) {
      std::copy(gate.begin() + t * I, gate.begin() + (t + 1) * I, gate_up.begin() + t * 2 * I);
      std::copy(up.begin() + t * I, up.begin() + (t + 1) * I, gate_up.begin() + t * 2 * I + I);
    }
    const std::vector<float> act = gelu_tanh_mul_bf16(gate_up, T, I);
    const std::vector<float> down = linear(act, T, I, L.wdown);
    x = residual_norm_scale_bf16(x, down, T, H, L.post_ffw_norm.data(), eps, &L.layer_scalar);
  }
  const std::vector<float> last(x.end() - H, x.end());
  const std::vector<float> xn = rms_norm_bf16(last, 1, H, w.output_norm.data(), NormWeight::direct, eps);
  return softcap_f32(linear(xn, 1, H, w.embd), g.final_softcap);
}

}  // namespace fb::ref
