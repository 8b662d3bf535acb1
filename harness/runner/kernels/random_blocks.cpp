#include "harness/runner/kernels/random_blocks.h"

#include <cstring>

#include "reference/formats/half.h"
#include "reference/util/splitmix.h"

namespace fb {

std::vector<uint8_t> random_blocks(GgmlType type, int64_t rows, int64_t cols, uint64_t seed,
                                   uint64_t stream) {
  const size_t bytes = ggml_row_bytes(type, cols) * static_cast<size_t>(rows);
  std::vector<uint8_t> v(bytes);
  const CounterRng rng(seed, stream);
  // 8 random bytes per draw: the fill is the slow part for GB-sized weights.
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    const uint64_t b = rng.bits(i / 8);
    std::memcpy(v.data() + i, &b, 8);
  }
  for (; i < bytes; ++i) v[i] = static_cast<uint8_t>(rng.bits(bytes + i));
  const CounterRng scales(seed, stream ^ 0x5CA1E5ull);
  auto put_half = [&](size_t at, uint64_t k, float lo, float hi) {
    const uint16_t h = fp32_to_fp16(lo + (hi - lo) * scales.uniform(k));
    std::memcpy(v.data() + at, &h, 2);
  };
  auto put_float = [&](size_t at, uint64_t k) {
    const float f = 0.02f * scales.normal(k);
    std::memcpy(v.data() + at, &f, 4);
  };
  const GgmlTypeInfo& info = ggml_type_info(type);
  const size_t nblocks = bytes / info.block_bytes;
  for (size_t b = 0; b < nblocks; ++b) {
    const size_t base = b * info.block_bytes;
    switch (type) {
      case GgmlType::Q4_K:
      case GgmlType::Q5_K:
        put_half(base, 2 * b, 1e-4f, 2e-3f);          // d: 6-bit scales x d ~ weight step
        put_half(base + 2, 2 * b + 1, 1e-4f, 2e-3f);  // dmin
        break;
      case GgmlType::Q6_K:
        put_half(base + 208, b, 5e-5f, 5e-4f);  // d at the end of the block; int8 scales up to 127
        break;
      case GgmlType::Q8_0:
        put_half(base, b, 1e-4f, 5e-4f);
        break;
      case GgmlType::F16:
        put_half(base, b, -0.05f, 0.05f);
        break;
      case GgmlType::BF16: {
        const uint16_t h = fp32_to_bf16(0.02f * scales.normal(b));
        std::memcpy(v.data() + base, &h, 2);
        break;
      }
      case GgmlType::F32:
        put_float(base, b);
        break;
      default:
        break;
    }
  }
  return v;
}

}  // namespace fb
