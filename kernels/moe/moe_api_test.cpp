// Argument validation of the MoE entry points (no device needed: they throw before any launch).
#include <gtest/gtest.h>

#include <stdexcept>

#include "kernels/moe/moe.cuh"

namespace fb::cuda {
namespace {

template <class T>
T* ptr(uintptr_t v) {
  return reinterpret_cast<T*>(v);
}

ExpertWeights good() {
  ExpertWeights w;
  w.format = ExpertFormat::sym_int4;
  w.experts = 257, w.n = 1024, w.k = 2048, w.group = 32;
  w.qdata = ptr<void>(256), w.scale = ptr<void>(256);
  return w;
}

TEST(MoeApi, Gemm1RejectsBadWeights) {
  auto* q8 = ptr<Q8Block>(256);
  auto* ids = ptr<int32_t>(256);
  auto* out = ptr<__nv_bfloat16>(256);
  ExpertWeights w = good();
  w.k = 1000;
  EXPECT_THROW(moe_gemm1(w, q8, ids, 1, 9, out, 1024, 0, nullptr), std::invalid_argument);
  w = good();
  w.k = 768;  // 24 units: not a power of 2 below a warp
  EXPECT_THROW(moe_gemm1(w, q8, ids, 1, 9, out, 1024, 0, nullptr), std::invalid_argument);
  w = good();
  w.group = 48;
  EXPECT_THROW(moe_gemm1(w, q8, ids, 1, 9, out, 1024, 0, nullptr), std::invalid_argument);
  w = good();
  w.qdata = ptr<void>(258);
  EXPECT_THROW(moe_gemm1(w, q8, ids, 1, 9, out, 1024, 0, nullptr), std::invalid_argument);
  EXPECT_THROW(moe_gemm1(good(), q8, ids, 1, 9, out, 1024, 512, nullptr), std::invalid_argument);  // ldo
  EXPECT_THROW(moe_gemm1(good(), q8, nullptr, 1, 9, out, 1024, 0, nullptr), std::invalid_argument);
  auto* x = ptr<__nv_bfloat16>(256);
  w = good();
  w.k = 1000;
  EXPECT_THROW(moe_gemm1_quant(w, x, ids, 1, 9, out, 1024, 0, nullptr), std::invalid_argument);
  EXPECT_THROW(moe_gemm1_quant(good(), ptr<__nv_bfloat16>(258), ids, 1, 9, out, 1024, 0, nullptr),
               std::invalid_argument);  // x not 16-byte aligned
  EXPECT_THROW(moe_gemm1_quant(good(), x, ids, 1, 9, out, 1024, 512, nullptr), std::invalid_argument);
  EXPECT_THROW(moe_gemm1_quant(good(), x, nullptr, 1, 9, out, 1024, 0, nullptr), std::invalid_argument);
}

TEST(MoeApi, Gemm2Limits) {
  ExpertWeights w = good();
  w.n = 2048, w.k = 2048;  // GEMM2 keeps one unit per lane: k <= 1024
  EXPECT_THROW(moe_gemm2_silu(w, ptr<__nv_bfloat16>(256), ptr<int32_t>(256), ptr<float>(256), 1, 9,
                              ptr<__nv_bfloat16>(256), nullptr),
               std::invalid_argument);
  w.k = 512;
  EXPECT_THROW(moe_gemm2_silu(w, ptr<__nv_bfloat16>(256), ptr<int32_t>(256), ptr<float>(256), 1, 72,
                              ptr<__nv_bfloat16>(256), nullptr),
               std::invalid_argument);  // one token's 72 slots x 512 > 32768 activations in shared memory
}

TEST(MoeApi, RouterAndHelpers) {
  auto* x = ptr<__nv_bfloat16>(256);
  auto* w = ptr<float>(256);
  EXPECT_THROW(moe_router(x, w, nullptr, 1, 2048, 300, 8, w, ptr<int32_t>(256), w, nullptr),
               std::invalid_argument);
  EXPECT_THROW(moe_router(x, w, nullptr, 1, 2048, 256, 17, w, ptr<int32_t>(256), w, nullptr),
               std::invalid_argument);
  EXPECT_THROW(moe_router(x, w, nullptr, 1, 2046, 256, 8, w, ptr<int32_t>(256), w, nullptr),
               std::invalid_argument);
  EXPECT_THROW(moe_quantize_q8(x, 1, 100, ptr<Q8Block>(256), nullptr), std::invalid_argument);
  EXPECT_THROW(moe_weighted_sum(w, w, 1, 0, 10, x, nullptr), std::invalid_argument);
  EXPECT_STREQ(to_string(ExpertFormat::q4_k), "q4_k");
}

}  // namespace
}  // namespace fb::cuda
