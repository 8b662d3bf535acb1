// Argument validation of the TurboQuant entry points: every rejection happens before any CUDA call,
// so it runs without a device.
#include <gtest/gtest.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

#include "kernels/attention/tq4_sdpa.cuh"
#include "reference/util/scoped_env.h"

namespace {

alignas(16) unsigned char g_bytes[4096];

fb::cuda::Tq4Tables tables(int d) {
  return {reinterpret_cast<const float*>(g_bytes), reinterpret_cast<const uint16_t*>(g_bytes),
          reinterpret_cast<const float*>(g_bytes), reinterpret_cast<const uint16_t*>(g_bytes), d};
}
fb::cuda::Tq4Cache cache(int d, int n_kv = 4, int64_t cap = 1024) {
  return {
      g_bytes, reinterpret_cast<uint16_t*>(g_bytes), g_bytes, reinterpret_cast<uint16_t*>(g_bytes), n_kv, cap,
      d};
}

void sdpa(const fb::cuda::Tq4Cache& c, const fb::cuda::Tq4Tables& t, int n_q, int64_t T, size_t ws,
          const void* q = g_bytes) {
  fb::cuda::tq4_sdpa(static_cast<const __nv_bfloat16*>(q), T, n_q, reinterpret_cast<const int32_t*>(g_bytes),
                     1.0f, c, t, g_bytes, ws, reinterpret_cast<__nv_bfloat16*>(g_bytes), nullptr);
}

TEST(Tq4SdpaApi, RejectsUnsupportedShapes) {
  const size_t big = size_t{1} << 40;
  EXPECT_THROW(sdpa(cache(256), tables(256), 32, 1, big), std::invalid_argument);  // head_dim 256
  EXPECT_THROW(sdpa(cache(512), tables(512), 16, 1, big), std::invalid_argument);  // GQA 4:1
  EXPECT_THROW(sdpa(cache(512), tables(256), 32, 1, big), std::invalid_argument);  // tables differ
  EXPECT_THROW(sdpa(cache(512), tables(512), 32, 0, big), std::invalid_argument);  // T = 0
  EXPECT_THROW(sdpa(cache(512), tables(512), 32, 1, 16), std::invalid_argument);   // workspace
  EXPECT_THROW(sdpa(cache(512), tables(512), 32, 1, big, g_bytes + 2), std::invalid_argument);  // alignment
  EXPECT_THROW(sdpa(cache(512, 4, 0), tables(512), 32, 1, big), std::invalid_argument);         // empty cache
}

TEST(Tq4SdpaApi, DecodePathFromEnvironment) {
  const fb::ScopedEnv env("FB_TQ4_DECODE_PATH", nullptr);
  EXPECT_STREQ(fb::cuda::tq4_sdpa_decode_path(), "mma");  // the default
  env.set("mma");
  EXPECT_STREQ(fb::cuda::tq4_sdpa_decode_path(), "mma");
  env.set("fp32");
  EXPECT_STREQ(fb::cuda::tq4_sdpa_decode_path(), "fp32");
  // A typo must fail loudly, and tq4_sdpa must throw before enqueuing anything (valid arguments
  // otherwise: these host pointers would fault in a kernel).
  env.set("MMA ");
  EXPECT_THROW(fb::cuda::tq4_sdpa_decode_path(), std::invalid_argument);
  EXPECT_THROW(sdpa(cache(512), tables(512), 32, 1, size_t{1} << 40), std::invalid_argument);
}

TEST(Tq4SdpaApi, WorkspaceAndSplits) {
  // Decode splits follow the capacity (64 positions each, at most 128); prefill splits until ~1024 CTAs.
  EXPECT_EQ(fb::cuda::tq4_sdpa_num_splits(1, 4, 512), 8);
  EXPECT_EQ(fb::cuda::tq4_sdpa_num_splits(1, 4, 131073), 128);
  EXPECT_EQ(fb::cuda::tq4_sdpa_num_splits(1, 4, 1), 1);
  EXPECT_EQ(fb::cuda::tq4_sdpa_num_splits(512, 4, 131072), 1);
  EXPECT_EQ(fb::cuda::tq4_sdpa_num_splits(5, 4, 131072), 52);
  const auto c = cache(512, 4, 512);
  // q_rot + out_rot + 8 splits of O + (m, l), fp32.
  EXPECT_EQ(fb::cuda::tq4_sdpa_workspace_bytes(1, 32, c),
            size_t{4} * (32 * 512 * 2 + 32 * 8 * 512 + 32 * 8 * 2));
}

TEST(Tq4CompressApi, RejectsBadArguments) {
  const auto* k = reinterpret_cast<const __nv_bfloat16*>(g_bytes);
  const auto* pos = reinterpret_cast<const int32_t*>(g_bytes);
  EXPECT_THROW(fb::cuda::tq4_compress_append(k, k, 1, pos, tables(96), cache(96), nullptr),
               std::invalid_argument);
  EXPECT_THROW(fb::cuda::tq4_compress_append(k, k, 1, nullptr, tables(512), cache(512), nullptr),
               std::invalid_argument);
  EXPECT_THROW(fb::cuda::tq4_compress_append(k, k, -1, pos, tables(512), cache(512), nullptr),
               std::invalid_argument);
  EXPECT_NO_THROW(
      fb::cuda::tq4_compress_append(k, k, 0, pos, tables(512), cache(512), nullptr));  // nothing enqueued
}

}  // namespace
