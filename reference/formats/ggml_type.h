#pragma once
// ggml tensor type ids (ggml.h) and their block geometry. The table covers every id a GGUF file
// may carry so that files holding types fusebench cannot convert still parse and validate.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace fb {

enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  // 4 and 5 (Q4_2, Q4_3) were removed from ggml.
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  // 31..33 (Q4_0_4_4, Q4_0_4_8, Q4_0_8_8) were removed from ggml.
  TQ1_0 = 34,
  TQ2_0 = 35,
  // 36..38 (IQ4_NL_4_4, IQ4_NL_4_8, IQ4_NL_8_8) were removed from ggml.
  MXFP4 = 39,
  NVFP4 = 40,
  Q1_0 = 41,
};

// One past the largest id the vendored ggml knows (its GGML_TYPE_COUNT).
inline constexpr uint32_t kGgmlTypeCount = 42;

struct GgmlTypeInfo {
  uint32_t id;
  std::string_view name;  // ggml's spelling, e.g. "q4_K"
  int64_t block_elems;    // elements per block (1 for plain types)
  size_t block_bytes;     // bytes per block
  bool convertible;       // fusebench can dequantize (and quantize) it
};

// nullptr for ids that are unknown or were removed from ggml (e.g. 4, 5, 31..33).
const GgmlTypeInfo* ggml_type_info(uint32_t id);
inline const GgmlTypeInfo& ggml_type_info(GgmlType t) { return *ggml_type_info(static_cast<uint32_t>(t)); }

// Case-insensitive lookup by ggml name ("q4_K", "Q4_K", "f32", ...).
std::optional<GgmlType> parse_ggml_type(std::string_view name);
std::string_view ggml_type_name(GgmlType t);

// Validation shared by the CPU conversion entry points: returns the info of `type` when it is
// convertible and n is a non-negative multiple of its block size; otherwise throws
// std::invalid_argument with a message prefixed by `caller` (e.g. "dequantize").
const GgmlTypeInfo& require_convertible(const char* caller, GgmlType type, int64_t n);

// Bytes of one row of n elements; n must be a multiple of the block size (checked by callers).
size_t ggml_row_bytes(GgmlType t, int64_t n);

// The types fusebench converts (dequant + reference quantize), in a stable order.
inline constexpr GgmlType kConvertibleTypes[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16,
                                                 GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q5_K,
                                                 GgmlType::Q6_K};

}  // namespace fb
