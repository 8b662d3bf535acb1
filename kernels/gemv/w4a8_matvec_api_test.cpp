// Argument validation of the matvec entry points: thrown before any device work, so no GPU needed.
#include <gtest/gtest.h>

#include <stdexcept>

#include "kernels/gemv/w4a8_matvec.cuh"

namespace fb::cuda {
namespace {

alignas(16) unsigned char g_buf[4096];

MatvecWeights valid() {
  MatvecWeights w;
  w.format = MatvecFormat::int4_bf16;
  w.n = 4;
  w.k = 256;
  w.qdata = g_buf;
  w.scale = g_buf;
  w.zero = g_buf;
  return w;
}
auto* q8() { return reinterpret_cast<const Q8Block*>(g_buf); }
auto* y() { return reinterpret_cast<__nv_bfloat16*>(g_buf); }

TEST(W4A8Api, RejectsBadShapes) {
  auto w = valid();
  EXPECT_THROW(w4a8_matvec(w, q8(), 0, y(), MatvecEpilogue::none, nullptr), std::invalid_argument);
  EXPECT_THROW(w4a8_matvec(w, q8(), 5, y(), MatvecEpilogue::none, nullptr), std::invalid_argument);
  w.k = 288;
  EXPECT_THROW(w4a8_matvec(w, q8(), 1, y(), MatvecEpilogue::none, nullptr), std::invalid_argument);
  w = valid();
  w.n = 3;
  EXPECT_THROW(w4a8_matvec(w, q8(), 1, y(), MatvecEpilogue::glu_silu, nullptr), std::invalid_argument);
}

TEST(W4A8Api, RejectsMissingOrMisalignedPointers) {
  auto w = valid();
  w.zero = nullptr;
  EXPECT_THROW(w4a8_matvec(w, q8(), 1, y(), MatvecEpilogue::none, nullptr), std::invalid_argument);
  w = valid();
  w.qdata = g_buf + 8;
  EXPECT_THROW(w4a8_matvec(w, q8(), 1, y(), MatvecEpilogue::none, nullptr), std::invalid_argument);
  w = valid();
  w.format = MatvecFormat::int6_i8;  // needs qhigh and a scale step
  EXPECT_THROW(w4a8_matvec(w, q8(), 1, y(), MatvecEpilogue::none, nullptr), std::invalid_argument);
  w = valid();
  w.format = MatvecFormat::int4_u8;  // needs steps
  EXPECT_THROW(w4a8_matvec(w, q8(), 1, y(), MatvecEpilogue::none, nullptr), std::invalid_argument);
  EXPECT_THROW(w4a8_matvec(valid(), reinterpret_cast<const Q8Block*>(g_buf + 4), 1, y(), MatvecEpilogue::none,
                           nullptr),
               std::invalid_argument);
}

TEST(W4A8Api, QuantizeAndGluValidate) {
  EXPECT_THROW(quantize_activations_q8(y(), 1, 48, const_cast<Q8Block*>(q8()), nullptr),
               std::invalid_argument);
  EXPECT_THROW(quantize_activations_q8(nullptr, 1, 64, const_cast<Q8Block*>(q8()), nullptr),
               std::invalid_argument);
  EXPECT_THROW(glu_bf16(y(), 1, 4, MatvecEpilogue::none, y(), nullptr), std::invalid_argument);
}

}  // namespace
}  // namespace fb::cuda
