// Argument validation of the ops entry points: throws before touching the device, so no GPU needed.
#include <gtest/gtest.h>

#include <stdexcept>

#include "kernels/ops/ops.cuh"

namespace fb::cuda {
namespace {

alignas(16) __nv_bfloat16 g_buf[64];
alignas(16) float g_w[64];
int32_t g_pos[4];

TEST(OpsApi, RejectsBadShapes) {
  EXPECT_THROW(rms_norm(g_buf, g_w, NormWeight::direct, 1e-6f, g_buf, 1, 12, nullptr), std::invalid_argument);
  EXPECT_THROW(rms_norm(g_buf, g_w, NormWeight::direct, 1e-6f, g_buf, 1, 16384, nullptr),
               std::invalid_argument);
  EXPECT_THROW(rms_norm(g_buf, nullptr, NormWeight::direct, 1e-6f, g_buf, 1, 16, nullptr),
               std::invalid_argument);
  EXPECT_THROW(rms_norm(g_buf + 1, g_w, NormWeight::direct, 1e-6f, g_buf, 1, 16, nullptr),
               std::invalid_argument);
  EXPECT_THROW(gelu_tanh_mul(g_buf, g_buf, 1, 12, nullptr), std::invalid_argument);
  EXPECT_THROW(softcap(g_buf, g_w, 8, 0.0f, nullptr), std::invalid_argument);
  EXPECT_THROW(scale(g_buf, nullptr, g_buf, 8, nullptr), std::invalid_argument);
  EXPECT_THROW(embed(GgmlType::Q4_K, g_buf, 1, 256, g_pos, 1, 1.0f, g_buf, nullptr), std::invalid_argument);
  EXPECT_THROW(embed(GgmlType::Q6_K, g_buf, 1, 100, g_pos, 1, 1.0f, g_buf, nullptr), std::invalid_argument);
}

TEST(OpsApi, AddNormQ8RejectsBadArguments) {
  alignas(16) static Q8Block q8[4];
  EXPECT_THROW(add_rms_norm_q8(g_buf, g_buf, g_w, NormWeight::direct, 1e-6f, g_buf + 32, q8, 1, 16, nullptr),
               std::invalid_argument);  // q8 needs cols % 32
  EXPECT_THROW(add_rms_norm_q8(g_buf, nullptr, g_w, NormWeight::direct, 1e-6f, g_buf, q8, 1, 32, nullptr),
               std::invalid_argument);  // out aliases x
  EXPECT_THROW(
      add_rms_norm_q8(g_buf, g_buf + 32, g_w, NormWeight::direct, 1e-6f, g_buf + 32, nullptr, 1, 32, nullptr),
      std::invalid_argument);  // out aliases h
  EXPECT_THROW(add_rms_norm_q8(g_buf + 1, nullptr, g_w, NormWeight::direct, 1e-6f, g_buf + 32, nullptr, 1, 32,
                               nullptr),
               std::invalid_argument);  // misaligned x
}

TEST(OpsApi, RopeParams) {
  const RopeParams full = make_rope_params(512, 512, 64, 512, 1e6);
  EXPECT_EQ(full.inv_freq[0], 1.0f);
  EXPECT_EQ(full.inv_freq[64], 0.0f);
  EXPECT_THROW(make_rope_params(256, 250, 8, 256, 1e4), std::invalid_argument);  // rot_dim % 16
  EXPECT_THROW(make_rope_params(256, 256, 129, 256, 1e4), std::invalid_argument);
  EXPECT_THROW(make_rope_params(2048, 2048, 8, 2048, 1e4), std::invalid_argument);  // > kMaxHalf pairs
  EXPECT_THROW(head_norm_rope(g_buf, g_w, NormWeight::direct, 1e-6f, g_pos, full, g_buf, 1, 1, nullptr),
               std::invalid_argument);  // in place
  EXPECT_THROW(rope(g_buf, nullptr, full, g_buf, 1, 1, nullptr), std::invalid_argument);
}

}  // namespace
}  // namespace fb::cuda
