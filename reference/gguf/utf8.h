#pragma once
// Strict UTF-8 validation (RFC 3629): no overlong forms, no UTF-16 surrogates, nothing above
// U+10FFFF. GGUF keys, tensor names and string values must pass it.
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace fb {

inline constexpr size_t kUtf8Valid = static_cast<size_t>(-1);

// Index of the first byte that starts an invalid or truncated sequence, or kUtf8Valid.
inline size_t utf8_first_invalid(std::string_view s) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const uint8_t c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte; narrowed to exclude bad forms
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;  // overlong
      if (c == 0xED) hi = 0x9F;  // surrogates U+D800..U+DFFF
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;  // overlong
      if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
    } else {
      return i;  // stray continuation byte, overlong 2-byte lead (C0/C1) or F5..FF
    }
    if (n - i < len) return i;
    if (p[i + 1] < lo || p[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return i;
    }
    i += len;
  }
  return kUtf8Valid;
}

inline bool utf8_valid(std::string_view s) { return utf8_first_invalid(s) == kUtf8Valid; }

}  // namespace fb
