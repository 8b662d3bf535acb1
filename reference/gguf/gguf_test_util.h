#pragma once
// Test helpers: a byte-level GGUF emitter that is independent of GgufWriter (so the two can pin
// each other's layout), and a self-deleting temporary directory.
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace fb::test {

struct Bytes {
  std::vector<uint8_t> b;

  size_t size() const { return b.size(); }
  Bytes& raw(const void* p, size_t n) {
    const auto* c = static_cast<const uint8_t*>(p);
    b.insert(b.end(), c, c + n);
    return *this;
  }
  template <typename T>
  Bytes& le(T v) {
    return raw(&v, sizeof v);
  }
  Bytes& u8(uint8_t v) { return le(v); }
  Bytes& u32(uint32_t v) { return le(v); }
  Bytes& i32(int32_t v) { return le(v); }
  Bytes& u64(uint64_t v) { return le(v); }
  Bytes& i64(int64_t v) { return le(v); }
  Bytes& str(std::string_view s) {
    u64(s.size());
    return raw(s.data(), s.size());
  }
  Bytes& zeros(size_t n) {
    b.insert(b.end(), n, 0);
    return *this;
  }
  Bytes& pad(size_t align) { return zeros((align - b.size() % align) % align); }
  Bytes& header(int64_t n_tensors, int64_t n_kv, uint32_t version = 3) {
    raw("GGUF", 4);
    u32(version);
    i64(n_tensors);
    return i64(n_kv);
  }
  // A KV with a u32 value; returns nothing, callers record b.size() first when they need offsets.
  Bytes& kv_u32(std::string_view key, uint32_t v) { return str(key).i32(4).u32(v); }
  Bytes& kv_str(std::string_view key, std::string_view v) { return str(key).i32(8).str(v); }
  Bytes& tinfo(std::string_view name, const std::vector<int64_t>& ne, uint32_t type, uint64_t offset) {
    str(name).u32(static_cast<uint32_t>(ne.size()));
    for (int64_t e : ne) i64(e);
    return u32(type).u64(offset);
  }
  template <typename T>
  void put_at(size_t at, T v) {
    std::memcpy(b.data() + at, &v, sizeof v);
  }
};

inline std::vector<uint8_t> read_bytes(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

inline void write_bytes(const std::filesystem::path& p, const std::vector<uint8_t>& b) {
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

inline std::vector<uint8_t> random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& x : v) x = static_cast<uint8_t>(rng());
  return v;
}

class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    m_path = std::filesystem::temp_directory_path() /
             ("fb_gguf_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(m_path);
    std::filesystem::create_directories(m_path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(m_path, ec);
  }
  std::filesystem::path operator/(std::string_view name) const { return m_path / name; }
  const std::filesystem::path& path() const { return m_path; }

 private:
  std::filesystem::path m_path;
};

}  // namespace fb::test
