#pragma once
// Seeded random ggml blocks that are valid and realistic: random quant bits, fp16 scales drawn in
// the range real Q4_K_M weights have (never zero, never NaN/inf), so kernels see representative
// work and outputs are never all zeros.
#include <cstdint>
#include <vector>

#include "reference/formats/ggml_type.h"

namespace fb {

std::vector<uint8_t> random_blocks(GgmlType type, int64_t rows, int64_t cols, uint64_t seed, uint64_t stream);

}  // namespace fb
