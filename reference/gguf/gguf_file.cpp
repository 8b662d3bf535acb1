#include "reference/gguf/gguf_file.h"

#include <fmt/format.h>

#include <bit>
#include <cstring>
#include <limits>
#include <type_traits>
#include <unordered_map>
#include <utility>

#include "reference/gguf/mapped_file.h"
#include "reference/gguf/utf8.h"

namespace fb {

static_assert(std::endian::native == std::endian::little,
              "the GGUF reader copies little-endian fields straight into host integers");

namespace {

// ggml's GGUF_MAX_STRING_LENGTH and GGUF_MAX_ARRAY_ELEMENTS.
constexpr uint64_t kMaxStringBytes = uint64_t{1} << 30;
constexpr uint64_t kMaxArrayElems = uint64_t{1} << 30;
constexpr uint64_t kHeaderBytes = 4 + 4 + 8 + 8;
// Lower bounds on one encoded record; a header count must fit in the bytes that are left, so a
// hostile count can never make us reserve more memory than the file itself is large.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;              // key length, value type, 1-byte value
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 4 + 8;  // name length, n_dims, type, offset

std::string printable_bytes(std::span<const uint8_t> b) {
  std::string s;
  for (uint8_t c : b) s += fmt::format("{:02x} ", c);
  if (!s.empty()) s.pop_back();
  return s;
}

bool checked_mul(uint64_t a, uint64_t b, uint64_t* out) { return !__builtin_mul_overflow(a, b, out); }

// Descriptions of fields are built only when an error is reported: a tokenizer array has
// hundreds of thousands of strings, and formatting a name for each would dominate the parse.
template <typename D>
std::string describe(const D& d) {
  if constexpr (std::is_invocable_v<const D&>) {
    return std::string(d());
  } else {
    return std::string(d);
  }
}

}  // namespace

// Bounds-checked little-endian cursor over the file bytes; every read names what it reads so a
// failure can say what was expected where.
class GgufParser {
 public:
  GgufParser(std::span<const uint8_t> bytes, const std::string& file) : m_b(bytes), m_file(file) {}

  void run(GgufFile& f);

 private:
  uint64_t remaining() const { return m_b.size() - m_pos; }

  [[noreturn]] void fail(GgufErrc code, uint64_t offset, std::string message, std::string expected) const {
    throw GgufError(code, offset, std::move(message), std::move(expected), m_file);
  }

  template <typename D>
  void need(uint64_t n, const D& what) const {
    if (n > remaining()) {
      fail(GgufErrc::truncated, m_pos,
           fmt::format("file ends while reading {} ({} of {} bytes present)", describe(what), remaining(), n),
           fmt::format("{} more bytes", n));
    }
  }

  template <typename T, typename D>
  T read(const D& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, m_b.data() + m_pos, sizeof(T));
    m_pos += sizeof(T);
    return v;
  }

  // The returned view points into the file bytes, which outlive the parse.
  template <typename D>
  std::string_view read_string(const D& what_d, GgufErrc bad_errc, uint64_t max_len) {
    const uint64_t len_off = m_pos;
    const auto len = read<uint64_t>([&] { return "the length of " + describe(what_d); });
    const auto what = [&] { return describe(what_d); };
    if (len > remaining()) {
      fail(GgufErrc::bad_count, len_off,
           fmt::format("{} has length {}, more than the {} bytes left in the file", what(), len, remaining()),
           fmt::format("a length of at most {}", remaining()));
    }
    if (len > max_len) {
      fail(bad_errc, len_off, fmt::format("{} has length {}, over the limit", what(), len),
           fmt::format("at most {} bytes", max_len));
    }
    std::string_view s(reinterpret_cast<const char*>(m_b.data() + m_pos), len);
    if (const size_t bad = utf8_first_invalid(s); bad != kUtf8Valid) {
      fail(bad_errc, m_pos + bad,
           fmt::format("{} is not valid UTF-8 (byte 0x{:02x} at position {} of {})", what(),
                       static_cast<uint8_t>(s[bad]), bad, len),
           "UTF-8 text (no overlong forms, surrogates or code points above U+10FFFF)");
    }
    m_pos += len;
    return s;
  }

  // Checks a header count against the bytes left before anything is sized from it.
  void check_count(uint64_t count, uint64_t count_off, uint64_t min_item_bytes, uint64_t bytes_left,
                   std::string_view what) const {
    const uint64_t most = bytes_left / min_item_bytes;
    if (count > most) {
      fail(GgufErrc::bad_count, count_off,
           fmt::format("{} = {}, but the {} bytes left can hold at most {} ({} bytes each at least)", what,
                       count, bytes_left, most, min_item_bytes),
           fmt::format("a count of at most {}", most));
    }
  }

  template <typename T>
  std::vector<T> read_scalars(uint64_t n) {
    // check_count() already guaranteed n * sizeof(T) <= remaining().
    std::vector<T> v(n);
    if (n > 0) std::memcpy(v.data(), m_b.data() + m_pos, n * sizeof(T));
    m_pos += n * sizeof(T);
    return v;
  }

  GgufValue read_value(int32_t type, uint64_t type_off, std::string_view key);
  GgufArray read_array(std::string_view key);

  std::span<const uint8_t> m_b;
  const std::string& m_file;
  uint64_t m_pos = 0;
};

GgufArray GgufParser::read_array(std::string_view key) {
  const uint64_t elem_off = m_pos;
  const auto elem = read<int32_t>([&] { return fmt::format("the element type of array '{}'", key); });
  if (elem == static_cast<int32_t>(GgufValueType::ARRAY)) {
    fail(GgufErrc::bad_value_type, elem_off, fmt::format("key '{}' holds a nested array", key),
         "a scalar or STRING element type (nested arrays are not supported, as in ggml)");
  }
  if (elem < 0 || elem > static_cast<int32_t>(GgufValueType::FLOAT64)) {
    fail(GgufErrc::bad_value_type, elem_off, fmt::format("array '{}' has unknown element type {}", key, elem),
         "an element type in 0..12 other than 9 (ARRAY)");
  }
  const auto et = static_cast<GgufValueType>(elem);
  const uint64_t count_off = m_pos;
  const auto n = read<uint64_t>([&] { return fmt::format("the element count of array '{}'", key); });
  const uint64_t min_bytes = et == GgufValueType::STRING ? 8 : gguf_scalar_size(et);
  check_count(n, count_off, min_bytes, remaining(), fmt::format("element count of array '{}'", key));
  if (n > kMaxArrayElems) {
    fail(GgufErrc::bad_count, count_off, fmt::format("array '{}' has {} elements, over the limit", key, n),
         fmt::format("at most {} elements", kMaxArrayElems));
  }
  GgufArray a;
  a.elem_type = et;
  switch (et) {
    case GgufValueType::UINT8:
      a.values = read_scalars<uint8_t>(n);
      break;
    case GgufValueType::INT8:
      a.values = read_scalars<int8_t>(n);
      break;
    case GgufValueType::UINT16:
      a.values = read_scalars<uint16_t>(n);
      break;
    case GgufValueType::INT16:
      a.values = read_scalars<int16_t>(n);
      break;
    case GgufValueType::UINT32:
      a.values = read_scalars<uint32_t>(n);
      break;
    case GgufValueType::INT32:
      a.values = read_scalars<int32_t>(n);
      break;
    case GgufValueType::FLOAT32:
      a.values = read_scalars<float>(n);
      break;
    case GgufValueType::UINT64:
      a.values = read_scalars<uint64_t>(n);
      break;
    case GgufValueType::INT64:
      a.values = read_scalars<int64_t>(n);
      break;
    case GgufValueType::FLOAT64:
      a.values = read_scalars<double>(n);
      break;
    case GgufValueType::BOOL: {
      auto v = read_scalars<uint8_t>(n);
      for (auto& x : v) x = x != 0 ? 1 : 0;  // ggml reads any nonzero byte as true
      a.values = std::move(v);
      break;
    }
    case GgufValueType::STRING: {
      std::vector<std::string> v;
      v.reserve(n);
      for (uint64_t i = 0; i < n; ++i) {
        v.emplace_back(read_string([&] { return fmt::format("element {} of array '{}'", i, key); },
                                   GgufErrc::bad_string, kMaxStringBytes));
      }
      a.values = std::move(v);
      break;
    }
    case GgufValueType::ARRAY:
      break;  // rejected above
  }
  return a;
}

GgufValue GgufParser::read_value(int32_t type, uint64_t type_off, std::string_view key) {
  const auto what = [&] { return fmt::format("the value of key '{}'", key); };  // lazily formatted
  switch (type) {
    case 0:
      return {read<uint8_t>(what)};
    case 1:
      return {read<int8_t>(what)};
    case 2:
      return {read<uint16_t>(what)};
    case 3:
      return {read<int16_t>(what)};
    case 4:
      return {read<uint32_t>(what)};
    case 5:
      return {read<int32_t>(what)};
    case 6:
      return {read<float>(what)};
    case 7:
      return {GgufBool{read<uint8_t>(what) != 0}};
    case 8:
      return {std::string(read_string(what, GgufErrc::bad_string, kMaxStringBytes))};
    case 9:
      return {read_array(key)};
    case 10:
      return {read<uint64_t>(what)};
    case 11:
      return {read<int64_t>(what)};
    case 12:
      return {read<double>(what)};
    default:
      fail(GgufErrc::bad_value_type, type_off, fmt::format("key '{}' has unknown value type {}", key, type),
           "a GGUF value type in 0..12");
  }
}

void GgufParser::run(GgufFile& f) {
  need(4, "the magic");
  if (std::memcmp(m_b.data(), "GGUF", 4) != 0) {
    fail(GgufErrc::bad_magic, 0, fmt::format("bad magic bytes {}", printable_bytes(m_b.first(4))),
         "\"GGUF\" (47 47 55 46)");
  }
  m_pos = 4;
  const auto version = read<uint32_t>("the version");
  if (version != kGgufVersion) {
    // A big-endian file stores 3 as 00 00 00 03, which reads as 0x03000000 here.
    if ((version & 0xFFFFu) == 0) {
      fail(GgufErrc::bad_version, 4,
           fmt::format("version {:#010x} looks byte-swapped: probably a big-endian file", version),
           "version 3, little-endian");
    }
    fail(GgufErrc::bad_version, 4, fmt::format("unsupported GGUF version {}", version), "version 3");
  }
  f.m_version = version;

  const auto n_tensors = read<int64_t>("the tensor count");
  const auto n_kv = read<int64_t>("the metadata key/value count");
  const uint64_t after_header = m_b.size() - kHeaderBytes;
  if (n_tensors < 0) {
    fail(GgufErrc::bad_count, 8, fmt::format("negative tensor count {}", n_tensors), "a count >= 0");
  }
  check_count(static_cast<uint64_t>(n_tensors), 8, kMinTensorInfoBytes, after_header, "n_tensors");
  if (n_kv < 0) fail(GgufErrc::bad_count, 16, fmt::format("negative key count {}", n_kv), "a count >= 0");
  check_count(static_cast<uint64_t>(n_kv), 16, kMinKvBytes,
              after_header - static_cast<uint64_t>(n_tensors) * kMinTensorInfoBytes, "n_kv");

  // Keys: string views into the file bytes stay valid, unlike views into a growing vector.
  std::unordered_map<std::string_view, uint64_t> key_offsets;
  f.m_kv.reserve(static_cast<size_t>(n_kv));
  f.m_kv_offsets.reserve(static_cast<size_t>(n_kv));
  for (int64_t i = 0; i < n_kv; ++i) {
    const uint64_t kv_off = m_pos;
    const std::string_view key =
        read_string([&] { return fmt::format("key #{}", i); }, GgufErrc::bad_key, kMaxStringBytes);
    if (key.empty()) fail(GgufErrc::bad_key, kv_off, fmt::format("key #{} is empty", i), "a non-empty key");
    if (auto [it, inserted] = key_offsets.emplace(key, kv_off); !inserted) {
      fail(GgufErrc::bad_key, kv_off, fmt::format("duplicate key '{}' (first at offset {})", key, it->second),
           "unique keys");
    }
    const uint64_t type_off = m_pos;
    const auto type = read<int32_t>([&] { return fmt::format("the value type of key '{}'", key); });
    GgufValue value = read_value(type, type_off, key);
    if (key == "general.alignment") {
      const auto* a = std::get_if<uint32_t>(&value.v);
      if (a == nullptr) {
        fail(GgufErrc::bad_alignment, type_off,
             fmt::format("general.alignment has type {}",
                         type >= 0 && type <= 12 ? to_string(static_cast<GgufValueType>(type)) : "?"),
             "UINT32");
      }
      if (*a == 0 || (*a & (*a - 1)) != 0) {
        fail(GgufErrc::bad_alignment, type_off + 4, fmt::format("general.alignment is {}", *a),
             "a nonzero power of two");
      }
      f.m_alignment = *a;
    }
    f.m_kv.push_back(GgufKv{std::string(key), std::move(value)});
    f.m_kv_offsets.push_back(kv_off);
  }

  std::unordered_map<std::string_view, uint64_t> name_offsets;
  std::vector<uint64_t> offset_field_at;  // where each tensor's offset field sits, for diagnostics
  f.m_tensors.reserve(static_cast<size_t>(n_tensors));
  offset_field_at.reserve(static_cast<size_t>(n_tensors));
  for (int64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    t.info_offset = m_pos;
    const std::string_view name = read_string([&] { return fmt::format("the name of tensor #{}", i); },
                                              GgufErrc::bad_tensor_name, kGgufMaxTensorName);
    if (name.empty()) {
      fail(GgufErrc::bad_tensor_name, t.info_offset, fmt::format("tensor #{} has an empty name", i),
           "a non-empty name");
    }
    if (auto [it, inserted] = name_offsets.emplace(name, t.info_offset); !inserted) {
      fail(GgufErrc::bad_tensor_name, t.info_offset,
           fmt::format("duplicate tensor name '{}' (first at offset {})", name, it->second), "unique names");
    }
    t.name = std::string(name);

    const uint64_t ndims_off = m_pos;
    const auto n_dims = read<uint32_t>([&] { return fmt::format("n_dims of tensor '{}'", name); });
    if (n_dims > static_cast<uint32_t>(kGgufMaxDims)) {
      fail(GgufErrc::bad_tensor_dims, ndims_off, fmt::format("tensor '{}' has n_dims = {}", name, n_dims),
           fmt::format("n_dims <= {}", kGgufMaxDims));
    }
    t.ne.resize(n_dims);
    uint64_t elems = 1;
    uint64_t rows = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t ne_off = m_pos;
      t.ne[d] = read<int64_t>([&] { return fmt::format("ne[{}] of tensor '{}'", d, name); });
      if (t.ne[d] < 0) {
        fail(GgufErrc::bad_tensor_dims, ne_off, fmt::format("tensor '{}' has ne[{}] = {}", name, d, t.ne[d]),
             "a non-negative extent");
      }
      const auto ne = static_cast<uint64_t>(t.ne[d]);
      if (!checked_mul(elems, ne, &elems) || elems > static_cast<uint64_t>(INT64_MAX) ||
          (d > 0 && (!checked_mul(rows, ne, &rows) || rows > static_cast<uint64_t>(INT64_MAX)))) {
        fail(GgufErrc::bad_tensor_dims, ne_off,
             fmt::format("the element count of tensor '{}' overflows int64 at ne[{}] = {}", name, d, t.ne[d]),
             "an element count below 2^63");
      }
    }

    const uint64_t type_off = m_pos;
    t.type = read<uint32_t>([&] { return fmt::format("the type of tensor '{}'", name); });
    const GgmlTypeInfo* ti = ggml_type_info(t.type);
    if (ti == nullptr) {
      fail(GgufErrc::bad_tensor_type, type_off,
           fmt::format("tensor '{}' has unknown ggml type id {}", name, static_cast<int32_t>(t.type)),
           "a ggml type id known to ggml_type_info");
    }
    const int64_t ne0 = t.n_cols();
    if (ne0 % ti->block_elems != 0) {
      fail(GgufErrc::bad_tensor_type, type_off,
           fmt::format("tensor '{}' has ne[0] = {}, not a multiple of the {} block size {}", name, ne0,
                       ti->name, ti->block_elems),
           fmt::format("ne[0] a multiple of {}", ti->block_elems));
    }
    uint64_t row_bytes = 0;
    if (!checked_mul(static_cast<uint64_t>(ne0 / ti->block_elems), ti->block_bytes, &row_bytes) ||
        !checked_mul(row_bytes, rows, &t.nbytes)) {
      fail(GgufErrc::bad_tensor_dims, type_off, fmt::format("the byte size of tensor '{}' overflows", name),
           "a byte size below 2^64");
    }

    offset_field_at.push_back(m_pos);
    t.offset = read<uint64_t>([&] { return fmt::format("the data offset of tensor '{}'", name); });
    f.m_tensors.push_back(std::move(t));
  }

  const uint64_t align = f.m_alignment;
  uint64_t data_off = m_pos;
  // As in ggml, the data section is only padded to the alignment when there are tensors.
  if (n_tensors > 0) {
    data_off = (m_pos + align - 1) / align * align;
    if (data_off > m_b.size()) {
      fail(GgufErrc::truncated, m_pos, "file ends in the padding before the data section",
           fmt::format("the data section at offset {}", data_off));
    }
  }
  f.m_data_offset = data_off;

  const uint64_t data_bytes = m_b.size() - data_off;
  uint64_t expect = 0;  // ggml's strict rule: tensors packed in info order, each padded to the alignment
  for (size_t i = 0; i < f.m_tensors.size(); ++i) {
    const GgufTensorInfo& t = f.m_tensors[i];
    if (t.offset != expect) {
      std::string why;
      if (t.offset % align != 0) {
        why = fmt::format("tensor '{}' has offset {}, not a multiple of the alignment {}", t.name, t.offset,
                          align);
      } else if (t.offset < expect) {
        why = fmt::format("tensor '{}' has offset {}, overlapping '{}' which ends at {}", t.name, t.offset,
                          f.m_tensors[i - 1].name, expect);
      } else {
        why = fmt::format("tensor '{}' has offset {}, leaving a gap or out of order", t.name, t.offset);
      }
      fail(GgufErrc::bad_tensor_offset, offset_field_at[i], std::move(why),
           fmt::format("offset {} (packed in info order, each padded to {})", expect, align));
    }
    if (t.nbytes > data_bytes - t.offset) {
      fail(GgufErrc::truncated, data_off + t.offset,
           fmt::format("tensor '{}' needs {} bytes but the file has only {} from here", t.name, t.nbytes,
                       data_bytes - t.offset),
           fmt::format("a file of at least {} bytes", data_off + t.offset + t.nbytes));
    }
    const uint64_t pad = (align - t.nbytes % align) % align;
    if (pad > data_bytes - t.offset - t.nbytes) {
      fail(GgufErrc::truncated, data_off + t.offset + t.nbytes,
           fmt::format("file ends in the padding after tensor '{}'", t.name),
           fmt::format("{} padding bytes", pad));
    }
    expect = t.offset + t.nbytes + pad;  // <= data_bytes, checked just above
  }
}

int64_t GgufTensorInfo::n_elements() const {
  int64_t n = 1;
  for (int64_t e : ne) n *= e;
  return n;
}

int64_t GgufTensorInfo::n_rows() const {
  int64_t n = 1;
  for (size_t d = 1; d < ne.size(); ++d) n *= ne[d];
  return n;
}

GgufFile GgufFile::open(const std::filesystem::path& path) {
  auto map = std::make_shared<MappedFile>(path);
  GgufFile f = parse(map->bytes(), path.string());
  f.m_map = std::move(map);
  return f;
}

GgufFile GgufFile::parse(std::span<const uint8_t> bytes, std::string name) {
  GgufFile f;
  f.m_bytes = bytes;
  f.m_name = std::move(name);
  GgufParser(bytes, f.m_name).run(f);
  return f;
}

GgufFile::GgufFile(GgufFile&&) noexcept = default;
GgufFile& GgufFile::operator=(GgufFile&&) noexcept = default;
GgufFile::~GgufFile() = default;

const GgufValue* GgufFile::find(std::string_view key) const {
  for (const auto& kv : m_kv) {
    if (kv.key == key) return &kv.value;
  }
  return nullptr;
}

const GgufKv* GgufFile::find_kv(std::string_view key, uint64_t* offset) const {
  for (size_t i = 0; i < m_kv.size(); ++i) {
    if (m_kv[i].key == key) {
      *offset = i < m_kv_offsets.size() ? m_kv_offsets[i] : 0;
      return &m_kv[i];
    }
  }
  return nullptr;
}

std::optional<std::string> GgufFile::get_string(std::string_view key) const {
  uint64_t off = 0;
  const GgufKv* kv = find_kv(key, &off);
  if (kv == nullptr) return std::nullopt;
  if (const auto* s = kv->value.as_string()) return *s;
  throw GgufError(GgufErrc::bad_metadata, off,
                  fmt::format("key '{}' has type {}", key, to_string(kv->value.type())), "STRING", m_name);
}

std::optional<uint64_t> GgufFile::get_uint(std::string_view key) const {
  uint64_t off = 0;
  const GgufKv* kv = find_kv(key, &off);
  if (kv == nullptr) return std::nullopt;
  if (auto u = kv->value.as_uint()) return u;
  throw GgufError(GgufErrc::bad_metadata, off,
                  fmt::format("key '{}' is {} {}", key, to_string(kv->value.type()), kv->value.to_display()),
                  "a non-negative integer", m_name);
}

std::optional<double> GgufFile::get_float(std::string_view key) const {
  uint64_t off = 0;
  const GgufKv* kv = find_kv(key, &off);
  if (kv == nullptr) return std::nullopt;
  if (auto d = kv->value.as_float()) return d;
  // Integer-valued hyperparameters (e.g. a rope base written as u32) are accepted as numbers.
  if (auto i = kv->value.as_int()) return static_cast<double>(*i);
  if (auto u = kv->value.as_uint()) return static_cast<double>(*u);
  throw GgufError(GgufErrc::bad_metadata, off,
                  fmt::format("key '{}' has type {}", key, to_string(kv->value.type())),
                  "FLOAT32, FLOAT64 or an integer", m_name);
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  for (const auto& t : m_tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

std::span<const uint8_t> GgufFile::tensor_data(const GgufTensorInfo& t) const {
  // open()/parse() validated every tensor of this file; this guards infos from elsewhere.
  if (t.offset > m_bytes.size() - m_data_offset || t.nbytes > m_bytes.size() - m_data_offset - t.offset) {
    throw std::out_of_range(fmt::format("{}: tensor '{}' lies outside the file", m_name, t.name));
  }
  return m_bytes.subspan(m_data_offset + t.offset, t.nbytes);
}

}  // namespace fb
