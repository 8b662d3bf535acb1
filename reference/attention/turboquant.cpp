#include "reference/attention/turboquant.h"

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <thread>

#include "reference/formats/half.h"
#include "reference/util/splitmix.h"

namespace fb::tq4 {

namespace {

constexpr double kInvSqrt2Pi = 0.3989422804014327;

double phi(double z) { return std::isinf(z) ? 0.0 : kInvSqrt2Pi * std::exp(-0.5 * z * z); }
double Phi(double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); }

void check_dim(int d) {
  if (d <= 0 || d % 2 != 0) throw std::invalid_argument("tq4: head_dim must be positive and even");
}

int bucketize(float y, const std::vector<uint16_t>& boundaries) {
  int idx = 0;
  for (uint16_t b : boundaries) idx += bf16_to_fp32(b) < y ? 1 : 0;
  return idx;
}

}  // namespace

Codebook lloyd_max_codebook(int head_dim, int max_iter, double tol) {
  check_dim(head_dim);
  const double sigma = 1.0 / std::sqrt(static_cast<double>(head_dim));
  const double lo = -3.0 * sigma, hi = 3.0 * sigma;
  std::vector<double> c(kLevels);
  for (int i = 0; i < kLevels; ++i) c[i] = lo + (hi - lo) * i / (kLevels - 1);
  Codebook cb;
  cb.head_dim = head_dim;
  for (int it = 0; it < max_iter; ++it) {
    std::vector<double> edge(kLevels + 1);
    edge[0] = lo;
    edge[kLevels] = hi;
    for (int i = 1; i < kLevels; ++i) edge[i] = 0.5 * (c[i - 1] + c[i]);
    double shift = 0.0;
    for (int i = 0; i < kLevels; ++i) {
      const double a = edge[i] / sigma, b = edge[i + 1] / sigma;
      const double mass = Phi(b) - Phi(a);
      if (mass <= 0.0) continue;  // an empty cell keeps its centroid, as upstream's quad would
      const double mean = sigma * (phi(a) - phi(b)) / mass;
      shift = std::max(shift, std::abs(mean - c[i]));
      c[i] = mean;
    }
    cb.iterations = it + 1;
    if (shift < tol) break;
  }
  cb.centroids.resize(kLevels);
  for (int i = 0; i < kLevels; ++i) cb.centroids[i] = static_cast<float>(c[i]);
  cb.boundaries.resize(kLevels - 1);
  // Upstream takes the midpoints of its fp32 centroids, then casts to bf16.
  for (int i = 0; i < kLevels - 1; ++i) {
    cb.boundaries[i] = fp32_to_bf16(0.5f * (cb.centroids[i] + cb.centroids[i + 1]));
  }
  return cb;
}

double codebook_mse(const Codebook& cb, double sigma) {
  double mse = 0.0;
  for (int i = 0; i < kLevels; ++i) {
    const double a = i == 0 ? -std::numeric_limits<double>::infinity()
                            : 0.5 * (double(cb.centroids[i - 1]) + cb.centroids[i]) / sigma;
    const double b = i == kLevels - 1 ? std::numeric_limits<double>::infinity()
                                      : 0.5 * (double(cb.centroids[i]) + cb.centroids[i + 1]) / sigma;
    const double c = cb.centroids[i] / sigma;
    // int_a^b (z - c)^2 phi(z) dz with int z^2 phi = Phi - z phi, int z phi = -phi.
    const double aphi = std::isinf(a) ? 0.0 : a * phi(a), bphi = std::isinf(b) ? 0.0 : b * phi(b);
    const double m0 = Phi(b) - Phi(a), m1 = phi(a) - phi(b), m2 = m0 - (bphi - aphi);
    mse += m2 - 2.0 * c * m1 + c * c * m0;
  }
  return mse * sigma * sigma;
}

std::vector<double> haar_rotation_fp64(int d, uint64_t seed) {
  check_dim(d);
  const CounterRng rng(seed, fnv1a64("tq4_rotation", 12));
  Eigen::MatrixXd g(d, d);
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < d; ++j) g(i, j) = rng.normal(static_cast<uint64_t>(i) * d + j);
  const Eigen::HouseholderQR<Eigen::MatrixXd> qr(g);
  Eigen::MatrixXd q = qr.householderQ();
  const Eigen::MatrixXd& r = qr.matrixQR();
  // Without the sign correction Q is not Haar distributed (Mezzadri 2007).
  for (int j = 0; j < d; ++j) {
    if (r(j, j) < 0) q.col(j) = -q.col(j);
  }
  std::vector<double> out(static_cast<size_t>(d) * d);
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < d; ++j) out[static_cast<size_t>(i) * d + j] = q(i, j);
  return out;
}

Rotation from_matrix(int d, const std::vector<float>& rotation) {
  Rotation r;
  r.head_dim = d;
  r.rotation = rotation;
  r.rotation_t.resize(rotation.size());
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < d; ++j)
      r.rotation_t[static_cast<size_t>(j) * d + i] = fp32_to_bf16(rotation[static_cast<size_t>(i) * d + j]);
  return r;
}

Rotation haar_rotation(int d, uint64_t seed) {
  const auto q = haar_rotation_fp64(d, seed);
  std::vector<float> f(q.size());
  for (size_t i = 0; i < q.size(); ++i) f[i] = static_cast<float>(q[i]);
  return from_matrix(d, f);
}

void compress(const uint16_t* x, int64_t n_vec, const Codebook& cb, const Rotation& rot, uint8_t* packed,
              uint16_t* norms) {
  const int d = rot.head_dim;
  if (cb.head_dim != d) throw std::invalid_argument("tq4::compress: codebook and rotation head_dim differ");
  std::vector<float> u(d);
  for (int64_t v = 0; v < n_vec; ++v) {
    const uint16_t* xv = x + v * d;
    double ss = 0.0;
    for (int j = 0; j < d; ++j) ss += double(bf16_to_fp32(xv[j])) * bf16_to_fp32(xv[j]);
    const uint16_t norm = fp32_to_bf16(static_cast<float>(std::sqrt(ss)));
    norms[v] = norm;
    const float denom = bf16_to_fp32(fp32_to_bf16(bf16_to_fp32(norm) + 1e-10f));
    for (int j = 0; j < d; ++j) u[j] = bf16_to_fp32(fp32_to_bf16(bf16_to_fp32(xv[j]) / denom));
    uint8_t* pv = packed + v * (d / 2);
    for (int i = 0; i < d; i += 2) {
      int idx[2];
      for (int e = 0; e < 2; ++e) {
        double y = 0.0;
        for (int j = 0; j < d; ++j)
          y += double(u[j]) * bf16_to_fp32(rot.rotation_t[static_cast<size_t>(j) * d + i + e]);
        idx[e] = bucketize(bf16_to_fp32(fp32_to_bf16(static_cast<float>(y))), cb.boundaries);
      }
      pv[i / 2] = static_cast<uint8_t>((idx[0] << 4) | idx[1]);
    }
  }
}

void decompress(const uint8_t* packed, const uint16_t* norms, int64_t n_vec, const Codebook& cb,
                const Rotation& rot, double* out) {
  const int d = rot.head_dim;
  std::vector<double> c(d);
  for (int64_t v = 0; v < n_vec; ++v) {
    const uint8_t* pv = packed + v * (d / 2);
    for (int i = 0; i < d; i += 2) {
      c[i] = cb.centroids[pv[i / 2] >> 4];
      c[i + 1] = cb.centroids[pv[i / 2] & 15];
    }
    const double norm = bf16_to_fp32(norms[v]);
    for (int j = 0; j < d; ++j) {
      double s = 0.0;
      for (int i = 0; i < d; ++i) s += double(rot.rotation[static_cast<size_t>(i) * d + j]) * c[i];
      out[v * d + j] = norm * s;
    }
  }
}

namespace {

// Runs f(t, h) over every (query token, q head), split across hardware threads.
template <class F>
void parallel_rows(int64_t T, int n_q_heads, F&& f) {
  const int64_t rows = T * n_q_heads;
  const int64_t n_threads =
      std::max<int64_t>(1, std::min<int64_t>(rows, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (int64_t w = 0; w < n_threads; ++w) {
    pool.emplace_back([&, w] {
      for (int64_t r = w; r < rows; r += n_threads) f(r / n_q_heads, static_cast<int>(r % n_q_heads));
    });
  }
  for (auto& th : pool) th.join();
}

int64_t causal_end(int64_t T, int64_t t, int64_t kv_len) {
  return std::clamp<int64_t>(kv_len - T + t + 1, 0, kv_len);
}

void validate(int n_q_heads, int n_kv_heads) {
  if (n_kv_heads <= 0 || n_q_heads % n_kv_heads != 0) throw std::invalid_argument("tq4: bad GQA head counts");
}

}  // namespace

void attention_fp64(const double* q, const double* k, const double* v, int64_t T, int n_q_heads,
                    int n_kv_heads, int d, int64_t kv_stride, int64_t kv_len, double scale, double* out) {
  validate(n_q_heads, n_kv_heads);
  const int group = n_q_heads / n_kv_heads;
  parallel_rows(T, n_q_heads, [&](int64_t t, int h) {
    const double* qv = q + (t * n_q_heads + h) * d;
    const int64_t kvh = h / group;
    const int64_t end = causal_end(T, t, kv_len);
    std::vector<double> s(static_cast<size_t>(end));
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t n = 0; n < end; ++n) {
      const double* kv = k + (kvh * kv_stride + n) * d;
      double dot = 0.0;
      for (int i = 0; i < d; ++i) dot += qv[i] * kv[i];
      s[n] = scale * dot;
      m = std::max(m, s[n]);
    }
    double* o = out + (t * n_q_heads + h) * d;
    std::fill(o, o + d, 0.0);
    double l = 0.0;
    for (int64_t n = 0; n < end; ++n) {
      const double p = std::exp(s[n] - m);
      l += p;
      const double* vv = v + (kvh * kv_stride + n) * d;
      for (int i = 0; i < d; ++i) o[i] += p * vv[i];
    }
    if (l > 0)
      for (int i = 0; i < d; ++i) o[i] /= l;
  });
}

void tq4_attention_fp64(const double* q, const uint8_t* k_packed, const uint16_t* k_norms,
                        const uint8_t* v_packed, const uint16_t* v_norms, const Codebook& cb,
                        const Rotation& rot, int64_t T, int n_q_heads, int n_kv_heads, int64_t kv_stride,
                        int64_t kv_len, double scale, double* out) {
  validate(n_q_heads, n_kv_heads);
  const int d = rot.head_dim;
  const int group = n_q_heads / n_kv_heads;
  parallel_rows(T, n_q_heads, [&](int64_t t, int h) {
    const double* qv = q + (t * n_q_heads + h) * d;
    std::vector<double> qr(d, 0.0), acc(d, 0.0);
    for (int i = 0; i < d; ++i) {
      double s = 0.0;
      for (int j = 0; j < d; ++j) s += double(rot.rotation[static_cast<size_t>(i) * d + j]) * qv[j];
      qr[i] = s;
    }
    const int64_t kvh = h / group;
    const int64_t end = causal_end(T, t, kv_len);
    std::vector<double> s(static_cast<size_t>(end));
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t n = 0; n < end; ++n) {
      const uint8_t* kp = k_packed + (kvh * kv_stride + n) * (d / 2);
      double dot = 0.0;
      for (int i = 0; i < d; i += 2) {
        dot += qr[i] * cb.centroids[kp[i / 2] >> 4] + qr[i + 1] * cb.centroids[kp[i / 2] & 15];
      }
      s[n] = scale * dot * bf16_to_fp32(k_norms[kvh * kv_stride + n]);
      m = std::max(m, s[n]);
    }
    double l = 0.0;
    for (int64_t n = 0; n < end; ++n) {
      const double p = std::exp(s[n] - m);
      l += p;
      const double pn = p * bf16_to_fp32(v_norms[kvh * kv_stride + n]);
      const uint8_t* vp = v_packed + (kvh * kv_stride + n) * (d / 2);
      for (int i = 0; i < d; i += 2) {
        acc[i] += pn * cb.centroids[vp[i / 2] >> 4];
        acc[i + 1] += pn * cb.centroids[vp[i / 2] & 15];
      }
    }
    double* o = out + (t * n_q_heads + h) * d;
    for (int j = 0; j < d; ++j) {
      double sum = 0.0;
      for (int i = 0; i < d; ++i) sum += double(rot.rotation[static_cast<size_t>(i) * d + j]) * acc[i];
      o[j] = l > 0 ? sum / l : 0.0;
    }
  });
}

}  // namespace fb::tq4
