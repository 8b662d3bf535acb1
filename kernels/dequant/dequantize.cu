#include <algorithm>
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

// Two kernels. The tiled one (the fast path, taken when the source meets the decoder's kSrcAlign and
// the destination is 16-byte aligned) gives each warp whole 256-output tiles:
//  - bf16: lane l decodes outputs 8l..8l+7 and writes them with one 16-byte store, so each store
//    instruction of a warp covers 512 contiguous bytes;
//  - f32: lane l decodes 4l..4l+3 and 128+4l..128+4l+3, two 16-byte stores, again 512 contiguous
//    bytes per instruction.
// Each warp loads kUnroll tiles before decoding any (block headers are one broadcast 16-byte load per
// lane, quants 4 or 8 bytes), and walks the tensor grid-stride with a grid sized to one full wave of
// resident CTAs, so there is no tail of half-empty waves and no per-thread launch overhead. The
// per-output work is a PRMT + FADD to get the quant as a float, the reference's two rounded ops, and
// (bf16) half a cvt.rn.bf16x2: the kernels were instruction-bound, not memory-bound, at 4 outputs a
// thread. The simple kernel (one thread, 4 outputs, byte loads) covers any alignment the API allows.
constexpr int kThreads = 256;
constexpr int kPerThread = 4;
constexpr int kTile = 256;
constexpr int kWarpsPerCta = kThreads / 32;

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

// 16 bytes in one st.global.v4. Written out because NVVM split a plain float4/uint4 store of the
// first unrolled tile into four 32-bit stores (seen in the PTX), halving the bytes per instruction.
__device__ __forceinline__ void st_v4(void* dst, uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};" ::"l"(dst), "r"(a), "r"(b), "r"(c), "r"(d)
               : "memory");
}

// Tiled kernel: one run of 4 floats, one 16-byte store.
__device__ __forceinline__ void store_run(float* dst, const float (&v)[4], bool) {
  st_v4(dst, __float_as_uint(v[0]), __float_as_uint(v[1]), __float_as_uint(v[2]), __float_as_uint(v[3]));
}

// One run of 8 bf16, one 16-byte store. `clean` runs hold no NaN and no subnormal, where
// cvt.rn.bf16x2.f32 (two outputs per instruction) is the same round-to-nearest-even as
// fb::fp32_to_bf16; otherwise the integer conversion keeps the reference's NaN rule.
__device__ __forceinline__ void store_run(__nv_bfloat16* dst, const float (&v)[8], bool clean) {
  uint32_t p[4];
  if (clean) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      // The first source operand goes to the upper half.
      asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(p[i]) : "f"(v[2 * i + 1]), "f"(v[2 * i]));
    }
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      p[i] = static_cast<uint32_t>(fp32_to_bf16(v[2 * i])) |
             (static_cast<uint32_t>(fp32_to_bf16(v[2 * i + 1])) << 16);
    }
  }
  st_v4(dst, p[0], p[1], p[2], p[3]);
}

__device__ __forceinline__ void store_one(float* dst, float v) { *dst = v; }
__device__ __forceinline__ void store_one(__nv_bfloat16* dst, float v) {
  *reinterpret_cast<uint16_t*>(dst) = fp32_to_bf16(v);
}

// ---- kernels -------------------------------------------------------------------------------------

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

// Runs a lane owns in a tile: bf16 one of 8, f32 two of 4 half a tile apart (see the top).
template <class Out>
struct Runs {
  static constexpr int kCount = sizeof(Out) / 2;
  static constexpr int kLen = 8 / kCount;
  static constexpr int kStride = kTile / kCount;
};

template <class Decoder>
constexpr int unroll_of() {
  return 2;  // tiles in flight per warp: 2 x 144 B (Q4_K) .. 2 x 1 KiB (F32) of loads
}

template <class Decoder, class Out, int kUnroll>
__global__ void __launch_bounds__(kThreads)
    dequantize_tiles(const uint8_t* __restrict__ src, Out* __restrict__ dst, int64_t n, int64_t n_items) {
  using R = Runs<Out>;
  using Raw = typename Decoder::template Raw<R::kLen>;
  const int lane = threadIdx.x & 31;
  const int64_t n_warps = static_cast<int64_t>(gridDim.x) * kWarpsPerCta;
  for (int64_t item = static_cast<int64_t>(blockIdx.x) * kWarpsPerCta + (threadIdx.x >> 5); item < n_items;
       item += n_warps) {
    // Every load of the item first, so kUnroll * kCount independent requests are in flight.
    Raw raw[kUnroll][R::kCount];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t tile = item * kUnroll + u;
#pragma unroll
      for (int r = 0; r < R::kCount; ++r) {
        const int e = r * R::kStride + lane * R::kLen;
        if (tile * kTile + e + R::kLen <= n) {
          raw[u][r] = Decoder::template load<R::kLen>(src + tile * Decoder::kTileBytes, e);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t tile = item * kUnroll + u;
#pragma unroll
      for (int r = 0; r < R::kCount; ++r) {
        const int e = r * R::kStride + lane * R::kLen;
        const int64_t first = tile * kTile + e;
        if (first + R::kLen <= n) {
          float v[R::kLen];
          const bool clean = Decoder::template decode<R::kLen>(raw[u][r], e, v);
          store_run(dst + first, v, clean);
        } else if constexpr (Decoder::kBlockElems == 1) {
          // The tensor's last, partial run (block types end on a multiple of 32 outputs).
          const auto* elems = reinterpret_cast<const typename Decoder::Block*>(src);
          for (int64_t i = first; i < n; ++i) store_one(dst + i, Decoder::one(elems[i]));
        }
      }
    }
  }
}

template <class Decoder, class Out>
void launch(const void* d_src, Out* d_dst, int64_t n, cudaStream_t stream) {
  const auto* src = static_cast<const typename Decoder::Block*>(d_src);
  const bool tiled = reinterpret_cast<uintptr_t>(d_src) % Decoder::kSrcAlign == 0 &&
                     reinterpret_cast<uintptr_t>(d_dst) % 16 == 0;
  if (tiled) {
    constexpr int kUnroll = unroll_of<Decoder>();
    const auto kernel = dequantize_tiles<Decoder, Out, kUnroll>;
    // One full wave of resident CTAs: cached per kernel (it depends on the kernel and the arch only).
    static const int ctas_per_sm = [&] {
      int c = 0;
      FB_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&c, kernel, kThreads, 0));
      return c > 0 ? c : 1;
    }();
    int device = 0, sms = 0;
    FB_CUDA_CHECK(cudaGetDevice(&device));
    FB_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    const int64_t n_tiles = (n + kTile - 1) / kTile;
    const int64_t n_items = (n_tiles + kUnroll - 1) / kUnroll;
    const int64_t ctas = std::min<int64_t>((n_items + kWarpsPerCta - 1) / kWarpsPerCta,
                                           static_cast<int64_t>(sms) * ctas_per_sm);
    kernel<<<static_cast<unsigned>(ctas), kThreads, 0, stream>>>(static_cast<const uint8_t*>(d_src), d_dst, n,
                                                                 n_items);
    FB_CUDA_CHECK_LAUNCH();
    return;
  }
  const int64_t threads = (n + kPerThread - 1) / kPerThread;
  const int64_t blocks = (threads + kThreads - 1) / kThreads;
  if (blocks > INT_MAX) throw std::invalid_argument("fb::cuda::dequantize: tensor too large for one launch");
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
