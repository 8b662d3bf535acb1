#include "reference/formats/centred_q4k.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "reference/formats/half.h"
#include "reference/util/splitmix.h"

namespace fb {

std::vector<BlockQ4K> centred_q4k_blocks(int64_t rows, int64_t cols, uint64_t seed, uint64_t stream) {
  const CounterRng rng(seed, stream);
  std::vector<BlockQ4K> v(static_cast<size_t>(rows * (cols / 256)));
  for (size_t b = 0; b < v.size(); ++b) {
    BlockQ4K& blk = v[b];
    const float d = 2e-4f * (1.0f + rng.uniform(b * 32));
    blk.d = fp32_to_fp16(d);
    blk.dmin = fp32_to_fp16(10.0f * d);
    for (int i = 0; i < 16; ++i) {
      const uint64_t r = rng.bits(b * 32 + 1 + i);
      std::memcpy(blk.qs + 8 * i, &r, 8);
    }
    uint8_t sc[8], mn[8];
    for (int j = 0; j < 8; ++j) {
      const uint64_t r = rng.bits(b * 32 + 17 + j);
      sc[j] = static_cast<uint8_t>(32 + r % 32);
      mn[j] =
          static_cast<uint8_t>(std::min(63.0f, std::nearbyint((6.0f + 3.0f * uniform01(r)) * sc[j] / 10.0f)));
    }
    for (int j = 0; j < 4; ++j) {
      blk.scales[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
      blk.scales[j + 4] = static_cast<uint8_t>(mn[j] | ((mn[j + 4] >> 4) << 6));
      blk.scales[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4));
    }
  }
  return v;
}

}  // namespace fb
