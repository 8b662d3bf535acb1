#include "reference/gdn/gdn_ref.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "reference/ops/ops.h"

namespace fb::ref {

namespace {

void require(bool ok, const char* what) {
  if (!ok) throw std::invalid_argument(std::string("gdn_ref: ") + what);
}

void check_shape(const GdnShape& s, int64_t T, const std::vector<float>& q, const std::vector<float>& k,
                 const std::vector<float>& v, const std::vector<float>& b, const std::vector<float>& a,
                 const std::vector<float>& ssm_a, const std::vector<float>& dt_bias, size_t state_size) {
  require(s.k_heads > 0 && s.v_heads % s.k_heads == 0 && s.dk > 0 && s.dv > 0 && T >= 1, "bad shape");
  require(q.size() == static_cast<size_t>(T * s.key_dim()) && k.size() == q.size(), "q/k size");
  require(v.size() == static_cast<size_t>(T * s.value_dim()), "v size");
  require(b.size() == static_cast<size_t>(T * s.v_heads) && a.size() == b.size(), "b/a size");
  require(ssm_a.size() == static_cast<size_t>(s.v_heads) && dt_bias.size() == ssm_a.size(), "A/dt size");
  require(state_size == static_cast<size_t>(s.v_heads * s.dk * s.dv), "state size");
}

}  // namespace

double softplus(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }
double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double silu(double x) { return x / (1.0 + std::exp(-x)); }

std::vector<double> causal_conv_silu_fp64(const std::vector<float>& x, int64_t T, int64_t C,
                                          std::vector<float>& state, const std::vector<float>& w, int64_t K) {
  require(T >= 1 && C >= 1 && K >= 1, "conv shape");
  require(x.size() == static_cast<size_t>(T * C) && state.size() == static_cast<size_t>(C * K) &&
              w.size() == state.size(),
          "conv sizes");
  std::vector<double> out(static_cast<size_t>(T * C));
  std::vector<float> inp(static_cast<size_t>(K + T));
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t j = 0; j < K; ++j) inp[j] = state[c * K + j];
    for (int64_t t = 0; t < T; ++t) inp[K + t] = x[t * C + c];
    for (int64_t t = 0; t < T; ++t) {
      double acc = 0;
      for (int64_t j = 0; j < K; ++j) acc += static_cast<double>(inp[t + 1 + j]) * w[c * K + j];
      out[t * C + c] = silu(acc);
    }
    for (int64_t j = 0; j < K; ++j) state[c * K + j] = inp[T + j];
  }
  return out;
}

std::vector<double> gated_delta_rule_fp64(const GdnShape& s, int64_t T, const std::vector<float>& q,
                                          const std::vector<float>& k, const std::vector<float>& v,
                                          const std::vector<float>& b, const std::vector<float>& a,
                                          const std::vector<float>& ssm_a, const std::vector<float>& dt_bias,
                                          std::vector<double>& state) {
  check_shape(s, T, q, k, v, b, a, ssm_a, dt_bias, state.size());
  const int64_t rep = s.v_heads / s.k_heads, dk = s.dk, dv = s.dv;
  const double scale = 1.0 / std::sqrt(static_cast<double>(dk));
  std::vector<double> out(static_cast<size_t>(T * s.value_dim()));
  std::vector<double> qn(dk), kn(dk), kv(dv);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < s.v_heads; ++h) {
      const int64_t hk = h / rep;
      const float* qp = q.data() + t * s.key_dim() + hk * dk;
      const float* kp = k.data() + t * s.key_dim() + hk * dk;
      double qq = 0, kk = 0;
      for (int64_t i = 0; i < dk; ++i)
        qq += static_cast<double>(qp[i]) * qp[i], kk += static_cast<double>(kp[i]) * kp[i];
      const double qd = std::max(std::sqrt(qq), 1e-6), kd = std::max(std::sqrt(kk), 1e-6);
      for (int64_t i = 0; i < dk; ++i) qn[i] = qp[i] / qd * scale, kn[i] = kp[i] / kd;
      const double beta = sigmoid(b[t * s.v_heads + h]);
      const double g =
          static_cast<double>(ssm_a[h]) * softplus(static_cast<double>(a[t * s.v_heads + h]) + dt_bias[h]);
      const double decay = std::exp(g);
      double* S = state.data() + h * dk * dv;
      std::fill(kv.begin(), kv.end(), 0.0);
      for (int64_t i = 0; i < dk; ++i)
        for (int64_t j = 0; j < dv; ++j) {
          S[i * dv + j] *= decay;
          kv[j] += S[i * dv + j] * kn[i];
        }
      const float* vp = v.data() + t * s.value_dim() + h * dv;
      for (int64_t j = 0; j < dv; ++j) kv[j] = beta * (vp[j] - kv[j]);  // delta
      double* o = out.data() + t * s.value_dim() + h * dv;
      for (int64_t j = 0; j < dv; ++j) o[j] = 0;
      for (int64_t i = 0; i < dk; ++i)
        for (int64_t j = 0; j < dv; ++j) {
          S[i * dv + j] += kn[i] * kv[j];
          o[j] += S[i * dv + j] * qn[i];
        }
    }
  }
  return out;
}

std::vector<float> gated_delta_rule_f32(const GdnShape& s, int64_t T, const std::vector<float>& q,
                                        const std::vector<float>& k, const std::vector<float>& v,
                                        const std::vector<float>& b, const std::vector<float>& a,
                                        const std::vector<float>& ssm_a, const std::vector<float>& dt_bias,
                                        std::vector<float>& state) {
  check_shape(s, T, q, k, v, b, a, ssm_a, dt_bias, state.size());
  const int64_t rep = s.v_heads / s.k_heads, dk = s.dk, dv = s.dv;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(dk)));
  std::vector<float> out(static_cast<size_t>(T * s.value_dim()));
  std::vector<float> qn(dk), kn(dk), kv(dv);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < s.v_heads; ++h) {
      const int64_t hk = h / rep;
      const float* qp = q.data() + t * s.key_dim() + hk * dk;
      const float* kp = k.data() + t * s.key_dim() + hk * dk;
      float qq = 0, kk = 0;
      for (int64_t i = 0; i < dk; ++i) qq += qp[i] * qp[i], kk += kp[i] * kp[i];
      const float qi = 1.0f / std::max(std::sqrt(qq), 1e-6f), ki = 1.0f / std::max(std::sqrt(kk), 1e-6f);
      for (int64_t i = 0; i < dk; ++i) qn[i] = qp[i] * qi * scale, kn[i] = kp[i] * ki;
      const float bb = b[t * s.v_heads + h], aa = a[t * s.v_heads + h] + dt_bias[h];
      const float beta = 1.0f / (1.0f + std::exp(-bb));
      const float sp = aa > 20.0f ? aa : std::log1p(std::exp(aa));
      const float decay = std::exp(ssm_a[h] * sp);
      float* S = state.data() + h * dk * dv;
      std::fill(kv.begin(), kv.end(), 0.0f);
      for (int64_t i = 0; i < dk; ++i)
        for (int64_t j = 0; j < dv; ++j) {
          S[i * dv + j] *= decay;
          kv[j] += S[i * dv + j] * kn[i];
        }
      const float* vp = v.data() + t * s.value_dim() + h * dv;
      for (int64_t j = 0; j < dv; ++j) kv[j] = beta * (vp[j] - kv[j]);
      float* o = out.data() + t * s.value_dim() + h * dv;
      for (int64_t j = 0; j < dv; ++j) o[j] = 0;
      for (int64_t i = 0; i < dk; ++i)
        for (int64_t j = 0; j < dv; ++j) {
          S[i * dv + j] += kn[i] * kv[j];
          o[j] += S[i * dv + j] * qn[i];
        }
    }
  }
  return out;
}

std::vector<float> gated_rms_norm_bf16(const std::vector<float>& o, const std::vector<float>& z, int64_t rows,
                                       int64_t D, const float* w, double eps) {
  require(rows >= 1 && D >= 1 && o.size() == static_cast<size_t>(rows * D) && z.size() == o.size() && w,
          "gated_rms_norm sizes");
  std::vector<float> out(o.size());
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < D; ++i) ss += static_cast<double>(o[r * D + i]) * o[r * D + i];
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(D) + eps);
    for (int64_t i = 0; i < D; ++i) {
      const double n = round_bf16(o[r * D + i] * inv);  // rmsnorm(x).type_as(x)
      out[r * D + i] = round_bf16(static_cast<double>(w[i]) * n * silu(z[r * D + i]));
    }
  }
  return out;
}

}  // namespace fb::ref
