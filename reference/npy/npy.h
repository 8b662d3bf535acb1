#pragma once
// NumPy .npy (format 1.0/2.0/3.0) reader and writer for little-endian float32 C-order arrays.
// Malformed headers fail with NpyError naming the byte offset and what was expected.
#include <cstdint>
#include <filesystem>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace fb {

// The file's contents are malformed or hold something other than little-endian float32.
class NpyError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The file could not be opened, read, written or renamed (a subclass so callers that only care
// about "it failed" can catch NpyError, while the CLI maps the two to different exit codes).
class NpyIoError : public NpyError {
 public:
  using NpyError::NpyError;
};

struct NpyArray {
  std::vector<int64_t> shape;  // C order
  std::vector<float> data;
};

// Accepts descr '<f4' only; fortran_order must be False unless the array has at most one dimension
// (where both orders are the same bytes). Any number of dims, including 0 (a scalar).
NpyArray read_npy(const std::filesystem::path& path);
NpyArray parse_npy(std::span<const uint8_t> bytes, const std::string& name = "<memory>");
// Writes version 1.0 '<f4' with the header padded to 64 bytes; atomic (temp file + rename).
// Throws std::invalid_argument when data.size() is not the product of shape.
void write_npy(const std::filesystem::path& path, std::span<const float> data,
               std::span<const int64_t> shape);
// A shape as Python prints the tuple: "()", "(5,)", "(4, 512)"; what .npy headers and numpy users read.
std::string format_npy_shape(std::span<const int64_t> shape);

}  // namespace fb
