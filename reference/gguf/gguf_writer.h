#pragma once
// Streaming GGUF v3 writer. Layout follows ggml's gguf_write_out exactly (magic, version, int64
// counts, KVs, tensor infos, zero padding to the alignment, tensor data each zero-padded to the
// alignment), so writing back what GgufFile read reproduces the file byte for byte.
//
// Usage: add_kv()... add_tensor()... then either write_all() with in-memory data, or
// begin_data() followed by append() calls that stream each tensor's bytes in order (a 17 GB
// model never sits in RAM), then finish(). The output goes to a unique hidden temp file beside
// `path` (created O_EXCL, see reference/util/unique_temp.h) and is renamed onto `path` by finish(), so a
// killed run leaves no half-written file under the final name.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "reference/formats/ggml_type.h"
#include "reference/gguf/gguf_file.h"
#include "reference/gguf/gguf_value.h"

namespace fb {

class GgufWriter {
 public:
  explicit GgufWriter(std::filesystem::path path);
  GgufWriter(const GgufWriter&) = delete;
  GgufWriter& operator=(const GgufWriter&) = delete;
  ~GgufWriter();  // removes the temp file if finish() was not reached

  // Keys keep insertion order; a duplicate key throws std::invalid_argument.
  // Setting "general.alignment" (must be a UINT32 power of two) changes the alignment used.
  void add_kv(std::string key, GgufValue value);
  // Registers a tensor; its offset is computed as ggml does. Validates name and shape.
  // Returns the index of the tensor.
  size_t add_tensor(std::string name, GgmlType type, std::vector<int64_t> ne);
  // Same, for a raw type id (used when copying files whose types fusebench cannot convert).
  size_t add_tensor_raw(std::string name, uint32_t type, std::vector<int64_t> ne);

  // Writes header, KVs, infos and the padding before the data section.
  void begin_data();
  // Appends bytes of the current tensor; crossing a tensor's end moves to the next one and
  // writes the zero padding. Throws std::logic_error on more bytes than the tensors declare.
  void append(std::span<const uint8_t> bytes);
  // Checks every declared byte was written, flushes, fsyncs and renames into place.
  void finish();

  // Convenience: begin_data(), one append per tensor, finish().
  void write_all(const std::vector<std::span<const uint8_t>>& tensor_bytes);

  const std::vector<GgufTensorInfo>& tensors() const { return m_tensors; }
  uint32_t alignment() const { return m_alignment; }

 private:
  void write_raw(const void* p, size_t n);
  void pad_to_alignment();
  void advance_past_complete();  // moves m_current past tensors whose bytes are all written
  void recompute_offsets();
  void require_not_started(const char* what) const;
  void discard_temp() noexcept;
  std::filesystem::path m_path;
  std::filesystem::path m_tmp_path;
  std::FILE* m_file = nullptr;
  uint32_t m_alignment = kGgufDefaultAlignment;
  std::vector<GgufKv> m_kv;
  std::vector<GgufTensorInfo> m_tensors;
  bool m_data_started = false;
  bool m_finished = false;
  size_t m_current = 0;  // tensor being streamed
  uint64_t m_current_written = 0;
  uint64_t m_position = 0;       // bytes written so far
  uint64_t m_total_bytes = 0;    // sum of the tensors' nbytes
  uint64_t m_total_written = 0;  // tensor bytes appended so far
};

// Writes an exact copy of `file` (metadata, infos, data) to `path` through GgufWriter.
void gguf_copy(const GgufFile& file, const std::filesystem::path& path);

}  // namespace fb
