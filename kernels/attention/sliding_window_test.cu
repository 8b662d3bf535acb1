// Sliding-window attention kernels vs the fp64 CPU reference (reference/attention/sliding_window.h),
// rounded to bf16 before comparing. Seeded random bf16 inputs; outputs poisoned with a signalling
// NaN; guard words after every output and after the ring buffers. Covers: decode T = 1..4 at
// positions below the window, at the window edge and after the ring has wrapped (gemma4 shapes and
// the tiny model's), the append kernel bit-exact (including T > ring slots), a CUDA graph of
// append + decode replayed over many steps with only the device position changing, and the
// tensor-core prefill at T = 512 / 2048 with T > window (attend, then append), checked on slices,
// and bit-exact between its ldmatrix and scalar-load fragment paths.
//
// Bounds (why): the kernels accumulate in fp32 and round once to bf16, like the rounded reference,
// so most elements match bit for bit and the rest sit on a rounding boundary. Decode keeps P in
// fp32: |err| <= 1 bf16 ulp of the reference + 2^-12 rms (fp32 summation over <= 1027 keys).
// Prefill rounds P to bf16 for the second mma (FlashAttention-2 practice): each weight carries a
// relative error <= 2^-9, so |err| <= 2 ulp + 2^-9 max|v| (the worst case, all errors aligned).
// Both: NMSE <= 1e-5 and cosine >= 0.99999 (bf16 output rounding alone is ~1.3e-6 NMSE).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "kernels/attention/sliding_window.cuh"
#include "kernels/common/cuda_check.h"
#include "reference/attention/sliding_window.h"
#include "reference/formats/half.h"
#include "reference/util/scoped_env.h"
#include "reference/util/splitmix.h"

namespace {

using fb::SlidingWindowShape;
using fb::cuda::SlidingWindowDims;

constexpr uint64_t kSeed = 20261121;
constexpr uint16_t kPoison = 0x7FBA;  // signalling NaN: nothing computes it
constexpr uint16_t kGuard = 0xF00D;
constexpr size_t kGuardElems = 64;

#define SKIP_WITHOUT_DEVICE()                                                  \
  do {                                                                         \
    if (auto why = fb::cuda_device_unavailable_reason()) GTEST_SKIP() << *why; \
  } while (0)

SlidingWindowDims dims_of(const SlidingWindowShape& s) {
  return {static_cast<int>(s.n_q_heads), static_cast<int>(s.n_kv_heads), static_cast<int>(s.head_dim),
          static_cast<int>(s.window)};
}
const SlidingWindowShape kGemma = SlidingWindowShape::gemma4();
const SlidingWindowShape kTiny{8, 4, 32, 64};  // the tiny gemma4 config's sliding layers

std::vector<uint16_t> random_bf16(size_t n, uint64_t stream, float sigma) {
  fb::CounterRng rng(kSeed, stream);
  std::vector<uint16_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = fb::fp32_to_bf16(sigma * rng.normal(i));
  return v;
}

// A device array with kGuardElems guard words behind it.
struct Guarded {
  fb::DeviceBuffer<uint16_t> buf;
  size_t n = 0;
  explicit Guarded(size_t count) : buf(count + kGuardElems), n(count) {
    const std::vector<uint16_t> guard(kGuardElems, kGuard);
    FB_CUDA_CHECK(cudaMemcpy(buf.get() + n, guard.data(), kGuardElems * 2, cudaMemcpyHostToDevice));
  }
  __nv_bfloat16* bf() const { return reinterpret_cast<__nv_bfloat16*>(buf.get()); }
  void upload(const std::vector<uint16_t>& h) const {
    FB_CUDA_CHECK(cudaMemcpy(buf.get(), h.data(), n * 2, cudaMemcpyHostToDevice));
  }
  void poison() const {
    const std::vector<uint16_t> p(n, kPoison);
    upload(p);
  }
  // Downloads and fails the test if a guard word changed.
  std::vector<uint16_t> download(const std::string& what) const {
    std::vector<uint16_t> h(n + kGuardElems);
    FB_CUDA_CHECK(cudaMemcpy(h.data(), buf.get(), h.size() * 2, cudaMemcpyDeviceToHost));
    for (size_t i = n; i < h.size(); ++i) {
      EXPECT_EQ(h[i], kGuard) << what << ": guard word " << i - n << " overwritten";
    }
    h.resize(n);
    return h;
  }
};

double bf16_ulp(double x) {
  const double a = std::max(std::fabs(x), 1e-30);
  return std::ldexp(1.0, static_cast<int>(std::floor(std::log2(a))) - 7);
}

struct Bounds {
  double ulps;       // |err| <= ulps x ulp(ref) + abs_floor
  double abs_floor;  // already scaled by the case
  double max_nmse = 1e-5, min_cosine = 0.99999;
};

// Compares bf16 kernel output with the fp64 reference rounded to bf16. `T0` is the first token of
// the slice (for messages). Reports the worst element and a reproducer.
void expect_close(const std::vector<uint16_t>& got, const std::vector<double>& ref,
                  const SlidingWindowShape& s, int64_t T0, const Bounds& b, const std::string& label) {
  ASSERT_EQ(got.size(), ref.size()) << label;
  double err2 = 0, ref2 = 0, dot = 0, got2 = 0, worst_ratio = 0;
  size_t worst = 0, mismatched = 0, exact = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = fb::bf16_to_fp32(got[i]);
    const double r = fb::bf16_to_fp32(fb::fp32_to_bf16(static_cast<float>(ref[i])));
    ASSERT_TRUE(std::isfinite(g)) << label << ": non-finite output at " << i << " (0x" << std::hex << got[i]
                                  << std::dec << "; 0x7fba = never written)";
    const double e = std::fabs(g - r);
    exact += e == 0.0;
    err2 += e * e;
    ref2 += r * r;
    got2 += g * g;
    dot += g * r;
    const double allowed = b.ulps * bf16_ulp(r) + b.abs_floor;
    if (e > allowed) ++mismatched;
    if (e / allowed > worst_ratio) worst_ratio = e / allowed, worst = i;
  }
  const double nmse = err2 / std::max(ref2, 1e-300);
  const double cosine = dot / std::sqrt(std::max(ref2 * got2, 1e-300));
  const int64_t D = s.head_dim, Hq = s.n_q_heads;
  std::ostringstream where;
  where << label << ": worst element token " << T0 + static_cast<int64_t>(worst) / (Hq * D) << " head "
        << (worst / D) % Hq << " dim " << worst % D << " got " << fb::bf16_to_fp32(got[worst]) << " ref "
        << ref[worst] << " (" << worst_ratio << " x bound); exact " << exact << "/" << got.size() << ", nmse "
        << nmse << ", cosine " << cosine << "; seed " << kSeed
        << "; reproduce: fb_sliding_window_gpu_test --gtest_filter='*"
        << ::testing::UnitTest::GetInstance()->current_test_info()->name() << "*'";
  EXPECT_EQ(mismatched, 0u) << where.str();
  EXPECT_LE(nmse, b.max_nmse) << where.str();
  EXPECT_GE(cosine, b.min_cosine) << where.str();
  if (::testing::Test::HasFailure()) return;
  std::printf("  %-52s exact %6.2f%%  nmse %.2e  worst %.2f x bound\n", label.c_str(),
              100.0 * static_cast<double>(exact) / static_cast<double>(got.size()), nmse, worst_ratio);
}

// One attention problem: a ring filled with random history (as if positions < pos had been appended;
// slots never written hold random data too, which the mask must keep out), T new tokens, q.
struct Problem {
  SlidingWindowShape s;
  int64_t T, pos;
  float q_sigma;
  std::vector<uint16_t> q, ring_k, ring_v, new_k, new_v;
  Problem(const SlidingWindowShape& shape, int64_t t, int64_t p, float qs, uint64_t stream,
          bool with_ring = true)
      : s(shape), T(t), pos(p), q_sigma(qs) {
    const size_t ring = static_cast<size_t>(s.n_kv_heads * s.ring_slots() * s.head_dim);
    const size_t fresh = static_cast<size_t>(T * s.n_kv_heads * s.head_dim);
    q = random_bf16(static_cast<size_t>(T * s.n_q_heads * s.head_dim), stream * 8 + 0, q_sigma);
    if (with_ring) {
      ring_k = random_bf16(ring, stream * 8 + 1, 1.0f);
      ring_v = random_bf16(ring, stream * 8 + 2, 1.0f);
    }
    new_k = random_bf16(fresh, stream * 8 + 3, 1.0f);
    new_v = random_bf16(fresh, stream * 8 + 4, 1.0f);
  }
  size_t out_elems() const { return q.size(); }
  double max_abs_v() const {
    double m = 0;
    for (uint16_t x : ring_v) m = std::max(m, std::fabs(static_cast<double>(fb::bf16_to_fp32(x))));
    for (uint16_t x : new_v) m = std::max(m, std::fabs(static_cast<double>(fb::bf16_to_fp32(x))));
    return m;
  }
};

double rms(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x * x;
  return std::sqrt(s / std::max<size_t>(v.size(), 1));
}

struct DeviceProblem {
  Guarded q, ring_k, ring_v, new_k, new_v, out;
  fb::DeviceBuffer<int32_t> pos{1};
  explicit DeviceProblem(const Problem& p)
      : q(p.q.size()),
        ring_k(p.ring_k.size()),
        ring_v(p.ring_v.size()),
        new_k(p.new_k.size()),
        new_v(p.new_v.size()),
        out(p.out_elems()) {
    q.upload(p.q);
    ring_k.upload(p.ring_k);
    ring_v.upload(p.ring_v);
    new_k.upload(p.new_k);
    new_v.upload(p.new_v);
    out.poison();
    set_pos(p.pos);
  }
  void set_pos(int64_t v) const {
    const int32_t h = static_cast<int32_t>(v);
    FB_CUDA_CHECK(cudaMemcpy(pos.get(), &h, 4, cudaMemcpyHostToDevice));
  }
};

enum class Kind { decode, prefill };

void run_case(Kind kind, const SlidingWindowShape& s, int64_t T, int64_t pos, float q_sigma, float scale,
              bool append_first, uint64_t stream, std::vector<std::pair<int64_t, int64_t>> slices = {}) {
  Problem p(s, T, pos, q_sigma, stream);
  DeviceProblem d(p);
  fb::Stream st;
  const SlidingWindowDims dims = dims_of(s);
  if (append_first) {
    fb::cuda::sliding_window_append(dims, d.new_k.bf(), d.new_v.bf(), static_cast<int>(T), d.pos.get(),
                                    d.ring_k.bf(), d.ring_v.bf(), st.get());
  }
  if (kind == Kind::decode) {
    fb::cuda::sliding_window_decode(dims, d.q.bf(), d.ring_k.bf(), d.ring_v.bf(), d.new_k.bf(), d.new_v.bf(),
                                    static_cast<int>(T), d.pos.get(), scale, d.out.bf(), st.get());
  } else {
    fb::cuda::sliding_window_prefill(dims, d.q.bf(), d.ring_k.bf(), d.ring_v.bf(), d.new_k.bf(), d.new_v.bf(),
                                     static_cast<int>(T), d.pos.get(), scale, d.out.bf(), st.get());
  }
  st.synchronize();
  std::ostringstream label;
  label << (kind == Kind::decode ? "decode" : "prefill") << " D" << s.head_dim << " T" << T << " pos " << pos
        << " qs " << q_sigma << " scale " << scale << (append_first ? " append-first" : "");
  const auto got = d.out.download(label.str());
  d.ring_k.download(label.str() + " ring_k");
  d.ring_v.download(label.str() + " ring_v");
  if (kind == Kind::prefill) {
    // The scalar-load fragments are the plainly-correct form of the same mma inputs: bits must match.
    d.out.poison();
    fb::cuda::sliding_window_prefill(dims, d.q.bf(), d.ring_k.bf(), d.ring_v.bf(), d.new_k.bf(), d.new_v.bf(),
                                     static_cast<int>(T), d.pos.get(), scale, d.out.bf(), st.get(),
                                     fb::cuda::SlidingWindowFragments::scalar);
    st.synchronize();
    const auto twin = d.out.download(label.str() + " scalar fragments");
    size_t differ = 0, first = got.size();
    for (size_t i = 0; i < got.size(); ++i) {
      if (got[i] != twin[i] && differ++ == 0) first = i;
    }
    EXPECT_EQ(differ, 0u) << label.str() << ": ldmatrix and scalar-fragment outputs differ in " << differ
                          << " elements, first at " << first << " (ldmatrix 0x" << std::hex
                          << (first < got.size() ? got[first] : 0) << ", scalar 0x"
                          << (first < got.size() ? twin[first] : 0) << std::dec
                          << "): if only one matches the reference, its fragment mapping is wrong";
  }
  if (slices.empty()) slices.push_back({0, T});
  const size_t per_token = static_cast<size_t>(s.n_q_heads * s.head_dim);
  for (auto [b, e] : slices) {
    const auto ref = fb::sliding_window_attention(s, p.q.data(), p.ring_k.data(), p.ring_v.data(),
                                                  p.new_k.data(), p.new_v.data(), T, pos, scale, b, e);
    const std::vector<uint16_t> part(got.begin() + b * per_token, got.begin() + e * per_token);
    const double r = rms(ref);
    const Bounds bounds =
        kind == Kind::decode ? Bounds{1.0, std::ldexp(r, -12)} : Bounds{2.0, std::ldexp(p.max_abs_v(), -9)};
    std::ostringstream l;
    l << label.str() << " tokens [" << b << "," << e << ")";
    expect_close(part, ref, s, b, bounds, l.str());
  }
}

TEST(SlidingWindowGpu, DecodeGemma4) {
  SKIP_WITHOUT_DEVICE();
  std::printf("  decode splits per kv head: %d\n", fb::cuda::sliding_window_decode_splits(dims_of(kGemma)));
  // Below the window, at its edge, one past, the ring seam (2047/2048), deep contexts.
  for (int64_t pos : {0, 1, 511, 1000, 1020, 1023, 1024, 2045, 2047, 2048, 3000, 8191, 131071}) {
    for (int64_t T : {1, 4}) {
      run_case(Kind::decode, kGemma, T, pos, 0.15f, 1.0f, T == 1, 100 + pos * 8 + T);
    }
  }
  run_case(Kind::decode, kGemma, 2, 3000, 0.15f, 1.0f, true, 7);
  run_case(Kind::decode, kGemma, 3, 777, 0.15f, 1.0f, false, 8);
  // Peaky softmax (score std ~16, as unnormalised q/k give) and a non-unit scale.
  run_case(Kind::decode, kGemma, 4, 5000, 1.0f, 1.0f, true, 9);
  run_case(Kind::decode, kGemma, 1, 5000, 1.0f, 0.0625f, false, 10);
}

TEST(SlidingWindowGpu, DecodeTiny) {
  SKIP_WITHOUT_DEVICE();
  for (int64_t pos : {0, 5, 60, 63, 64, 65, 126, 127, 128, 300}) {
    for (int64_t T : {1, 2, 3, 4})
      run_case(Kind::decode, kTiny, T, pos, 0.4f, 1.0f, (pos + T) % 2 == 0, 500 + pos * 8 + T);
  }
}

// Multi-row decode steps (T x group > 2) run the staged kernel by default; the register-streaming
// kernel stays selectable (FB_SWA_DECODE_MULTIROW=stream) for A/B timing, so it is checked too.
TEST(SlidingWindowGpu, DecodeMultiRowStreamingKernel) {
  SKIP_WITHOUT_DEVICE();
  const fb::ScopedEnv multirow("FB_SWA_DECODE_MULTIROW", "stream");
  for (int64_t pos : {0, 1023, 2047, 131071})
    run_case(Kind::decode, kGemma, 4, pos, 0.15f, 1.0f, true, 1200 + pos);
  for (int64_t pos : {0, 63, 64, 300}) {
    for (int64_t T : {2, 3, 4}) run_case(Kind::decode, kTiny, T, pos, 0.4f, 1.0f, false, 1300 + pos * 8 + T);
  }
}

// The split pickers size shared memory per window. Under compute-sanitizer memcheck a small window
// probed after the gemma4 one lowered the kernel's shared-memory limit behind the launcher's cache,
// and the next gemma4 multi-row decode failed with cudaErrorInvalidValue. Large, small, large again
// (staged path, both kernels' row variants) must all launch and match.
TEST(SlidingWindowGpu, WindowsOfDifferentSizesInterleaved) {
  SKIP_WITHOUT_DEVICE();
  const SlidingWindowShape small_window{8, 2, 256, 128};
  run_case(Kind::decode, kGemma, 4, 3000, 0.15f, 1.0f, false, 1401);
  run_case(Kind::decode, small_window, 2, 300, 0.15f, 1.0f, false, 1402);
  run_case(Kind::decode, kGemma, 4, 3000, 0.15f, 1.0f, false, 1403);
  run_case(Kind::decode, kGemma, 1, 3000, 0.15f, 1.0f, false, 1404);
  run_case(Kind::decode, small_window, 1, 300, 0.15f, 1.0f, false, 1405);
  run_case(Kind::decode, kGemma, 1, 3000, 0.15f, 1.0f, false, 1406);
}

// Every decode kernel instantiation (head_dim 256 and 32; 2-row and multi-row; staged and
// register-streaming) on windows of 128 and 64 keys: the cases compute-sanitizer racecheck runs
// (scripts/gpu-sanitize), where the gemma4-sized cases take minutes each.
TEST(SlidingWindowGpu, EveryDecodeVariantAtSmallShapes) {
  SKIP_WITHOUT_DEVICE();
  const SlidingWindowShape d256{4, 2, 256, 128};
  const fb::ScopedEnv env("FB_SWA_DECODE_MULTIROW", nullptr);
  for (const char* multirow : {"staged", "stream"}) {
    env.set(multirow);
    for (int64_t pos : {0, 200}) {
      for (int64_t T : {1, 4}) {
        run_case(Kind::decode, d256, T, pos, 0.15f, 1.0f, T == 1, 1500 + pos * 8 + T);
        run_case(Kind::decode, kTiny, T, pos, 0.4f, 1.0f, T == 4, 1600 + pos * 8 + T);
      }
    }
  }
}

TEST(SlidingWindowGpu, PrefillTiny) {
  SKIP_WITHOUT_DEVICE();
  for (int64_t pos : {0, 30, 64, 300}) {
    for (int64_t T : {1, 5, 17, 64, 100, 200}) {
      run_case(Kind::prefill, kTiny, T, pos, 0.4f, 1.0f, false, 900 + pos * 8 + T);
    }
  }
  run_case(Kind::prefill, kTiny, 40, 70, 0.4f, 1.0f, true, 990);  // T <= window: append first is fine
}

TEST(SlidingWindowGpu, PrefillGroupsOneAndFour) {
  SKIP_WITHOUT_DEVICE();
  run_case(Kind::prefill, SlidingWindowShape{4, 4, 256, 128}, 150, 200, 0.15f, 1.0f, false, 1001);
  run_case(Kind::prefill, SlidingWindowShape{8, 2, 256, 128}, 150, 100, 0.15f, 1.0f, false, 1002);
  run_case(Kind::decode, SlidingWindowShape{8, 2, 256, 128}, 2, 300, 0.15f, 1.0f, false, 1003);
}

TEST(SlidingWindowGpu, PrefillGemma4) {
  SKIP_WITHOUT_DEVICE();
  // Slices keep the fp64 reference affordable: the first tokens (short windows, ring + new keys),
  // tokens crossing the window length and the ring size, the last tokens.
  run_case(Kind::prefill, kGemma, 512, 0, 0.15f, 1.0f, false, 2001, {{0, 512}});
  run_case(Kind::prefill, kGemma, 512, 3000, 0.15f, 1.0f, false, 2002, {{0, 64}, {448, 512}});
  run_case(Kind::prefill, kGemma, 512, 1000, 0.15f, 1.0f, true, 2003, {{0, 48}, {480, 512}});
  run_case(Kind::prefill, kGemma, 2048, 512, 0.15f, 1.0f, false, 2004, {{0, 40}, {1000, 1040}, {2008, 2048}});
  run_case(Kind::prefill, kGemma, 2048, 131072 - 2048, 1.0f, 1.0f, false, 2005, {{0, 24}, {2024, 2048}});
  run_case(Kind::prefill, kGemma, 77, 4000, 0.15f, 1.0f, false, 2006);  // T not a multiple of the tile
}

TEST(SlidingWindowGpu, AppendBitExact) {
  SKIP_WITHOUT_DEVICE();
  for (const auto& [s, T, pos] : std::vector<std::tuple<SlidingWindowShape, int64_t, int64_t>>{
           {kGemma, 1, 0}, {kGemma, 4, 2046}, {kGemma, 2048, 512}, {kTiny, 200, 5}, {kTiny, 3, 127}}) {
    Problem p(s, T, pos, 1.0f, 3000 + T + pos);
    DeviceProblem d(p);
    fb::Stream st;
    fb::cuda::sliding_window_append(dims_of(s), d.new_k.bf(), d.new_v.bf(), static_cast<int>(T), d.pos.get(),
                                    d.ring_k.bf(), d.ring_v.bf(), st.get());
    st.synchronize();
    fb::sliding_window_append(s, p.new_k.data(), p.new_v.data(), T, pos, p.ring_k.data(), p.ring_v.data());
    std::ostringstream label;
    label << "append D" << s.head_dim << " T" << T << " pos " << pos;
    EXPECT_TRUE(d.ring_k.download(label.str()) == p.ring_k) << label.str() << ": ring_k differs";
    EXPECT_TRUE(d.ring_v.download(label.str()) == p.ring_v) << label.str() << ": ring_v differs";
  }
}

// The decode step as the model runs it: append + decode captured once in a CUDA graph, replayed for
// consecutive positions with only device memory (pos, q, new k/v) changing in between. The ring
// wraps several times; the CPU keeps its own ring with the reference append.
void graph_steps(const SlidingWindowShape& s, int64_t T, int64_t start, int steps, int check_every) {
  const SlidingWindowDims dims = dims_of(s);
  Problem p(s, T, start, 0.3f, 4000 + start);
  DeviceProblem d(p);
  fb::Stream st;
  // The first call configures the kernel (function attributes, cluster-size probe): not inside a
  // capture. Decode alone leaves the ring untouched.
  fb::cuda::sliding_window_decode(dims, d.q.bf(), d.ring_k.bf(), d.ring_v.bf(), d.new_k.bf(), d.new_v.bf(),
                                  static_cast<int>(T), d.pos.get(), 1.0f, d.out.bf(), st.get());
  st.synchronize();
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  FB_CUDA_CHECK(cudaStreamBeginCapture(st.get(), cudaStreamCaptureModeThreadLocal));
  fb::cuda::sliding_window_append(dims, d.new_k.bf(), d.new_v.bf(), static_cast<int>(T), d.pos.get(),
                                  d.ring_k.bf(), d.ring_v.bf(), st.get());
  fb::cuda::sliding_window_decode(dims, d.q.bf(), d.ring_k.bf(), d.ring_v.bf(), d.new_k.bf(), d.new_v.bf(),
                                  static_cast<int>(T), d.pos.get(), 1.0f, d.out.bf(), st.get());
  FB_CUDA_CHECK(cudaStreamEndCapture(st.get(), &graph));
  FB_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (int step = 0; step < steps; ++step) {
    const int64_t pos = start + step * T;
    Problem next(s, T, pos, 0.3f, 5000 + step, /*with_ring=*/false);
    d.q.upload(next.q);
    d.new_k.upload(next.new_k);
    d.new_v.upload(next.new_v);
    d.out.poison();
    d.set_pos(pos);
    FB_CUDA_CHECK(cudaGraphLaunch(exec, st.get()));
    st.synchronize();
    const bool check = step % check_every == 0 || step == steps - 1;
    if (check) {
      const auto ref = fb::sliding_window_attention(s, next.q.data(), p.ring_k.data(), p.ring_v.data(),
                                                    next.new_k.data(), next.new_v.data(), T, pos, 1.0);
      std::ostringstream label;
      label << "graph D" << s.head_dim << " T" << T << " step " << step << " pos " << pos;
      expect_close(d.out.download(label.str()), ref, s, 0, Bounds{1.0, std::ldexp(rms(ref), -12)},
                   label.str());
      if (::testing::Test::HasFailure()) break;
    }
    fb::sliding_window_append(s, next.new_k.data(), next.new_v.data(), T, pos, p.ring_k.data(),
                              p.ring_v.data());
  }
  // The device ring must equal the CPU's after all those appends.
  EXPECT_TRUE(d.ring_k.download("graph ring_k") == p.ring_k) << "ring_k differs after the graph steps";
  EXPECT_TRUE(d.ring_v.download("graph ring_v") == p.ring_v) << "ring_v differs after the graph steps";
  FB_CUDA_CHECK(cudaGraphExecDestroy(exec));
  FB_CUDA_CHECK(cudaGraphDestroy(graph));
}

TEST(SlidingWindowGpu, GraphReplayAcrossPositions) {
  SKIP_WITHOUT_DEVICE();
  graph_steps(kTiny, 1, 0, 300, 7);  // wraps the 128-slot ring twice
  graph_steps(kTiny, 4, 50, 80, 5);
  graph_steps(kGemma, 1, 2040, 20, 3);  // across the 2048 seam
  graph_steps(kGemma, 4, 1020, 6, 1);
}

}  // namespace
