#pragma once
// Read-only view of a GGUF v3 file, memory-mapped. Parsing validates everything up front
// (notes/ggml-formats.md §1): after open() succeeds every tensor's bytes lie inside the file.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "reference/formats/ggml_type.h"
#include "reference/gguf/gguf_error.h"
#include "reference/gguf/gguf_value.h"

namespace fb {

inline constexpr uint32_t kGgufVersion = 3;
inline constexpr uint32_t kGgufDefaultAlignment = 32;
inline constexpr size_t kGgufMaxTensorName = 63;  // ggml rejects names of 64 bytes or more
inline constexpr int kGgufMaxDims = 4;

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> ne;   // ggml order: ne[0] is the fastest-varying (columns); size == n_dims
  uint32_t type = 0;         // raw ggml type id (validated: known to ggml_type_info)
  uint64_t offset = 0;       // relative to the data section
  uint64_t nbytes = 0;       // ggml_nbytes: rows * row bytes
  uint64_t info_offset = 0;  // file offset where this tensor's info record starts (for diagnostics)

  GgmlType ggml_type() const { return static_cast<GgmlType>(type); }
  int64_t n_elements() const;
  int64_t n_cols() const { return ne.empty() ? 1 : ne[0]; }
  int64_t n_rows() const;  // product of ne[1..]
};

class MappedFile;

class GgufFile {
 public:
  // Maps and validates `path`. Throws GgufError (with the file name) on any malformed input.
  static GgufFile open(const std::filesystem::path& path);
  // Parses bytes owned by the caller (must outlive the GgufFile); used by fuzzers and tests.
  static GgufFile parse(std::span<const uint8_t> bytes, std::string name = "<memory>");

  GgufFile(GgufFile&&) noexcept;
  GgufFile& operator=(GgufFile&&) noexcept;
  ~GgufFile();

  const std::string& name() const { return m_name; }
  uint32_t version() const { return m_version; }
  uint32_t alignment() const { return m_alignment; }
  uint64_t data_offset() const { return m_data_offset; }  // absolute file offset of the data section
  uint64_t file_size() const { return m_bytes.size(); }

  const std::vector<GgufKv>& metadata() const { return m_kv; }
  const GgufValue* find(std::string_view key) const;
  // Typed getters throw GgufError(bad_metadata) when present with an unexpected type.
  std::optional<std::string> get_string(std::string_view key) const;
  std::optional<uint64_t> get_uint(std::string_view key) const;  // accepts any integer type >= 0
  std::optional<double> get_float(std::string_view key) const;

  const std::vector<GgufTensorInfo>& tensors() const { return m_tensors; }
  const GgufTensorInfo* find_tensor(std::string_view name) const;
  std::span<const uint8_t> tensor_data(const GgufTensorInfo& t) const;
  std::span<const uint8_t> bytes() const { return m_bytes; }

 private:
  GgufFile() = default;
  const GgufKv* find_kv(std::string_view key, uint64_t* offset) const;
  std::shared_ptr<MappedFile> m_map;
  std::span<const uint8_t> m_bytes;
  std::string m_name;
  uint32_t m_version = 0;
  uint32_t m_alignment = kGgufDefaultAlignment;
  uint64_t m_data_offset = 0;
  std::vector<GgufKv> m_kv;
  std::vector<uint64_t> m_kv_offsets;  // file offset of each KV record, for bad_metadata errors
  std::vector<GgufTensorInfo> m_tensors;
  friend class GgufParser;
};

}  // namespace fb
