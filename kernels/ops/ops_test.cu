// The ops kernels against fb::ref (reference/ops) and fused kernels against their unfused twins.
// Reproduce one case: ctest -R fb_ops_gpu_test.<Suite>.<Name> (all inputs derive from kSeed).
// Bounds: fp32 math vs rounded fp64 truth may land an element one bf16 ulp away
// (expect_bf16_close, test_util.h); fused vs unfused and embed vs reference must match bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/gemv/w4a8_matvec.cuh"
#include "kernels/ops/ops.cuh"
#include "kernels/ops/test_util.h"
#include "reference/formats/dequantize.h"
#include "reference/formats/quantize.h"
#include "reference/ops/ops.h"

namespace fb {
namespace {

using test::Bf16Buf;
using test::upload;
constexpr uint64_t kSeed = 4242;
constexpr float kEps = 1e-6f;

ref::NormWeight to_ref(cuda::NormWeight m) {
  return m == cuda::NormWeight::direct     ? ref::NormWeight::direct
         : m == cuda::NormWeight::one_plus ? ref::NormWeight::one_plus
                                           : ref::NormWeight::none;
}

// Norm weights around 1 with spread (gemma's direct weights), or around 0 (qwen's 1+w offsets).
std::vector<float> norm_weight(int64_t n, cuda::NormWeight m, uint64_t stream) {
  std::vector<float> w = test::random_bf16(n, kSeed, stream, 0.3f);
  if (m == cuda::NormWeight::direct)
    for (float& v : w) v += 1.0f;
  return w;
}

struct NormCase {
  int64_t rows;
  int cols;
  cuda::NormWeight mode;
};

class RmsNormTest : public ::testing::TestWithParam<NormCase> {};

TEST_P(RmsNormTest, MatchesReference) {
  FB_SKIP_WITHOUT_GPU();
  const NormCase c = GetParam();
  const auto x = test::random_bf16(c.rows * c.cols, kSeed, 1, 3.0f);
  const auto w = norm_weight(c.cols, c.mode, 2);
  auto dx = upload(test::to_bits(x));
  auto dw = upload(w);
  Bf16Buf out(x.size());
  cuda::rms_norm(reinterpret_cast<const __nv_bfloat16*>(dx.get()),
                 c.mode == cuda::NormWeight::none ? nullptr : dw.get(), c.mode, kEps, out.get(), c.rows,
                 c.cols, nullptr);
  const auto ref = ref::rms_norm_bf16(x, c.rows, c.cols, w.data(), to_ref(c.mode), kEps);
  test::expect_bf16_close(ref, out.read("rms_norm"),
                          "rms_norm rows " + std::to_string(c.rows) + " cols " + std::to_string(c.cols));
}

// gemma hidden 5376 (672 threads a row), qwen hidden 2048, head dims 512/256 (q/k/v norms), the tiny
// configs' 32 and 64 (sub-warp rows), and 8192 (the largest row a thread-per-vector block takes).
INSTANTIATE_TEST_SUITE_P(Shapes, RmsNormTest,
                         ::testing::Values(NormCase{1, 5376, cuda::NormWeight::direct},
                                           NormCase{4, 5376, cuda::NormWeight::direct},
                                           NormCase{512, 5376, cuda::NormWeight::direct},
                                           NormCase{3, 2048, cuda::NormWeight::one_plus},
                                           NormCase{32 * 4, 256, cuda::NormWeight::direct},
                                           NormCase{4 * 4, 512, cuda::NormWeight::none},
                                           NormCase{16 * 3, 256, cuda::NormWeight::none},
                                           NormCase{77, 32, cuda::NormWeight::direct},
                                           NormCase{9, 64, cuda::NormWeight::one_plus},
                                           NormCase{2, 8192, cuda::NormWeight::direct},
                                           NormCase{5, 8, cuda::NormWeight::direct}));

struct RopeCase {
  const char* name;
  int64_t tokens;
  int heads, head_dim, rot_dim, n_freq, freq_den;
  double theta;
  int max_pos;
};

class RopeTest : public ::testing::TestWithParam<RopeCase> {};

TEST_P(RopeTest, FusedEqualsUnfusedAndMatchesReference) {
  FB_SKIP_WITHOUT_GPU();
  const RopeCase c = GetParam();
  const int64_t n = c.tokens * c.heads * c.head_dim;
  const auto x = test::random_bf16(n, kSeed, 3, 2.0f);
  const auto w = norm_weight(c.head_dim, cuda::NormWeight::direct, 4);
  std::vector<int32_t> pos(c.tokens);
  CounterRng rng(kSeed, 5);
  for (int64_t t = 0; t < c.tokens; ++t) pos[t] = static_cast<int32_t>(rng.bits(t) % (c.max_pos + 1));
  pos[0] = c.max_pos;  // the largest angle is always exercised
  if (c.tokens > 1) pos[1] = 0;
  auto dx = upload(test::to_bits(x));
  auto dw = upload(w);
  auto dpos = upload(pos);
  const auto* xin = reinterpret_cast<const __nv_bfloat16*>(dx.get());
  const cuda::RopeParams rp = cuda::make_rope_params(c.head_dim, c.rot_dim, c.n_freq, c.freq_den, c.theta);
  const ref::RopeSpec spec{c.head_dim, c.rot_dim, c.n_freq, c.freq_den, c.theta};
  const auto inv = ref::rope_inv_freq(spec);
  for (int i = 0; i < c.rot_dim / 2; ++i) ASSERT_EQ(rp.inv_freq[i], inv[i]) << "inv_freq " << i;

  Bf16Buf fused(n), normed(n), unfused(n), roped(n);
  cuda::head_norm_rope(xin, dw.get(), cuda::NormWeight::direct, kEps, dpos.get(), rp, fused.get(), c.tokens,
                       c.heads, nullptr);
  cuda::rms_norm(xin, dw.get(), cuda::NormWeight::direct, kEps, normed.get(), c.tokens * c.heads, c.head_dim,
                 nullptr);
  cuda::rope(normed.get(), dpos.get(), rp, unfused.get(), c.tokens, c.heads, nullptr);
  const auto got_fused = fused.read("head_norm_rope");
  const auto got_normed = normed.read("rms_norm");
  test::expect_bit_exact(unfused.read("rope"), got_fused, std::string(c.name) + ": fused vs unfused");

  // In place gives the same bits as out of place.
  cuda::rope(normed.get(), dpos.get(), rp, normed.get(), c.tokens, c.heads, nullptr);
  test::expect_bit_exact(normed.read("rope in place"), got_fused, std::string(c.name) + ": rope in place");

  // Reference: the rope part alone on the kernel's own norm output (isolates the rotation), then the
  // whole chain from x.
  test::expect_bf16_close(ref::rope_bf16(got_normed, c.tokens, c.heads, pos, spec), got_fused,
                          std::string(c.name) + ": rope vs reference");
  const auto ref_chain = ref::rope_bf16(
      ref::rms_norm_bf16(x, c.tokens * c.heads, c.head_dim, w.data(), ref::NormWeight::direct, kEps),
      c.tokens, c.heads, pos, spec);
  test::expect_bf16_close(ref_chain, got_fused, std::string(c.name) + ": norm+rope vs reference");
  // Pass-through dims are the norm output, bit for bit (zero frequency: no arithmetic).
  for (int64_t r = 0; r < c.tokens * c.heads; ++r)
    for (int d = c.n_freq; d < c.head_dim; ++d) {
      if (d >= c.rot_dim / 2 && d < c.rot_dim / 2 + c.n_freq) continue;
      ASSERT_EQ(got_fused[r * c.head_dim + d], got_normed[r * c.head_dim + d])
          << c.name << " row " << r << " dim " << d;
    }
}

INSTANTIATE_TEST_SUITE_P(
    Specs, RopeTest,
    ::testing::Values(RopeCase{"gemma sliding q decode", 1, 32, 256, 256, 128, 256, 1e4, 131071},
                      RopeCase{"gemma sliding k T4", 4, 16, 256, 256, 128, 256, 1e4, 1023},
                      RopeCase{"gemma full q T4 (proportional)", 4, 32, 512, 512, 64, 512, 1e6, 131071},
                      RopeCase{"gemma full k prefill", 512, 4, 512, 512, 64, 512, 1e6, 8191},
                      RopeCase{"gemma tiny full", 7, 8, 64, 64, 8, 64, 1e6, 255},
                      RopeCase{"qwen partial 64 of 256", 3, 16, 256, 64, 32, 64, 1e7, 131071}),
    [](const auto& i) {
      std::string s = i.param.name;
      for (char& ch : s)
        if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
      return s;
    });

TEST(Gelu, FusedMulEqualsUnfusedAndMatchesReference) {
  FB_SKIP_WITHOUT_GPU();
  for (int64_t tokens : {1, 4, 37}) {
    const int64_t inter = 21504;
    const auto gu = test::random_bf16(tokens * 2 * inter, kSeed, 6, 2.0f);
    auto dgu = upload(test::to_bits(gu));
    const auto* p = reinterpret_cast<const __nv_bfloat16*>(dgu.get());
    Bf16Buf fused(tokens * inter), g(tokens * inter), unfused(tokens * inter);
    cuda::gelu_tanh_mul(p, fused.get(), tokens, inter, nullptr);
    cuda::gelu_tanh(p, 2 * inter, g.get(), inter, tokens, inter, nullptr);
    cuda::mul(g.get(), inter, p + inter, 2 * inter, unfused.get(), inter, tokens, inter, nullptr);
    const auto got = fused.read("gelu_tanh_mul");
    test::expect_bit_exact(unfused.read("mul"), got,
                           "gelu_tanh_mul fused vs unfused T=" + std::to_string(tokens));
    test::expect_bf16_close(ref::gelu_tanh_mul_bf16(gu, tokens, inter), got, "gelu_tanh_mul vs reference");
    std::vector<float> gate;
    for (int64_t t = 0; t < tokens; ++t)
      gate.insert(gate.end(), gu.begin() + t * 2 * inter, gu.begin() + t * 2 * inter + inter);
    test::expect_bf16_close(ref::gelu_tanh_bf16(gate), g.read("gelu_tanh"), "gelu_tanh vs reference");
  }
}

TEST(Softcap, MatchesReference) {
  FB_SKIP_WITHOUT_GPU();
  const int64_t n = 262144 * 2;
  const auto x = test::random_bf16(n, kSeed, 7, 20.0f);  // logits well into tanh's saturation
  auto dx = upload(test::to_bits(x));
  DeviceBuffer<float> out(n + test::kGuard);
  FB_CUDA_CHECK(cudaMemset(out.get(), 0xFF, out.bytes()));
  cuda::softcap(reinterpret_cast<const __nv_bfloat16*>(dx.get()), out.get(), n, 30.0f, nullptr);
  std::vector<float> got(n + test::kGuard);
  FB_CUDA_CHECK(cudaMemcpy(got.data(), out.get(), got.size() * 4, cudaMemcpyDeviceToHost));
  for (size_t i = n; i < got.size(); ++i)
    ASSERT_TRUE(std::isnan(got[i])) << "guard " << i - n << " overwritten";
  got.resize(n);
  const auto ref = ref::softcap_f32(x, 30.0);
  const test::Diff d = test::diff(ref, got);
  // fp32: x/cap and *cap round once each, tanhf is within 2 ulp: a few fp32 ulps of |y| <= 30.
  EXPECT_EQ(d.nonfinite, 0u) << d.str(ref, got);
  EXPECT_LE(d.max_abs, 30.0 * 0x1p-21) << d.str(ref, got);
}

class ResidualTest : public ::testing::TestWithParam<int64_t> {};

TEST_P(ResidualTest, FusedEqualsUnfusedAndMatchesReference) {
  FB_SKIP_WITHOUT_GPU();
  const int64_t rows = GetParam();
  const int cols = 5376;
  const auto x = test::random_bf16(rows * cols, kSeed, 8, 4.0f);
  const auto h = test::random_bf16(rows * cols, kSeed, 9, 0.5f);
  const auto w = norm_weight(cols, cuda::NormWeight::direct, 10);
  const std::vector<float> scalar = {0.8125f};
  auto dx = upload(test::to_bits(x));
  auto dh = upload(test::to_bits(h));
  auto dw = upload(w);
  auto ds = upload(scalar);
  const auto* px = reinterpret_cast<const __nv_bfloat16*>(dx.get());
  const auto* ph = reinterpret_cast<const __nv_bfloat16*>(dh.get());
  for (const float* sc : {static_cast<const float*>(nullptr), static_cast<const float*>(ds.get())}) {
    const std::string what =
        std::string("residual rows ") + std::to_string(rows) + (sc ? " with scalar" : "");
    Bf16Buf fused(x.size()), normed(x.size()), unfused(x.size());
    cuda::residual_norm_scale(px, ph, dw.get(), kEps, sc, fused.get(), rows, cols, nullptr);
    cuda::rms_norm(ph, dw.get(), cuda::NormWeight::direct, kEps, normed.get(), rows, cols, nullptr);
    cuda::add(px, normed.get(), unfused.get(), rows * cols, nullptr);
    if (sc) cuda::scale(unfused.get(), sc, unfused.get(), rows * cols, nullptr);
    const auto got = fused.read(what);
    test::expect_bit_exact(unfused.read(what + " unfused"), got, what + ": fused vs unfused");
    test::expect_bf16_close(
        ref::residual_norm_scale_bf16(x, h, rows, cols, w.data(), kEps, sc ? scalar.data() : nullptr), got,
        what + ": vs reference");
  }
}
INSTANTIATE_TEST_SUITE_P(Tokens, ResidualTest, ::testing::Values(1, 4, 512));

// The qwen3.5 step's layer seam: add -> rms_norm -> quantize_activations_q8 in one kernel, bit for
// bit (x in place, the norm output and the Q8 blocks), with and without the add.
struct SeamCase {
  int64_t rows;
  int cols;
  cuda::NormWeight mode;
};
class AddNormQ8Test : public ::testing::TestWithParam<SeamCase> {};

TEST_P(AddNormQ8Test, FusedEqualsAddNormQuantize) {
  FB_SKIP_WITHOUT_GPU();
  const SeamCase c = GetParam();
  const int64_t n = c.rows * c.cols, blocks = n / 32;
  const auto x = test::random_bf16(n, kSeed, 12, 4.0f);
  const auto h = test::random_bf16(n, kSeed, 13, 0.5f);
  const auto w = norm_weight(c.cols, c.mode, 14);
  auto dh = upload(test::to_bits(h));
  auto dw = upload(w);
  const auto* ph = reinterpret_cast<const __nv_bfloat16*>(dh.get());
  auto read_q8 = [&](const DeviceBuffer<Q8Block>& q) {
    std::vector<Q8Block> v(static_cast<size_t>(blocks));
    FB_CUDA_CHECK(cudaMemcpy(v.data(), q.get(), v.size() * sizeof(Q8Block), cudaMemcpyDeviceToHost));
    return v;
  };
  for (const bool with_add : {true, false}) {
    const std::string what = "add_rms_norm_q8 rows " + std::to_string(c.rows) + " cols " +
                             std::to_string(c.cols) + (with_add ? "" : " (no add)");
    Bf16Buf fx(x), ux(x), fout(n), uout(n);
    DeviceBuffer<Q8Block> fq(static_cast<size_t>(blocks)), uq(static_cast<size_t>(blocks));
    FB_CUDA_CHECK(cudaMemset(fq.get(), 0xA5, fq.bytes()));
    FB_CUDA_CHECK(cudaMemset(uq.get(), 0x5A, uq.bytes()));
    const float* pw = c.mode == cuda::NormWeight::none ? nullptr : dw.get();
    cuda::add_rms_norm_q8(fx.get(), with_add ? ph : nullptr, pw, c.mode, kEps, fout.get(), fq.get(), c.rows,
                          c.cols, nullptr);
    if (with_add) cuda::add(ux.get(), ph, ux.get(), n, nullptr);
    cuda::rms_norm(ux.get(), pw, c.mode, kEps, uout.get(), c.rows, c.cols, nullptr);
    cuda::quantize_activations_q8(uout.get(), c.rows, c.cols, uq.get(), nullptr);
    test::expect_bit_exact(ux.read(what + " x unfused"), fx.read(what + " x"), what + ": residual x");
    test::expect_bit_exact(uout.read(what + " unfused"), fout.read(what), what + ": norm output");
    const auto a = read_q8(uq), b = read_q8(fq);
    for (int64_t i = 0; i < blocks; ++i) {
      ASSERT_EQ(0, std::memcmp(&a[i], &b[i], sizeof(Q8Block)))
          << what << ": Q8 block " << i << " differs (d " << a[i].d << " vs " << b[i].d << ", sums "
          << a[i].sum_lo << "/" << a[i].sum_hi << " vs " << b[i].sum_lo << "/" << b[i].sum_hi
          << "); reproduce: ctest -R fb_ops_gpu_test";
    }
  }
}
// qwen hidden 2048 at decode and prefill, gemma's 5376, tiny rows (sub-warp: 4 and 8 threads a row).
INSTANTIATE_TEST_SUITE_P(Shapes, AddNormQ8Test,
                         ::testing::Values(SeamCase{1, 2048, cuda::NormWeight::one_plus},
                                           SeamCase{4, 2048, cuda::NormWeight::one_plus},
                                           SeamCase{512, 2048, cuda::NormWeight::one_plus},
                                           SeamCase{3, 5376, cuda::NormWeight::direct},
                                           SeamCase{77, 32, cuda::NormWeight::one_plus},
                                           SeamCase{9, 64, cuda::NormWeight::none}));

class EmbedTest : public ::testing::TestWithParam<GgmlType> {};

TEST_P(EmbedTest, BitExactToReference) {
  FB_SKIP_WITHOUT_GPU();
  const GgmlType type = GetParam();
  const int64_t vocab = 4096, cols = 5376;
  const auto f = test::random_bf16(vocab * cols, kSeed, 11, 0.05f);
  std::vector<uint8_t> table(ggml_row_bytes(type, cols) * vocab);
  quantize(type, f.data(), table.data(), vocab * cols);
  std::vector<float> deq(vocab * cols);
  dequantize(type, table.data(), deq.data(), vocab * cols);
  std::vector<int32_t> tokens = {0, 4095, 17, 17, 1234, 99, 2048, 7};
  auto dtable = upload(table);
  auto dtok = upload(tokens);
  const float scale = ref::embed_scale(5376);
  for (int64_t t : {1, 4, 8}) {
    Bf16Buf out(t * cols);
    cuda::embed(type, dtable.get(), vocab, cols, dtok.get(), t, scale, out.get(), nullptr);
    const std::vector<int32_t> tk(tokens.begin(), tokens.begin() + t);
    test::expect_bit_exact(ref::embed_bf16([&](int32_t i) { return deq.data() + i * cols; }, tk, cols, scale),
                           out.read("embed"),
                           "embed " + std::string(ggml_type_name(type)) + " T=" + std::to_string(t));
  }
  // A token outside the vocabulary poisons its row instead of reading out of bounds.
  auto bad = upload(std::vector<int32_t>{-1, static_cast<int32_t>(vocab)});
  Bf16Buf out(2 * cols);
  cuda::embed(type, dtable.get(), vocab, cols, bad.get(), 2, scale, out.get(), nullptr);
  for (float v : out.read("embed bad token")) ASSERT_TRUE(std::isnan(v));
}
INSTANTIATE_TEST_SUITE_P(Types, EmbedTest, ::testing::Values(GgmlType::Q6_K, GgmlType::BF16),
                         [](const auto& i) { return std::string(ggml_type_name(i.param)); });

}  // namespace
}  // namespace fb
