// GatedDeltaNet kernels against fb::ref (reference/gdn) and fused kernels against their twins.
// Reproduce one case: ctest -R fb_gdn_gpu_test.<Suite>.<Name> (all inputs derive from kSeed).
// Inputs sit where the model has them: the conv reads the first conv_dim columns of an in_proj
// output row [qkv | z | b | a], the delta rule reads b/a from its last 2 * v_heads columns.
// Bounds: bf16 outputs of fp32 math may land one bf16 ulp from the rounded fp64 truth
// (expect_bf16_close); states (fp32) within NMSE 1e-6 of fp64 (the issue's delta-rule bound);
// the fused delta rule equals its prenormed twin bit for bit; manual vs naive conv within fp32
// rounding (rare one-ulp bf16 flips, states bit-exact: they are copies of bf16 inputs).
#include <gtest/gtest.h>

#include <cmath>
#include <ostream>
#include <string>
#include <vector>

#include "kernels/gdn/gdn.cuh"
#include "kernels/ops/test_util.h"
#include "reference/gdn/gdn_ref.h"

namespace fb {
namespace {

using test::Bf16Buf;
using test::upload;
constexpr uint64_t kSeed = 5151;

struct Shape {
  const char* name;
  int k_heads, v_heads, dk, dv;
};
const Shape kFull{"full", 16, 32, 128, 128};
const Shape kTiny{"tiny", 2, 4, 64, 64};
const Shape kNarrow{"narrow", 1, 3, 64, 32};  // the smallest dv, an odd head count, 3 v-heads per k-head

cuda::GdnDims dims(const Shape& s) { return {s.k_heads, s.v_heads, s.dk, s.dv, 4}; }
ref::GdnShape ref_shape(const Shape& s) { return {s.k_heads, s.v_heads, s.dk, s.dv, 4}; }

std::vector<float> f32_random(size_t n, uint64_t stream, float sigma, float offset = 0.0f) {
  const CounterRng rng(kSeed, stream);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = offset + sigma * rng.normal(i);
  return v;
}
std::vector<float> ssm_a(int h) {  // -exp(A_log) in [-16, -1] (make_model's init)
  const CounterRng rng(kSeed, 77);
  std::vector<float> v(h);
  for (int i = 0; i < h; ++i) v[i] = -(1.0f + 15.0f * rng.uniform(i));
  return v;
}
std::vector<float> dt_bias(int h) {  // softplus^-1 of dt in [1e-3, 1e-1]
  const CounterRng rng(kSeed, 78);
  std::vector<float> v(h);
  for (int i = 0; i < h; ++i)
    v[i] =
        static_cast<float>(std::log(std::expm1(std::exp(std::log(1e-3) + rng.uniform(i) * std::log(100.0)))));
  return v;
}
double nmse(const std::vector<double>& ref, const std::vector<float>& got) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i)
    num += (ref[i] - got[i]) * (ref[i] - got[i]), den += ref[i] * ref[i];
  return den > 0 ? num / den : num;
}
std::vector<float> download_f32(const DeviceBuffer<float>& d) {
  std::vector<float> h(d.size());
  FB_CUDA_CHECK(cudaDeviceSynchronize());
  FB_CUDA_CHECK(cudaMemcpy(h.data(), d.get(), d.bytes(), cudaMemcpyDeviceToHost));
  return h;
}
std::vector<float> columns(const std::vector<float>& rows, int64_t T, int64_t ld, int64_t col0, int64_t n) {
  std::vector<float> out(static_cast<size_t>(T * n));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < n; ++i) out[t * n + i] = rows[t * ld + col0 + i];
  return out;
}

// ---- conv ---------------------------------------------------------------------------------------

struct ConvCase {
  const Shape* shape;
  int64_t T;
};
// Stable, readable test names (CTest shows the printed parameter).
void PrintTo(const ConvCase& c, std::ostream* os) { *os << c.shape->name << "_T" << c.T; }
std::string conv_name(const ::testing::TestParamInfo<ConvCase>& i) {
  return std::string(i.param.shape->name) + "_T" + std::to_string(i.param.T);
}
class ConvTest : public ::testing::TestWithParam<ConvCase> {};

TEST_P(ConvTest, ManualMatchesReferenceAndNaive) {
  FB_SKIP_WITHOUT_GPU();
  const auto [shape, T] = GetParam();
  const auto d = dims(*shape);
  const int64_t C = d.conv_dim(), ld = C + d.value_dim() + 2 * d.v_heads;
  const std::string what = std::string(shape->name) + " T " + std::to_string(T);
  const auto x = test::random_bf16(T * ld, kSeed, 1, 1.0f);
  const auto s0 = test::random_bf16(C * 4, kSeed, 2, 1.0f);
  const auto w = f32_random(C * 4, 3, 0.25f);
  Bf16Buf dx(x), dstate(s0), dstate2(s0), out(T * C), out2(T * C);
  auto dw = upload(w);
  DeviceBuffer<float> ws(cuda::conv_naive_workspace_floats(T, C, 4));
  cuda::causal_conv_silu(dx.get(), ld, T, C, dstate.get(), dw.get(), 4, out.get(), nullptr);
  cuda::causal_conv_silu_naive(dx.get(), ld, T, C, dstate2.get(), dw.get(), 4, out2.get(), ws.get(), nullptr);
  auto sref = s0;
  const auto truth = ref::causal_conv_silu_fp64(columns(x, T, ld, 0, C), T, C, sref, w, 4);
  std::vector<float> want(truth.size());
  for (size_t i = 0; i < truth.size(); ++i)
    want[i] = bf16_to_fp32(fp32_to_bf16(static_cast<float>(truth[i])));
  const auto got = out.read(what), got2 = out2.read(what);
  test::expect_bf16_close(want, got, "manual conv vs fp64 " + what);
  test::expect_bf16_close(got, got2, "manual vs naive conv " + what, 1.0 / 128, 1e-6, 0.01);
  test::expect_bit_exact(sref, dstate.read(what), "conv state " + what);
  test::expect_bit_exact(sref, dstate2.read(what), "naive conv state " + what);
}

// T one-token calls run the sliding (decode) form; one call with T > 4 runs the per-run prefill
// form: bit-identical outputs and states pin the prefill form to the sliding form's arithmetic.
TEST_P(ConvTest, DecodeStepsEqualOneCall) {
  FB_SKIP_WITHOUT_GPU();
  const auto [shape, T] = GetParam();
  const auto d = dims(*shape);
  const int64_t C = d.conv_dim();
  const auto x = test::random_bf16(T * C, kSeed, 4, 1.0f);
  const auto s0 = test::random_bf16(C * 4, kSeed, 5, 1.0f);
  auto dw = upload(f32_random(C * 4, 6, 0.25f));
  Bf16Buf dx(x), sa(s0), sb(s0), oa(T * C), ob(T * C);
  cuda::causal_conv_silu(dx.get(), C, T, C, sa.get(), dw.get(), 4, oa.get(), nullptr);
  for (int64_t t = 0; t < T; ++t)
    cuda::causal_conv_silu(dx.get() + t * C, C, 1, C, sb.get(), dw.get(), 4, ob.get() + t * C, nullptr);
  test::expect_bit_exact(oa.read("one call"), ob.read("steps"), "conv outputs, steps vs one call");
  test::expect_bit_exact(sa.read("one call"), sb.read("steps"), "conv state, steps vs one call");
}

INSTANTIATE_TEST_SUITE_P(Gdn, ConvTest,
                         ::testing::Values(ConvCase{&kFull, 1}, ConvCase{&kFull, 4}, ConvCase{&kFull, 64},
                                           ConvCase{&kFull, 512}, ConvCase{&kTiny, 1}, ConvCase{&kTiny, 8},
                                           ConvCase{&kTiny, 100},
                                           // run edges of the prefill form (runs of 8): one short
                                           // run, a one-token last run, a partial channel block
                                           ConvCase{&kFull, 5}, ConvCase{&kFull, 9}, ConvCase{&kFull, 513},
                                           ConvCase{&kTiny, 3}, ConvCase{&kNarrow, 13}),
                         conv_name);

// ---- delta rule ---------------------------------------------------------------------------------

struct DeltaCase {
  const Shape* shape;
  int64_t T;
};
void PrintTo(const DeltaCase& c, std::ostream* os) { *os << c.shape->name << "_T" << c.T; }
std::string delta_name(const ::testing::TestParamInfo<DeltaCase>& i) {
  return std::string(i.param.shape->name) + "_T" + std::to_string(i.param.T);
}
class DeltaRuleTest : public ::testing::TestWithParam<DeltaCase> {};

struct DeltaInputs {
  int64_t T, C, ld;
  std::vector<float> qkv, inproj, A, dt, s0;
  DeltaInputs(const Shape& s, int64_t T_) : T(T_) {
    const auto d = dims(s);
    C = d.conv_dim();
    ld = C + d.value_dim() + 2 * d.v_heads;
    qkv = test::random_bf16(T * C, kSeed, 10, 1.0f);
    inproj = test::random_bf16(T * ld, kSeed, 11, 1.0f);
    A = ssm_a(s.v_heads);
    dt = dt_bias(s.v_heads);
    s0 = f32_random(static_cast<size_t>(s.v_heads) * s.dk * s.dv, 12, 0.1f);
  }
};

TEST_P(DeltaRuleTest, FusedMatchesFp64AndTwin) {
  FB_SKIP_WITHOUT_GPU();
  const auto [shape, T] = GetParam();
  const auto d = dims(*shape);
  const std::string what = std::string(shape->name) + " T " + std::to_string(T);
  const DeltaInputs in(*shape, T);
  Bf16Buf dqkv(in.qkv), dinp(in.inproj), o(T * d.value_dim()), o2(T * d.value_dim());
  auto dA = upload(in.A);
  auto ddt = upload(in.dt);
  auto st = upload(in.s0);
  auto st2 = upload(in.s0);
  const __nv_bfloat16* ba = dinp.get() + (in.ld - 2 * d.v_heads);
  cuda::gated_delta_rule(d, dqkv.get(), T, ba, in.ld, dA.get(), ddt.get(), st.get(), o.get(), nullptr);
  DeviceBuffer<float> qk(static_cast<size_t>(T * 2 * d.key_dim())),
      gates(static_cast<size_t>(T * d.v_heads * 2));
  cuda::gdn_qk_l2norm(d, dqkv.get(), T, qk.get(), nullptr);
  cuda::gdn_gates(d, ba, in.ld, T, dA.get(), ddt.get(), gates.get(), nullptr);
  cuda::gated_delta_rule_prenormed(d, qk.get(), dqkv.get(), gates.get(), T, st2.get(), o2.get(), nullptr);

  const auto rs = ref_shape(*shape);
  const int64_t kd = d.key_dim(), vd = d.value_dim();
  const auto q = columns(in.qkv, T, in.C, 0, kd), k = columns(in.qkv, T, in.C, kd, kd),
             v = columns(in.qkv, T, in.C, 2 * kd, vd);
  const auto b = columns(in.inproj, T, in.ld, in.ld - 2 * d.v_heads, d.v_heads),
             a = columns(in.inproj, T, in.ld, in.ld - d.v_heads, d.v_heads);
  std::vector<double> sref(in.s0.begin(), in.s0.end());
  const auto truth = ref::gated_delta_rule_fp64(rs, T, q, k, v, b, a, in.A, in.dt, sref);
  std::vector<float> want(truth.size());
  for (size_t i = 0; i < truth.size(); ++i)
    want[i] = bf16_to_fp32(fp32_to_bf16(static_cast<float>(truth[i])));
  const auto got = o.read(what);
  test::expect_bf16_close(want, got, "delta rule vs fp64 " + what);
  const auto state = download_f32(st);
  EXPECT_LE(nmse(sref, state), 1e-6) << "state vs fp64 " << what;
  test::expect_bit_exact(got, o2.read(what), "fused vs prenormed twin, outputs " + what);
  test::expect_bit_exact(state, download_f32(st2), "fused vs prenormed twin, states " + what);
}

// T one-token calls equal one call over T tokens bit for bit: the prefill loop's pipelining (inputs
// loaded two tokens ahead, double-buffered q/k/gates) leaves each token's arithmetic unchanged.
TEST_P(DeltaRuleTest, StepsEqualOneCall) {
  FB_SKIP_WITHOUT_GPU();
  const auto [shape, T] = GetParam();
  const auto d = dims(*shape);
  const std::string what = std::string(shape->name) + " T " + std::to_string(T);
  const DeltaInputs in(*shape, T);
  Bf16Buf dqkv(in.qkv), dinp(in.inproj), oa(T * d.value_dim()), ob(T * d.value_dim());
  auto dA = upload(in.A);
  auto ddt = upload(in.dt);
  auto sa = upload(in.s0);
  auto sb = upload(in.s0);
  const __nv_bfloat16* ba = dinp.get() + (in.ld - 2 * d.v_heads);
  cuda::gated_delta_rule(d, dqkv.get(), T, ba, in.ld, dA.get(), ddt.get(), sa.get(), oa.get(), nullptr);
  for (int64_t t = 0; t < T; ++t)
    cuda::gated_delta_rule(d, dqkv.get() + t * in.C, 1, ba + t * in.ld, in.ld, dA.get(), ddt.get(), sb.get(),
                           ob.get() + t * d.value_dim(), nullptr);
  test::expect_bit_exact(oa.read(what), ob.read(what), "delta rule outputs, steps vs one call " + what);
  test::expect_bit_exact(download_f32(sa), download_f32(sb), "delta rule states, steps vs one call " + what);
}

// A decode step is graph-safe: captured once and replayed twice == two direct launches.
TEST(DeltaRuleGraph, ReplayEqualsDirect) {
  FB_SKIP_WITHOUT_GPU();
  const auto d = dims(kFull);
  const DeltaInputs in(kFull, 1);
  Bf16Buf dqkv(in.qkv), dinp(in.inproj), oa(d.value_dim()), ob(d.value_dim());
  auto dA = upload(in.A);
  auto ddt = upload(in.dt);
  auto sa = upload(in.s0);
  auto sb = upload(in.s0);
  const __nv_bfloat16* ba = dinp.get() + (in.ld - 2 * d.v_heads);
  for (int i = 0; i < 2; ++i)
    cuda::gated_delta_rule(d, dqkv.get(), 1, ba, in.ld, dA.get(), ddt.get(), sa.get(), oa.get(), nullptr);
  cudaStream_t s;
  FB_CUDA_CHECK(cudaStreamCreate(&s));
  cudaGraph_t g;
  cudaGraphExec_t ge;
  FB_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  cuda::gated_delta_rule(d, dqkv.get(), 1, ba, in.ld, dA.get(), ddt.get(), sb.get(), ob.get(), s);
  FB_CUDA_CHECK(cudaStreamEndCapture(s, &g));
  FB_CUDA_CHECK(cudaGraphInstantiate(&ge, g, 0));
  FB_CUDA_CHECK(cudaGraphLaunch(ge, s));
  FB_CUDA_CHECK(cudaGraphLaunch(ge, s));
  FB_CUDA_CHECK(cudaStreamSynchronize(s));
  test::expect_bit_exact(oa.read("direct"), ob.read("graph"), "graph replay outputs");
  test::expect_bit_exact(download_f32(sa), download_f32(sb), "graph replay states");
  FB_CUDA_CHECK(cudaGraphExecDestroy(ge));
  FB_CUDA_CHECK(cudaGraphDestroy(g));
  FB_CUDA_CHECK(cudaStreamDestroy(s));
}

INSTANTIATE_TEST_SUITE_P(Gdn, DeltaRuleTest,
                         ::testing::Values(DeltaCase{&kFull, 1}, DeltaCase{&kFull, 4}, DeltaCase{&kFull, 64},
                                           DeltaCase{&kFull, 512}, DeltaCase{&kTiny, 1}, DeltaCase{&kTiny, 8},
                                           DeltaCase{&kTiny, 100}, DeltaCase{&kNarrow, 1},
                                           DeltaCase{&kNarrow, 5},
                                           // pipeline edges: no prefetch (T = 2), an odd tail
                                           DeltaCase{&kTiny, 2}, DeltaCase{&kTiny, 3}, DeltaCase{&kFull, 7}),
                         delta_name);

// ---- gated RMSNorm ------------------------------------------------------------------------------

TEST(GatedRmsNorm, MatchesReference) {
  FB_SKIP_WITHOUT_GPU();
  for (const Shape* s : {&kFull, &kTiny}) {
    for (int64_t T : {1, 4}) {
      const auto d = dims(*s);
      const int64_t ldz = d.conv_dim() + d.value_dim() + 2 * d.v_heads;
      const std::string what = std::string(s->name) + " T " + std::to_string(T);
      const auto o = test::random_bf16(T * d.value_dim(), kSeed, 20, 0.5f);
      const auto inproj = test::random_bf16(T * ldz, kSeed, 21, 1.0f);
      auto w = f32_random(s->dv, 22, 0.1f, 1.0f);
      Bf16Buf dout(T * d.value_dim()), dO(o), dz(inproj);
      auto dw = upload(w);
      cuda::gated_rms_norm(dO.get(), dz.get() + d.conv_dim(), ldz, dw.get(), T, s->v_heads, s->dv, 1e-6f,
                           dout.get(), nullptr);
      const auto z = columns(inproj, T, ldz, d.conv_dim(), d.value_dim());
      const auto want = ref::gated_rms_norm_bf16(o, z, T * s->v_heads, s->dv, w.data(), 1e-6);
      test::expect_bf16_close(want, dout.read(what), "gated rms norm " + what);
    }
  }
}

}  // namespace
}  // namespace fb
