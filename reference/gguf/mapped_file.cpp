#include "reference/gguf/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "reference/gguf/gguf_error.h"

namespace fb {
namespace {

[[noreturn]] void throw_io(const std::filesystem::path& path, const char* what, int err) {
  throw GgufError(GgufErrc::io, 0, std::string(what) + " failed: " + std::strerror(err),
                  "a readable regular file", path.string());
}

// Closes the descriptor on every path out of the constructor; the mapping outlives it.
struct FdGuard {
  int fd;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

MappedFile::MappedFile(const std::filesystem::path& path) : m_path(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw_io(path, "open", errno);
  FdGuard guard{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_io(path, "fstat", errno);
  // Mapping a directory or a FIFO fails with obscure errors or blocks; say what is wrong instead.
  if (!S_ISREG(st.st_mode)) throw_io(path, "open (not a regular file)", EINVAL);
  if (st.st_size == 0) return;
  if (static_cast<uint64_t>(st.st_size) > SIZE_MAX) throw_io(path, "mmap", EFBIG);
  void* p = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED) throw_io(path, "mmap", errno);
  m_data = static_cast<const uint8_t*>(p);
  m_size = static_cast<size_t>(st.st_size);
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : m_path(std::move(other.m_path)),
      m_data(std::exchange(other.m_data, nullptr)),
      m_size(std::exchange(other.m_size, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    release();
    m_path = std::move(other.m_path);
    m_data = std::exchange(other.m_data, nullptr);
    m_size = std::exchange(other.m_size, 0);
  }
  return *this;
}

MappedFile::~MappedFile() { release(); }

void MappedFile::release() noexcept {
  if (m_data != nullptr) ::munmap(const_cast<uint8_t*>(m_data), m_size);
  m_data = nullptr;
  m_size = 0;
}

}  // namespace fb
