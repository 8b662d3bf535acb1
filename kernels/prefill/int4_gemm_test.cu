// The fused int4 dequant-GEMM (int4_gemm.cuh):
//  - the device dequant (int4_dequantize_bf16, the same device function the GEMM tiles use) equals
//    the CPU rule of int4_dequant_rule.h bit for bit, both scale encodings, every weight;
//  - the GEMM vs fp64 over those bf16 weights (sampled output), every tile config, odd T, T not a
//    multiple of the tile, N not a multiple of the tile, K = 5376 and 21504;
//  - the GEMM vs its unfused twin (dequant to bf16 + cuBLAS): the same products, another
//    accumulation order, so bounded by tolerance (not bits).
// Timings printed here are informational (`fusebench bench` is the measurement).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <ostream>
#include <string>
#include <vector>

#include <cuda_bf16.h>  // test_util.h uses __nv_bfloat16 without including it

#include "kernels/ops/test_util.h"
#include "kernels/prefill/int4_dequant_rule.h"
#include "kernels/prefill/int4_gemm.cuh"
#include "kernels/prefill/prefill.cuh"
#include "reference/formats/blocks.h"
#include "reference/formats/centred_q4k.h"
#include "reference/formats/half.h"
#include "reference/layouts/layouts.h"
#include "reference/ops/ops.h"

namespace fb {
namespace {

using test::Bf16Buf;
using test::upload;
constexpr uint64_t kSeed = 4242;

std::vector<BlockQ4K> q4k_blocks(int64_t rows, int64_t k, uint64_t stream) {
  return centred_q4k_blocks(rows, k, kSeed, stream);
}

// The layout on the device plus the view the kernels take.
struct DevLayout {
  CoalescedInt4 host;
  DeviceBuffer<uint8_t> q, s, z, ss, zs;
  cuda::Int4GemmWeights view;
};
DevLayout make_layout(int64_t n, int64_t k, ScaleEncoding enc, uint64_t stream) {
  DevLayout d;
  const auto blocks = q4k_blocks(n, k, stream);
  d.host = pack_q4k_coalesced(blocks.data(), n, k, enc);
  const CoalescedInt4& t = d.host;
  auto up = [](const void* p, size_t bytes) {
    DeviceBuffer<uint8_t> b(std::max<size_t>(bytes, 16));
    if (bytes) FB_CUDA_CHECK(cudaMemcpy(b.get(), p, bytes, cudaMemcpyHostToDevice));
    return b;
  };
  const bool u8 = enc == ScaleEncoding::code8;
  d.q = up(t.qdata.data(), t.qdata.size());
  d.s = u8 ? up(t.scale_code.data(), t.scale_code.size()) : up(t.scale_bf16.data(), t.scale_bf16.size() * 2);
  d.z = u8 ? up(t.zero_code.data(), t.zero_code.size()) : up(t.zero_bf16.data(), t.zero_bf16.size() * 2);
  d.ss = up(t.scale_step.data(), t.scale_step.size() * 2);
  d.zs = up(t.zero_step.data(), t.zero_step.size() * 2);
  d.view = {n,
            k,
            u8,
            d.q.get(),
            d.s.get(),
            d.z.get(),
            reinterpret_cast<const uint16_t*>(d.ss.get()),
            reinterpret_cast<const uint16_t*>(d.zs.get())};
  return d;
}

// The CPU rule: bf16 bits of weight (row, col).
uint16_t cpu_weight_bits(const CoalescedInt4& t, int64_t row, int64_t col) {
  return fp32_to_bf16(
      int4_dequant_fp32(static_cast<uint32_t>(t.q(row, col)), t.scale(row, col / 32), t.zero(row, col / 32)));
}

TEST(Int4Dequant, DeviceEqualsCpuRuleBitForBit) {
  FB_SKIP_WITHOUT_GPU();
  for (ScaleEncoding enc : {ScaleEncoding::bf16, ScaleEncoding::code8}) {
    const int64_t n = 301, k = 1024;
    DevLayout d = make_layout(n, k, enc, 11);
    Bf16Buf out(static_cast<size_t>(n * k));
    cuda::int4_dequantize_bf16(d.view, out.get(), nullptr);
    const auto got = out.read("dequant");
    size_t bad = 0, first = 0;
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < k; ++c) {
        const size_t i = static_cast<size_t>(r * k + c);
        if (fp32_to_bf16(got[i]) != cpu_weight_bits(d.host, r, c) && bad++ == 0) first = i;
      }
    EXPECT_EQ(bad, 0u) << (enc == ScaleEncoding::bf16 ? "bf16" : "u8") << " encoding: first mismatch at row "
                       << first / k << " col " << first % k;
    // For the bf16 encoding the rule is the exact weight rounded once.
    if (enc == ScaleEncoding::bf16)
      for (int64_t c = 0; c < k; ++c)
        ASSERT_EQ(cpu_weight_bits(d.host, 7, c), fp32_to_bf16(static_cast<float>(d.host.weight(7, c))));
  }
}

std::vector<int64_t> sample(int64_t n, int64_t count, uint64_t stream, std::vector<int64_t> must) {
  std::vector<int64_t> s;
  for (int64_t v : must)
    if (v >= 0 && v < n) s.push_back(v);
  if (count >= n) {
    s.clear();
    for (int64_t i = 0; i < n; ++i) s.push_back(i);
    return s;
  }
  const CounterRng rng(kSeed, stream);
  for (int64_t i = 0; static_cast<int64_t>(s.size()) < count; ++i)
    s.push_back(static_cast<int64_t>(rng.bits(i) % static_cast<uint64_t>(n)));
  return s;
}

std::vector<float> pick(const std::vector<float>& y, int64_t n, const std::vector<int64_t>& rows,
                        const std::vector<int64_t>& cols) {
  std::vector<float> out;
  for (int64_t r : rows)
    for (int64_t c : cols) out.push_back(y[static_cast<size_t>(r * n + c)]);
  return out;
}

// fp64 over the rule's bf16 weights and the bf16 x, rounded to bf16.
std::vector<float> reference(const CoalescedInt4& t, const std::vector<float>& x,
                             const std::vector<int64_t>& rows, const std::vector<int64_t>& cols) {
  const int64_t k = t.k;
  std::vector<std::vector<float>> w(cols.size(), std::vector<float>(static_cast<size_t>(k)));
  std::vector<const float*> wp, xp;
  for (size_t j = 0; j < cols.size(); ++j) {
    for (int64_t c = 0; c < k; ++c) w[j][c] = bf16_to_fp32(cpu_weight_bits(t, cols[j], c));
    wp.push_back(w[j].data());
  }
  for (int64_t r : rows) xp.push_back(x.data() + r * k);
  return ref::gemm_sampled_bf16(xp, wp, k);
}

struct GemmCase {
  const char* name;
  int64_t m, n, k;
  bool u8;
};

// gtest prints the case by name, not as raw bytes.
void PrintTo(const GemmCase& c, std::ostream* os) { *os << c.name; }

class Int4GemmTest : public ::testing::TestWithParam<GemmCase> {};

TEST_P(Int4GemmTest, MatchesFp64AndTwin) {
  FB_SKIP_WITHOUT_GPU();
  const GemmCase c = GetParam();
  DevLayout d = make_layout(c.n, c.k, c.u8 ? ScaleEncoding::code8 : ScaleEncoding::bf16, 21);
  const auto x = test::random_bf16(static_cast<size_t>(c.m * c.k), kSeed, 22);
  auto dx = upload(test::to_bits(x));
  const auto* px = reinterpret_cast<const __nv_bfloat16*>(dx.get());
  Stream s;
  const auto rows = sample(c.m, 40, 3, {0, c.m - 1, c.m / 2});
  const auto cols = sample(c.n, 160, 4, {0, c.n - 1, c.n / 2});
  const auto ref = reference(d.host, x, rows, cols);

  // Unfused twin: dequantize to bf16 (same device function), then cuBLAS.
  DeviceBuffer<__nv_bfloat16> wbuf(static_cast<size_t>(c.n * c.k));
  cuda::CublasHandle h;
  Bf16Buf y_twin(static_cast<size_t>(c.m * c.n));
  cuda::int4_dequantize_bf16(d.view, wbuf.get(), s.get());
  cuda::gemm_bf16(h.get(), px, wbuf.get(), y_twin.get(), c.m, c.n, c.k, c.n, s.get());
  s.synchronize();
  const auto twin = y_twin.read("twin");

  std::vector<cuda::Int4GemmTile> tiles = {cuda::Int4GemmTile::automatic};
  for (auto t : cuda::kInt4GemmTiles) tiles.push_back(t);
  for (auto tile : tiles) {
    const std::string what = std::string(c.name) + " tile " + cuda::to_string(tile);
    Bf16Buf y(static_cast<size_t>(c.m * c.n));
    cuda::int4_gemm(d.view, px, c.m, y.get(), c.n, tile, s.get());
    s.synchronize();
    const auto got = y.read(what);
    size_t nonfinite = 0;
    for (float v : got) nonfinite += !std::isfinite(v);
    ASSERT_EQ(nonfinite, 0u) << what << ": unwritten (poisoned) or non-finite outputs";
    test::expect_bf16_close(ref, pick(got, c.n, rows, cols), what + " vs fp64 (sampled)");
    test::expect_bf16_close(twin, got, what + " vs dequant+cuBLAS twin (all outputs)");
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, Int4GemmTest,
                         ::testing::Values(GemmCase{"tiny_T5", 5, 256, 256, false},
                                           GemmCase{"odd_T77_N1000", 77, 1000, 512, false},
                                           GemmCase{"odd_T333_u8", 333, 1032, 5376, true},
                                           GemmCase{"T130_K21504", 130, 776, 21504, false},
                                           GemmCase{"T257_N5376_u8", 257, 5376, 5376, true},
                                           GemmCase{"gate_up_T512", 512, 43008, 5376, false},
                                           GemmCase{"gate_up_T2048", 2048, 43008, 5376, false},
                                           GemmCase{"gate_up_T512_u8", 512, 43008, 5376, true},
                                           GemmCase{"down_T512", 512, 5376, 21504, false},
                                           GemmCase{"down_T2048", 2048, 5376, 21504, false}),
                         [](const auto& i) { return std::string(i.param.name); });

TEST(Int4GemmApi, RejectsBadArguments) {
  cuda::Int4GemmWeights w;
  w.n = 128;
  w.k = 100;  // not a multiple of 256
  EXPECT_THROW(cuda::int4_gemm(w, nullptr, 8, nullptr, 128, cuda::Int4GemmTile::automatic, nullptr),
               std::invalid_argument);
}

}  // namespace
}  // namespace fb
