// Hand-derived cases for the sliding-window reference. Most use all-zero keys, so every visible key
// gets the same weight and the output is the plain mean of the visible values: which positions the
// mask and the ring let through is then read straight off the result. Stale ring slots hold a large
// value (1000) so a key leaking in from outside the window moves the mean far off.
#include "reference/attention/sliding_window.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "reference/formats/half.h"
#include "reference/util/splitmix.h"

namespace fb {
namespace {

uint16_t bf(float f) { return fp32_to_bf16(f); }

struct Cache {
  SlidingWindowShape s;
  std::vector<uint16_t> k, v;
  explicit Cache(SlidingWindowShape shape)
      : s(shape),
        k(static_cast<size_t>(s.n_kv_heads * s.ring_slots() * s.head_dim), bf(0.0f)),
        v(static_cast<size_t>(s.n_kv_heads * s.ring_slots() * s.head_dim), bf(1000.0f)) {}
  void set_v(int64_t kvh, int64_t slot, float value) {
    for (int64_t d = 0; d < s.head_dim; ++d) v[(kvh * s.ring_slots() + slot) * s.head_dim + d] = bf(value);
  }
};

TEST(SlidingWindowReference, SingleKeyReturnsItsValue) {
  const SlidingWindowShape s{1, 1, 4, 8};
  Cache c(s);
  const std::vector<uint16_t> q = {bf(1), bf(-2), bf(3), bf(0.5f)};
  const std::vector<uint16_t> nk = {bf(0.25f), bf(1), bf(-1), bf(2)};
  const std::vector<uint16_t> nv = {bf(7), bf(-3), bf(0.125f), bf(42)};
  const auto out =
      sliding_window_attention(s, q.data(), c.k.data(), c.v.data(), nk.data(), nv.data(), 1, 0, 1.0);
  ASSERT_EQ(out.size(), 4u);
  for (int d = 0; d < 4; ++d) EXPECT_EQ(out[d], bf16_to_fp32(nv[d])) << d;
}

// q = (1, 0); keys (0, 0) at p = 0 (ring) and (1, 0) at p = 1 (new): scores 0 and scale. Values are
// the unit vectors, so out = (1, e^scale) / (1 + e^scale).
TEST(SlidingWindowReference, TwoKeysKnownSoftmax) {
  for (double scale : {1.0, 0.5}) {
    const SlidingWindowShape s{1, 1, 2, 4};
    Cache c(s);
    c.k[0] = bf(0), c.k[1] = bf(0);
    c.v[0] = bf(1), c.v[1] = bf(0);
    const std::vector<uint16_t> q = {bf(1), bf(0)}, nk = {bf(1), bf(0)}, nv = {bf(0), bf(1)};
    const auto out =
        sliding_window_attention(s, q.data(), c.k.data(), c.v.data(), nk.data(), nv.data(), 1, 1, scale);
    const double e = std::exp(scale);
    EXPECT_NEAR(out[0], 1.0 / (1.0 + e), 1e-15) << scale;
    EXPECT_NEAR(out[1], e / (1.0 + e), 1e-15) << scale;
  }
}

// window 2, ring 4, query at 5: sees 4 (slot 0) and 5 (new). Slot 1 holds position 1 (stale).
TEST(SlidingWindowReference, KeysOutsideTheWindowAreMasked) {
  const SlidingWindowShape s{1, 1, 2, 2};
  Cache c(s);
  c.set_v(0, 0, 4.0f);  // position 4
  const std::vector<uint16_t> q = {bf(1), bf(1)}, nk = {bf(0), bf(0)}, nv = {bf(6), bf(6)};
  const auto out =
      sliding_window_attention(s, q.data(), c.k.data(), c.v.data(), nk.data(), nv.data(), 1, 5, 1.0);
  EXPECT_EQ(out[0], 5.0);
  EXPECT_EQ(out[1], 5.0);
}

// window 4, ring 8, query at 10: sees 7 (slot 7), 8 (slot 0), 9 (slot 1) from the ring and 10 new.
TEST(SlidingWindowReference, WindowWrapsAroundTheRing) {
  const SlidingWindowShape s{1, 1, 1, 4};
  Cache c(s);
  c.set_v(0, 7, 7.0f);
  c.set_v(0, 0, 8.0f);
  c.set_v(0, 1, 9.0f);
  const std::vector<uint16_t> q = {bf(1)}, nk = {bf(0)}, nv = {bf(12)};
  const auto out =
      sliding_window_attention(s, q.data(), c.k.data(), c.v.data(), nk.data(), nv.data(), 1, 10, 1.0);
  EXPECT_EQ(out[0], (7.0 + 8.0 + 9.0 + 12.0) / 4.0);
}

// pos 2, T 3, window 4: q@2 sees 0..2, q@3 sees 0..3, q@4 sees 1..4; 2..4 come from the new chunk.
TEST(SlidingWindowReference, PositionsBelowTheWindowAndMultiTokenCausal) {
  const SlidingWindowShape s{1, 1, 1, 4};
  Cache c(s);
  c.set_v(0, 0, 10.0f);
  c.set_v(0, 1, 20.0f);
  const std::vector<uint16_t> q = {bf(1), bf(1), bf(1)}, nk = {bf(0), bf(0), bf(0)};
  const std::vector<uint16_t> nv = {bf(30), bf(40), bf(50)};
  const auto out =
      sliding_window_attention(s, q.data(), c.k.data(), c.v.data(), nk.data(), nv.data(), 3, 2, 1.0);
  EXPECT_EQ(out[0], 20.0);                       // (10 + 20 + 30) / 3
  EXPECT_EQ(out[1], 25.0);                       // (10 + 20 + 30 + 40) / 4
  EXPECT_EQ(out[2], (20.0 + 30 + 40 + 50) / 4);  // position 0 has left the window
}

// 4 q heads over 2 kv heads: heads 0, 1 read kv head 0, heads 2, 3 read kv head 1.
TEST(SlidingWindowReference, GqaMapsHeadToHeadOverGroup) {
  const SlidingWindowShape s{4, 2, 2, 4};
  Cache c(s);
  c.set_v(0, 0, 10.0f);
  c.set_v(1, 0, 20.0f);
  std::vector<uint16_t> q(4 * 2, bf(1)), nk(2 * 2, bf(0));
  const std::vector<uint16_t> nv = {bf(10), bf(10), bf(20), bf(20)};
  const auto out =
      sliding_window_attention(s, q.data(), c.k.data(), c.v.data(), nk.data(), nv.data(), 1, 1, 1.0);
  for (int h = 0; h < 4; ++h) {
    for (int d = 0; d < 2; ++d) EXPECT_EQ(out[h * 2 + d], h < 2 ? 10.0 : 20.0) << h << " " << d;
  }
}

TEST(SlidingWindowReference, AppendPlacesTokensInTheirSlots) {
  const SlidingWindowShape s{2, 2, 1, 2};  // ring of 4
  Cache c(s);
  // T = 6 from pos 3: positions 3..8 -> slots 3,0,1,2,3,0; later positions overwrite 3 and 0.
  std::vector<uint16_t> nk, nv;
  for (int t = 0; t < 6; ++t) {
    for (int h = 0; h < 2; ++h) {
      nk.push_back(bf(static_cast<float>(100 * h + 3 + t)));
      nv.push_back(bf(static_cast<float>(-(100 * h + 3 + t))));
    }
  }
  sliding_window_append(s, nk.data(), nv.data(), 6, 3, c.k.data(), c.v.data());
  const float expect_pos[4] = {8, 5, 6, 7};
  for (int h = 0; h < 2; ++h) {
    for (int slot = 0; slot < 4; ++slot) {
      EXPECT_EQ(bf16_to_fp32(c.k[h * 4 + slot]), 100 * h + expect_pos[slot]) << h << " " << slot;
      EXPECT_EQ(bf16_to_fp32(c.v[h * 4 + slot]), -(100 * h + expect_pos[slot])) << h << " " << slot;
    }
  }
}

// For T <= window the new tokens' slots never hold a key some query still needs, so appending first
// gives the same result; this is the property the decode graph (append, then attend) relies on.
TEST(SlidingWindowReference, AppendFirstIsEquivalentForTUpToWindow) {
  const SlidingWindowShape s{4, 2, 8, 8};
  for (int64_t T : {1, 3, 8}) {
    for (int64_t pos : {0, 5, 13, 40}) {
      CounterRng rng(7, static_cast<uint64_t>(T * 1000 + pos));
      uint64_t i = 0;
      auto rnd = [&] { return bf(rng.normal(i++)); };
      Cache c(s);
      for (auto& x : c.k) x = rnd();
      for (auto& x : c.v) x = rnd();
      std::vector<uint16_t> q(static_cast<size_t>(T * 4 * 8)), nk(static_cast<size_t>(T * 2 * 8)),
          nv(nk.size());
      for (auto& x : q) x = rnd();
      for (auto& x : nk) x = rnd();
      for (auto& x : nv) x = rnd();
      const auto before =
          sliding_window_attention(s, q.data(), c.k.data(), c.v.data(), nk.data(), nv.data(), T, pos, 1.0);
      sliding_window_append(s, nk.data(), nv.data(), T, pos, c.k.data(), c.v.data());
      // The append must not have overwritten a ring slot that a query still reads.
      const auto after =
          sliding_window_attention(s, q.data(), c.k.data(), c.v.data(), nk.data(), nv.data(), T, pos, 1.0);
      ASSERT_EQ(before.size(), after.size());
      for (size_t j = 0; j < before.size(); ++j)
        ASSERT_EQ(before[j], after[j]) << T << " " << pos << " " << j;
    }
  }
}

TEST(SlidingWindowReference, RejectsBadShapes) {
  EXPECT_THROW(validate({3, 2, 4, 4}), std::invalid_argument);
  EXPECT_THROW(validate({2, 2, 0, 4}), std::invalid_argument);
  EXPECT_NO_THROW(validate(SlidingWindowShape::gemma4()));
}

}  // namespace
}  // namespace fb
