#pragma once
// Every failure to read a GGUF file is a GgufError that says where (byte offset) and what was expected.
#include <cstdint>
#include <stdexcept>
#include <string>

namespace fb {

enum class GgufErrc {
  io,         // cannot open / stat / map the file
  truncated,  // the file ends before a field
  bad_magic,
  bad_version,
  bad_count,          // a count (tensors, kv, array, string length) larger than the bytes left
  bad_key,            // empty or duplicate key, or key not valid UTF-8
  bad_value_type,     // unknown gguf value type id, or a nested array
  bad_string,         // string not valid UTF-8 or over the length limit
  bad_alignment,      // general.alignment not a u32 power of two
  bad_tensor_name,    // empty, too long (>= 64 bytes), duplicate, or not UTF-8
  bad_tensor_dims,    // n_dims > 4, negative or overflowing extents
  bad_tensor_type,    // unknown ggml type id, or ne[0] not a multiple of its block size
  bad_tensor_offset,  // misaligned, overlapping, out of order or past the end of the file
  bad_metadata,       // a value present with the wrong type where a type is required
};

const char* to_string(GgufErrc e);

class GgufError : public std::runtime_error {
 public:
  // what() reads "<file>: offset <off>: <message> (expected <expected>)".
  GgufError(GgufErrc code, uint64_t offset, std::string message, std::string expected, std::string file = {});
  GgufErrc code() const noexcept { return m_code; }
  uint64_t offset() const noexcept { return m_offset; }
  const std::string& message() const noexcept { return m_message; }
  const std::string& expected() const noexcept { return m_expected; }
  const std::string& file() const noexcept { return m_file; }
  GgufError with_file(std::string file) const;

 private:
  GgufErrc m_code;
  uint64_t m_offset;
  std::string m_message;
  std::string m_expected;
  std::string m_file;
};

}  // namespace fb
