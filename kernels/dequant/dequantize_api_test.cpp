// The entry point rejects bad arguments before touching the device, so these run without a GPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "kernels/common/cuda_check.h"
#include "kernels/dequant/dequantize.cuh"

namespace {

using fb::GgmlType;

// Never dereferenced: validation throws first. Aligned for every type.
const void* const kSrc = reinterpret_cast<const void*>(uintptr_t{4096});
float* const kDst = reinterpret_cast<float*>(uintptr_t{8192});
__nv_bfloat16* const kDstBf16 = reinterpret_cast<__nv_bfloat16*>(uintptr_t{8192});

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

TEST(DequantizeApi, RejectsColsNotMultipleOfBlock) {
  const std::string msg =
      invalid_argument_message([] { fb::cuda::dequantize(GgmlType::Q4_K, kSrc, kDst, 4, 100, nullptr); });
  EXPECT_NE(msg.find("n_cols=100"), std::string::npos) << msg;
  EXPECT_NE(msg.find("256"), std::string::npos) << msg;
  EXPECT_THROW(fb::cuda::dequantize(GgmlType::Q8_0, kSrc, kDst, 1, 48, nullptr), std::invalid_argument);
  EXPECT_THROW(fb::cuda::dequantize(GgmlType::Q6_K, kSrc, kDstBf16, 1, 255, nullptr), std::invalid_argument);
}

TEST(DequantizeApi, RejectsUnsupportedType) {
  for (GgmlType t : {GgmlType::Q4_0, GgmlType::Q2_K, GgmlType::Q8_K, static_cast<GgmlType>(4)}) {
    EXPECT_FALSE(fb::cuda::dequantize_supported(t));
    EXPECT_THROW(fb::cuda::dequantize(t, kSrc, kDst, 1, 256, nullptr), std::invalid_argument);
  }
  for (GgmlType t : fb::kConvertibleTypes) EXPECT_TRUE(fb::cuda::dequantize_supported(t));
}

TEST(DequantizeApi, RejectsBadShapesAndPointers) {
  EXPECT_THROW(fb::cuda::dequantize(GgmlType::Q4_K, kSrc, kDst, -1, 256, nullptr), std::invalid_argument);
  EXPECT_THROW(fb::cuda::dequantize(GgmlType::F16, kSrc, kDst, 2, -2, nullptr), std::invalid_argument);
  EXPECT_THROW(fb::cuda::dequantize(GgmlType::F16, kSrc, kDst, INT64_MAX, 2, nullptr), std::invalid_argument);
  EXPECT_THROW(fb::cuda::dequantize(GgmlType::Q4_K, nullptr, kDst, 1, 256, nullptr), std::invalid_argument);
  EXPECT_THROW(fb::cuda::dequantize(GgmlType::Q4_K, kSrc, static_cast<float*>(nullptr), 1, 256, nullptr),
               std::invalid_argument);
  const void* odd = reinterpret_cast<const void*>(uintptr_t{4098});  // 2- but not 4-byte aligned
  EXPECT_THROW(fb::cuda::dequantize(GgmlType::Q5_K, odd, kDst, 1, 256, nullptr), std::invalid_argument);
  EXPECT_THROW(fb::cuda::dequantize(GgmlType::F16, reinterpret_cast<const void*>(uintptr_t{4097}), kDst, 1, 4,
                                    nullptr),
               std::invalid_argument);
}

TEST(DequantizeApi, EmptyTensorEnqueuesNothing) {
  // No device is needed: zero elements must not reach the launch.
  EXPECT_NO_THROW(
      fb::cuda::dequantize(GgmlType::Q4_K, nullptr, static_cast<float*>(nullptr), 0, 256, nullptr));
  EXPECT_NO_THROW(fb::cuda::dequantize(GgmlType::Q4_K, nullptr, kDstBf16, 7, 0, nullptr));
}

TEST(CudaCheck, ErrorNamesCallSiteExpressionAndReason) {
  try {
    FB_CUDA_CHECK(static_cast<cudaError_t>(cudaErrorInvalidValue));
    FAIL() << "FB_CUDA_CHECK did not throw";
  } catch (const fb::CudaError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(e.code(), cudaErrorInvalidValue);
    EXPECT_NE(msg.find("dequantize_api_test.cpp:"), std::string::npos) << msg;
    EXPECT_NE(msg.find("cudaErrorInvalidValue"), std::string::npos) << msg;
    EXPECT_NE(msg.find(cudaGetErrorString(cudaErrorInvalidValue)), std::string::npos) << msg;
  }
}

TEST(CudaCheck, UnavailableReasonIsStableAndExplained) {
  const auto first = fb::cuda_device_unavailable_reason();
  EXPECT_EQ(first, fb::cuda_device_unavailable_reason());
  if (first) {
    EXPECT_FALSE(first->empty());
    std::printf("no usable CUDA device here: %s\n", first->c_str());
  }
}

}  // namespace
