// The prefill baseline (dequant -> bf16 -> cuBLAS GEMM) and the chunked lm_head.
//  - GEMM vs fp64 truth (reference/ops gemm_sampled_bf16) on seeded samples of output rows/cols.
//  - lm_head chunked vs its unchunked twin: every logit bit for bit, at the real N = 262144,
//    K = 5376, Q6_K; and the device memory the chunked path holds beyond its inputs and outputs.
// Timings printed here are informational (the suite's `fusebench bench` is the measurement).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "kernels/dequant/dequantize.cuh"
#include "kernels/ops/test_util.h"
#include "kernels/prefill/prefill.cuh"
#include "reference/formats/blocks.h"
#include "reference/formats/dequantize.h"
#include "reference/formats/ggml_type.h"
#include "reference/ops/ops.h"

namespace fb {
namespace {

using test::Bf16Buf;
using test::upload;
constexpr uint64_t kSeed = 777;

// Seeded random blocks: random quant bits, fp16 scales in a realistic weight range (never 0/NaN).
std::vector<uint8_t> random_blocks(GgmlType type, int64_t rows, int64_t k, uint64_t stream) {
  const size_t rb = ggml_row_bytes(type, k);
  std::vector<uint8_t> b(rb * rows);
  CounterRng rng(kSeed, stream);
  for (size_t i = 0; i < b.size(); i += 8) {
    const uint64_t r = rng.bits(i / 8);
    std::memcpy(b.data() + i, &r, std::min<size_t>(8, b.size() - i));
  }
  const size_t nb = b.size() / (type == GgmlType::Q6_K ? sizeof(BlockQ6K) : sizeof(BlockQ4K));
  for (size_t j = 0; j < nb; ++j) {
    const float u = rng.uniform(1'000'000'000ull + j);
    if (type == GgmlType::Q6_K) {
      auto* blk = reinterpret_cast<BlockQ6K*>(b.data()) + j;
      blk->d = fp32_to_fp16(2e-5f * (1.0f + u));
    } else if (type == GgmlType::Q4_K) {
      auto* blk = reinterpret_cast<BlockQ4K*>(b.data()) + j;
      blk->d = fp32_to_fp16(2e-4f * (1.0f + u));
      blk->dmin = fp32_to_fp16(1e-4f * (1.0f + u));
    }
  }
  return b;
}

std::vector<int64_t> sample(int64_t n, int64_t count, uint64_t stream, std::vector<int64_t> must = {}) {
  if (count >= n) {
    std::vector<int64_t> all(n);
    for (int64_t i = 0; i < n; ++i) all[i] = i;
    return all;
  }
  CounterRng rng(kSeed, stream);
  std::vector<int64_t> s = std::move(must);
  for (int64_t i = 0; static_cast<int64_t>(s.size()) < count; ++i)
    s.push_back(static_cast<int64_t>(rng.bits(i) % n));
  return s;
}

// got[m_i, n_j] for the sampled rows/cols of a row-major [M, N] output.
std::vector<float> pick(const std::vector<float>& y, int64_t n, const std::vector<int64_t>& rows,
                        const std::vector<int64_t>& cols) {
  std::vector<float> out;
  for (int64_t r : rows)
    for (int64_t c : cols) out.push_back(y[r * n + c]);
  return out;
}

// fp64 truth on the sample: W rows dequantized on the CPU (bit-exact to the GPU dequant), rounded to
// bf16 as the dequant kernel writes them.
std::vector<float> reference(GgmlType type, const std::vector<uint8_t>& wq, int64_t k,
                             const std::vector<float>& x, const std::vector<int64_t>& rows,
                             const std::vector<int64_t>& cols) {
  const size_t rb = ggml_row_bytes(type, k);
  std::vector<std::vector<float>> w(cols.size(), std::vector<float>(k));
  std::vector<const float*> wp, xp;
  for (size_t j = 0; j < cols.size(); ++j) {
    dequantize(type, wq.data() + cols[j] * rb, w[j].data(), k);
    for (float& v : w[j]) v = bf16_to_fp32(fp32_to_bf16(v));
    wp.push_back(w[j].data());
  }
  for (int64_t r : rows) xp.push_back(x.data() + r * k);
  return ref::gemm_sampled_bf16(xp, wp, k);
}

struct GemmCase {
  const char* name;
  GgmlType type;
  int64_t m, n, k;
};

class LinearTest : public ::testing::TestWithParam<GemmCase> {};

TEST_P(LinearTest, DequantGemmMatchesFp64) {
  FB_SKIP_WITHOUT_GPU();
  const GemmCase c = GetParam();
  const auto wq = random_blocks(c.type, c.n, c.k, 1);
  const auto x = test::random_bf16(c.m * c.k, kSeed, 2);
  auto dwq = upload(wq);
  auto dx = upload(test::to_bits(x));
  DeviceBuffer<__nv_bfloat16> wbuf(c.n * c.k);
  Bf16Buf y(c.m * c.n);
  cuda::CublasHandle h;
  Stream s;
  const auto* px = reinterpret_cast<const __nv_bfloat16*>(dx.get());
  cuda::linear_dequant_gemm(h.get(), c.type, dwq.get(), c.n, c.k, px, c.m, y.get(), wbuf.get(), s.get());
  s.synchronize();
  const auto got = y.read(c.name);
  // Sample 48 token rows x 192 weight rows (all of them for small shapes), first/last always in.
  const auto rows = sample(c.m, 48, 3, {0, c.m - 1});
  const auto cols = sample(c.n, 192, 4, {0, c.n - 1});
  test::expect_bf16_close(
      reference(c.type, wq, c.k, x, rows, cols), pick(got, c.n, rows, cols),
      std::string(c.name) + " sampled " + std::to_string(rows.size()) + "x" + std::to_string(cols.size()));
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearTest,
                         ::testing::Values(GemmCase{"small_odd", GgmlType::Q4_K, 5, 1000, 512},
                                           GemmCase{"gate_up_T512", GgmlType::Q4_K, 512, 43008, 5376},
                                           GemmCase{"gate_up_T2048", GgmlType::Q4_K, 2048, 43008, 5376},
                                           GemmCase{"down_q6k_T2048", GgmlType::Q6_K, 2048, 5376, 21504},
                                           GemmCase{"down_q4k_T512", GgmlType::Q4_K, 512, 5376, 21504}),
                         [](const auto& i) { return std::string(i.param.name); });

size_t free_bytes() {
  size_t f = 0, t = 0;
  FB_CUDA_CHECK(cudaMemGetInfo(&f, &t));
  return f;
}

struct LmCase {
  const char* name;
  int64_t m, n, k, chunk;
};

class LmHeadTest : public ::testing::TestWithParam<LmCase> {};

TEST_P(LmHeadTest, ChunkedEqualsUnchunkedAndHoldsOneChunk) {
  FB_SKIP_WITHOUT_GPU();
  const LmCase c = GetParam();
  const GgmlType type = GgmlType::Q6_K;
  const auto wq = random_blocks(type, c.n, c.k, 5);
  const auto x = test::random_bf16(c.m * c.k, kSeed, 6);
  auto dwq = upload(wq);
  auto dx = upload(test::to_bits(x));
  const auto* px = reinterpret_cast<const __nv_bfloat16*>(dx.get());
  cuda::CublasHandle h;
  Stream s;
  Bf16Buf y_chunked(c.m * c.n), y_full(c.m * c.n), y_one(c.m * c.n);

  // Chunked: the only device memory beyond weights/x/logits/handle is one chunk buffer.
  const size_t before = free_bytes();
  {
    DeviceBuffer<__nv_bfloat16> chunk(c.chunk * c.k);
    cuda::lm_head_chunked(h.get(), type, dwq.get(), c.n, c.k, px, c.m, y_chunked.get(), chunk.get(), c.chunk,
                          s.get());  // warm-up: cuBLAS loads its kernels here
    s.synchronize();
    const size_t during = free_bytes();
    cuda::lm_head_chunked(h.get(), type, dwq.get(), c.n, c.k, px, c.m, y_chunked.get(), chunk.get(), c.chunk,
                          s.get());
    s.synchronize();
    EXPECT_EQ(free_bytes(), during) << "lm_head_chunked allocated device memory of its own";
    std::printf(
        "[info] %s: chunked path holds %.1f MiB (chunk buffer %lld x %lld bf16); the full bf16 weight "
        "would be %.1f MiB; cudaMemGetInfo delta %.1f MiB\n",
        c.name, chunk.bytes() / 1048576.0, static_cast<long long>(c.chunk), static_cast<long long>(c.k),
        c.n * c.k * 2 / 1048576.0, (before - during) / 1048576.0);
  }
  {
    DeviceBuffer<__nv_bfloat16> full(c.n * c.k);
    cuda::lm_head_unchunked(h.get(), type, dwq.get(), c.n, c.k, px, c.m, y_full.get(), full.get(), c.chunk,
                            s.get());
    // Informational: one GEMM over all N may use another algorithm; report, bound by tolerance only.
    cuda::gemm_bf16(h.get(), px, full.get(), y_one.get(), c.m, c.n, c.k, c.n, s.get());
    s.synchronize();
  }
  const auto got = y_chunked.read("chunked");
  test::expect_bit_exact(y_full.read("unchunked"), got,
                         std::string(c.name) + ": chunked vs unchunked, every logit");
  const auto one = y_one.read("one gemm");
  const test::Diff d1 = test::diff(one, got);
  std::printf("[info] %s: chunked vs a single N=%lld GEMM: %s\n", c.name, static_cast<long long>(c.n),
              d1.bit_exact() ? "bit-exact" : d1.str(one, got).c_str());
  test::expect_bf16_close(one, got, std::string(c.name) + ": chunked vs single GEMM");

  // fp64 truth on rows at every chunk boundary plus a seeded sample.
  std::vector<int64_t> must;
  for (int64_t c0 = 0; c0 < c.n; c0 += c.chunk) {
    must.push_back(c0);
    if (c0 > 0) must.push_back(c0 - 1);
  }
  must.push_back(c.n - 1);
  const auto cols = sample(c.n, static_cast<int64_t>(must.size()) + 128, 7, must);
  const auto rows = sample(c.m, 16, 8, {0, c.m - 1});
  test::expect_bf16_close(reference(type, wq, c.k, x, rows, cols), pick(got, c.n, rows, cols),
                          std::string(c.name) + ": vs fp64 reference (sampled)");
}

INSTANTIATE_TEST_SUITE_P(Shapes, LmHeadTest,
                         ::testing::Values(LmCase{"gemma_T64", 64, 262144, 5376, cuda::kLmHeadChunkRows},
                                           LmCase{"gemma_T512", 512, 262144, 5376, cuda::kLmHeadChunkRows},
                                           LmCase{"short_tail", 7, 3 * 4096 + 1000, 512, 4096}),
                         [](const auto& i) { return std::string(i.param.name); });

TEST(PrefillApi, RejectsBadArguments) {
  // Validation happens before any device call, so it runs without a GPU too.
  alignas(256) static __nv_bfloat16 buf[256];
  EXPECT_THROW(cuda::gemm_bf16(nullptr, buf, buf, buf, 1, 1, 1, 1, nullptr), std::invalid_argument);
  EXPECT_THROW(cuda::lm_head_chunked(reinterpret_cast<cublasHandle_t>(1), GgmlType::Q6_K, buf, 10, 256, buf,
                                     1, buf, buf + 1, 4, nullptr),
               std::invalid_argument);  // misaligned chunk buffer
  EXPECT_THROW(cuda::lm_head_chunked(reinterpret_cast<cublasHandle_t>(1), GgmlType::BF16, buf, 10, 8, buf, 1,
                                     buf, buf, 3, nullptr),
               std::invalid_argument);  // chunk_rows * k * 2 not a multiple of 256
}

}  // namespace
}  // namespace fb
