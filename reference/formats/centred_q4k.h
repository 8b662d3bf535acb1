#pragma once
// Seeded Q4_K blocks shaped like a quantizer's output on centred weights: random quants, sub-block
// scales in the upper half of the 6-bit range and mins giving zero points of 6..9 steps (raw random
// scale bytes give zero points up to ~1000, which no real tensor has), so int4 layouts and GEMMs
// built from them see representative scales and zeros.
#include <cstdint>
#include <vector>

#include "reference/formats/blocks.h"

namespace fb {

// rows x cols weights (cols a multiple of 256), deterministic for (seed, stream).
std::vector<BlockQ4K> centred_q4k_blocks(int64_t rows, int64_t cols, uint64_t seed, uint64_t stream);

}  // namespace fb
