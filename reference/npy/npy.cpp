#include "reference/npy/npy.h"

#include <fmt/format.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string_view>

#include "reference/util/unique_temp.h"

namespace fb {

static_assert(std::endian::native == std::endian::little, "the .npy float32 path memcpy's '<f4' data");

namespace {

constexpr uint8_t kMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
// numpy itself refuses headers over 10000 bytes by default; 1 MiB leaves room for odd writers
// while keeping a corrupt length from asking for gigabytes.
constexpr uint32_t kMaxHeaderLen = 1u << 20;
constexpr int kMaxDims = 64;  // numpy's NPY_MAXDIMS

[[noreturn]] void fail(const std::string& name, uint64_t offset, const std::string& msg) {
  throw NpyError(fmt::format("{}: offset {}: {}", name, offset, msg));
}

std::string describe_byte(uint8_t c) {
  if (c >= 0x20 && c < 0x7f) return fmt::format("'{}'", static_cast<char>(c));
  return fmt::format("0x{:02x}", c);
}

// What a numpy dtype string means in words, for the "expected '<f4'" message.
std::string describe_descr(std::string_view d) {
  if (d.size() < 2) return "an unknown dtype";
  const char order = d[0];
  const std::string_view rest =
      (order == '<' || order == '>' || order == '|' || order == '=') ? d.substr(1) : d;
  if (rest.empty()) return "an unknown dtype";
  const char kind = rest[0];
  int size = 0;
  for (char c : rest.substr(1)) {
    if (c < '0' || c > '9' || size > 1000) return "an unknown dtype";
    size = size * 10 + (c - '0');
  }
  std::string what;
  switch (kind) {
    case 'f':
      what = fmt::format("float{}", size * 8);
      break;
    case 'i':
      what = fmt::format("int{}", size * 8);
      break;
    case 'u':
      what = fmt::format("uint{}", size * 8);
      break;
    case 'c':
      what = fmt::format("complex{}", size * 8);
      break;
    case 'b':
      what = "bool";
      break;
    case 'O':
      what = "Python objects";
      break;
    case 'U':
      what = "unicode strings";
      break;
    case 'S':
      what = "byte strings";
      break;
    case 'M':
      what = "datetime64";
      break;
    case 'm':
      what = "timedelta64";
      break;
    default:
      return "an unknown dtype";
  }
  if (order == '>') what = "big-endian " + what;
  return what;
}

// Just enough of Python's literal syntax for the header dict numpy writes:
// {'descr': '<f4', 'fortran_order': False, 'shape': (4, 512), }
class HeaderParser {
 public:
  HeaderParser(std::string_view text, uint64_t base, const std::string& name)
      : m_s(text), m_base(base), m_name(name) {}

  void parse(std::string& descr, bool& fortran, std::vector<int64_t>& shape) {
    bool have_descr = false, have_fortran = false, have_shape = false;
    skip_ws();
    expect('{', "'{' opening the header dict");
    skip_ws();
    while (peek() != '}') {
      const uint64_t key_off = off();
      const std::string key = parse_string("a quoted key");
      skip_ws();
      expect(':', "':' after the key");
      skip_ws();
      bool* seen = nullptr;
      if (key == "descr") {
        seen = &have_descr;
        if (peek() == '[')
          fail_here("descr is a structured dtype (a list of fields); expected '<f4' float32");
        descr = parse_string("descr as a quoted dtype string such as '<f4'");
      } else if (key == "fortran_order") {
        seen = &have_fortran;
        fortran = parse_bool();
      } else if (key == "shape") {
        seen = &have_shape;
        shape = parse_shape();
      } else {
        fail(
            m_name, key_off,
            fmt::format("unexpected header key '{}' (expected only 'descr', 'fortran_order', 'shape')", key));
      }
      if (*seen) fail(m_name, key_off, fmt::format("duplicate header key '{}'", key));
      *seen = true;
      skip_ws();
      if (peek() == ',') {
        ++m_pos;
        skip_ws();
      } else if (peek() != '}') {
        fail_here(fmt::format("found {} where ',' or '}}' should follow a header value", here()));
      }
    }
    ++m_pos;
    skip_ws();
    if (m_pos != m_s.size())
      fail_here(fmt::format("found {} after the header dict (expected only spaces and a newline)", here()));
    if (!have_descr) fail(m_name, m_base, "header dict has no 'descr' key");
    if (!have_fortran) fail(m_name, m_base, "header dict has no 'fortran_order' key");
    if (!have_shape) fail(m_name, m_base, "header dict has no 'shape' key");
  }

 private:
  uint64_t off() const { return m_base + m_pos; }
  char peek() const { return m_pos < m_s.size() ? m_s[m_pos] : '\0'; }
  std::string here() const {
    return m_pos < m_s.size() ? describe_byte(static_cast<uint8_t>(m_s[m_pos]))
                              : std::string("the end of the header");
  }
  [[noreturn]] void fail_here(const std::string& msg) const { fail(m_name, off(), msg); }
  void skip_ws() {
    while (m_pos < m_s.size() &&
           (m_s[m_pos] == ' ' || m_s[m_pos] == '\n' || m_s[m_pos] == '\t' || m_s[m_pos] == '\r'))
      ++m_pos;
  }
  void expect(char c, const char* what) {
    if (peek() != c || m_pos >= m_s.size()) fail_here(fmt::format("found {} (expected {})", here(), what));
    ++m_pos;
  }
  std::string parse_string(const char* what) {
    const char q = peek();
    if (q != '\'' && q != '"') fail_here(fmt::format("found {} (expected {})", here(), what));
    const size_t start = ++m_pos;
    while (m_pos < m_s.size() && m_s[m_pos] != q) {
      // Escapes never occur in the strings numpy writes here; refusing them keeps this a non-evaluator.
      if (m_s[m_pos] == '\\' || m_s[m_pos] == '\n') fail_here("escape or newline inside a header string");
      ++m_pos;
    }
    if (m_pos >= m_s.size()) fail_here("unterminated string in the header");
    return std::string(m_s.substr(start, m_pos++ - start));
  }
  bool parse_bool() {
    if (m_s.substr(m_pos, 4) == "True") {
      m_pos += 4;
      return true;
    }
    if (m_s.substr(m_pos, 5) == "False") {
      m_pos += 5;
      return false;
    }
    fail_here(fmt::format("found {} (expected fortran_order True or False)", here()));
  }
  std::vector<int64_t> parse_shape() {
    std::vector<int64_t> shape;
    expect('(', "shape as a tuple such as (4, 512)");
    skip_ws();
    bool comma_after_last = false;
    while (peek() != ')') {
      if (peek() < '0' || peek() > '9')
        fail_here(fmt::format("found {} in shape (expected a non-negative integer or ')')", here()));
      const uint64_t dim_off = off();
      uint64_t v = 0;
      while (peek() >= '0' && peek() <= '9') {
        v = v * 10 + static_cast<uint64_t>(peek() - '0');
        if (v > static_cast<uint64_t>(INT64_MAX / 10)) fail(m_name, dim_off, "shape dimension too large");
        ++m_pos;
      }
      if (peek() == 'L') ++m_pos;  // Python 2 longs, as old numpy wrote them
      if (shape.size() == kMaxDims) fail(m_name, dim_off, fmt::format("more than {} dimensions", kMaxDims));
      shape.push_back(static_cast<int64_t>(v));
      skip_ws();
      comma_after_last = false;
      if (peek() == ',') {
        ++m_pos;
        comma_after_last = true;
        skip_ws();
      } else if (peek() != ')') {
        fail_here(fmt::format("found {} in shape (expected ',' or ')')", here()));
      }
    }
    // "(3)" is the integer 3 in Python, not a tuple.
    if (shape.size() == 1 && !comma_after_last) fail_here("shape (n) is not a tuple (expected (n,))");
    ++m_pos;
    return shape;
  }

  std::string_view m_s;
  size_t m_pos = 0;
  uint64_t m_base;
  const std::string& m_name;
};

uint32_t read_le(std::span<const uint8_t> b, size_t off, int n) {
  uint32_t v = 0;
  for (int i = 0; i < n; ++i) v |= static_cast<uint32_t>(b[off + i]) << (8 * i);
  return v;
}

}  // namespace

std::string format_npy_shape(std::span<const int64_t> shape) {
  if (shape.size() == 1) return fmt::format("({},)", shape[0]);
  return fmt::format("({})", fmt::join(shape, ", "));
}

NpyArray parse_npy(std::span<const uint8_t> bytes, const std::string& name) {
  for (size_t i = 0; i < sizeof kMagic; ++i) {
    if (i >= bytes.size())
      fail(name, i,
           fmt::format("file is {} bytes, truncated inside the magic (expected \\x93NUMPY)", bytes.size()));
    if (bytes[i] != kMagic[i])
      fail(name, i,
           fmt::format("found {} (expected the .npy magic \\x93NUMPY; is this a .npy file?)",
                       describe_byte(bytes[i])));
  }
  if (bytes.size() < 8) fail(name, bytes.size(), "truncated before the format version");
  const int major = bytes[6], minor = bytes[7];
  if (major < 1 || major > 3 || minor != 0)
    fail(name, 6,
         fmt::format("unsupported .npy format version {}.{} (expected 1.0, 2.0 or 3.0)", major, minor));
  const int len_bytes = major == 1 ? 2 : 4;
  const size_t header_start = 8 + static_cast<size_t>(len_bytes);
  if (bytes.size() < header_start) fail(name, bytes.size(), "truncated inside the header length");
  const uint32_t header_len = read_le(bytes, 8, len_bytes);
  if (header_len == 0 || header_len > kMaxHeaderLen)
    fail(name, 8, fmt::format("header length {} out of range (expected 1..{})", header_len, kMaxHeaderLen));
  if (bytes.size() - header_start < header_len)
    fail(name, bytes.size(),
         fmt::format("truncated: header declares {} bytes but only {} remain", header_len,
                     bytes.size() - header_start));

  const std::string_view text(reinterpret_cast<const char*>(bytes.data() + header_start), header_len);
  // v1/v2 headers are latin-1, v3 UTF-8; a valid float32 header is pure ASCII either way, so any
  // other byte is corruption (or a structured dtype with non-ASCII field names, also unsupported).
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<uint8_t>(text[i]);
    if (c >= 0x80 || (c < 0x20 && c != '\n' && c != '\t' && c != '\r'))
      fail(name, header_start + i,
           fmt::format("byte {} in the header (expected printable ASCII)", describe_byte(c)));
  }

  std::string descr;
  bool fortran = false;
  std::vector<int64_t> shape;
  HeaderParser(text, header_start, name).parse(descr, fortran, shape);

  if (descr != "<f4") {
    const std::string convert = descr == ">f4" ? "arr.astype('<f4')" : "arr.astype(np.float32)";
    fail(name, header_start,
         fmt::format("expected '<f4' float32, found '{}' ({}) — convert with {}", descr,
                     describe_descr(descr), convert));
  }
  if (fortran && shape.size() > 1)
    fail(name, header_start,
         "fortran_order True (column-major) is not supported — save np.ascontiguousarray(arr) instead");

  uint64_t count = 1;
  for (int64_t d : shape) {
    if (__builtin_mul_overflow(count, static_cast<uint64_t>(d), &count) || count > (UINT64_MAX / 4))
      fail(name, header_start,
           fmt::format("shape {} has more elements than fit in 64 bits", format_npy_shape(shape)));
  }
  const uint64_t data_start = header_start + header_len;
  const uint64_t have = bytes.size() - data_start;
  const uint64_t need = count * 4;
  if (have < need)
    fail(name, bytes.size(),
         fmt::format("truncated: shape {} needs {} data bytes but only {} remain", format_npy_shape(shape),
                     need, have));
  if (have > need)
    fail(name, data_start + need,
         fmt::format("{} unexpected bytes after the {} data bytes of shape {}", have - need, need,
                     format_npy_shape(shape)));

  NpyArray out;
  out.shape = std::move(shape);
  out.data.resize(count);
  if (count) std::memcpy(out.data.data(), bytes.data() + data_start, need);
  return out;
}

NpyArray read_npy(const std::filesystem::path& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw NpyIoError(fmt::format("{}: cannot open: {}", path.string(), std::strerror(errno)));
  std::vector<uint8_t> bytes;
  uint8_t buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) bytes.insert(bytes.end(), buf, buf + n);
  const bool err = std::ferror(f);
  const int saved = errno;
  std::fclose(f);
  if (err) throw NpyIoError(fmt::format("{}: read error: {}", path.string(), std::strerror(saved)));
  return parse_npy(bytes, path.string());
}

void write_npy(const std::filesystem::path& path, std::span<const float> data,
               std::span<const int64_t> shape) {
  uint64_t count = 1;
  for (int64_t d : shape) {
    if (d < 0) throw std::invalid_argument(fmt::format("write_npy: negative dimension {}", d));
    if (__builtin_mul_overflow(count, static_cast<uint64_t>(d), &count))
      throw std::invalid_argument("write_npy: shape overflows");
  }
  if (count != data.size())
    throw std::invalid_argument(fmt::format("write_npy: shape {} holds {} elements but {} were given",
                                            format_npy_shape(shape), count, data.size()));

  // Byte-for-byte what np.save writes (numpy/lib/format.py _wrap_header): sorted keys, Python reprs,
  // spaces then '\n' padding the prefix + header to 64 bytes (a full 64 when already aligned).
  std::string header =
      fmt::format("{{'descr': '<f4', 'fortran_order': False, 'shape': {}, }}", format_npy_shape(shape));
  const size_t hlen = header.size() + 1;
  const size_t padlen = 64 - ((10 + hlen) % 64);
  header.append(padlen, ' ');
  header.push_back('\n');
  if (header.size() > 0xFFFF) throw std::invalid_argument("write_npy: header too long for format 1.0");

  std::string prefix(reinterpret_cast<const char*>(kMagic), sizeof kMagic);
  prefix += '\x01';
  prefix += '\x00';
  prefix += static_cast<char>(header.size() & 0xFF);
  prefix += static_cast<char>(header.size() >> 8);

  // A unique O_EXCL temp, not "<path>.tmp": two writers of one target must not share a temp file.
  const UniqueTemp t = create_unique_temp(path);
  const std::filesystem::path& tmp = t.path;
  std::FILE* f = t.fd >= 0 ? ::fdopen(t.fd, "wb") : nullptr;
  if (!f) {
    const int err = errno;
    if (t.fd >= 0) {
      ::close(t.fd);
      ::unlink(tmp.c_str());
    }
    throw NpyIoError(fmt::format("{}: cannot create a temp file: {}", tmp.string(), std::strerror(err)));
  }
  bool ok = std::fwrite(prefix.data(), 1, prefix.size(), f) == prefix.size() &&
            std::fwrite(header.data(), 1, header.size(), f) == header.size() &&
            (data.empty() || std::fwrite(data.data(), sizeof(float), data.size(), f) == data.size());
  ok = ok && std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
  int saved = errno;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) {
    if (saved == 0) saved = errno;
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw NpyIoError(fmt::format("{}: write failed: {}", tmp.string(), std::strerror(saved)));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::error_code ec2;
    std::filesystem::remove(tmp, ec2);
    throw NpyIoError(
        fmt::format("{}: cannot rename {} into place: {}", path.string(), tmp.string(), ec.message()));
  }
}

}  // namespace fb
