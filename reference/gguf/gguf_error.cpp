#include "reference/gguf/gguf_error.h"

#include <utility>

namespace fb {
namespace {

std::string format_what(uint64_t offset, const std::string& message, const std::string& expected,
                        const std::string& file) {
  std::string s;
  if (!file.empty()) s += file + ": ";
  s += "offset " + std::to_string(offset) + ": " + message;
  if (!expected.empty()) s += " (expected " + expected + ")";
  return s;
}

}  // namespace

const char* to_string(GgufErrc e) {
  switch (e) {
    case GgufErrc::io:
      return "io";
    case GgufErrc::truncated:
      return "truncated";
    case GgufErrc::bad_magic:
      return "bad_magic";
    case GgufErrc::bad_version:
      return "bad_version";
    case GgufErrc::bad_count:
      return "bad_count";
    case GgufErrc::bad_key:
      return "bad_key";
    case GgufErrc::bad_value_type:
      return "bad_value_type";
    case GgufErrc::bad_string:
      return "bad_string";
    case GgufErrc::bad_alignment:
      return "bad_alignment";
    case GgufErrc::bad_tensor_name:
      return "bad_tensor_name";
    case GgufErrc::bad_tensor_dims:
      return "bad_tensor_dims";
    case GgufErrc::bad_tensor_type:
      return "bad_tensor_type";
    case GgufErrc::bad_tensor_offset:
      return "bad_tensor_offset";
    case GgufErrc::bad_metadata:
      return "bad_metadata";
  }
  return "unknown";
}

GgufError::GgufError(GgufErrc code, uint64_t offset, std::string message, std::string expected,
                     std::string file)
    : std::runtime_error(format_what(offset, message, expected, file)),
      m_code(code),
      m_offset(offset),
      m_message(std::move(message)),
      m_expected(std::move(expected)),
      m_file(std::move(file)) {}

GgufError GgufError::with_file(std::string file) const {
  return GgufError(m_code, m_offset, m_message, m_expected, std::move(file));
}

}  // namespace fb
