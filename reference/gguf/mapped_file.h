#pragma once
// Read-only POSIX memory map of a whole file. The GGUF reader works on the mapped bytes directly,
// so a multi-GB model is paged in on demand instead of being copied.
#include <cstdint>
#include <filesystem>
#include <span>

namespace fb {

class MappedFile {
 public:
  // Throws GgufError(io) with strerror when the file cannot be opened, stat'ed or mapped.
  explicit MappedFile(const std::filesystem::path& path);
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  ~MappedFile();

  // Empty for an empty file (mmap cannot map zero bytes, so nothing is mapped then).
  std::span<const uint8_t> bytes() const { return {m_data, m_size}; }
  const std::filesystem::path& path() const { return m_path; }

 private:
  void release() noexcept;
  std::filesystem::path m_path;
  const uint8_t* m_data = nullptr;
  size_t m_size = 0;
};

}  // namespace fb
