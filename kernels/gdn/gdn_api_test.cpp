// Argument validation of the GDN entry points: each bad argument throws std::invalid_argument before
// any device work, so these run without a GPU.
#include <gtest/gtest.h>

#include <stdexcept>

#include "kernels/gdn/gdn.cuh"

namespace fb::cuda {
namespace {

auto* bfp(uintptr_t v) { return reinterpret_cast<__nv_bfloat16*>(v); }
auto* fp(uintptr_t v) { return reinterpret_cast<float*>(v); }

TEST(GdnApi, ConvRejectsBadShapes) {
  EXPECT_THROW(causal_conv_silu(bfp(256), 64, 1, 64, bfp(256), fp(256), 3, bfp(256), nullptr),
               std::invalid_argument);
  EXPECT_THROW(causal_conv_silu(bfp(256), 32, 1, 64, bfp(256), fp(256), 4, bfp(256), nullptr),
               std::invalid_argument);
  EXPECT_THROW(causal_conv_silu(bfp(256), 64, 0, 64, bfp(256), fp(256), 4, bfp(256), nullptr),
               std::invalid_argument);
  EXPECT_THROW(causal_conv_silu(bfp(256), 64, 1, 64, bfp(256), fp(260), 4, bfp(256), nullptr),
               std::invalid_argument);
  EXPECT_THROW(causal_conv_silu_naive(bfp(256), 64, 1, 64, bfp(256), fp(256), 4, bfp(256), nullptr, nullptr),
               std::invalid_argument);
  EXPECT_EQ(conv_naive_workspace_floats(2, 10, 4), 10u * 6 + 20);
}

TEST(GdnApi, DeltaRuleRejectsBadDims) {
  GdnDims d{16, 32, 128, 128, 4};
  EXPECT_EQ(d.conv_dim(), 8192);
  GdnDims bad = d;
  bad.dk = 96;
  EXPECT_THROW(gated_delta_rule(bad, bfp(256), 1, bfp(256), 64, fp(256), fp(256), fp(256), bfp(256), nullptr),
               std::invalid_argument);
  bad = d;
  bad.v_heads = 24;
  EXPECT_THROW(gated_delta_rule(bad, bfp(256), 1, bfp(256), 64, fp(256), fp(256), fp(256), bfp(256), nullptr),
               std::invalid_argument);
  EXPECT_THROW(gated_delta_rule(d, bfp(256), 1, bfp(256), 63, fp(256), fp(256), fp(256), bfp(256), nullptr),
               std::invalid_argument);
  EXPECT_THROW(gated_delta_rule(d, nullptr, 1, bfp(256), 64, fp(256), fp(256), fp(256), bfp(256), nullptr),
               std::invalid_argument);
  EXPECT_THROW(gdn_gates(d, bfp(256), 64, 0, fp(256), fp(256), fp(256), nullptr), std::invalid_argument);
  EXPECT_THROW(gated_delta_rule_prenormed(d, nullptr, bfp(256), fp(256), 1, fp(256), bfp(256), nullptr),
               std::invalid_argument);
}

TEST(GdnApi, GatedNormRejectsBadDims) {
  EXPECT_THROW(gated_rms_norm(bfp(256), bfp(256), 4096, fp(256), 1, 32, 100, 1e-6f, bfp(256), nullptr),
               std::invalid_argument);
  EXPECT_THROW(gated_rms_norm(bfp(256), bfp(256), 100, fp(256), 1, 32, 128, 1e-6f, bfp(256), nullptr),
               std::invalid_argument);
}

}  // namespace
}  // namespace fb::cuda
