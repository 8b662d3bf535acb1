#pragma once
// The packed 6-bit sub-block scales and mins shared by Q4_K and Q5_K (12 bytes for 8 pairs):
// sub-blocks 0..3 keep theirs in the low 6 bits of bytes 0..7; sub-blocks 4..7 split theirs into
// a low nibble in bytes 8..11 and the top two bits in the spare high bits of bytes 0..7.
#include <cstdint>

#include "reference/formats/host_device.h"

namespace fb {

struct KScaleMin {
  uint8_t scale;
  uint8_t min;
};

FB_HOST_DEVICE inline KScaleMin get_scale_min_k4(int j, const uint8_t* q) {
  if (j < 4) return {static_cast<uint8_t>(q[j] & 63), static_cast<uint8_t>(q[j + 4] & 63)};
  return {static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4)),
          static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4))};
}

}  // namespace fb
