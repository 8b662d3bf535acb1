#include "reference/step/qwen35_step.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <stdexcept>
#include <thread>

#include "reference/formats/dequantize.h"
#include "reference/fusion/load_fusions.h"
#include "reference/gdn/gdn_ref.h"
#include "reference/moe/moe_ref.h"
#include "reference/ops/ops.h"
#include "reference/util/splitmix.h"

namespace fb::ref {

ModelConfig qwen35_step_tiny_config() { return model_config(ModelFamily::qwen35moe, ModelScale::tiny); }

namespace {

std::vector<float> load(const GgufFile& f, const std::string& name) {
  const GgufTensorInfo* t = f.find_tensor(name);
  if (!t) throw std::invalid_argument(fmt::format("{}: tensor {} missing", f.name(), name));
  std::vector<float> out(static_cast<size_t>(t->n_elements()));
  dequantize(t->ggml_type(), f.tensor_data(*t).data(), out.data(), t->n_elements());
  return out;
}

// y[t][n] = bf16(sum_k x[t][k] w[n][k]) accumulated in fp64 (w: [N][K] starting at `w`).
std::vector<float> linear(const std::vector<float>& x, int64_t T, int64_t K, const float* w, int64_t N) {
  std::vector<float> y(static_cast<size_t>(T * N));
  auto work = [&](int64_t n0, int64_t n1) {
    for (int64_t t = 0; t < T; ++t)
      for (int64_t n = n0; n < n1; ++n) {
        double s = 0;
        const float* xr = &x[t * K];
        const float* wr = w + n * K;
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
std::vector<float> linear(const std::vector<float>& x, int64_t T, int64_t K, const std::vector<float>& w) {
  return linear(x, T, K, w.data(), static_cast<int64_t>(w.size()) / K);
}

std::vector<float> add_bf16(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<float> y(a.size());
  for (size_t i = 0; i < a.size(); ++i) y[i] = round_bf16(static_cast<double>(a[i]) + b[i]);
  return y;
}

// Causal GQA attention over the bf16 caches (positions 0 .. pos+t for token t), fp64, scale 1/sqrt(hd).
std::vector<float> attention(const Qwen35MoeDims& q, const std::vector<float>& qr, const Qwen35LayerState& C,
                             int64_t capacity, int64_t T, int64_t pos) {
  const int64_t nh = q.n_heads, nkv = q.n_kv_heads, hd = q.head_dim, group = nh / nkv;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  std::vector<float> out(static_cast<size_t>(T * nh * hd));
  std::vector<double> s, acc(static_cast<size_t>(hd));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < nh; ++h) {
      const int64_t kvh = h / group, len = pos + t + 1;
      const float* qv = &qr[(t * nh + h) * hd];
      s.assign(static_cast<size_t>(len), 0.0);
      double mx = -INFINITY;
      for (int64_t j = 0; j < len; ++j) {
        const float* kv = &C.k[(kvh * capacity + j) * hd];
        double d = 0;
        for (int64_t i = 0; i < hd; ++i) d += static_cast<double>(qv[i]) * kv[i];
        s[j] = d * scale;
        mx = std::max(mx, s[j]);
      }
      double sum = 0;
      for (double& v : s) sum += (v = std::exp(v - mx));
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t j = 0; j < len; ++j) {
        const float* vv = &C.v[(kvh * capacity + j) * hd];
        for (int64_t i = 0; i < hd; ++i) acc[i] += s[j] * vv[i];
      }
      for (int64_t i = 0; i < hd; ++i) out[(t * nh + h) * hd + i] = round_bf16(acc[i] / sum);
    }
  return out;
}

// Sparse MoE + gated shared expert (the shared expert as slot top_k, weight sigmoid(w_sh . x)).
std::vector<float> moe(const Qwen35MoeDims& q, const Qwen35RefLayer& L, const Routing& r,
                       const std::vector<float>& x, int64_t T, int64_t H) {
  const int64_t E = q.n_experts, I = q.expert_intermediate, Is = q.shared_intermediate;
  std::vector<float> y(static_cast<size_t>(T * H));
  std::vector<double> acc(static_cast<size_t>(H));
  for (int64_t t = 0; t < T; ++t) {
    std::fill(acc.begin(), acc.end(), 0.0);
    const std::vector<float> xt(x.begin() + t * H, x.begin() + (t + 1) * H);
    for (int64_t s = 0; s < r.slots; ++s) {
      const int32_t e = r.ids[t * r.slots + s];
      const bool shared = e == E;
      const int64_t n = shared ? Is : I;
      const float* wg = shared ? L.gate_shexp.data() : &L.gate_exps[e * I * H];
      const float* wu = shared ? L.up_shexp.data() : &L.up_exps[e * I * H];
      const float* wd = shared ? L.down_shexp.data() : &L.down_exps[e * H * I];
      const std::vector<float> g = linear(xt, 1, H, wg, n), u = linear(xt, 1, H, wu, n);
      std::vector<float> a(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) a[i] = round_bf16(silu(g[i]) * u[i]);
      const double wt = r.weights[t * r.slots + s];
      for (int64_t o = 0; o < H; ++o) {
        double d = 0;
        for (int64_t i = 0; i < n; ++i) d += static_cast<double>(a[i]) * wd[o * n + i];
        acc[o] += wt * d;
      }
    }
    for (int64_t o = 0; o < H; ++o) y[t * H + o] = round_bf16(acc[o]);
  }
  return y;
}

}  // namespace

Qwen35RefWeights load_qwen35_ref_weights(const GgufFile& f, const ModelConfig& c, bool fused) {
  if (c.family != ModelFamily::qwen35moe)
    throw std::invalid_argument("load_qwen35_ref_weights: not qwen3.5-moe");
  Qwen35RefWeights w;
  w.config = c;
  w.embd = load(f, "token_embd.weight");
  w.output_norm = load(f, "output_norm.weight");
  w.output = load(f, "output.weight");
  const std::map<std::string, std::vector<float>> split =
      fused ? dequantize_fused_parts(f, &w.fusion_log) : std::map<std::string, std::vector<float>>{};
  auto get = [&](const std::string& name) {
    auto it = split.find(name);
    return it != split.end() ? it->second : load(f, name);
  };
  const Qwen35MoeDims& q = c.qwen;
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string p = fmt::format("blk.{}.", i);
    Qwen35RefLayer L;
    L.full = c.is_full_attention(i);
    L.attn_norm = load(f, p + "attn_norm.weight");
    L.post_attention_norm = load(f, p + "post_attention_norm.weight");
    if (L.full) {
      L.wq = get(p + "attn_q.weight");
      L.wk = get(p + "attn_k.weight");
      L.wv = get(p + "attn_v.weight");
      L.wo = get(p + "attn_output.weight");
      L.q_norm = load(f, p + "attn_q_norm.weight");
      L.k_norm = load(f, p + "attn_k_norm.weight");
      if (static_cast<int64_t>(L.wq.size()) != 2 * q.n_heads * q.head_dim * c.hidden)
        throw std::invalid_argument(fmt::format("{}: {}attn_q shape does not match the config", f.name(), p));
    } else {
      L.w_qkv = get(p + "attn_qkv.weight");
      L.w_z = get(p + "attn_gate.weight");
      L.w_beta = get(p + "ssm_beta.weight");
      L.w_alpha = get(p + "ssm_alpha.weight");
      L.conv = load(f, p + "ssm_conv1d.weight");
      L.ssm_a = load(f, p + "ssm_a");
      L.dt_bias = load(f, p + "ssm_dt.bias");
      L.ssm_norm = load(f, p + "ssm_norm.weight");
      L.w_out = get(p + "ssm_out.weight");
      if (static_cast<int64_t>(L.w_qkv.size()) != q.conv_dim() * c.hidden)
        throw std::invalid_argument(
            fmt::format("{}: {}attn_qkv shape does not match the config", f.name(), p));
    }
    L.router = load(f, p + "ffn_gate_inp.weight");
    L.gate_exps = load(f, p + "ffn_gate_exps.weight");
    L.up_exps = load(f, p + "ffn_up_exps.weight");
    L.down_exps = load(f, p + "ffn_down_exps.weight");
    L.shexp_gate = load(f, p + "ffn_gate_inp_shexp.weight");
    L.gate_shexp = get(p + "ffn_gate_shexp.weight");
    L.up_shexp = get(p + "ffn_up_shexp.weight");
    L.down_shexp = load(f, p + "ffn_down_shexp.weight");
    w.layers.push_back(std::move(L));
  }
  return w;
}

Qwen35State make_qwen35_state(const ModelConfig& c, int64_t capacity, int64_t filled, uint64_t seed) {
  const Qwen35MoeDims& q = c.qwen;
  Qwen35State s;
  s.capacity = capacity;
  for (int64_t i = 0; i < c.n_layers; ++i) {
    Qwen35LayerState L;
    const CounterRng rng(seed, static_cast<uint64_t>(i) + 0x7177ull);
    if (c.is_full_attention(i)) {
      const int64_t n = q.n_kv_heads * capacity * q.head_dim;
      L.k.assign(static_cast<size_t>(n), 0.0f);
      L.v.assign(static_cast<size_t>(n), 0.0f);
      for (int64_t h = 0; h < q.n_kv_heads; ++h)
        for (int64_t p = 0; p < std::min(filled, capacity); ++p)
          for (int64_t d = 0; d < q.head_dim; ++d) {
            const int64_t j = (h * capacity + p) * q.head_dim + d;
            L.k[j] = round_bf16(rng.normal(2 * j));
            L.v[j] = round_bf16(rng.normal(2 * j + 1));
          }
    } else {
      const int64_t nc = q.conv_dim() * q.conv_kernel;
      L.conv.resize(static_cast<size_t>(nc));
      for (int64_t j = 0; j < nc; ++j) L.conv[j] = round_bf16(rng.normal(j));
      const int64_t ns = q.gdn_v_heads * q.gdn_head_k_dim * q.gdn_head_v_dim;
      L.ssm.resize(static_cast<size_t>(ns));
      for (int64_t j = 0; j < ns; ++j) L.ssm[j] = static_cast<float>(kSsmScale * rng.normal(nc + j));
    }
    s.layers.push_back(std::move(L));
  }
  return s;
}

std::vector<float> qwen35_ref_step(const Qwen35RefWeights& w, Qwen35State& st,
                                   const std::vector<int32_t>& tokens, int64_t pos, Qwen35Trace* trace) {
  const ModelConfig& c = w.config;
  const Qwen35MoeDims& q = c.qwen;
  const int64_t T = static_cast<int64_t>(tokens.size()), H = c.hidden;
  if (T < 1) throw std::invalid_argument("qwen35_ref_step: no tokens");
  if (pos + T > st.capacity)
    throw std::invalid_argument("qwen35_ref_step: positions beyond the cache capacity");
  const double eps = c.rms_eps;
  std::vector<int32_t> positions(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) positions[t] = static_cast<int32_t>(pos + t);
  std::vector<float> x =
      embed_bf16([&](int32_t tok) { return &w.embd[static_cast<size_t>(tok) * H]; }, tokens, H, 1.0f);
  const GdnShape gs{q.gdn_k_heads, q.gdn_v_heads, q.gdn_head_k_dim, q.gdn_head_v_dim, q.conv_kernel};
  for (size_t li = 0; li < w.layers.size(); ++li) {
    const Qwen35RefLayer& L = w.layers[li];
    Qwen35LayerState& S = st.layers[li];
    const std::vector<float> xn = rms_norm_bf16(x, T, H, L.attn_norm.data(), NormWeight::one_plus, eps);
    std::vector<float> o;
    if (L.full) {
      const int64_t nh = q.n_heads, nkv = q.n_kv_heads, hd = q.head_dim;
      const std::vector<float> qg = linear(xn, T, H, L.wq);
      std::vector<float> qv(static_cast<size_t>(T * nh * hd)), gate(qv.size());
      for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < nh; ++h)
          for (int64_t i = 0; i < hd; ++i) {
            qv[(t * nh + h) * hd + i] = qg[(t * nh + h) * 2 * hd + i];
            gate[(t * nh + h) * hd + i] = qg[(t * nh + h) * 2 * hd + hd + i];
          }
      const std::vector<float> k = linear(xn, T, H, L.wk), v = linear(xn, T, H, L.wv);
      const RopeSpec spec{hd, q.rotary_dim, q.rotary_dim / 2, q.rotary_dim, q.rope_theta};
      const std::vector<float> qr = rope_bf16(
          rms_norm_bf16(qv, T * nh, hd, L.q_norm.data(), NormWeight::one_plus, eps), T, nh, positions, spec);
      const std::vector<float> kr = rope_bf16(
          rms_norm_bf16(k, T * nkv, hd, L.k_norm.data(), NormWeight::one_plus, eps), T, nkv, positions, spec);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < nkv; ++h)
          for (int64_t i = 0; i < hd; ++i) {
            S.k[(h * st.capacity + pos + t) * hd + i] = kr[(t * nkv + h) * hd + i];
            S.v[(h * st.capacity + pos + t) * hd + i] = v[(t * nkv + h) * hd + i];
          }
      std::vector<float> y = attention(q, qr, S, st.capacity, T, pos);
      for (size_t j = 0; j < y.size(); ++j)
        y[j] = round_bf16(static_cast<double>(y[j]) * round_bf16(sigmoid(gate[j])));
      o = linear(y, T, nh * hd, L.wo);
    } else {
      const int64_t C = q.conv_dim(), kd = q.key_dim(), vd = q.value_dim(), vh = q.gdn_v_heads;
      const std::vector<float> qkv = linear(xn, T, H, L.w_qkv), z = linear(xn, T, H, L.w_z);
      const std::vector<float> b = linear(xn, T, H, L.w_beta), a = linear(xn, T, H, L.w_alpha);
      const std::vector<double> conv = causal_conv_silu_fp64(qkv, T, C, S.conv, L.conv, q.conv_kernel);
      std::vector<float> cq(static_cast<size_t>(T * kd)), ck(cq.size()), cv(static_cast<size_t>(T * vd));
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t i = 0; i < kd; ++i) {
          cq[t * kd + i] = round_bf16(conv[t * C + i]);
          ck[t * kd + i] = round_bf16(conv[t * C + kd + i]);
        }
        for (int64_t i = 0; i < vd; ++i) cv[t * vd + i] = round_bf16(conv[t * C + 2 * kd + i]);
      }
      const std::vector<double> od =
          gated_delta_rule_fp64(gs, T, cq, ck, cv, b, a, L.ssm_a, L.dt_bias, S.ssm);
      std::vector<float> ob(od.size());
      for (size_t j = 0; j < od.size(); ++j) ob[j] = round_bf16(od[j]);
      const std::vector<float> g =
          gated_rms_norm_bf16(ob, z, T * vh, q.gdn_head_v_dim, L.ssm_norm.data(), eps);
      o = linear(g, T, vd, L.w_out);
    }
    x = add_bf16(x, o);
    if (trace) trace->mixer_residual.push_back(x);
    const std::vector<float> xf =
        rms_norm_bf16(x, T, H, L.post_attention_norm.data(), NormWeight::one_plus, eps);
    const Routing r = route_fp64(xf, L.router, L.shexp_gate.data(), T, H, q.n_experts, q.top_k);
    x = add_bf16(x, moe(q, L, r, xf, T, H));
    if (trace) {
      trace->residual.push_back(x);
      trace->routing_ids.push_back(r.ids);
      trace->routing_weights.push_back(r.weights);
      if (!r.margins.empty()) {
        trace->token_margin.push_back(r.margins);
        trace->routing_margin.push_back(*std::min_element(r.margins.begin(), r.margins.end()));
      }
    }
  }
  const std::vector<float> last(x.end() - H, x.end());
  const std::vector<float> xn = rms_norm_bf16(last, 1, H, w.output_norm.data(), NormWeight::one_plus, eps);
  return linear(xn, 1, H, w.output);
}

}  // namespace fb::ref
