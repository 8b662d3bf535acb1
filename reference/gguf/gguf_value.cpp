#include "reference/gguf/gguf_value.h"

#include <fmt/format.h>

#include <limits>
#include <type_traits>

namespace fb {
namespace {

template <typename T>
constexpr GgufValueType type_of() {
  if constexpr (std::is_same_v<T, uint8_t>)
    return GgufValueType::UINT8;
  else if constexpr (std::is_same_v<T, int8_t>)
    return GgufValueType::INT8;
  else if constexpr (std::is_same_v<T, uint16_t>)
    return GgufValueType::UINT16;
  else if constexpr (std::is_same_v<T, int16_t>)
    return GgufValueType::INT16;
  else if constexpr (std::is_same_v<T, uint32_t>)
    return GgufValueType::UINT32;
  else if constexpr (std::is_same_v<T, int32_t>)
    return GgufValueType::INT32;
  else if constexpr (std::is_same_v<T, float>)
    return GgufValueType::FLOAT32;
  else if constexpr (std::is_same_v<T, GgufBool>)
    return GgufValueType::BOOL;
  else if constexpr (std::is_same_v<T, std::string>)
    return GgufValueType::STRING;
  else if constexpr (std::is_same_v<T, GgufArray>)
    return GgufValueType::ARRAY;
  else if constexpr (std::is_same_v<T, uint64_t>)
    return GgufValueType::UINT64;
  else if constexpr (std::is_same_v<T, int64_t>)
    return GgufValueType::INT64;
  else {
    static_assert(std::is_same_v<T, double>);
    return GgufValueType::FLOAT64;
  }
}

template <typename T>
std::string scalar_display(const T& v) {
  if constexpr (std::is_same_v<T, std::string>)
    return gguf_quote(v);
  else if constexpr (std::is_same_v<T, GgufBool>)
    return v.value ? "true" : "false";
  // int8/uint8 would otherwise print as characters.
  else if constexpr (std::is_integral_v<T> && std::is_signed_v<T>)
    return fmt::format("{}", int64_t{v});
  else if constexpr (std::is_integral_v<T>)
    return fmt::format("{}", uint64_t{v});
  else
    return fmt::format("{}", v);
}

}  // namespace

const char* to_string(GgufValueType t) {
  switch (t) {
    case GgufValueType::UINT8:
      return "UINT8";
    case GgufValueType::INT8:
      return "INT8";
    case GgufValueType::UINT16:
      return "UINT16";
    case GgufValueType::INT16:
      return "INT16";
    case GgufValueType::UINT32:
      return "UINT32";
    case GgufValueType::INT32:
      return "INT32";
    case GgufValueType::FLOAT32:
      return "FLOAT32";
    case GgufValueType::BOOL:
      return "BOOL";
    case GgufValueType::STRING:
      return "STRING";
    case GgufValueType::ARRAY:
      return "ARRAY";
    case GgufValueType::UINT64:
      return "UINT64";
    case GgufValueType::INT64:
      return "INT64";
    case GgufValueType::FLOAT64:
      return "FLOAT64";
  }
  return "UNKNOWN";
}

std::string gguf_quote(std::string_view s, size_t max_bytes) {
  std::string out = "\"";
  size_t shown = 0;
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    // Cut only at a UTF-8 character boundary, never inside a multi-byte sequence.
    if (shown >= max_bytes && (c & 0xC0) != 0x80) {
      out += fmt::format("\"... ({} bytes)", s.size());
      return out;
    }
    ++shown;
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7F) {
          out += fmt::format("\\x{:02x}", c);
        } else {
          out += ch;
        }
    }
  }
  out += '"';
  return out;
}

size_t gguf_scalar_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::UINT8:
    case GgufValueType::INT8:
    case GgufValueType::BOOL:
      return 1;
    case GgufValueType::UINT16:
    case GgufValueType::INT16:
      return 2;
    case GgufValueType::UINT32:
    case GgufValueType::INT32:
    case GgufValueType::FLOAT32:
      return 4;
    case GgufValueType::UINT64:
    case GgufValueType::INT64:
    case GgufValueType::FLOAT64:
      return 8;
    case GgufValueType::STRING:
    case GgufValueType::ARRAY:
      return 0;
  }
  return 0;
}

size_t GgufArray::size() const {
  return std::visit([](const auto& vec) { return vec.size(); }, values);
}

GgufValueType GgufValue::type() const {
  return std::visit([](const auto& x) { return type_of<std::decay_t<decltype(x)>>(); }, v);
}

std::optional<int64_t> GgufValue::as_int() const {
  return std::visit(
      [](const auto& x) -> std::optional<int64_t> {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, uint64_t>) {
          if (x > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
          return static_cast<int64_t>(x);
        } else if constexpr (std::is_integral_v<T>) {
          return static_cast<int64_t>(x);
        } else {
          return std::nullopt;
        }
      },
      v);
}

std::optional<uint64_t> GgufValue::as_uint() const {
  return std::visit(
      [](const auto& x) -> std::optional<uint64_t> {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_integral_v<T> && std::is_signed_v<T>) {
          if (x < 0) return std::nullopt;
          return static_cast<uint64_t>(x);
        } else if constexpr (std::is_integral_v<T>) {
          return static_cast<uint64_t>(x);
        } else {
          return std::nullopt;
        }
      },
      v);
}

std::optional<double> GgufValue::as_float() const {
  if (const auto* f = std::get_if<float>(&v)) return *f;
  if (const auto* d = std::get_if<double>(&v)) return *d;
  return std::nullopt;
}

const std::string* GgufValue::as_string() const { return std::get_if<std::string>(&v); }

const GgufArray* GgufValue::as_array() const { return std::get_if<GgufArray>(&v); }

std::string GgufValue::to_display(size_t max_items) const {
  const auto* arr = as_array();
  if (arr == nullptr) {
    return std::visit(
        [](const auto& x) -> std::string {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, GgufArray>)
            return {};
          else
            return scalar_display(x);
        },
        v);
  }
  const bool is_bool = arr->elem_type == GgufValueType::BOOL;
  return std::visit(
      [&](const auto& vec) {
        std::string out = "[";
        const size_t shown = std::min(vec.size(), max_items);
        for (size_t i = 0; i < shown; ++i) {
          if (i > 0) out += ", ";
          using E = std::decay_t<decltype(vec[i])>;
          if constexpr (std::is_same_v<E, uint8_t>) {
            out += is_bool ? (vec[i] ? "true" : "false") : scalar_display(vec[i]);
          } else {
            out += scalar_display(vec[i]);
          }
        }
        if (shown < vec.size()) out += fmt::format(", ... ({} items)", vec.size());
        out += "]";
        return out;
      },
      arr->values);
}

}  // namespace fb
