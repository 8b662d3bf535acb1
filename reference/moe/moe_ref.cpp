#include "reference/moe/moe_ref.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <stdexcept>

#include "reference/formats/dequantize.h"
#include "reference/formats/half.h"

namespace fb {

namespace {
void require(bool ok, const char* what) {
  if (!ok) throw std::invalid_argument(std::string("moe_ref: ") + what);
}
double silu(double x) { return x / (1.0 + std::exp(-x)); }
}  // namespace

int SymInt4Experts::q(int64_t e, int64_t row, int64_t col) const {
  const uint8_t byte = qdata[static_cast<size_t>(((e * n + row) * k + col) / 2)];
  return static_cast<int>((col % 2) ? (byte >> 4) : (byte & 0xF)) - 8;
}
float SymInt4Experts::scale_of(int64_t e, int64_t row, int64_t g) const {
  return bf16_to_fp32(scale[static_cast<size_t>((e * n + row) * (k / group) + g)]);
}
double SymInt4Experts::weight(int64_t e, int64_t row, int64_t col) const {
  return static_cast<double>(q(e, row, col)) * scale_of(e, row, col / group);
}

SymInt4Experts quantize_sym_int4(const float* w, int64_t experts, int64_t n, int64_t k, int64_t group) {
  require(experts >= 1 && n >= 1 && group >= 2 && group % 2 == 0 && k % group == 0, "quantize shape");
  SymInt4Experts out;
  out.experts = experts, out.n = n, out.k = k, out.group = group;
  out.qdata.assign(static_cast<size_t>(experts * n * k / 2), 0);
  out.scale.assign(static_cast<size_t>(experts * n * (k / group)), 0);
  for (int64_t r = 0; r < experts * n; ++r) {
    for (int64_t g = 0; g < k / group; ++g) {
      const float* src = w + r * k + g * group;
      float amax = 0;
      for (int64_t i = 0; i < group; ++i) amax = std::max(amax, std::fabs(src[i]));
      const uint16_t sb = fp32_to_bf16(amax / 7.5f);
      out.scale[static_cast<size_t>(r * (k / group) + g)] = sb;
      const float s = bf16_to_fp32(sb);
      for (int64_t i = 0; i < group; ++i) {
        const int q = s == 0.0f ? 0 : std::clamp(static_cast<int>(std::nearbyint(src[i] / s)), -8, 7);
        const size_t byte = static_cast<size_t>((r * k + g * group + i) / 2);
        out.qdata[byte] |= static_cast<uint8_t>((q + 8) << (((g * group + i) % 2) ? 4 : 0));
      }
    }
  }
  return out;
}

SymInt4Experts expert_rows(const SymInt4Experts& src, int64_t row0, int64_t rows) {
  require(row0 >= 0 && rows >= 1 && row0 + rows <= src.n, "expert_rows range");
  SymInt4Experts out;
  out.experts = src.experts, out.n = rows, out.k = src.k, out.group = src.group;
  const size_t qrow = static_cast<size_t>(src.k / 2), srow = static_cast<size_t>(src.k / src.group);
  for (int64_t e = 0; e < src.experts; ++e) {
    const size_t first = static_cast<size_t>(e * src.n + row0);
    out.qdata.insert(out.qdata.end(), src.qdata.begin() + first * qrow,
                     src.qdata.begin() + (first + rows) * qrow);
    out.scale.insert(out.scale.end(), src.scale.begin() + first * srow,
                     src.scale.begin() + (first + rows) * srow);
  }
  return out;
}

std::vector<uint8_t> expert_rows(const std::vector<uint8_t>& blocks, int64_t experts, int64_t n,
                                 uint64_t row_bytes, int64_t row0, int64_t rows) {
  require(row0 >= 0 && rows >= 1 && row0 + rows <= n && blocks.size() == experts * n * row_bytes,
          "expert_rows range");
  std::vector<uint8_t> out;
  for (int64_t e = 0; e < experts; ++e) {
    const auto first = blocks.begin() + static_cast<ptrdiff_t>((e * n + row0) * row_bytes);
    out.insert(out.end(), first, first + static_cast<ptrdiff_t>(rows * row_bytes));
  }
  return out;
}

Routing route_fp64(const std::vector<float>& x, const std::vector<float>& w_router, const float* w_shared,
                   int64_t T, int64_t H, int64_t E, int64_t top_k) {
  require(T >= 1 && H >= 1 && top_k >= 1 && top_k <= E, "route shape");
  require(x.size() == static_cast<size_t>(T * H) && w_router.size() == static_cast<size_t>(E * H),
          "route sizes");
  Routing r;
  r.tokens = T, r.top_k = top_k, r.slots = top_k + (w_shared ? 1 : 0);
  std::vector<double> logit(static_cast<size_t>(E));
  std::vector<int32_t> order(static_cast<size_t>(E));
  for (int64_t t = 0; t < T; ++t) {
    const float* xt = x.data() + t * H;
    for (int64_t e = 0; e < E; ++e) {
      double acc = 0;
      for (int64_t i = 0; i < H; ++i) acc += static_cast<double>(xt[i]) * w_router[e * H + i];
      logit[e] = acc;
    }
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logit[a] > logit[b]; });
    if (top_k < E) {
      const int32_t in = order[top_k - 1], out = order[top_k];
      double ss = 0, dw = 0;
      for (int64_t i = 0; i < H; ++i) {
        ss += static_cast<double>(xt[i]) * xt[i];
        const double d = static_cast<double>(w_router[in * H + i]) - w_router[out * H + i];
        dw += d * d;
      }
      const double scale = std::sqrt(dw) * std::sqrt(ss / static_cast<double>(H));
      r.margins.push_back(scale > 0 ? (logit[in] - logit[out]) / scale : INFINITY);
    }
    double sum = 0;
    for (int64_t s = 0; s < top_k; ++s) sum += std::exp(logit[order[s]] - logit[order[0]]);
    for (int64_t s = 0; s < top_k; ++s) {
      r.ids.push_back(order[s]);
      r.weights.push_back(static_cast<float>(std::exp(logit[order[s]] - logit[order[0]]) / sum));
    }
    if (w_shared) {
      double acc = 0;
      for (int64_t i = 0; i < H; ++i) acc += static_cast<double>(xt[i]) * w_shared[i];
      r.ids.push_back(static_cast<int32_t>(E));
      r.weights.push_back(static_cast<float>(1.0 / (1.0 + std::exp(-acc))));
    }
  }
  return r;
}

std::vector<double> dense_gates(const Routing& r, int64_t columns) {
  std::vector<double> out(static_cast<size_t>(r.tokens * columns), 0.0);
  for (int64_t t = 0; t < r.tokens; ++t)
    for (int64_t s = 0; s < r.slots; ++s) {
      const int32_t id = r.ids[t * r.slots + s];
      require(id >= 0 && id < columns, "dense_gates: id out of range");
      out[t * columns + id] += r.weights[t * r.slots + s];
    }
  return out;
}

ExpertRows sym_int4_rows(const SymInt4Experts& w) {
  return [&w](int64_t e, int64_t row, double* dst) {
    for (int64_t c = 0; c < w.k; ++c) dst[c] = w.weight(e, row, c);
  };
}

ExpertRows ggml_expert_rows(GgmlType type, const uint8_t* blocks, int64_t n, int64_t k) {
  const size_t row_bytes = ggml_row_bytes(type, k);
  return [=](int64_t e, int64_t row, double* dst) {
    std::vector<float> tmp(static_cast<size_t>(k));
    dequantize(type, blocks + static_cast<size_t>(e * n + row) * row_bytes, tmp.data(), k);
    for (int64_t j = 0; j < k; ++j) dst[j] = tmp[static_cast<size_t>(j)];
  };
}

std::vector<double> moe_gemm1_fp64(const ExpertRows& w13, int64_t n, int64_t k, const std::vector<double>& x,
                                   const Routing& r) {
  require(x.size() == static_cast<size_t>(r.tokens * k), "gemm1: x size");
  const int64_t P = r.tokens * r.slots;
  std::vector<double> h(static_cast<size_t>(P * n)), row(static_cast<size_t>(k));
  for (int64_t p = 0; p < P; ++p) {
    const int64_t t = p / r.slots, e = r.ids[p];
    for (int64_t i = 0; i < n; ++i) {
      w13(e, i, row.data());
      double acc = 0;
      for (int64_t j = 0; j < k; ++j) acc += row[j] * x[t * k + j];
      h[p * n + i] = acc;
    }
  }
  return h;
}

std::vector<double> moe_gemm2_fp64(const ExpertRows& w2, int64_t hidden, int64_t inter,
                                   const std::vector<double>& h, const Routing& r) {
  const int64_t P = r.tokens * r.slots;
  require(h.size() == static_cast<size_t>(P * 2 * inter), "gemm2: h size");
  std::vector<double> y(static_cast<size_t>(r.tokens * hidden), 0.0), act(static_cast<size_t>(inter)),
      row(static_cast<size_t>(inter));
  for (int64_t p = 0; p < P; ++p) {
    const int64_t t = p / r.slots, e = r.ids[p];
    for (int64_t j = 0; j < inter; ++j) act[j] = silu(h[p * 2 * inter + j]) * h[p * 2 * inter + inter + j];
    for (int64_t i = 0; i < hidden; ++i) {
      w2(e, i, row.data());
      double acc = 0;
      for (int64_t j = 0; j < inter; ++j) acc += row[j] * act[j];
      y[t * hidden + i] += r.weights[p] * acc;
    }
  }
  return y;
}

}  // namespace fb
