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

class NpyError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct NpyArray {
  std::vector<int64_t> shape;  // C order
  std::vector<float> data;
};

// Accepts '<f4' (and '|f4'-free equivalents), fortran_order False, any number of dims.
NpyArray read_npy(const std::filesystem::path& path);
NpyArray parse_npy(std::span<const uint8_t> bytes, const std::string& name = "<memory>");
// Writes version 1.0 '<f4'; atomic (temp file + rename).
void write_npy(const std::filesystem::path& path, std::span<const float> data, std::span<const int64_t> shape);

}  // namespace fb
