#pragma once
// GGUF metadata values. Types are kept exactly as read (a u32 stays a u32) so a read -> write
// round trip reproduces the file byte for byte.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace fb {

enum class GgufValueType : int32_t {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
};

const char* to_string(GgufValueType t);
// Size in bytes of a fixed-size scalar type; 0 for STRING and ARRAY.
size_t gguf_scalar_size(GgufValueType t);

// A string as a double-quoted display literal: '"', '\\', \n, \r and \t are backslash-escaped, other
// control bytes and DEL become \xNN, everything else (UTF-8 included) is copied. When the string
// holds more than max_bytes bytes, the output stops at the first UTF-8 character boundary at or
// after max_bytes input bytes (never inside a multi-byte sequence) and ends with the closing quote
// followed by "... (N bytes)", N being the full size.
std::string gguf_quote(std::string_view s, size_t max_bytes = SIZE_MAX);

// An array of one element type (ggml rejects nested arrays, and so do we).
// Booleans are held as uint8_t 0/1 in `values` with elem_type BOOL.
struct GgufArray {
  GgufValueType elem_type = GgufValueType::UINT8;
  std::variant<std::vector<uint8_t>, std::vector<int8_t>, std::vector<uint16_t>, std::vector<int16_t>,
               std::vector<uint32_t>, std::vector<int32_t>, std::vector<float>, std::vector<uint64_t>,
               std::vector<int64_t>, std::vector<double>, std::vector<std::string>>
      values;
  size_t size() const;
  bool operator==(const GgufArray&) const = default;
};

struct GgufBool {
  bool value = false;
  bool operator==(const GgufBool&) const = default;
};

// Variant index order does not matter; `type()` maps each alternative to its GgufValueType.
using GgufValueStorage = std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, GgufBool,
                                      std::string, GgufArray, uint64_t, int64_t, double>;

struct GgufValue {
  GgufValueStorage v;

  GgufValueType type() const;
  // Integer value of any integer type (bool excluded) when it fits in int64 / uint64.
  std::optional<int64_t> as_int() const;
  std::optional<uint64_t> as_uint() const;
  std::optional<double> as_float() const;  // FLOAT32 / FLOAT64
  const std::string* as_string() const;
  const GgufArray* as_array() const;
  std::string to_display(size_t max_items = 8) const;  // human-readable, arrays abbreviated
  bool operator==(const GgufValue&) const = default;
};

struct GgufKv {
  std::string key;
  GgufValue value;
  bool operator==(const GgufKv&) const = default;
};

}  // namespace fb
