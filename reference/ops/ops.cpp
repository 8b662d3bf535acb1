#include "reference/ops/ops.h"

#include <Eigen/Dense>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "reference/formats/half.h"

namespace fb::ref {

float round_bf16(double v) {
  // Rounds the double directly: going through fp32 would round twice.
  if (std::isnan(v)) return bf16_to_fp32(0x7FC0);
  if (std::abs(v) < 0x1p-126)
    return bf16_to_fp32(fp32_to_bf16(static_cast<float>(v)));  // subnormal: fp32 path
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof b);
  // bf16 keeps 7 of the 52 fraction bits: round the other 45 to nearest even.
  b += ((uint64_t{1} << 44) - 1) + ((b >> 45) & 1);
  b &= ~((uint64_t{1} << 45) - 1);
  double r = 0.0;
  std::memcpy(&r, &b, sizeof r);
  return static_cast<float>(r);  // exact (8 significant bits) or inf beyond the fp32 range
}

std::vector<float> rms_norm_bf16(const std::vector<float>& x, int64_t rows, int64_t cols, const float* w,
                                 NormWeight mode, double eps) {
  if (static_cast<int64_t>(x.size()) != rows * cols) throw std::invalid_argument("rms_norm_bf16: size");
  if (mode != NormWeight::none && w == nullptr) throw std::invalid_argument("rms_norm_bf16: null weight");
  std::vector<float> out(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x.data() + r * cols;
    double ss = 0.0;
    for (int64_t c = 0; c < cols; ++c) ss += static_cast<double>(xr[c]) * xr[c];
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(cols) + eps);
    for (int64_t c = 0; c < cols; ++c) {
      double g = 1.0;
      if (mode == NormWeight::direct) g = w[c];
      if (mode == NormWeight::one_plus) g = 1.0 + static_cast<double>(w[c]);
      out[r * cols + c] = round_bf16(xr[c] * inv * g);
    }
  }
  return out;
}

std::vector<float> rope_inv_freq(const RopeSpec& s) {
  if (s.rot_dim % 2 != 0 || s.rot_dim > s.head_dim || 2 * s.n_freq > s.rot_dim || s.freq_den <= 0)
    throw std::invalid_argument("rope_inv_freq: inconsistent RopeSpec");
  std::vector<float> f(static_cast<size_t>(s.rot_dim / 2), 0.0f);
  for (int64_t i = 0; i < s.n_freq; ++i)
    f[i] = static_cast<float>(
        std::pow(s.theta, -2.0 * static_cast<double>(i) / static_cast<double>(s.freq_den)));
  return f;
}

std::vector<float> rope_bf16(const std::vector<float>& x, int64_t tokens, int64_t heads,
                             const std::vector<int32_t>& pos, const RopeSpec& s) {
  if (static_cast<int64_t>(x.size()) != tokens * heads * s.head_dim ||
      static_cast<int64_t>(pos.size()) != tokens)
    throw std::invalid_argument("rope_bf16: size");
  const std::vector<float> inv = rope_inv_freq(s);
  const int64_t half = s.rot_dim / 2;
  std::vector<float> out(x.size());
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      const float* xr = x.data() + (t * heads + h) * s.head_dim;
      float* o = out.data() + (t * heads + h) * s.head_dim;
      for (int64_t d = 0; d < s.head_dim; ++d) o[d] = round_bf16(xr[d]);
      for (int64_t i = 0; i < s.n_freq; ++i) {
        const float angle = static_cast<float>(pos[t]) * inv[i];  // fp32, the model's angle
        const double c = std::cos(static_cast<double>(angle)), sn = std::sin(static_cast<double>(angle));
        const double x1 = xr[i], x2 = xr[i + half];
        o[i] = round_bf16(x1 * c - x2 * sn);
        o[i + half] = round_bf16(x2 * c + x1 * sn);
      }
    }
  }
  return out;
}

double gelu_tanh(double x) {
  constexpr double kAlpha = 0.7978845608028654;  // sqrt(2/pi)
  return 0.5 * x * (1.0 + std::tanh(kAlpha * (x + 0.044715 * x * x * x)));
}

std::vector<float> gelu_tanh_bf16(const std::vector<float>& x) {
  std::vector<float> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = round_bf16(gelu_tanh(x[i]));
  return out;
}

std::vector<float> gelu_tanh_mul_bf16(const std::vector<float>& gate_up, int64_t tokens, int64_t inter) {
  if (static_cast<int64_t>(gate_up.size()) != tokens * 2 * inter)
    throw std::invalid_argument("gelu_tanh_mul: size");
  std::vector<float> out(static_cast<size_t>(tokens * inter));
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t i = 0; i < inter; ++i) {
      const float g = round_bf16(gelu_tanh(gate_up[t * 2 * inter + i]));
      out[t * inter + i] = round_bf16(static_cast<double>(g) * gate_up[t * 2 * inter + inter + i]);
    }
  }
  return out;
}

std::vector<float> softcap_f32(const std::vector<float>& x, double cap) {
  std::vector<float> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = static_cast<float>(std::tanh(x[i] / cap) * cap);
  return out;
}

std::vector<float> residual_norm_scale_bf16(const std::vector<float>& x, const std::vector<float>& h,
                                            int64_t rows, int64_t cols, const float* w, double eps,
                                            const float* scalar) {
  if (x.size() != h.size()) throw std::invalid_argument("residual_norm_scale: size");
  std::vector<float> out = rms_norm_bf16(h, rows, cols, w, NormWeight::direct, eps);
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = round_bf16(static_cast<double>(x[i]) + out[i]);
    if (scalar != nullptr) out[i] = round_bf16(static_cast<double>(out[i]) * *scalar);
  }
  return out;
}

std::vector<float> gemm_sampled_bf16(const std::vector<const float*>& x_rows,
                                     const std::vector<const float*>& w_rows, int64_t k) {
  const auto m = static_cast<Eigen::Index>(x_rows.size()), n = static_cast<Eigen::Index>(w_rows.size());
  Eigen::MatrixXd xs(m, k), ws(n, k);
  for (Eigen::Index i = 0; i < m; ++i)
    xs.row(i) = Eigen::Map<const Eigen::RowVectorXf>(x_rows[i], k).cast<double>();
  for (Eigen::Index j = 0; j < n; ++j)
    ws.row(j) = Eigen::Map<const Eigen::RowVectorXf>(w_rows[j], k).cast<double>();
  const Eigen::MatrixXd y = xs * ws.transpose();
  std::vector<float> out(static_cast<size_t>(m * n));
  for (Eigen::Index i = 0; i < m; ++i)
    for (Eigen::Index j = 0; j < n; ++j) out[i * n + j] = round_bf16(y(i, j));
  return out;
}

}  // namespace fb::ref
