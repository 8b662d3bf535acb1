#include <climits>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/common/cuda_check.h"
#include "kernels/dequant/dequant_decoders.h"
#include "kernels/dequant/dequantize.cuh"
#include "reference/formats/blocks.h"
#include "reference/formats/half.h"

namespace fb::cuda {
namespace {

using namespace fb::cuda::detail;

// Each thread produces 4 consecutive outputs: one 16-byte store (fp32) or 8-byte store (bf16), so a
// warp writes 512 or 256 contiguous bytes per instruction. Output bytes dominate the traffic (fp32:
// 7x the Q4_K input), so the layout is chosen for the stores; block headers are re-read per thread
// from L1.
constexpr int kThreads = 256;
constexpr int kPerThread = 4;

// ---- stores --------------------------------------------------------------------------------------

template <bool kVec>
__device__ __forceinline__ void store(float* dst, const float v[4], int64_t remaining) {
  if (kVec && remaining >= 4) {
    *reinterpret_cast<float4*>(dst) = make_float4(v[0], v[1], v[2], v[3]);
    return;
  }
  for (int k = 0; k < 4 && k < remaining; ++k) dst[k] = v[k];
}

template <bool kVec>
__device__ __forceinline__ void store(__nv_bfloat16* dst, const float v[4], int64_t remaining) {
  // fb::fp32_to_bf16 rather than cvt.rn.bf16.f32: the hardware returns a canonical NaN.
  uint32_t b[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) b[k] = fp32_to_bf16(v[k]);
  if (kVec && remaining >= 4) {
    *reinterpret_cast<uint2*>(dst) = make_uint2(b[0] | (b[1] << 16), b[2] | (b[3] << 16));
    return;
  }
  uint16_t* out = reinterpret_cast<uint16_t*>(dst);
  for (int k = 0; k < 4 && k < remaining; ++k) out[k] = static_cast<uint16_t>(b[k]);
}

// ---- kernel --------------------------------------------------------------------------------------

template <class Decoder, class Out, bool kVec>
__global__ void __launch_bounds__(kThreads)
    dequantize_kernel(const typename Decoder::Block* __restrict__ src, Out* __restrict__ dst, int64_t n) {
  const int64_t first = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) * kPerThread;
  if (first >= n) return;
  float v[4];
  if constexpr (Decoder::kBlockElems == 1) {
#pragma unroll
    for (int k = 0; k < 4; ++k) v[k] = first + k < n ? Decoder::one(src[first + k]) : 0.0f;
  } else {
    static_assert(Decoder::kBlockElems % kPerThread == 0, "a thread's outputs must stay in one block");
    Decoder::run(src[first / Decoder::kBlockElems], static_cast<int>(first % Decoder::kBlockElems), v);
  }
  store<kVec>(dst + first, v, n - first);
}

template <class Decoder, class Out>
void launch(const void* d_src, Out* d_dst, int64_t n, cudaStream_t stream) {
  const int64_t threads = (n + kPerThread - 1) / kPerThread;
  const int64_t blocks = (threads + kThreads - 1) / kThreads;
  if (blocks > INT_MAX) throw std::invalid_argument("fb::cuda::dequantize: tensor too large for one launch");
  const auto* src = static_cast<const typename Decoder::Block*>(d_src);
  const bool vec = reinterpret_cast<uintptr_t>(d_dst) % (kPerThread * sizeof(Out)) == 0;
  if (vec) {
    dequantize_kernel<Decoder, Out, true>
        <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(src, d_dst, n);
  } else {
    dequantize_kernel<Decoder, Out, false>
        <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(src, d_dst, n);
  }
  FB_CUDA_CHECK_LAUNCH();
}

// ---- entry ---------------------------------------------------------------------------------------

struct TypeGeometry {
  const char* name;
  int64_t block_elems;
  size_t src_align;  // natural alignment of the block struct: the loads rely on it
};

// Kept here rather than taken from ggml_type_info(): kernels depend on the POD format headers only.
bool geometry(GgmlType type, TypeGeometry& g) {
  switch (type) {
    case GgmlType::F32:
      g = {"f32", 1, alignof(float)};
      return true;
    case GgmlType::F16:
      g = {"f16", 1, alignof(uint16_t)};
      return true;
    case GgmlType::BF16:
      g = {"bf16", 1, alignof(uint16_t)};
      return true;
    case GgmlType::Q8_0:
      g = {"q8_0", kQK8_0, alignof(BlockQ8_0)};
      return true;
    case GgmlType::Q4_K:
      g = {"q4_K", kQK_K, 4};
      return true;  // qs read as 32-bit words
    case GgmlType::Q5_K:
      g = {"q5_K", kQK_K, 4};
      return true;
    case GgmlType::Q6_K:
      g = {"q6_K", kQK_K, alignof(BlockQ6K)};
      return true;
    default:
      return false;
  }
}

template <class Out>
void dequantize_impl(GgmlType type, const void* d_src, Out* d_dst, int64_t n_rows, int64_t n_cols,
                     cudaStream_t stream) {
  const std::string where = "fb::cuda::dequantize: ";
  TypeGeometry g{};
  if (!geometry(type, g)) {
    throw std::invalid_argument(where + "unsupported ggml type id " +
                                std::to_string(static_cast<uint32_t>(type)));
  }
  if (n_rows < 0 || n_cols < 0) {
    throw std::invalid_argument(where + "negative shape " + std::to_string(n_rows) + "x" +
                                std::to_string(n_cols));
  }
  if (n_cols % g.block_elems != 0) {
    throw std::invalid_argument(where + "n_cols=" + std::to_string(n_cols) + " is not a multiple of the " +
                                g.name + " block size " + std::to_string(g.block_elems));
  }
  if (n_cols != 0 && n_rows > INT64_MAX / n_cols) {
    throw std::invalid_argument(where + "shape " + std::to_string(n_rows) + "x" + std::to_string(n_cols) +
                                " overflows int64");
  }
  const int64_t n = n_rows * n_cols;
  if (n == 0) return;
  if (d_src == nullptr || d_dst == nullptr) throw std::invalid_argument(where + "null pointer");
  if (reinterpret_cast<uintptr_t>(d_src) % g.src_align != 0) {
    throw std::invalid_argument(where + g.name + " source must be " + std::to_string(g.src_align) +
                                "-byte aligned");
  }
  if (reinterpret_cast<uintptr_t>(d_dst) % alignof(Out) != 0) {
    throw std::invalid_argument(where + "destination is misaligned");
  }
  switch (type) {
    case GgmlType::F32:
      return launch<DecodeF32>(d_src, d_dst, n, stream);
    case GgmlType::F16:
      return launch<DecodeF16>(d_src, d_dst, n, stream);
    case GgmlType::BF16:
      return launch<DecodeBF16>(d_src, d_dst, n, stream);
    case GgmlType::Q8_0:
      return launch<DecodeQ8_0>(d_src, d_dst, n, stream);
    case GgmlType::Q4_K:
      return launch<DecodeQ4K>(d_src, d_dst, n, stream);
    case GgmlType::Q5_K:
      return launch<DecodeQ5K>(d_src, d_dst, n, stream);
    case GgmlType::Q6_K:
      return launch<DecodeQ6K>(d_src, d_dst, n, stream);
    default:
      break;
  }
  throw std::logic_error(where + "type passed validation but has no kernel");
}

}  // namespace

bool dequantize_supported(GgmlType type) {
  TypeGeometry g{};
  return geometry(type, g);
}

void dequantize(GgmlType type, const void* d_src, float* d_dst, int64_t n_rows, int64_t n_cols,
                cudaStream_t stream) {
  dequantize_impl(type, d_src, d_dst, n_rows, n_cols, stream);
}

void dequantize(GgmlType type, const void* d_src, __nv_bfloat16* d_dst, int64_t n_rows, int64_t n_cols,
                cudaStream_t stream) {
  dequantize_impl(type, d_src, d_dst, n_rows, n_cols, stream);
}

}  // namespace fb::cuda
