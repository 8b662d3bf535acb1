// W4A8 / W6A8 decode matvec on the GPU against the CPU references (reference/matvec,
// reference/layouts). What each test shows when it fails:
//   ActQuantBitExact        the per-32 int8 activation quantization differs from the CPU contract.
//   Matvec/* (per format, M, shape):
//     vs "emulated"  (fp64 of exactly the weights the layout stores x the quantized activations):
//                    every element within 1 bf16 ulp + an fp32-accumulation bound -> kernel math.
//     vs "truth"     (fp64 of ggml's dequant of the original blocks x the bf16 activations):
//                    cosine >= 0.9999 and NMSE <= 3e-4 (outlier inputs); the NMSE is printed. The issue's
//                    1e-5 NMSE target cannot hold here: int8 per-32 activations alone give ~2.8e-5 on
//                    Gaussian data, the bf16 zero of the int4 layout ~1.6e-5 (reference tests measure both).
//   FusedRowConcatBitExact  one launch over [gate; up] vs two launches: bits must match (DESIGN §4).
//   GluEpilogue*            act(gate)*up in the epilogue vs matvec + glu_bf16: bits must match; and
//                           vs the fp64 GLU of the truth: cosine.
//   Variants/*              every launch variant (w4a8_matvec_tuning.cuh), through w4a8_matvec and
//                           through w4a8_matvec_bf16 (PDL after the quantize kernel), vs the legacy
//                           kernel: bits must match (same per-row arithmetic, any rows/warp and grid).
// Inputs: seeded Gaussian weights quantized by ggml's reference quantizers, Gaussian bf16
// activations with outliers; outputs poisoned with NaN; guard words after every output.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "kernels/common/cuda_check.h"
#include "kernels/gemv/w4a8_matvec.cuh"
#include "kernels/gemv/w4a8_matvec_tuning.cuh"
#include "reference/formats/blocks.h"
#include "reference/formats/half.h"
#include "reference/formats/quantize.h"
#include "reference/layouts/layouts.h"
#include "reference/matvec/matvec_ref.h"
#include "reference/util/splitmix.h"

namespace fb::cuda {
// gtest prints parameters through ADL: name the format instead of dumping its bytes.
inline void PrintTo(MatvecFormat f, std::ostream* os) { *os << to_string(f); }
}  // namespace fb::cuda

namespace fb {
namespace {

using cuda::MatvecEpilogue;
using cuda::MatvecFormat;

constexpr uint64_t kSeed = 20261121;
constexpr uint16_t kPoison = 0x7FBA;  // a bf16 NaN nothing computes
constexpr uint16_t kGuard = 0xF00D;
constexpr size_t kGuardElems = 64;

#define SKIP_WITHOUT_DEVICE()                                              \
  do {                                                                     \
    if (auto why = cuda_device_unavailable_reason()) GTEST_SKIP() << *why; \
  } while (0)

template <class T>
DeviceBuffer<T> upload(const std::vector<T>& v) {
  DeviceBuffer<T> d(v.size());
  if (!v.empty()) FB_CUDA_CHECK(cudaMemcpy(d.get(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

bool is_q6(MatvecFormat f) {
  return f == MatvecFormat::int6_bf16 || f == MatvecFormat::int6_i8 || f == MatvecFormat::q6_k;
}

// Host weights of one format and everything needed for its device copy and its references.
struct HostWeights {
  MatvecFormat format;
  int64_t n = 0, k = 0;
  std::vector<uint8_t> blocks;  // the original ggml blocks (truth)
  CoalescedInt4 i4;
  PlanarInt6 i6;
  // device
  DeviceBuffer<uint8_t> d_q, d_qh, d_s, d_z;
  DeviceBuffer<uint16_t> d_ss, d_zs;

  double layout_weight(int64_t r, int64_t c) const {
    if (format == MatvecFormat::int4_bf16 || format == MatvecFormat::int4_u8) return i4.weight(r, c);
    if (format == MatvecFormat::int6_bf16 || format == MatvecFormat::int6_i8) return i6.weight(r, c);
    return NAN;  // ggml formats: the truth weights (set up by the caller)
  }
};

std::vector<uint8_t> ggml_blocks(GgmlType type, int64_t n, int64_t k, uint64_t stream) {
  const CounterRng rng(kSeed, stream);
  std::vector<float> w(static_cast<size_t>(n * k));
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0.02f * rng.normal(i) + 0.002f * rng.normal(i + w.size());
  std::vector<uint8_t> b(ggml_row_bytes(type, k) * static_cast<size_t>(n));
  quantize(type, w.data(), b.data(), n * k);
  return b;
}

template <class T>
std::vector<uint8_t> as_bytes(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

void make_device(HostWeights& h) {
  switch (h.format) {
    case MatvecFormat::int4_bf16:
    case MatvecFormat::int4_u8: {
      const bool u8 = h.format == MatvecFormat::int4_u8;
      h.i4 = pack_q4k_coalesced(reinterpret_cast<const BlockQ4K*>(h.blocks.data()), h.n, h.k,
                                u8 ? ScaleEncoding::code8 : ScaleEncoding::bf16);
      h.d_q = upload(h.i4.qdata);
      h.d_s = upload(u8 ? h.i4.scale_code : as_bytes(h.i4.scale_bf16));
      h.d_z = upload(u8 ? h.i4.zero_code : as_bytes(h.i4.zero_bf16));
      h.d_ss = upload(h.i4.scale_step);
      h.d_zs = upload(h.i4.zero_step);
      break;
    }
    case MatvecFormat::int6_bf16:
    case MatvecFormat::int6_i8: {
      const bool i8 = h.format == MatvecFormat::int6_i8;
      h.i6 = pack_q6k_planar(reinterpret_cast<const BlockQ6K*>(h.blocks.data()), h.n, h.k,
                             i8 ? ScaleEncoding::code8 : ScaleEncoding::bf16);
      h.d_q = upload(h.i6.ql);
      h.d_qh = upload(h.i6.qh);
      h.d_s = upload(i8 ? as_bytes(h.i6.scale_code) : as_bytes(h.i6.scale_bf16));
      h.d_ss = upload(h.i6.scale_step);
      break;
    }
    default:
      h.d_q = upload(h.blocks);
  }
}

cuda::MatvecWeights view(const HostWeights& h) {
  cuda::MatvecWeights w;
  w.format = h.format;
  w.n = h.n;
  w.k = h.k;
  w.qdata = h.d_q.get();
  w.qhigh = h.d_qh.get();
  w.scale = h.d_s.get();
  w.zero = h.d_z.get();
  w.scale_step = h.d_ss.get();
  w.zero_step = h.d_zs.get();
  return w;
}

std::vector<uint16_t> random_activations(int64_t m, int64_t k, uint64_t stream) {
  const CounterRng rng(kSeed, stream);
  std::vector<uint16_t> x(static_cast<size_t>(m * k));
  for (size_t i = 0; i < x.size(); ++i) {
    float v = rng.normal(i);
    if (rng.bits(i + x.size()) % 97 == 0) v *= 12.0f;  // outliers, as in real hidden states
    x[i] = fp32_to_bf16(v);
  }
  return x;
}

// Output buffer with NaN poison and trailing guard words.
struct OutBuf {
  size_t n;
  DeviceBuffer<uint16_t> d;
  explicit OutBuf(size_t count) : n(count), d(count + kGuardElems) {
    std::vector<uint16_t> init(count, kPoison);
    init.insert(init.end(), kGuardElems, kGuard);
    FB_CUDA_CHECK(cudaMemcpy(d.get(), init.data(), init.size() * 2, cudaMemcpyHostToDevice));
  }
  __nv_bfloat16* ptr() const { return reinterpret_cast<__nv_bfloat16*>(d.get()); }
  std::vector<uint16_t> download() const {
    std::vector<uint16_t> v(n + kGuardElems);
    FB_CUDA_CHECK(cudaDeviceSynchronize());
    FB_CUDA_CHECK(cudaMemcpy(v.data(), d.get(), v.size() * 2, cudaMemcpyDeviceToHost));
    for (size_t i = n; i < v.size(); ++i) EXPECT_EQ(v[i], kGuard) << "guard word " << i - n << " overwritten";
    v.resize(n);
    return v;
  }
};

struct Stats {
  double nmse = 0, cosine = 0, max_abs = 0;
  int64_t worst = -1, nonfinite = 0;
};
Stats compare(const std::vector<uint16_t>& got, const std::vector<double>& ref) {
  Stats s;
  double e = 0, r2 = 0, g2 = 0, gr = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = bf16_to_fp32(got[i]);
    if (!std::isfinite(g)) {
      ++s.nonfinite;
      continue;
    }
    e += (g - ref[i]) * (g - ref[i]);
    r2 += ref[i] * ref[i];
    g2 += g * g;
    gr += g * ref[i];
    if (std::fabs(g - ref[i]) > s.max_abs) {
      s.max_abs = std::fabs(g - ref[i]);
      s.worst = static_cast<int64_t>(i);
    }
  }
  s.nmse = e / r2;
  s.cosine = gr / std::sqrt(g2 * r2);
  return s;
}

double bf16_ulp(double v) {
  const int e = std::ilogb(std::fabs(static_cast<float>(v)) > 0 ? v : 1e-30);
  return std::ldexp(1.0, e - 7);
}

struct MatvecCase {
  MatvecFormat format;
  int64_t m, n, k;
};
std::string case_name(const MatvecCase& c) {
  std::ostringstream os;
  os << cuda::to_string(c.format) << "_M" << c.m << "_" << c.n << "x" << c.k;
  return os.str();
}
void PrintTo(const MatvecCase& c, std::ostream* os) { *os << case_name(c); }

class Matvec : public ::testing::TestWithParam<MatvecCase> {};

TEST_P(Matvec, AgainstEmulatedAndTruth) {
  SKIP_WITHOUT_DEVICE();
  const MatvecCase c = GetParam();
  const std::string repro = "ctest -R 'fb_w4a8_matvec_gpu_test.*" + case_name(c) + "' --output-on-failure";
  const GgmlType type = is_q6(c.format) ? GgmlType::Q6_K : GgmlType::Q4_K;
  HostWeights h;
  h.format = c.format;
  h.n = c.n;
  h.k = c.k;
  h.blocks = ggml_blocks(type, c.n, c.k, 1);
  make_device(h);
  const auto x = random_activations(c.m, c.k, 2);
  std::vector<Q8Block> q8(static_cast<size_t>(c.m * c.k / 32));
  quantize_activations_q8(x.data(), c.m, c.k, q8.data());

  auto d_x = upload(x);
  DeviceBuffer<Q8Block> d_q8(q8.size());
  OutBuf y(static_cast<size_t>(c.m * c.n));
  cuda::w4a8_matvec_bf16(view(h), reinterpret_cast<const __nv_bfloat16*>(d_x.get()), c.m, d_q8.get(), y.ptr(),
                         MatvecEpilogue::none, nullptr);
  const auto got = y.download();

  const auto truth_rows = ggml_weight_rows(type, h.blocks.data(), c.k);
  const bool ggml = c.format == MatvecFormat::q4_k || c.format == MatvecFormat::q6_k;
  auto layout_rows = [&](int64_t r, double* d) {
    if (ggml) return truth_rows(r, d);
    for (int64_t j = 0; j < c.k; ++j) d[j] = h.layout_weight(r, j);
  };
  const auto xq = activations_q8_to_double(q8.data(), c.m, c.k);
  const auto emu = matvec_fp64(c.m, c.n, c.k, layout_rows, xq);
  // sum |w||x| per output: the scale of fp32 accumulation error.
  std::vector<double> absx(xq.size());
  for (size_t i = 0; i < xq.size(); ++i) absx[i] = std::fabs(xq[i]);
  const auto mag = matvec_fp64(
      c.m, c.n, c.k,
      [&](int64_t r, double* d) {
        layout_rows(r, d);
        for (int64_t j = 0; j < c.k; ++j) d[j] = std::fabs(d[j]);
      },
      absx);
  const auto truth = matvec_fp64(c.m, c.n, c.k, truth_rows, activations_bf16_to_double(x.data(), c.m, c.k));

  int64_t bad = 0, first_bad = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = bf16_to_fp32(got[i]);
    const double tol = bf16_ulp(emu[i]) + std::ldexp(mag[i], -18);
    if (!(std::fabs(g - emu[i]) <= tol)) {
      if (first_bad < 0) first_bad = static_cast<int64_t>(i);
      ++bad;
    }
  }
  const Stats se = compare(got, emu), st = compare(got, truth);
  std::printf("%s: vs emulated NMSE %.3g cos %.9f; vs truth NMSE %.3g cos %.9f max_abs %.3g @%lld\n",
              case_name(c).c_str(), se.nmse, se.cosine, st.nmse, st.cosine, st.max_abs,
              static_cast<long long>(st.worst));
  EXPECT_EQ(st.nonfinite, 0) << "NaN/inf (poison not overwritten?) " << repro;
  EXPECT_EQ(bad, 0) << bad
                    << " outputs off the emulated W4A8 result by more than 1 bf16 ulp + fp32 bound; first at "
                    << first_bad << " (token " << first_bad / c.n << ", row " << first_bad % c.n << "): got "
                    << (first_bad >= 0 ? bf16_to_fp32(got[first_bad]) : 0.0) << " want "
                    << (first_bad >= 0 ? emu[first_bad] : 0.0) << "; seed " << kSeed << "; " << repro;
  EXPECT_GE(st.cosine, 0.9999) << repro;
  // These activations carry 12-sigma outliers in 1 of 97 elements, which coarsen their blocks' int8
  // step: the CPU emulation measures NMSE 1.1e-4 (activation quantization alone) and 1.4e-4
  // (u8 layout) at 256x5376, M = 4. 3e-4 bounds that; the kernel itself is held by the emulated check.
  EXPECT_LE(st.nmse, 3e-4) << repro;
}

std::vector<MatvecCase> matvec_cases() {
  std::vector<MatvecCase> v;
  for (MatvecFormat f : {MatvecFormat::int4_bf16, MatvecFormat::int4_u8, MatvecFormat::int6_bf16,
                         MatvecFormat::int6_i8, MatvecFormat::q4_k, MatvecFormat::q6_k}) {
    for (int64_t m = 1; m <= 4; ++m) v.push_back({f, m, 77, 512});  // odd N: the lone last row
    v.push_back({f, 1, 256, 5376});                                 // gemma hidden K, uneven lanes
    v.push_back({f, 4, 130, 2304});
    v.push_back({f, 2, 64, 21504});  // down projection K
  }
  return v;
}
INSTANTIATE_TEST_SUITE_P(Formats, Matvec, ::testing::ValuesIn(matvec_cases()),
                         [](const auto& info) { return case_name(info.param); });

TEST(W4A8, ActQuantBitExact) {
  SKIP_WITHOUT_DEVICE();
  const int64_t m = 3, k = 4096;
  auto x = random_activations(m, k, 3);
  for (int i = 0; i < 32; ++i) x[static_cast<size_t>(64 + i)] = 0;  // an all-zero block: d = 0
  x[200] = fp32_to_bf16(-0.0f);
  std::vector<Q8Block> ref(static_cast<size_t>(m * k / 32));
  quantize_activations_q8(x.data(), m, k, ref.data());
  auto d_x = upload(x);
  DeviceBuffer<Q8Block> d_q(ref.size());
  FB_CUDA_CHECK(cudaMemset(d_q.get(), 0xFF, d_q.bytes()));
  cuda::quantize_activations_q8(reinterpret_cast<const __nv_bfloat16*>(d_x.get()), m, k, d_q.get(), nullptr);
  std::vector<Q8Block> got(ref.size());
  FB_CUDA_CHECK(cudaDeviceSynchronize());
  FB_CUDA_CHECK(cudaMemcpy(got.data(), d_q.get(), d_q.bytes(), cudaMemcpyDeviceToHost));
  int64_t mismatches = 0;
  for (size_t b = 0; b < ref.size(); ++b) {
    if (std::memcmp(&ref[b], &got[b], sizeof(Q8Block)) != 0) {
      if (mismatches++ == 0)
        ADD_FAILURE() << "block " << b << " (token " << b / (k / 32) << ", group " << b % (k / 32) << "): d "
                      << got[b].d << " vs " << ref[b].d << ", sums " << got[b].sum_lo << "/" << got[b].sum_hi
                      << " vs " << ref[b].sum_lo << "/" << ref[b].sum_hi;
    }
  }
  EXPECT_EQ(mismatches, 0) << "of " << ref.size() << " blocks; seed " << kSeed;
}

// [gate; up] as one row-concatenated layout and one launch vs two launches on the parts.
class Fused : public ::testing::TestWithParam<MatvecFormat> {};

TEST_P(Fused, RowConcatBitExactAndGluEpilogue) {
  SKIP_WITHOUT_DEVICE();
  const MatvecFormat f = GetParam();
  const GgmlType type = is_q6(f) ? GgmlType::Q6_K : GgmlType::Q4_K;
  const int64_t inter = 333, k = 1536;
  HostWeights gate, up, both;
  for (HostWeights* h : {&gate, &up, &both}) {
    h->format = f;
    h->k = k;
  }
  gate.n = up.n = inter;
  both.n = 2 * inter;
  gate.blocks = ggml_blocks(type, inter, k, 10);
  up.blocks = ggml_blocks(type, inter, k, 11);
  both.blocks = gate.blocks;
  both.blocks.insert(both.blocks.end(), up.blocks.begin(), up.blocks.end());
  make_device(gate);
  make_device(up);
  make_device(both);
  for (int64_t m = 1; m <= 4; ++m) {
    SCOPED_TRACE("M = " + std::to_string(m) + ", format " + cuda::to_string(f));
    const auto x = random_activations(m, k, 20 + m);
    auto d_x = upload(x);
    DeviceBuffer<Q8Block> d_q8(static_cast<size_t>(m * k / 32));
    cuda::quantize_activations_q8(reinterpret_cast<const __nv_bfloat16*>(d_x.get()), m, k, d_q8.get(),
                                  nullptr);
    OutBuf fused(static_cast<size_t>(m * 2 * inter)), yg(static_cast<size_t>(m * inter)),
        yu(static_cast<size_t>(m * inter));
    cuda::w4a8_matvec(view(both), d_q8.get(), m, fused.ptr(), MatvecEpilogue::none, nullptr);
    cuda::w4a8_matvec(view(gate), d_q8.get(), m, yg.ptr(), MatvecEpilogue::none, nullptr);
    cuda::w4a8_matvec(view(up), d_q8.get(), m, yu.ptr(), MatvecEpilogue::none, nullptr);
    const auto a = fused.download(), g = yg.download(), u = yu.download();
    int64_t diff = 0;
    for (int64_t t = 0; t < m; ++t)
      for (int64_t i = 0; i < inter; ++i) {
        diff += a[static_cast<size_t>(t * 2 * inter + i)] != g[static_cast<size_t>(t * inter + i)];
        diff += a[static_cast<size_t>(t * 2 * inter + inter + i)] != u[static_cast<size_t>(t * inter + i)];
      }
    EXPECT_EQ(diff, 0) << "fused [gate; up] differs from separate launches in " << diff << " outputs";

    for (MatvecEpilogue ep : {MatvecEpilogue::glu_gelu_tanh, MatvecEpilogue::glu_silu}) {
      OutBuf epi(static_cast<size_t>(m * inter)), twin(static_cast<size_t>(m * inter));
      cuda::w4a8_matvec(view(both), d_q8.get(), m, epi.ptr(), ep, nullptr);
      cuda::glu_bf16(fused.ptr(), m, inter, ep, twin.ptr(), nullptr);
      const auto e = epi.download(), tw = twin.download();
      int64_t d2 = 0;
      for (size_t i = 0; i < e.size(); ++i) d2 += e[i] != tw[i];
      EXPECT_EQ(d2, 0) << "GLU epilogue vs matvec + glu_bf16 differ in " << d2 << " outputs";
      const GluAct act = ep == MatvecEpilogue::glu_silu ? GluAct::silu : GluAct::gelu_tanh;
      const auto truth = glu_fp64(matvec_fp64(m, 2 * inter, k, ggml_weight_rows(type, both.blocks.data(), k),
                                              activations_bf16_to_double(x.data(), m, k)),
                                  m, inter, act);
      const Stats s = compare(e, truth);
      std::printf("%s M%lld %s epilogue vs fp64 truth: NMSE %.3g cos %.9f\n", cuda::to_string(f),
                  static_cast<long long>(m), to_string(act), s.nmse, s.cosine);
      EXPECT_EQ(s.nonfinite, 0);
      EXPECT_GE(s.cosine, 0.9995);  // gate and up errors add, GELU slope: as the gate_up_act table entry
    }
  }
}
INSTANTIATE_TEST_SUITE_P(Formats, Fused,
                         ::testing::Values(MatvecFormat::int4_bf16, MatvecFormat::int4_u8,
                                           MatvecFormat::int6_bf16, MatvecFormat::int6_i8, MatvecFormat::q4_k,
                                           MatvecFormat::q6_k),
                         [](const auto& info) { return std::string(cuda::to_string(info.param)); });

// Every launch variant against the legacy kernel, bit for bit, on shapes that hit their edges:
// a lone last row, one row, K = 256 (lanes without units), more tasks than resident warps (the
// dynamic task loop), GLU pairs with an odd half, K = 21504 at M = 4 (past the shared-memory
// budget: falls back to legacy) and K = 2048 with n >= 8192 (auto's r6u2 class; partial last tasks
// of 6 rows / 3 GLU pairs).
class Variants : public ::testing::TestWithParam<MatvecFormat> {};

TEST_P(Variants, BitExactWithLegacy) {
  SKIP_WITHOUT_DEVICE();
  const MatvecFormat f = GetParam();
  const GgmlType type = is_q6(f) ? GgmlType::Q6_K : GgmlType::Q4_K;
  const int legacy = cuda::matvec_tuning::variant_index("legacy");
  ASSERT_GE(legacy, 0);
  struct Shape {
    int64_t n, k;
    bool glu;
  };
  const Shape shapes[] = {{77, 512, false},      {1, 256, false},       {20001, 256, false},
                          {1000, 5376, false},   {64, 21504, false},    {2 * 333, 1536, true},
                          {2, 256, true},        {2 * 9000, 512, true}, {8194, 2048, false},
                          {2 * 4097, 2048, true}};
  uint64_t stream = 40;
  for (const Shape& sh : shapes) {
    HostWeights h;
    h.format = f;
    h.n = sh.n;
    h.k = sh.k;
    h.blocks = ggml_blocks(type, sh.n, sh.k, stream++);
    make_device(h);
    for (int64_t m = 1; m <= 4; ++m) {
      const auto x = random_activations(m, sh.k, stream++);
      auto d_x = upload(x);
      DeviceBuffer<Q8Block> d_q8(static_cast<size_t>(m * sh.k / 32));
      const auto* xp = reinterpret_cast<const __nv_bfloat16*>(d_x.get());
      cuda::quantize_activations_q8(xp, m, sh.k, d_q8.get(), nullptr);
      const MatvecEpilogue ep = sh.glu ? MatvecEpilogue::glu_gelu_tanh : MatvecEpilogue::none;
      const size_t out = static_cast<size_t>(m * (sh.glu ? sh.n / 2 : sh.n));
      cuda::matvec_tuning::set_variant(legacy);
      OutBuf want(out);
      cuda::w4a8_matvec(view(h), d_q8.get(), m, want.ptr(), ep, nullptr);
      const auto ref = want.download();
      for (int v = 0; v < cuda::matvec_tuning::variant_count(); ++v) {
        const std::string what = std::string(cuda::to_string(f)) + " " + std::to_string(sh.n) + "x" +
                                 std::to_string(sh.k) + (sh.glu ? " glu" : "") + " M" + std::to_string(m) +
                                 " variant " + cuda::matvec_tuning::variant_name(v);
        cuda::matvec_tuning::set_variant(v);
        OutBuf plain(out), fused(out);
        DeviceBuffer<Q8Block> ws(static_cast<size_t>(m * sh.k / 32));
        cuda::w4a8_matvec(view(h), d_q8.get(), m, plain.ptr(), ep, nullptr);
        cuda::w4a8_matvec_bf16(view(h), xp, m, ws.get(), fused.ptr(), ep, nullptr);
        const auto a = plain.download(), b = fused.download();
        int64_t da = 0, db = 0, first = -1;
        for (size_t i = 0; i < out; ++i) {
          if (a[i] != ref[i] && first < 0) first = static_cast<int64_t>(i);
          da += a[i] != ref[i];
          db += b[i] != ref[i];
        }
        EXPECT_EQ(da, 0) << what << ": w4a8_matvec differs from legacy in " << da << " outputs, first "
                         << first << "; repro: ctest -R fb_w4a8_matvec_gpu_test --output-on-failure";
        EXPECT_EQ(db, 0) << what << ": w4a8_matvec_bf16 (PDL) differs from legacy in " << db << " outputs";
        // The workspace holds the quantized activations afterwards, also where the matvec kernel
        // quantized x itself (the small-K class): bit for bit what quantize_activations_q8 wrote.
        std::vector<Q8Block> q_want(d_q8.size()), q_got(ws.size());
        FB_CUDA_CHECK(cudaMemcpy(q_want.data(), d_q8.get(), d_q8.bytes(), cudaMemcpyDeviceToHost));
        FB_CUDA_CHECK(cudaMemcpy(q_got.data(), ws.get(), ws.bytes(), cudaMemcpyDeviceToHost));
        EXPECT_EQ(std::memcmp(q_want.data(), q_got.data(), d_q8.bytes()), 0)
            << what << ": w4a8_matvec_bf16 left a workspace that differs from quantize_activations_q8";
      }
      cuda::matvec_tuning::set_variant(-1);
    }
  }
}
INSTANTIATE_TEST_SUITE_P(Formats, Variants,
                         ::testing::Values(MatvecFormat::int4_bf16, MatvecFormat::int4_u8,
                                           MatvecFormat::int6_bf16, MatvecFormat::int6_i8),
                         [](const auto& info) { return std::string(cuda::to_string(info.param)); });

}  // namespace
}  // namespace fb
