#pragma once
// A temp file beside `target` for write-then-rename: same directory (rename stays atomic, no
// cross-device move), hidden, and created with O_EXCL under a name unique per process, call and a
// random salt, so two writers of the same target (two processes, or two threads) never share a
// temp file and a stale one from a killed run is never reused. Header-only so that every library
// that writes files (gguf, npy) can use it without a link dependency.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <random>
#include <string>

namespace fb {

struct UniqueTemp {
  std::filesystem::path path;
  int fd = -1;  // open for writing; -1 on failure with errno set
};

inline UniqueTemp create_unique_temp(const std::filesystem::path& target) {
  static std::atomic<unsigned> counter{0};
  const std::filesystem::path dir = target.parent_path().empty() ? "." : target.parent_path();
  const unsigned salt = std::random_device{}();
  UniqueTemp t;
  for (int attempt = 0; attempt < 16; ++attempt) {
    t.path = dir / ("." + target.filename().string() + ".tmp." + std::to_string(::getpid()) + "." +
                    std::to_string(counter++) + "." + std::to_string(salt + static_cast<unsigned>(attempt)));
    // 0666 & ~umask like an ordinary file (mkstemp's 0600 would hide the output from other users).
    t.fd = ::open(t.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (t.fd >= 0 || errno != EEXIST) return t;
  }
  errno = EEXIST;
  return t;
}

}  // namespace fb
