#include "reference/gguf/gguf_writer.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "reference/gguf/utf8.h"
#include "reference/util/unique_temp.h"

namespace fb {
namespace {

constexpr uint64_t kMaxStringBytes = uint64_t{1} << 30;
constexpr uint64_t kMaxArrayElems = uint64_t{1} << 30;

template <typename T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(T));
}

void put_string(std::string& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out.append(s);
}

template <typename T>
void put_vector(std::string& out, const std::vector<T>& v) {
  if constexpr (std::is_same_v<T, std::string>) {
    for (const auto& s : v) put_string(out, s);
  } else {
    out.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
  }
}

void put_value(std::string& out, const GgufValue& value) {
  put<int32_t>(out, static_cast<int32_t>(value.type()));
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
          put_string(out, x);
        } else if constexpr (std::is_same_v<T, GgufBool>) {
          put<uint8_t>(out, x.value ? 1 : 0);
        } else if constexpr (std::is_same_v<T, GgufArray>) {
          put<int32_t>(out, static_cast<int32_t>(x.elem_type));
          put<uint64_t>(out, x.size());
          if (x.elem_type == GgufValueType::BOOL) {
            for (uint8_t b : std::get<std::vector<uint8_t>>(x.values)) put<uint8_t>(out, b != 0 ? 1 : 0);
          } else {
            std::visit([&](const auto& vec) { put_vector(out, vec); }, x.values);
          }
        } else {
          put<T>(out, x);
        }
      },
      value.v);
}

// The variant alternative that must hold the elements of each element type.
size_t array_alternative(GgufValueType t) {
  switch (t) {
    case GgufValueType::UINT8:
    case GgufValueType::BOOL:
      return 0;
    case GgufValueType::INT8:
      return 1;
    case GgufValueType::UINT16:
      return 2;
    case GgufValueType::INT16:
      return 3;
    case GgufValueType::UINT32:
      return 4;
    case GgufValueType::INT32:
      return 5;
    case GgufValueType::FLOAT32:
      return 6;
    case GgufValueType::UINT64:
      return 7;
    case GgufValueType::INT64:
      return 8;
    case GgufValueType::FLOAT64:
      return 9;
    case GgufValueType::STRING:
      return 10;
    case GgufValueType::ARRAY:
      break;
  }
  return static_cast<size_t>(-1);
}

void check_string(const std::string& key, const std::string& s) {
  if (s.size() > kMaxStringBytes) {
    throw std::invalid_argument(fmt::format("GgufWriter: a string of key '{}' is over 1 GiB", key));
  }
  if (!utf8_valid(s))
    throw std::invalid_argument(fmt::format("GgufWriter: key '{}' holds invalid UTF-8", key));
}

// Rejects what the reader would reject, so the writer never produces an unreadable file.
void check_value(const std::string& key, const GgufValue& value) {
  if (const auto* s = value.as_string()) check_string(key, *s);
  const auto* a = value.as_array();
  if (a == nullptr) return;
  if (a->elem_type == GgufValueType::ARRAY) {
    throw std::invalid_argument(fmt::format("GgufWriter: key '{}' is a nested array", key));
  }
  if (a->values.index() != array_alternative(a->elem_type)) {
    throw std::invalid_argument(fmt::format(
        "GgufWriter: array '{}' declares {} elements but holds another type", key, to_string(a->elem_type)));
  }
  if (a->size() > kMaxArrayElems) {
    throw std::invalid_argument(fmt::format("GgufWriter: array '{}' has over 2^30 elements", key));
  }
  if (const auto* v = std::get_if<std::vector<std::string>>(&a->values)) {
    for (const auto& s : *v) check_string(key, s);
  }
}

uint64_t pad_to(uint64_t n, uint64_t align) { return (n + align - 1) / align * align; }

}  // namespace

GgufWriter::GgufWriter(std::filesystem::path path) : m_path(std::move(path)) {}

GgufWriter::~GgufWriter() {
  if (!m_finished) discard_temp();
}

void GgufWriter::discard_temp() noexcept {
  if (m_file != nullptr) {
    std::fclose(m_file);
    m_file = nullptr;
  }
  std::error_code ec;
  if (m_data_started) std::filesystem::remove(m_tmp_path, ec);
}

void GgufWriter::require_not_started(const char* what) const {
  if (m_data_started) throw std::logic_error(fmt::format("GgufWriter::{} after begin_data()", what));
}

void GgufWriter::add_kv(std::string key, GgufValue value) {
  require_not_started("add_kv");
  if (key.empty()) throw std::invalid_argument("GgufWriter: empty key");
  if (!utf8_valid(key)) throw std::invalid_argument("GgufWriter: key is not valid UTF-8");
  for (const auto& kv : m_kv) {
    if (kv.key == key) throw std::invalid_argument(fmt::format("GgufWriter: duplicate key '{}'", key));
  }
  check_value(key, value);
  if (key == "general.alignment") {
    const auto* a = std::get_if<uint32_t>(&value.v);
    if (a == nullptr || *a == 0 || (*a & (*a - 1)) != 0) {
      throw std::invalid_argument("GgufWriter: general.alignment must be a UINT32 power of two");
    }
    m_alignment = *a;
    recompute_offsets();
  }
  m_kv.push_back(GgufKv{std::move(key), std::move(value)});
}

size_t GgufWriter::add_tensor(std::string name, GgmlType type, std::vector<int64_t> ne) {
  return add_tensor_raw(std::move(name), static_cast<uint32_t>(type), std::move(ne));
}

size_t GgufWriter::add_tensor_raw(std::string name, uint32_t type, std::vector<int64_t> ne) {
  require_not_started("add_tensor");
  if (name.empty() || name.size() > kGgufMaxTensorName || !utf8_valid(name)) {
    throw std::invalid_argument(
        fmt::format("GgufWriter: tensor name '{}' must be 1..{} bytes of UTF-8", name, kGgufMaxTensorName));
  }
  for (const auto& t : m_tensors) {
    if (t.name == name) throw std::invalid_argument(fmt::format("GgufWriter: duplicate tensor '{}'", name));
  }
  if (ne.size() > static_cast<size_t>(kGgufMaxDims)) {
    throw std::invalid_argument(fmt::format("GgufWriter: tensor '{}' has more than 4 dims", name));
  }
  const GgmlTypeInfo* ti = ggml_type_info(type);
  if (ti == nullptr) throw std::invalid_argument(fmt::format("GgufWriter: unknown ggml type id {}", type));
  uint64_t elems = 1, rows = 1;
  for (size_t d = 0; d < ne.size(); ++d) {
    if (ne[d] < 0 || __builtin_mul_overflow(elems, static_cast<uint64_t>(ne[d]), &elems) ||
        elems > static_cast<uint64_t>(INT64_MAX) ||
        (d > 0 && (__builtin_mul_overflow(rows, static_cast<uint64_t>(ne[d]), &rows) ||
                   rows > static_cast<uint64_t>(INT64_MAX)))) {
      throw std::invalid_argument(fmt::format("GgufWriter: tensor '{}' has a bad shape", name));
    }
  }
  const int64_t ne0 = ne.empty() ? 1 : ne[0];
  if (ne0 % ti->block_elems != 0) {
    throw std::invalid_argument(fmt::format("GgufWriter: tensor '{}': ne[0] = {} is not a multiple of {}",
                                            name, ne0, ti->block_elems));
  }
  GgufTensorInfo t;
  uint64_t row_bytes = 0;
  if (__builtin_mul_overflow(static_cast<uint64_t>(ne0 / ti->block_elems), ti->block_bytes, &row_bytes) ||
      __builtin_mul_overflow(row_bytes, rows, &t.nbytes)) {
    throw std::invalid_argument(fmt::format("GgufWriter: tensor '{}' is too large", name));
  }
  t.name = std::move(name);
  t.type = type;
  t.ne = std::move(ne);
  m_tensors.push_back(std::move(t));
  recompute_offsets();
  return m_tensors.size() - 1;
}

void GgufWriter::recompute_offsets() {
  uint64_t off = 0;
  m_total_bytes = 0;
  for (auto& t : m_tensors) {
    t.offset = off;
    off += pad_to(t.nbytes, m_alignment);
    m_total_bytes += t.nbytes;
  }
}

void GgufWriter::write_raw(const void* p, size_t n) {
  if (n == 0) return;
  if (std::fwrite(p, 1, n, m_file) != n) {
    throw GgufError(GgufErrc::io, m_position, fmt::format("write failed: {}", std::strerror(errno)), "",
                    m_tmp_path.string());
  }
  m_position += n;
}

void GgufWriter::pad_to_alignment() {
  static constexpr uint8_t kZeros[256] = {};
  uint64_t n = pad_to(m_position, m_alignment) - m_position;
  while (n > 0) {
    const size_t k = static_cast<size_t>(std::min<uint64_t>(n, sizeof kZeros));
    write_raw(kZeros, k);
    n -= k;
  }
}

void GgufWriter::begin_data() {
  require_not_started("begin_data");
  // A unique O_EXCL temp, not "<path>.tmp": two writers of one target must not share a temp file.
  const UniqueTemp tmp = create_unique_temp(m_path);
  m_tmp_path = tmp.path;
  m_file = tmp.fd >= 0 ? ::fdopen(tmp.fd, "wb") : nullptr;
  if (m_file == nullptr) {
    const int err = errno;
    if (tmp.fd >= 0) {
      ::close(tmp.fd);
      ::unlink(tmp.path.c_str());
    }
    throw GgufError(GgufErrc::io, 0, fmt::format("cannot create a temp file: {}", std::strerror(err)), "",
                    m_tmp_path.string());
  }
  m_data_started = true;  // from here on the destructor owns the temp file
  std::setvbuf(m_file, nullptr, _IOFBF, 1 << 20);

  std::string meta;
  meta.append("GGUF", 4);
  put<uint32_t>(meta, kGgufVersion);
  put<int64_t>(meta, static_cast<int64_t>(m_tensors.size()));
  put<int64_t>(meta, static_cast<int64_t>(m_kv.size()));
  for (const auto& kv : m_kv) {
    put_string(meta, kv.key);
    put_value(meta, kv.value);
  }
  for (auto& t : m_tensors) {
    t.info_offset = meta.size();
    put_string(meta, t.name);
    put<uint32_t>(meta, static_cast<uint32_t>(t.ne.size()));
    for (int64_t e : t.ne) put<int64_t>(meta, e);
    put<uint32_t>(meta, t.type);
    put<uint64_t>(meta, t.offset);
  }
  write_raw(meta.data(), meta.size());
  // ggml pads here even with no tensors (its reader does not skip it then); doing the same keeps
  // copies of ggml-written files byte-identical.
  pad_to_alignment();
  m_current = 0;
  m_current_written = 0;
  advance_past_complete();
}

void GgufWriter::advance_past_complete() {
  while (m_current < m_tensors.size() && m_current_written == m_tensors[m_current].nbytes) {
    pad_to_alignment();
    ++m_current;
    m_current_written = 0;
  }
}

void GgufWriter::append(std::span<const uint8_t> bytes) {
  if (!m_data_started || m_finished)
    throw std::logic_error("GgufWriter::append outside begin_data()..finish()");
  if (bytes.size() > m_total_bytes - m_total_written) {
    throw std::logic_error(fmt::format("GgufWriter::append: {} bytes given but only {} remain to be written",
                                       bytes.size(), m_total_bytes - m_total_written));
  }
  while (!bytes.empty()) {
    const uint64_t left = m_tensors[m_current].nbytes - m_current_written;
    const size_t k = static_cast<size_t>(std::min<uint64_t>(left, bytes.size()));
    write_raw(bytes.data(), k);
    m_current_written += k;
    m_total_written += k;
    bytes = bytes.subspan(k);
    advance_past_complete();
  }
}

void GgufWriter::finish() {
  if (m_finished) throw std::logic_error("GgufWriter::finish called twice");
  if (!m_data_started) begin_data();
  if (m_total_written != m_total_bytes) {
    const std::string which = m_current < m_tensors.size() ? m_tensors[m_current].name : "?";
    discard_temp();
    m_finished = true;  // nothing left to clean up; the final path was never touched
    throw std::logic_error(
        fmt::format("GgufWriter::finish: only {} of {} tensor bytes written (stopped in '{}')",
                    m_total_written, m_total_bytes, which));
  }
  const auto io_fail = [&](const char* what) {
    const int err = errno;
    discard_temp();
    m_finished = true;
    throw GgufError(GgufErrc::io, m_position, fmt::format("{} failed: {}", what, std::strerror(err)), "",
                    m_tmp_path.string());
  };
  if (std::fflush(m_file) != 0) io_fail("fflush");
  // fsync before rename: otherwise a crash can leave the final name pointing at a partial file.
  if (::fsync(::fileno(m_file)) != 0) io_fail("fsync");
  const int rc = std::fclose(m_file);
  m_file = nullptr;
  if (rc != 0) io_fail("fclose");
  if (std::rename(m_tmp_path.c_str(), m_path.c_str()) != 0) io_fail("rename");
  m_finished = true;
  // Make the rename itself durable; failure here loses nothing already written, so it is ignored.
  const auto dir = m_path.has_parent_path() ? m_path.parent_path() : std::filesystem::path(".");
  if (int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

void GgufWriter::write_all(const std::vector<std::span<const uint8_t>>& tensor_bytes) {
  if (tensor_bytes.size() != m_tensors.size()) {
    throw std::invalid_argument(fmt::format("GgufWriter::write_all: {} buffers for {} tensors",
                                            tensor_bytes.size(), m_tensors.size()));
  }
  for (size_t i = 0; i < m_tensors.size(); ++i) {
    if (tensor_bytes[i].size() != m_tensors[i].nbytes) {
      throw std::invalid_argument(fmt::format("GgufWriter::write_all: tensor '{}' has {} bytes, expected {}",
                                              m_tensors[i].name, tensor_bytes[i].size(),
                                              m_tensors[i].nbytes));
    }
  }
  begin_data();
  for (const auto& b : tensor_bytes) append(b);
  finish();
}

void gguf_copy(const GgufFile& file, const std::filesystem::path& path) {
  GgufWriter w(path);
  for (const auto& kv : file.metadata()) w.add_kv(kv.key, kv.value);
  for (const auto& t : file.tensors()) w.add_tensor_raw(t.name, t.type, t.ne);
  for (size_t i = 0; i < file.tensors().size(); ++i) {
    // Cannot differ for a file that parsed (same strict offset rule); a cheap guard all the same.
    if (w.tensors()[i].offset != file.tensors()[i].offset) {
      throw std::logic_error(fmt::format("gguf_copy: offset of '{}' differs", file.tensors()[i].name));
    }
  }
  w.begin_data();
  for (const auto& t : file.tensors()) w.append(file.tensor_data(t));
  w.finish();
}

}  // namespace fb
