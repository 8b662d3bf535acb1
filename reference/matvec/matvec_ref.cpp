#include "reference/matvec/matvec_ref.h"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "reference/formats/dequantize.h"
#include "reference/formats/half.h"

namespace fb {

void quantize_activations_q8(const uint16_t* x_bf16, int64_t m, int64_t k, Q8Block* out) {
  if (k % 32 != 0) throw std::invalid_argument("quantize_activations_q8: k % 32 != 0");
  for (int64_t t = 0; t < m; ++t) {
    for (int64_t g = 0; g < k / 32; ++g) {
      const uint16_t* x = x_bf16 + t * k + g * 32;
      float amax = 0.0f;
      for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(bf16_to_fp32(x[i])));
      const float d = amax / 127.0f;
      const float inv = d != 0.0f ? 1.0f / d : 0.0f;
      Q8Block& b = out[t * (k / 32) + g];
      b = Q8Block{};
      for (int i = 0; i < 32; ++i) {
        const float v = bf16_to_fp32(x[i]) * inv;
        const int q = static_cast<int>(std::clamp(std::nearbyint(v), -128.0f, 127.0f));
        ((i & 1) ? b.qs_odd : b.qs_even)[i / 2] = static_cast<int8_t>(q);
        (i < 16 ? b.sum_lo : b.sum_hi) += q;
      }
      b.d = d;
    }
  }
}

double q8_value(const Q8Block& b, int i) {
  return static_cast<double>((i & 1) ? b.qs_odd[i / 2] : b.qs_even[i / 2]) * static_cast<double>(b.d);
}

std::vector<double> matvec_fp64(int64_t m, int64_t n, int64_t k,
                                const std::function<void(int64_t, double*)>& weight_row,
                                const std::vector<double>& x) {
  std::vector<double> y(static_cast<size_t>(m * n));
  Eigen::VectorXd w(k);
  const Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> X(x.data(),
                                                                                                   m, k);
  for (int64_t r = 0; r < n; ++r) {
    weight_row(r, w.data());
    const Eigen::VectorXd col = X * w;
    for (int64_t t = 0; t < m; ++t) y[static_cast<size_t>(t * n + r)] = col[t];
  }
  return y;
}

std::vector<double> activations_bf16_to_double(const uint16_t* x_bf16, int64_t m, int64_t k) {
  std::vector<double> x(static_cast<size_t>(m * k));
  for (size_t i = 0; i < x.size(); ++i) x[i] = bf16_to_fp32(x_bf16[i]);
  return x;
}

std::vector<double> activations_q8_to_double(const Q8Block* q, int64_t m, int64_t k) {
  std::vector<double> x(static_cast<size_t>(m * k));
  for (int64_t t = 0; t < m; ++t)
    for (int64_t j = 0; j < k; ++j)
      x[static_cast<size_t>(t * k + j)] = q8_value(q[t * (k / 32) + j / 32], j % 32);
  return x;
}

std::function<void(int64_t, double*)> ggml_weight_rows(GgmlType type, const uint8_t* blocks, int64_t k) {
  const size_t row_bytes = ggml_row_bytes(type, k);
  return [=](int64_t row, double* dst) {
    thread_local std::vector<float> tmp;
    tmp.resize(static_cast<size_t>(k));
    dequantize(type, blocks + static_cast<size_t>(row) * row_bytes, tmp.data(), k);
    for (int64_t j = 0; j < k; ++j) dst[j] = tmp[static_cast<size_t>(j)];
  };
}

const char* to_string(GluAct a) { return a == GluAct::gelu_tanh ? "gelu_tanh" : "silu"; }

double glu_act(GluAct a, double g) {
  if (a == GluAct::silu) return g / (1.0 + std::exp(-g));
  const double c = 0.7978845608028654;  // sqrt(2/pi)
  return 0.5 * g * (1.0 + std::tanh(c * (g + 0.044715 * g * g * g)));
}

std::vector<double> glu_fp64(const std::vector<double>& y, int64_t m, int64_t i, GluAct a) {
  std::vector<double> out(static_cast<size_t>(m * i));
  for (int64_t t = 0; t < m; ++t)
    for (int64_t j = 0; j < i; ++j)
      out[static_cast<size_t>(t * i + j)] =
          glu_act(a, y[static_cast<size_t>(t * 2 * i + j)]) * y[static_cast<size_t>(t * 2 * i + i + j)];
  return out;
}

std::vector<float> round_bf16(const std::vector<double>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = bf16_to_fp32(fp32_to_bf16(static_cast<float>(v[i])));
  return out;
}

}  // namespace fb
