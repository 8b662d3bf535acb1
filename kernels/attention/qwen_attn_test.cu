// qwen full-attention kernels (kernels/attention/qwen_attn.cuh) against fb::ref and their twins.
// Reproduce one case: ctest -R fb_qwen_attn_gpu_test.<Suite>.<Name> (inputs derive from kSeed).
// Bounds: bf16 outputs of fp32 math vs rounded fp64 truth within one bf16 ulp, rarely
// (expect_bf16_close); the fused prep equals split -> ops rms_norm -> ops rope -> kv_append bit for
// bit (same norm thread map and reduction order, same rope expressions, --fmad=false); the fused
// output gate equals SDPA -> qwen_sigmoid_gate_mul bit for bit (same combine, same gate expression).
#include <gtest/gtest.h>

#include <cmath>
#include <ostream>
#include <string>
#include <vector>

#include "kernels/attention/qwen_attn.cuh"
#include "kernels/ops/ops.cuh"
#include "kernels/ops/test_util.h"
#include "reference/ops/ops.h"

namespace fb {
namespace {

using test::Bf16Buf;
using test::upload;
constexpr uint64_t kSeed = 3535;

struct Case {
  const char* name;
  int nh, nkv, hd, rot;
  double theta;
  int64_t T, ctx;  // tokens at positions ctx .. ctx+T-1
};
const Case kCases[] = {
    {"tiny_decode", 4, 2, 64, 16, 1e4, 1, 300},
    {"tiny_prefill", 4, 2, 64, 16, 1e4, 5, 70},
    // The qwen35 prefill step's shapes: T 100 after ctx 70 (three splits), and T 512 at full scale.
    {"tiny_prefill_T100", 4, 2, 64, 16, 1e4, 100, 70},
    {"full_prefill_T512", 16, 2, 256, 64, 1e7, 512, 100},
    {"full_decode", 16, 2, 256, 64, 1e7, 1, 1000},
    // Short context: 16-key splits (the last one partly past the live keys).
    {"full_decode_ctx500", 16, 2, 256, 64, 1e7, 1, 500},
    {"full_prefill", 16, 2, 256, 64, 1e7, 3, 4100},
    // hd 128 with groups 1 and 4: 8 and 2 tokens share a warp (the last warp partly past T).
    {"g1_prefill_hd128", 4, 4, 128, 32, 1e4, 11, 40},
    {"g4_decode_hd128", 8, 2, 128, 32, 1e4, 2, 900},
    // 128K: 257 splits of 512 keys, and RoPE angles reach 1e5 rad.
    {"full_decode_128k", 16, 2, 256, 64, 1e7, 1, 131072},
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

std::vector<float> norm_w(int n, uint64_t stream) {  // (1+w) weights: w small around 0
  const CounterRng rng(kSeed, stream);
  std::vector<float> v(n);
  for (int i = 0; i < n; ++i) v[i] = 0.2f * rng.normal(i);
  return v;
}

struct AttnInputs {
  Case c;
  cuda::QwenAttnDims d;
  int64_t cap, ldp;
  std::vector<float> proj, qn, kn, kcache, vcache;
  std::vector<int32_t> pos;
  cuda::RopeParams rp;
  ref::RopeSpec spec;
  explicit AttnInputs(const Case& cs) : c(cs) {
    d = {cs.nh, cs.nkv, cs.hd};
    cap = cs.ctx + cs.T + 7;
    ldp = d.proj_cols() + 16;  // a padded row stride: the kernels must honour ldp
    proj = test::random_bf16(static_cast<size_t>(cs.T * ldp), kSeed, 1);
    qn = norm_w(cs.hd, 2);
    kn = norm_w(cs.hd, 3);
    kcache = test::random_bf16(static_cast<size_t>(cs.nkv * cap * cs.hd), kSeed, 4);
    vcache = test::random_bf16(kcache.size(), kSeed, 5);
    for (int64_t t = 0; t < cs.T; ++t) pos.push_back(static_cast<int32_t>(cs.ctx + t));
    rp = cuda::make_rope_params(cs.hd, cs.rot, cs.rot / 2, cs.rot, cs.theta);
    spec = {cs.hd, cs.rot, cs.rot / 2, cs.rot, cs.theta};
  }
  // Columns [col0, col0 + n) of every head-block of the projection rows.
  std::vector<float> slice(int64_t col0, int heads, int64_t stride) const {
    std::vector<float> out;
    for (int64_t t = 0; t < c.T; ++t)
      for (int h = 0; h < heads; ++h)
        for (int i = 0; i < c.hd; ++i) out.push_back(proj[t * ldp + col0 + h * stride + i]);
    return out;
  }
};

std::string label(const Case& c) { return std::string(c.name); }

class QwenAttn : public ::testing::TestWithParam<Case> {};

TEST_P(QwenAttn, PrepFusedEqualsTwinAndReference) {
  FB_SKIP_WITHOUT_GPU();
  const AttnInputs s(GetParam());
  const auto& c = s.c;
  const auto dproj = upload(test::to_bits(s.proj));
  const auto dqn = upload(s.qn), dkn = upload(s.kn);
  const auto dpos = upload(s.pos);
  const float eps = 1e-6f;
  const size_t nq = static_cast<size_t>(c.T * c.nh * c.hd), nkv = static_cast<size_t>(c.T * c.nkv * c.hd);
  // Fused.
  Bf16Buf q1(nq), k1(s.kcache), v1(s.vcache);
  cuda::qwen_attn_prep(s.d, reinterpret_cast<const __nv_bfloat16*>(dproj.get()), s.ldp, c.T, dqn.get(),
                       dkn.get(), eps, dpos.get(), s.rp, q1.get(), k1.get(), v1.get(), s.cap, nullptr);
  // Twin.
  Bf16Buf qs(nq), gs(nq), ks(nkv), vs(nkv), q2(nq), kn2(nkv), k2(s.kcache), v2(s.vcache);
  cuda::qwen_split_qkv(s.d, reinterpret_cast<const __nv_bfloat16*>(dproj.get()), s.ldp, c.T, qs.get(),
                       gs.get(), ks.get(), vs.get(), nullptr);
  cuda::rms_norm(qs.get(), dqn.get(), cuda::NormWeight::one_plus, eps, q2.get(), c.T * c.nh, c.hd, nullptr);
  cuda::rope(q2.get(), dpos.get(), s.rp, q2.get(), c.T, c.nh, nullptr);
  cuda::rms_norm(ks.get(), dkn.get(), cuda::NormWeight::one_plus, eps, kn2.get(), c.T * c.nkv, c.hd, nullptr);
  cuda::rope(kn2.get(), dpos.get(), s.rp, kn2.get(), c.T, c.nkv, nullptr);
  cuda::qwen_kv_append(s.d, kn2.get(), vs.get(), c.T, dpos.get(), k2.get(), v2.get(), s.cap, nullptr);
  const auto gq1 = q1.read("q fused"), gk1 = k1.read("k cache fused"), gv1 = v1.read("v cache fused");
  test::expect_bit_exact(gq1, q2.read("q twin"), label(c) + " q fused vs twin");
  test::expect_bit_exact(gk1, k2.read("k twin"), label(c) + " k cache fused vs twin");
  test::expect_bit_exact(gv1, v2.read("v twin"), label(c) + " v cache fused vs twin");
  test::expect_bit_exact(gs.read("gate split"), s.slice(c.hd, c.nh, 2 * c.hd), label(c) + " gate split");
  // Reference: (1+w) RMSNorm then partial RoPE, fp64, rounded to bf16.
  const auto rq = ref::rope_bf16(ref::rms_norm_bf16(s.slice(0, c.nh, 2 * c.hd), c.T * c.nh, c.hd, s.qn.data(),
                                                    ref::NormWeight::one_plus, eps),
                                 c.T, c.nh, s.pos, s.spec);
  const int64_t kc0 = s.d.q_cols(), vc0 = kc0 + s.d.kv_cols();
  const auto rk = ref::rope_bf16(ref::rms_norm_bf16(s.slice(kc0, c.nkv, c.hd), c.T * c.nkv, c.hd, s.kn.data(),
                                                    ref::NormWeight::one_plus, eps),
                                 c.T, c.nkv, s.pos, s.spec);
  const auto rv = s.slice(vc0, c.nkv, c.hd);
  test::expect_bf16_close(rq, gq1, label(c) + " q vs reference");
  std::vector<float> ek = s.kcache, ev = s.vcache;  // expected caches: untouched except rows pos[t]
  for (int64_t t = 0; t < c.T; ++t)
    for (int h = 0; h < c.nkv; ++h)
      for (int i = 0; i < c.hd; ++i) {
        ek[(h * s.cap + s.pos[t]) * c.hd + i] = rk[(t * c.nkv + h) * c.hd + i];
        ev[(h * s.cap + s.pos[t]) * c.hd + i] = rv[(t * c.nkv + h) * c.hd + i];
      }
  test::expect_bf16_close(ek, gk1, label(c) + " k cache vs reference");
  test::expect_bit_exact(ev, gv1, label(c) + " v cache (a copy)");
}

TEST_P(QwenAttn, SdpaGateFusedEqualsTwinAndReference) {
  FB_SKIP_WITHOUT_GPU();
  const AttnInputs s(GetParam());
  const auto& c = s.c;
  // Attention inputs: q from the seeded projection's q columns, caches random with rows up to
  // pos[T-1] live (the causal mask must hide rows beyond pos[t] for earlier tokens).
  const std::vector<float> q = s.slice(0, c.nh, 2 * c.hd);
  const std::vector<float> gate = s.slice(c.hd, c.nh, 2 * c.hd);
  const auto dproj = upload(test::to_bits(s.proj));
  const auto dq = upload(test::to_bits(q)), dk = upload(test::to_bits(s.kcache)),
             dv = upload(test::to_bits(s.vcache));
  const auto dpos = upload(s.pos);
  DeviceBuffer<float> ws(cuda::qwen_sdpa_workspace_floats(s.d, c.T, s.cap));
  const size_t n = static_cast<size_t>(c.T * c.nh * c.hd);
  Bf16Buf y1(n), a2(n), y2(n);
  const auto* bq = reinterpret_cast<const __nv_bfloat16*>(dq.get());
  const auto* bk = reinterpret_cast<const __nv_bfloat16*>(dk.get());
  const auto* bv = reinterpret_cast<const __nv_bfloat16*>(dv.get());
  const auto* gptr = reinterpret_cast<const __nv_bfloat16*>(dproj.get()) + c.hd;
  cuda::qwen_sdpa(s.d, bq, bk, bv, s.cap, c.T, dpos.get(), gptr, s.ldp, 2 * c.hd, ws.get(), y1.get(),
                  nullptr);
  cuda::qwen_sdpa(s.d, bq, bk, bv, s.cap, c.T, dpos.get(), nullptr, 0, 0, ws.get(), a2.get(), nullptr);
  cuda::qwen_sigmoid_gate_mul(a2.get(), gptr, s.ldp, 2 * c.hd, c.T, c.nh, c.hd, y2.get(), nullptr);
  const auto gy1 = y1.read("y fused"), ga2 = a2.read("attn"), gy2 = y2.read("y twin");
  test::expect_bit_exact(gy1, gy2, label(c) + " gated SDPA fused vs twin");
  // fp64 truth.
  std::vector<float> ra(n), ry(n);
  const int G = c.nh / c.nkv;
  const double scale = 1.0 / std::sqrt(double(c.hd));
  for (int64_t t = 0; t < c.T; ++t)
    for (int h = 0; h < c.nh; ++h) {
      const int kvh = h / G;
      const int64_t len = s.pos[t] + 1;
      std::vector<double> sc(len), acc(c.hd, 0.0);
      double mx = -INFINITY, sum = 0;
      for (int64_t j = 0; j < len; ++j) {
        double d = 0;
        for (int i = 0; i < c.hd; ++i)
          d += double(q[(t * c.nh + h) * c.hd + i]) * s.kcache[(kvh * s.cap + j) * c.hd + i];
        sc[j] = d * scale, mx = std::max(mx, sc[j]);
      }
      for (auto& v : sc) sum += (v = std::exp(v - mx));
      for (int64_t j = 0; j < len; ++j)
        for (int i = 0; i < c.hd; ++i) acc[i] += sc[j] * s.vcache[(kvh * s.cap + j) * c.hd + i];
      for (int i = 0; i < c.hd; ++i) {
        const size_t o = (t * c.nh + h) * c.hd + i;
        ra[o] = ref::round_bf16(acc[i] / sum);
        const float sg = ref::round_bf16(1.0 / (1.0 + std::exp(-double(gate[o]))));
        ry[o] = ref::round_bf16(double(ra[o]) * sg);
      }
    }
  test::expect_bf16_close(ra, ga2, label(c) + " attention vs reference");
  test::expect_bf16_close(ry, gy1, label(c) + " gated attention vs reference");
}

INSTANTIATE_TEST_SUITE_P(Shapes, QwenAttn, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(QwenAttnApi, SplitRuleFillsTheGpuWithFewParts) {
  const cuda::QwenAttnDims d{16, 2, 256};
  EXPECT_EQ(cuda::qwen_sdpa_splits(d, 1, 513), 33);  // 16-key splits at a short context
  const int s = cuda::qwen_sdpa_splits(d, 1, 131073);
  EXPECT_GE(2 * s, 400);  // about four one-warp partials per SM of a 132-SM part ...
  EXPECT_LE(2 * s, 528);  // ... in one wave
  EXPECT_EQ(cuda::qwen_sdpa_splits(d, 512, 612), 1);  // prefill: the tokens fill the GPU, no combine
  EXPECT_EQ(cuda::qwen_sdpa_workspace_floats(d, 1, 513), size_t{16} * 33 * (2 + 256));
}

TEST(QwenAttnApi, RejectsBadShapes) {
  cuda::QwenAttnDims d{16, 3, 256};  // 16 % 3 != 0
  EXPECT_THROW(
      cuda::qwen_sdpa(d, nullptr, nullptr, nullptr, 1, 1, nullptr, nullptr, 0, 0, nullptr, nullptr, nullptr),
      std::invalid_argument);
  cuda::QwenAttnDims e{16, 2, 96};
  EXPECT_THROW(cuda::qwen_split_qkv(e, nullptr, 0, 1, nullptr, nullptr, nullptr, nullptr, nullptr),
               std::invalid_argument);
}

}  // namespace
}  // namespace fb
