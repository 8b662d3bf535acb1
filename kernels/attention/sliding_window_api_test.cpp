// The entry points reject bad arguments before touching the device, so these run without a GPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "kernels/attention/sliding_window.cuh"

namespace {

using fb::cuda::SlidingWindowDims;

// Never dereferenced: validation throws first.
__nv_bfloat16* const kP = reinterpret_cast<__nv_bfloat16*>(uintptr_t{4096});
__nv_bfloat16* const kMisaligned = reinterpret_cast<__nv_bfloat16*>(uintptr_t{4098});
const int32_t* const kPos = reinterpret_cast<const int32_t*>(uintptr_t{8192});
constexpr SlidingWindowDims kGemma{32, 16, 256, 1024};

template <class Fn>
std::string invalid_argument_message(Fn&& fn) {
  try {
    fn();
  } catch (const std::invalid_argument& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("wrong exception type: ") + e.what();
  }
  return "no exception";
}

TEST(SlidingWindowApi, DecodeRejectsTooManyRows) {
  const auto msg = invalid_argument_message(
      [] { fb::cuda::sliding_window_decode(kGemma, kP, kP, kP, kP, kP, 5, kPos, 1.0f, kP, nullptr); });
  EXPECT_NE(msg.find("T x group <= 8"), std::string::npos) << msg;
  EXPECT_THROW(
      fb::cuda::sliding_window_decode({32, 4, 256, 1024}, kP, kP, kP, kP, kP, 2, kPos, 1.0f, kP, nullptr),
      std::invalid_argument);  // group 8 x T 2 = 16 rows
  EXPECT_THROW(fb::cuda::sliding_window_decode(kGemma, kP, kP, kP, kP, kP, 0, kPos, 1.0f, kP, nullptr),
               std::invalid_argument);
}

TEST(SlidingWindowApi, RejectsUnsupportedHeadDimAndGroups) {
  const auto msg = invalid_argument_message([] {
    fb::cuda::sliding_window_prefill({32, 16, 128, 1024}, kP, kP, kP, kP, kP, 8, kPos, 1.0f, kP, nullptr);
  });
  EXPECT_NE(msg.find("head_dim"), std::string::npos) << msg;
  EXPECT_THROW(
      fb::cuda::sliding_window_prefill({24, 3, 256, 1024}, kP, kP, kP, kP, kP, 8, kPos, 1.0f, kP, nullptr),
      std::invalid_argument);  // group 8
  EXPECT_THROW(
      fb::cuda::sliding_window_prefill({30, 16, 256, 1024}, kP, kP, kP, kP, kP, 8, kPos, 1.0f, kP, nullptr),
      std::invalid_argument);  // not a multiple
  EXPECT_THROW(
      fb::cuda::sliding_window_prefill({32, 16, 256, 0}, kP, kP, kP, kP, kP, 8, kPos, 1.0f, kP, nullptr),
      std::invalid_argument);
}

TEST(SlidingWindowApi, RejectsNullOrMisalignedPointers) {
  const auto msg = invalid_argument_message([] {
    fb::cuda::sliding_window_decode(kGemma, kMisaligned, kP, kP, kP, kP, 1, kPos, 1.0f, kP, nullptr);
  });
  EXPECT_NE(msg.find("q null or not 16-byte aligned"), std::string::npos) << msg;
  EXPECT_THROW(fb::cuda::sliding_window_prefill(kGemma, kP, kP, kP, kP, kP, 8, nullptr, 1.0f, kP, nullptr),
               std::invalid_argument);
  EXPECT_THROW(fb::cuda::sliding_window_append(kGemma, kP, kP, 1, kPos, nullptr, kP, nullptr),
               std::invalid_argument);
  EXPECT_THROW(fb::cuda::sliding_window_append(kGemma, kP, kP, -1, kPos, kP, kP, nullptr),
               std::invalid_argument);
}

}  // namespace
