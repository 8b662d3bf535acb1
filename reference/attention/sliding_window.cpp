#include "reference/attention/sliding_window.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <stdexcept>
#include <string>
#include <thread>

#include "reference/formats/half.h"

namespace fb {

void validate(const SlidingWindowShape& s) {
  if (s.n_q_heads <= 0 || s.n_kv_heads <= 0 || s.head_dim <= 0 || s.window <= 0) {
    throw std::invalid_argument("sliding window: sizes must be positive");
  }
  if (s.n_q_heads % s.n_kv_heads != 0) {
    throw std::invalid_argument("sliding window: n_q_heads " + std::to_string(s.n_q_heads) +
                                " is not a multiple of n_kv_heads " + std::to_string(s.n_kv_heads));
  }
}

void sliding_window_append(const SlidingWindowShape& s, const uint16_t* new_k, const uint16_t* new_v,
                           int64_t T, int64_t pos, uint16_t* ring_k, uint16_t* ring_v) {
  validate(s);
  if (T < 0 || pos < 0) throw std::invalid_argument("sliding window append: negative T or pos");
  const int64_t D = s.head_dim;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t slot = ring_slot(s, pos + t);
    for (int64_t h = 0; h < s.n_kv_heads; ++h) {
      const int64_t src = (t * s.n_kv_heads + h) * D;
      const int64_t dst = (h * s.ring_slots() + slot) * D;
      std::copy(new_k + src, new_k + src + D, ring_k + dst);
      std::copy(new_v + src, new_v + src + D, ring_v + dst);
    }
  }
}

std::vector<double> sliding_window_attention(const SlidingWindowShape& s, const uint16_t* q,
                                             const uint16_t* ring_k, const uint16_t* ring_v,
                                             const uint16_t* new_k, const uint16_t* new_v, int64_t T,
                                             int64_t pos, double scale, int64_t t_begin, int64_t t_end) {
  validate(s);
  if (T < 0 || pos < 0) throw std::invalid_argument("sliding window attention: negative T or pos");
  if (t_end < 0) t_end = T;
  if (t_begin < 0 || t_begin > t_end || t_end > T) {
    throw std::invalid_argument("sliding window attention: bad token range");
  }
  const int64_t D = s.head_dim, Hq = s.n_q_heads, Hkv = s.n_kv_heads;
  auto key_row = [&](const uint16_t* ring, const uint16_t* fresh, int64_t kvh, int64_t p) {
    return p < pos ? ring + (kvh * s.ring_slots() + ring_slot(s, p)) * D
                   : fresh + ((p - pos) * Hkv + kvh) * D;
  };
  const int64_t n_tokens = t_end - t_begin;
  std::vector<double> out(static_cast<size_t>(n_tokens * Hq * D), 0.0);
  auto one = [&](int64_t t, int64_t h, std::vector<double>& qd, std::vector<double>& scores,
                 std::vector<double>& acc) {
    const int64_t qpos = pos + t;
    const int64_t first = std::max<int64_t>(0, qpos - s.window + 1);
    const int64_t kvh = h / s.group();
    for (int64_t d = 0; d < D; ++d) qd[d] = bf16_to_fp32(q[(t * Hq + h) * D + d]);
    scores.assign(static_cast<size_t>(qpos - first + 1), 0.0);
    double mx = -INFINITY;
    for (int64_t p = first; p <= qpos; ++p) {
      const uint16_t* k = key_row(ring_k, new_k, kvh, p);
      double dot = 0.0;
      for (int64_t d = 0; d < D; ++d) dot += qd[d] * static_cast<double>(bf16_to_fp32(k[d]));
      scores[p - first] = dot * scale;
      mx = std::max(mx, scores[p - first]);
    }
    double l = 0.0;
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t p = first; p <= qpos; ++p) {
      const double w = std::exp(scores[p - first] - mx);
      l += w;
      const uint16_t* v = key_row(ring_v, new_v, kvh, p);
      for (int64_t d = 0; d < D; ++d) acc[d] += w * static_cast<double>(bf16_to_fp32(v[d]));
    }
    for (int64_t d = 0; d < D; ++d) out[((t - t_begin) * Hq + h) * D + d] = acc[d] / l;
  };
  const int64_t items = n_tokens * Hq;
  const int64_t work = items * std::min<int64_t>(s.window, pos + T) * D;
  const int64_t n_threads =
      work < (int64_t{1} << 22)
          ? 1
          : std::clamp<int64_t>(std::thread::hardware_concurrency(), 1, std::max<int64_t>(items, 1));
  std::atomic<int64_t> next{0};
  auto worker = [&] {
    std::vector<double> qd(static_cast<size_t>(D)), scores, acc(static_cast<size_t>(D));
    for (int64_t i; (i = next.fetch_add(1)) < items;) one(t_begin + i / Hq, i % Hq, qd, scores, acc);
  };
  std::vector<std::thread> pool;
  for (int64_t i = 1; i < n_threads; ++i) pool.emplace_back(worker);
  worker();
  for (auto& th : pool) th.join();
  return out;
}

}  // namespace fb
