// Malformed input: every failure is a GgufError with the right code at the right byte offset,
// and no header count is trusted before it is checked against the bytes that remain.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include "reference/gguf/gguf_file.h"
#include "reference/gguf/gguf_test_util.h"
#include "reference/gguf/gguf_writer.h"
#include "reference/gguf/utf8.h"

namespace fb {
namespace {

using test::Bytes;

constexpr uint32_t kF32 = 0, kQ4K = 12;

struct Small {
  Bytes b;
  size_t kv_arch = 0, kv_u32 = 0, kv_arr = 0, arr_count = 0, t0 = 0, t1 = 0, data = 0;
  // Fields inside tensor info records, for patching.
  size_t t1_ndims() const { return t1 + 8 + 1; }
  size_t t1_ne0() const { return t1_ndims() + 4; }
  size_t t1_type() const { return t1_ne0() + 8; }
  size_t t1_offset() const { return t1_type() + 4; }
};

// A valid file: 3 KVs (string, u32, string array) and two tensors (f32 [32,2], q4_K [256]).
Small small_file() {
  Small s;
  Bytes& b = s.b;
  b.header(2, 3);
  s.kv_arch = b.size();
  b.kv_str("general.architecture", "llama");
  s.kv_u32 = b.size();
  b.kv_u32("a.u32", 7);
  s.kv_arr = b.size();
  b.str("tok").i32(9).i32(8);
  s.arr_count = b.size();
  b.u64(2).str("a").str("b\xC3\xA9");
  s.t0 = b.size();
  b.tinfo("w", {32, 2}, kF32, 0);
  s.t1 = b.size();
  b.tinfo("q", {256}, kQ4K, 256);
  b.pad(32);
  s.data = b.size();
  const auto d = test::random_bytes(256 + 144, 11);
  b.raw(d.data(), d.size()).pad(32);
  return s;
}

GgufError parse_error(const std::vector<uint8_t>& bytes) {
  try {
    (void)GgufFile::parse(bytes, "bad.gguf");
  } catch (const GgufError& e) {
    return e;
  }
  ADD_FAILURE() << "parse unexpectedly succeeded";
  return GgufError(GgufErrc::io, UINT64_MAX, "no error", "");
}

#define EXPECT_GGUF_ERROR(bytes, errc, off)                                  \
  do {                                                                       \
    const GgufError e_ = parse_error(bytes);                                 \
    EXPECT_EQ(e_.code(), errc) << to_string(e_.code()) << ": " << e_.what(); \
    EXPECT_EQ(e_.offset(), static_cast<uint64_t>(off)) << e_.what();         \
  } while (0)

// One KV with `value_bytes` after the key; header(0, 1).
std::vector<uint8_t> one_kv(std::string_view key, const Bytes& value) {
  Bytes b;
  b.header(0, 1).str(key);
  b.raw(value.b.data(), value.size());
  return b.b;
}

TEST(GgufMalformed, SmallFileIsValid) {
  const Small s = small_file();
  const GgufFile f = GgufFile::parse(s.b.b);
  EXPECT_EQ(f.data_offset(), s.data);
  EXPECT_EQ(f.tensors()[1].nbytes, 144u);
}

TEST(GgufMalformed, EveryTruncationFails) {
  // The small hand-built file, and a writer-built one with every value type.
  std::vector<std::vector<uint8_t>> files = {small_file().b.b};
  {
    test::TempDir dir;
    GgufWriter w(dir / "x.gguf");
    GgufArray a;
    a.elem_type = GgufValueType::STRING;
    a.values = std::vector<std::string>{"x", "\xE2\x82\xAC", ""};
    w.add_kv("s", {std::string("\xF0\x9F\x8E\x89")});
    w.add_kv("a", {a});
    w.add_kv("u64", {uint64_t{5}});
    w.add_kv("general.alignment", {uint32_t{16}});
    w.add_kv("b", {GgufBool{true}});
    w.add_tensor("t0", GgmlType::F16, {3, 2});
    w.add_tensor("t1", GgmlType::Q8_0, {32});
    const auto d0 = test::random_bytes(12, 1), d1 = test::random_bytes(34, 2);
    w.write_all({d0, d1});
    files.push_back(test::read_bytes(dir / "x.gguf"));
  }
  for (const auto& full : files) {
    ASSERT_NO_THROW((void)GgufFile::parse(full));
    for (size_t len = 0; len < full.size(); ++len) {
      const std::vector<uint8_t> cut(full.begin(), full.begin() + len);
      try {
        (void)GgufFile::parse(cut);
        ADD_FAILURE() << "truncation to " << len << " of " << full.size() << " bytes parsed";
      } catch (const GgufError& e) {
        EXPECT_TRUE(e.code() == GgufErrc::truncated || e.code() == GgufErrc::bad_count)
            << len << ": " << e.what();
        EXPECT_LE(e.offset(), full.size()) << e.what();
      }
    }
  }
}

TEST(GgufMalformed, Magic) {
  auto b = small_file().b.b;
  b[3] = 'X';
  EXPECT_GGUF_ERROR(b, GgufErrc::bad_magic, 0);
  EXPECT_GGUF_ERROR(std::vector<uint8_t>{}, GgufErrc::truncated, 0);
  EXPECT_GGUF_ERROR((std::vector<uint8_t>{'G', 'G', 'U'}), GgufErrc::truncated, 0);
}

TEST(GgufMalformed, Versions) {
  for (uint32_t v : {0u, 1u, 2u, 4u, 0xFFFFFFFFu}) {
    Small s = small_file();
    s.b.put_at<uint32_t>(4, v);
    EXPECT_GGUF_ERROR(s.b.b, GgufErrc::bad_version, 4);
  }
  Small s = small_file();
  s.b.put_at<uint32_t>(4, 0x03000000u);  // version 3 written big-endian
  const GgufError e = parse_error(s.b.b);
  EXPECT_EQ(e.code(), GgufErrc::bad_version);
  EXPECT_EQ(e.offset(), 4u);
  EXPECT_NE(std::string(e.what()).find("big-endian"), std::string::npos) << e.what();
}

TEST(GgufMalformed, ErrorMessageFormat) {
  Small s = small_file();
  s.b.put_at<uint32_t>(4, 2);
  const GgufError e = parse_error(s.b.b);
  EXPECT_STREQ(e.what(), "bad.gguf: offset 4: unsupported GGUF version 2 (expected version 3)");
  EXPECT_EQ(e.file(), "bad.gguf");
  EXPECT_EQ(e.with_file("other").what(),
            std::string("other: offset 4: unsupported GGUF version 2 (expected version 3)"));
}

TEST(GgufMalformed, HugeHeaderCounts) {
  for (int64_t n : {int64_t{1} << 62, INT64_MAX, int64_t{-1}, int64_t{3}}) {
    Small s = small_file();
    s.b.put_at<int64_t>(8, n);
    const GgufError e = parse_error(s.b.b);
    if (n == 3) {
      // Plausible count: fails later, reading a fourth info out of the padding and data.
      EXPECT_NE(e.code(), GgufErrc::bad_count) << e.what();
    } else {
      EXPECT_EQ(e.code(), GgufErrc::bad_count) << e.what();
      EXPECT_EQ(e.offset(), 8u);
    }
  }
  for (int64_t n : {int64_t{1} << 62, int64_t{1} << 40, int64_t{-5}}) {
    Small s = small_file();
    s.b.put_at<int64_t>(16, n);
    EXPECT_GGUF_ERROR(s.b.b, GgufErrc::bad_count, 16);
  }
}

TEST(GgufMalformed, HugeStringLength) {
  Small s = small_file();
  s.b.put_at<uint64_t>(s.kv_arch + 8 + 20 + 4, uint64_t{1} << 40);  // the value's length field
  EXPECT_GGUF_ERROR(s.b.b, GgufErrc::bad_count, s.kv_arch + 8 + 20 + 4);
  Small k = small_file();
  k.b.put_at<uint64_t>(k.kv_u32, ~uint64_t{0});  // a key's length
  EXPECT_GGUF_ERROR(k.b.b, GgufErrc::bad_count, k.kv_u32);
  Small t = small_file();
  t.b.put_at<uint64_t>(t.t1, uint64_t{1} << 63);  // a tensor name's length
  EXPECT_GGUF_ERROR(t.b.b, GgufErrc::bad_count, t.t1);
}

TEST(GgufMalformed, StringOverOneGibIsRejectedWithoutTouchingIt) {
  // Reserve (not commit) 1 GiB + 4 KiB; only the first page is ever written or read.
  const size_t len = (size_t{1} << 30) + 4096;
  void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  Bytes b;
  b.header(0, 1).str("k").i32(8).u64((uint64_t{1} << 30) + 1);
  std::memcpy(p, b.b.data(), b.size());
  try {
    (void)GgufFile::parse({static_cast<const uint8_t*>(p), len});
    ADD_FAILURE() << "parsed";
  } catch (const GgufError& e) {
    EXPECT_EQ(e.code(), GgufErrc::bad_string) << e.what();
    EXPECT_EQ(e.offset(), b.size() - 8);
  }
  ::munmap(p, len);
}

TEST(GgufMalformed, HugeArrayCountDoesNotAllocate) {
  // 2^40 u64 would be 8 TiB (bad_alloc, not GgufError); 2^27 would be a 1 GiB allocation that
  // succeeds and then fails as truncated. Both must be refused from the count alone.
  for (uint64_t n : {uint64_t{1} << 40, uint64_t{1} << 27, ~uint64_t{0}}) {
    Bytes v;
    v.i32(9).i32(10);
    const size_t count_at = 24 + 8 + 1 + v.size();
    v.u64(n).u64(1);
    EXPECT_GGUF_ERROR(one_kv("a", v), GgufErrc::bad_count, count_at);
  }
  // Strings: the count is checked against 8 bytes per element (their length fields).
  Small s = small_file();
  s.b.put_at<uint64_t>(s.arr_count, uint64_t{1} << 50);
  EXPECT_GGUF_ERROR(s.b.b, GgufErrc::bad_count, s.arr_count);
}

TEST(GgufMalformed, ValueTypes) {
  for (int32_t t : {13, 100, -1}) {
    Bytes v;
    v.i32(t).u32(0);
    EXPECT_GGUF_ERROR(one_kv("k", v), GgufErrc::bad_value_type, 24 + 9);
  }
  Bytes nested;
  nested.i32(9).i32(9).u64(1).i32(4).u64(1).u32(0);
  EXPECT_GGUF_ERROR(one_kv("k", nested), GgufErrc::bad_value_type, 24 + 9 + 4);
  Bytes unknown_elem;
  unknown_elem.i32(9).i32(13).u64(0);
  EXPECT_GGUF_ERROR(one_kv("k", unknown_elem), GgufErrc::bad_value_type, 24 + 9 + 4);
}

TEST(GgufMalformed, Keys) {
  Bytes empty;
  empty.header(0, 1).str("").i32(4).u32(1);
  EXPECT_GGUF_ERROR(empty.b, GgufErrc::bad_key, 24);

  Bytes dup;
  dup.header(0, 2).kv_u32("k", 1);
  const size_t second = dup.size();
  dup.kv_u32("k", 2);
  EXPECT_GGUF_ERROR(dup.b, GgufErrc::bad_key, second);
}

TEST(GgufMalformed, Utf8) {
  // Bad sequence at byte 2 of each string.
  const std::vector<std::string> bad = {
      "ab\xC0\x80",          // overlong NUL
      "ab\xC1\xBF",          // overlong
      "ab\xE0\x80\x80",      // overlong 3-byte
      "ab\xF0\x80\x80\x80",  // overlong 4-byte
      "ab\xED\xA0\x80",      // surrogate U+D800
      "ab\xED\xBF\xBF",      // surrogate U+DFFF
      "ab\xF4\x90\x80\x80",  // U+110000
      "ab\xF5\x80\x80\x80",  // lead byte past U+10FFFF
      "ab\x80",              // stray continuation
      "ab\xE2\x82",          // sequence cut by the end of the string
      "ab\xE2(\xAC",         // bad continuation
      "ab\xFF",
  };
  for (const auto& s : bad) {
    SCOPED_TRACE(s);
    EXPECT_EQ(utf8_first_invalid(s), 2u);
    // As a key.
    Bytes k;
    k.header(0, 1).kv_u32(s, 1);
    EXPECT_GGUF_ERROR(k.b, GgufErrc::bad_key, 24 + 8 + 2);
    // As a STRING value.
    Bytes v;
    v.header(0, 1).kv_str("k", s);
    EXPECT_GGUF_ERROR(v.b, GgufErrc::bad_string, 24 + 9 + 4 + 8 + 2);
    // As an element of a string array (second element).
    Bytes a;
    a.header(0, 1).str("k").i32(9).i32(8).u64(2).str("ok");
    const size_t at = a.size() + 8 + 2;
    a.str(s);
    EXPECT_GGUF_ERROR(a.b, GgufErrc::bad_string, at);
    // As a tensor name.
    Bytes t;
    t.header(1, 0).tinfo(s, {4}, kF32, 0).pad(32).zeros(32);
    EXPECT_GGUF_ERROR(t.b, GgufErrc::bad_tensor_name, 24 + 8 + 2);
  }
  for (std::string_view ok : {"", "a", "\x7F", "\xC2\x80", "\xDF\xBF", "\xE0\xA0\x80", "\xED\x9F\xBF",
                              "\xEE\x80\x80", "\xEF\xBF\xBF", "\xF0\x90\x80\x80", "\xF4\x8F\xBF\xBF"}) {
    EXPECT_TRUE(utf8_valid(ok)) << ok;
  }
}

TEST(GgufMalformed, Alignment) {
  for (uint32_t a : {0u, 3u, 48u, 0x80000001u}) {
    Bytes b;
    b.header(0, 1).kv_u32("general.alignment", a);
    EXPECT_GGUF_ERROR(b.b, GgufErrc::bad_alignment, 24 + 8 + 17 + 4);
  }
  Bytes u64;
  u64.header(0, 1).str("general.alignment").i32(10).u64(32);
  EXPECT_GGUF_ERROR(u64.b, GgufErrc::bad_alignment, 24 + 8 + 17);
  Bytes i32;
  i32.header(0, 1).str("general.alignment").i32(5).i32(32);
  EXPECT_GGUF_ERROR(i32.b, GgufErrc::bad_alignment, 24 + 8 + 17);
}

TEST(GgufMalformed, TensorNames) {
  const std::string n63(63, 'x'), n64(64, 'x');
  Bytes ok;
  ok.header(1, 0).tinfo(n63, {4}, kF32, 0).pad(32).zeros(32);
  EXPECT_NO_THROW((void)GgufFile::parse(ok.b));
  Bytes too_long;
  too_long.header(1, 0).tinfo(n64, {4}, kF32, 0).pad(32).zeros(32);
  EXPECT_GGUF_ERROR(too_long.b, GgufErrc::bad_tensor_name, 24);
  Bytes empty;
  empty.header(1, 0).tinfo("", {4}, kF32, 0).pad(32).zeros(32);
  EXPECT_GGUF_ERROR(empty.b, GgufErrc::bad_tensor_name, 24);

  Small s = small_file();
  s.b.b[s.t1 + 8] = 'w';  // second tensor renamed to the first one's name
  EXPECT_GGUF_ERROR(s.b.b, GgufErrc::bad_tensor_name, s.t1);
}

TEST(GgufMalformed, TensorDims) {
  Small s = small_file();
  s.b.put_at<uint32_t>(s.t1_ndims(), 5);
  EXPECT_GGUF_ERROR(s.b.b, GgufErrc::bad_tensor_dims, s.t1_ndims());

  Small n = small_file();
  n.b.put_at<int64_t>(n.t1_ne0(), -256);
  EXPECT_GGUF_ERROR(n.b.b, GgufErrc::bad_tensor_dims, n.t1_ne0());

  // 2^32 * 2^32 overflows int64 at ne[1]; 2^31 * 2^31 * 4 overflows at ne[2].
  Bytes o;
  o.header(1, 0);
  o.str("t").u32(2).i64(int64_t{1} << 32);
  const size_t ne1 = o.size();
  o.i64(int64_t{1} << 32).u32(kF32).u64(0);
  EXPECT_GGUF_ERROR(o.b, GgufErrc::bad_tensor_dims, ne1);
  Bytes o3;
  o3.header(1, 0);
  o3.str("t").u32(3).i64(int64_t{1} << 31).i64(int64_t{1} << 31);
  const size_t ne2 = o3.size();
  o3.i64(4).u32(kF32).u64(0);
  EXPECT_GGUF_ERROR(o3.b, GgufErrc::bad_tensor_dims, ne2);
  // Fits in elements, but not in bytes: 2^62 f32 elements are 2^64 bytes.
  Bytes bytes;
  bytes.header(1, 0).str("t").u32(1).i64(int64_t{1} << 62);
  const size_t type_at = bytes.size();
  bytes.u32(kF32).u64(0);
  EXPECT_GGUF_ERROR(bytes.b, GgufErrc::bad_tensor_dims, type_at);
}

TEST(GgufMalformed, TensorTypes) {
  for (uint32_t t : {4u, 5u, 31u, 1000u, 0xFFFFFFFFu}) {
    Small s = small_file();
    s.b.put_at<uint32_t>(s.t1_type(), t);
    EXPECT_GGUF_ERROR(s.b.b, GgufErrc::bad_tensor_type, s.t1_type());
  }
  Small s = small_file();
  s.b.put_at<int64_t>(s.t1_ne0(), 100);  // q4_K needs multiples of 256
  EXPECT_GGUF_ERROR(s.b.b, GgufErrc::bad_tensor_type, s.t1_type());
}

TEST(GgufMalformed, TensorOffsets) {
  const auto with_offset = [](uint64_t off) {
    Small s = small_file();
    s.b.put_at<uint64_t>(s.t1_offset(), off);
    return s;
  };
  for (uint64_t off : {uint64_t{260}, uint64_t{0}, uint64_t{224}, uint64_t{288}, uint64_t{1} << 40,
                       uint64_t{1} << 63, ~uint64_t{0}}) {
    SCOPED_TRACE(off);
    const Small s = with_offset(off);
    const GgufError e = parse_error(s.b.b);
    EXPECT_EQ(e.code(), GgufErrc::bad_tensor_offset) << e.what();
    EXPECT_EQ(e.offset(), s.t1_offset());
    EXPECT_NE(std::string(e.what()).find("'q'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("expected offset 256"), std::string::npos) << e.what();
  }
  EXPECT_NE(std::string(parse_error(with_offset(260).b.b).what()).find("alignment"), std::string::npos);
  EXPECT_NE(std::string(parse_error(with_offset(0).b.b).what()).find("overlapping"), std::string::npos);
  // The first tensor must start at 0.
  Small f = small_file();
  f.b.put_at<uint64_t>(f.t1 - 8, 32);
  EXPECT_GGUF_ERROR(f.b.b, GgufErrc::bad_tensor_offset, f.t1 - 8);
}

TEST(GgufMalformed, DataTruncated) {
  Small s = small_file();
  auto cut = s.b.b;
  cut.resize(s.data + 256 + 100);  // inside the second tensor's data
  EXPECT_GGUF_ERROR(cut, GgufErrc::truncated, s.data + 256);
  cut.resize(s.data + 100);  // inside the first
  EXPECT_GGUF_ERROR(cut, GgufErrc::truncated, s.data);
  cut = s.b.b;
  cut.resize(s.data + 256 + 144 + 1);  // inside the final padding
  EXPECT_GGUF_ERROR(cut, GgufErrc::truncated, s.data + 256 + 144);
  cut.resize(s.data - 1);  // inside the padding before the data section
  EXPECT_GGUF_ERROR(cut, GgufErrc::truncated, s.t1 + 8 + 1 + 4 + 8 + 4 + 8);
}

TEST(GgufMalformed, OpenReportsIoErrors) {
  test::TempDir dir;
  try {
    (void)GgufFile::open(dir / "missing.gguf");
    ADD_FAILURE();
  } catch (const GgufError& e) {
    EXPECT_EQ(e.code(), GgufErrc::io);
    EXPECT_NE(std::string(e.what()).find("No such file"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("missing.gguf"), std::string::npos) << e.what();
  }
  try {
    (void)GgufFile::open(dir.path());
    ADD_FAILURE();
  } catch (const GgufError& e) {
    EXPECT_EQ(e.code(), GgufErrc::io) << e.what();
  }
  test::write_bytes(dir / "empty.gguf", {});
  try {
    (void)GgufFile::open(dir / "empty.gguf");
    ADD_FAILURE();
  } catch (const GgufError& e) {
    EXPECT_EQ(e.code(), GgufErrc::truncated);
    EXPECT_EQ(e.offset(), 0u);
    EXPECT_EQ(e.file(), (dir / "empty.gguf").string());
  }
}

}  // namespace
}  // namespace fb
