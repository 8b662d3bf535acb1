#pragma once
// Sliding-window attention over a bf16 ring buffer (gemma4 sliding layers, notes/models.md §1.2):
// a query at position q attends key position p when 0 <= q - p < window; the cache is a ring of
// 2 x window slots, position p living in slot p % (2 x window). scale is 1.0 for gemma4 and there is
// no softcap. GQA: query head h reads kv head h / (n_q_heads / n_kv_heads).
//
// One step appends T new tokens at positions pos .. pos+T-1 (pos = tokens already cached). Keys at
// p < pos are read from the ring, keys at p >= pos from the step's own new K/V: that is what the CUDA
// kernels do, and it makes the result independent of whether the append ran first (T <= window) and
// correct for T > window, where appending first would overwrite slots the earliest queries still need.
//
// Layouts (bf16 stored as uint16 bits, row-major):
//   q, out        [T][n_q_heads][head_dim]
//   new_k, new_v  [T][n_kv_heads][head_dim]
//   ring_k/ring_v [n_kv_heads][2 x window][head_dim]
#include <cstdint>
#include <vector>

namespace fb {

struct SlidingWindowShape {
  int64_t n_q_heads = 0, n_kv_heads = 0, head_dim = 0, window = 0;
  int64_t ring_slots() const { return 2 * window; }
  int64_t group() const { return n_q_heads / n_kv_heads; }
  // The gemma4-31b sliding layers.
  static SlidingWindowShape gemma4() { return {32, 16, 256, 1024}; }
};

// Throws std::invalid_argument for non-positive sizes or n_q_heads not a multiple of n_kv_heads.
void validate(const SlidingWindowShape& s);

// Slot of position p in the ring.
inline int64_t ring_slot(const SlidingWindowShape& s, int64_t p) { return p % s.ring_slots(); }

// Copies the T new tokens into their slots (the later position wins when T > 2 x window, as it
// would when appending token by token).
void sliding_window_append(const SlidingWindowShape& s, const uint16_t* new_k, const uint16_t* new_v,
                           int64_t T, int64_t pos, uint16_t* ring_k, uint16_t* ring_v);

// fp64 softmax attention; returns out [T][n_q_heads][head_dim] in fp64 (callers round to bf16).
// ring_k/ring_v must hold positions max(0, pos - window + 1) .. pos - 1 (the state before the append
// or, for T <= window, after it). Only query tokens [t_begin, t_end) are computed when given (the
// result then holds t_end - t_begin tokens): a T = 2048 prefill is 34 G multiply-adds in fp64, so
// tests check slices. Work is spread over threads by (token, head); every result is computed by one
// thread in a fixed order, so the output does not depend on the thread count.
std::vector<double> sliding_window_attention(const SlidingWindowShape& s, const uint16_t* q,
                                             const uint16_t* ring_k, const uint16_t* ring_v,
                                             const uint16_t* new_k, const uint16_t* new_v, int64_t T,
                                             int64_t pos, double scale, int64_t t_begin = 0,
                                             int64_t t_end = -1);

}  // namespace fb
