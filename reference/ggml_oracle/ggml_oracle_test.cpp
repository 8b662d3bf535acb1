// fusebench against REAL ggml. The fixture was written at build time by ggml_fixture_writer, which
// links ggml-base and nothing of fusebench; this test links fusebench and nothing of ggml. So every
// check here compares two independent implementations:
//   - fb::GgufFile reads files written by ggml's gguf writer, metadata exact in value and type;
//   - fb::gguf_copy reproduces ggml's file byte for byte;
//   - fb::quantize gives ggml_quantize_chunk's bytes, fb::dequantize gives to_float's bits.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "reference/formats/dequantize.h"
#include "reference/formats/ggml_type.h"
#include "reference/formats/quantize.h"
#include "reference/ggml_oracle/oracle_fixture.h"
#include "reference/gguf/gguf_file.h"
#include "reference/gguf/gguf_value.h"
#include "reference/gguf/gguf_writer.h"

namespace fb {
namespace {

using namespace oracle;

const char* fixture_path(bool align64) { return align64 ? GGML_ORACLE_FIXTURE_ALIGN64 : GGML_ORACLE_FIXTURE; }

// Opened once per process: ctest runs each discovered test in its own process anyway.
const GgufFile& fixture(bool align64) {
  static const GgufFile files[2] = {GgufFile::open(fixture_path(false)), GgufFile::open(fixture_path(true))};
  return files[align64 ? 1 : 0];
}

// --- expected metadata, built from the same constants the writer used -----------------------------

template <class T>
GgufValue scalar(T v) {
  return GgufValue{GgufValueStorage{v}};
}
GgufValue str(std::string_view s) { return GgufValue{GgufValueStorage{std::string(s)}}; }
template <class T, size_t N>
GgufValue arr(GgufValueType elem, const T (&v)[N], size_t n = N) {
  GgufArray a;
  a.elem_type = elem;
  if constexpr (std::is_same_v<T, bool>) {
    a.values = std::vector<uint8_t>(v, v + n);  // GgufArray holds bools as 0/1 bytes
  } else if constexpr (std::is_same_v<T, std::string_view>) {
    a.values = std::vector<std::string>(v, v + n);
  } else {
    a.values = std::vector<T>(v, v + n);
  }
  return GgufValue{GgufValueStorage{std::move(a)}};
}

std::vector<GgufKv> expected_metadata(bool align64) {
  std::vector<GgufKv> kv;
  kv.push_back({"general.architecture", str(kArchitecture)});
  if (align64) kv.push_back({"general.alignment", scalar(kAlignment64)});
  kv.push_back({"oracle.u8", scalar(kU8)});
  kv.push_back({"oracle.i8", scalar(kI8)});
  kv.push_back({"oracle.u16", scalar(kU16)});
  kv.push_back({"oracle.i16", scalar(kI16)});
  kv.push_back({"oracle.u32", scalar(kU32)});
  kv.push_back({"oracle.i32", scalar(kI32)});
  kv.push_back({"oracle.f32", scalar(kF32)});
  kv.push_back({"oracle.f32_denormal", scalar(kF32Denormal)});
  kv.push_back({"oracle.f32_neg_zero", scalar(kF32NegZero)});
  kv.push_back({"oracle.bool_true", scalar(GgufBool{true})});
  kv.push_back({"oracle.bool_false", scalar(GgufBool{false})});
  kv.push_back({"oracle.str_ascii", str(kAscii)});
  kv.push_back({"oracle.str_utf8", str(kUtf8)});
  kv.push_back({"oracle.str_empty", str("")});
  kv.push_back({"oracle.u64", scalar(kU64)});
  kv.push_back({"oracle.i64", scalar(kI64)});
  kv.push_back({"oracle.f64", scalar(kF64)});
  kv.push_back({"oracle.arr_u8", arr(GgufValueType::UINT8, kArrU8)});
  kv.push_back({"oracle.arr_i8", arr(GgufValueType::INT8, kArrI8)});
  kv.push_back({"oracle.arr_u16", arr(GgufValueType::UINT16, kArrU16)});
  kv.push_back({"oracle.arr_i16", arr(GgufValueType::INT16, kArrI16)});
  kv.push_back({"oracle.arr_u32", arr(GgufValueType::UINT32, kArrU32)});
  kv.push_back({"oracle.arr_i32", arr(GgufValueType::INT32, kArrI32)});
  kv.push_back({"oracle.arr_u64", arr(GgufValueType::UINT64, kArrU64)});
  kv.push_back({"oracle.arr_i64", arr(GgufValueType::INT64, kArrI64)});
  kv.push_back({"oracle.arr_f32", arr(GgufValueType::FLOAT32, kArrF32)});
  kv.push_back({"oracle.arr_f64", arr(GgufValueType::FLOAT64, kArrF64)});
  kv.push_back({"oracle.arr_bool", arr(GgufValueType::BOOL, kArrBool)});
  kv.push_back({"oracle.arr_empty_i32", arr(GgufValueType::INT32, kArrI32, 0)});
  kv.push_back({"oracle.arr_str", arr(GgufValueType::STRING, kArrStr)});
  kv.push_back({"oracle.seed", scalar(uint64_t{GGML_ORACLE_SEED})});
  return kv;
}

// operator== would accept -0.0 for 0.0; the fixture needs the exact bits back.
template <class T>
bool same_bits(const T& a, const T& b) {
  if constexpr (std::is_floating_point_v<T>) {
    return std::memcmp(&a, &b, sizeof(T)) == 0;
  } else {
    return a == b;
  }
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!same_bits(a[i], b[i])) return false;
  }
  return true;
}

bool same_value(const GgufValue& got, const GgufValue& want) {
  if (got.v.index() != want.v.index()) return false;
  return std::visit(
      [&](const auto& w) {
        using T = std::decay_t<decltype(w)>;
        const T& g = std::get<T>(got.v);
        if constexpr (std::is_same_v<T, GgufArray>) {
          if (g.elem_type != w.elem_type || g.values.index() != w.values.index()) return false;
          return std::visit(
              [&](const auto& wv) { return same_bits(std::get<std::decay_t<decltype(wv)>>(g.values), wv); },
              w.values);
        } else {
          return same_bits(g, w);
        }
      },
      want.v);
}

class OracleFile : public testing::TestWithParam<bool> {};

TEST_P(OracleFile, HeaderAndLayout) {
  const GgufFile& f = fixture(GetParam());
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), GetParam() ? kAlignment64 : kGgufDefaultAlignment);
  EXPECT_EQ(f.data_offset() % f.alignment(), 0u);
  EXPECT_EQ(f.tensors().size(), std::size(kCases) * (1 + 2 * std::size(kTypes)));
}

TEST_P(OracleFile, MetadataExactValuesAndTypes) {
  const GgufFile& f = fixture(GetParam());
  const std::vector<GgufKv> want = expected_metadata(GetParam());
  const std::vector<GgufKv>& got = f.metadata();
  ASSERT_EQ(got.size(), want.size()) << "number of KV pairs";
  for (size_t i = 0; i < want.size(); ++i) {
    // ggml writes KVs in insertion order, so position is part of the contract.
    EXPECT_EQ(got[i].key, want[i].key) << "KV #" << i;
    EXPECT_EQ(got[i].value.type(), want[i].value.type()) << want[i].key << ": gguf type";
    EXPECT_TRUE(same_value(got[i].value, want[i].value))
        << want[i].key << ": got " << got[i].value.to_display(16) << ", want "
        << want[i].value.to_display(16);
    const GgufValue* found = f.find(want[i].key);
    ASSERT_NE(found, nullptr) << want[i].key;
    EXPECT_TRUE(same_value(*found, want[i].value)) << want[i].key << " via find()";
  }
  EXPECT_EQ(f.get_string("general.architecture"), std::string(kArchitecture));
  EXPECT_EQ(f.get_uint("oracle.u64"), kU64);
}

TEST_P(OracleFile, TensorInfos) {
  const GgufFile& f = fixture(GetParam());
  const auto check = [&](const std::string& name, uint32_t type, const Case& c) {
    const GgufTensorInfo* t = f.find_tensor(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->type, type) << name;
    EXPECT_EQ(t->ne, (std::vector<int64_t>{c.cols, c.rows})) << name;
    EXPECT_EQ(t->offset % f.alignment(), 0u) << name;
    EXPECT_EQ(t->nbytes, ggml_row_bytes(static_cast<GgmlType>(type), c.cols) * c.rows) << name;
    EXPECT_EQ(f.tensor_data(*t).size(), t->nbytes) << name;
  };
  for (const Case& c : kCases) {
    check(src_name(c.name), 0, c);
    for (size_t t = 0; t < std::size(kTypes); ++t) {
      check(q_name(kTypes[t], c.name), kTypeIds[t], c);
      check(deq_name(kTypes[t], c.name), 0, c);
    }
  }
}

TEST_P(OracleFile, CopyIsByteIdentical) {
  const GgufFile& f = fixture(GetParam());
  const std::filesystem::path out = std::filesystem::path(testing::TempDir()) /
                                    (std::string("ggml_oracle_copy_") + (GetParam() ? "a64_" : "a32_") +
                                     std::to_string(::getpid()) + ".gguf");
  gguf_copy(f, out);
  const GgufFile copy = GgufFile::open(out);
  const std::span<const uint8_t> a = f.bytes();
  const std::span<const uint8_t> b = copy.bytes();
  EXPECT_EQ(b.size(), a.size()) << "copy size";
  const size_t n = std::min(a.size(), b.size());
  const size_t diff = std::mismatch(a.begin(), a.begin() + n, b.begin()).first - a.begin();
  EXPECT_EQ(diff, n) << "first differing byte at offset " << diff << " (data section starts at "
                     << f.data_offset() << "): ggml 0x" << std::hex << int{a[diff]} << ", copy 0x"
                     << int{b[diff]};
  std::filesystem::remove(out);
}

// Both files hold the same tensors; only the padding differs. Reading identical bytes from both
// proves the reader applied the 64-byte alignment to every offset.
TEST(OracleFileAlign, SameTensorBytesInBothFiles) {
  const GgufFile& a = fixture(false);
  const GgufFile& b = fixture(true);
  ASSERT_EQ(a.tensors().size(), b.tensors().size());
  for (const GgufTensorInfo& t : a.tensors()) {
    const GgufTensorInfo* u = b.find_tensor(t.name);
    ASSERT_NE(u, nullptr) << t.name;
    const std::span<const uint8_t> x = a.tensor_data(t);
    const std::span<const uint8_t> y = b.tensor_data(*u);
    ASSERT_EQ(x.size(), y.size()) << t.name;
    EXPECT_EQ(std::memcmp(x.data(), y.data(), x.size()), 0) << t.name;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixture, OracleFile, testing::Bool(), [](const testing::TestParamInfo<bool>& p) {
  return p.param ? "align64" : "align32";
});

// --- block formats -------------------------------------------------------------------------------

struct FormatCase {
  size_t type;  // index into kTypes
  size_t kase;  // index into kCases
};

std::vector<FormatCase> all_format_cases() {
  std::vector<FormatCase> v;
  for (size_t t = 0; t < std::size(kTypes); ++t) {
    for (size_t c = 0; c < std::size(kCases); ++c) v.push_back({t, c});
  }
  return v;
}

std::string hex(std::span<const uint8_t> b) {
  std::string s;
  char buf[4];
  for (size_t i = 0; i < b.size(); ++i) {
    std::snprintf(buf, sizeof buf, "%02x", b[i]);
    s += buf;
    if (i + 1 < b.size()) s += (i % 32 == 31) ? "\n    " : " ";
  }
  return s;
}

uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

std::string floats(std::span<const float> v) {
  std::string s;
  char buf[48];
  for (size_t i = 0; i < v.size(); ++i) {
    std::snprintf(buf, sizeof buf, "%.9g(%08" PRIx32 ")", v[i], float_bits(v[i]));
    s += buf;
    if (i + 1 < v.size()) s += (i % 8 == 7) ? "\n    " : " ";
  }
  return s;
}

std::vector<float> as_floats(std::span<const uint8_t> bytes) {
  std::vector<float> v(bytes.size() / sizeof(float));
  std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
  return v;
}

class OracleFormat : public testing::TestWithParam<FormatCase> {
 protected:
  void SetUp() override {
    const GgufFile& f = fixture(false);
    kase = &kCases[GetParam().kase];
    type_name = kTypes[GetParam().type];
    type = static_cast<GgmlType>(kTypeIds[GetParam().type]);
    ASSERT_EQ(ggml_type_name(type), type_name) << "fusebench and ggml disagree on the type's name";
    const GgmlTypeInfo& info = ggml_type_info(type);
    block_elems = info.block_elems;
    block_bytes = info.block_bytes;
    row_bytes = ggml_row_bytes(type, kase->cols);
    const GgufTensorInfo* s = f.find_tensor(src_name(kase->name));
    const GgufTensorInfo* q = f.find_tensor(q_name(type_name, kase->name));
    const GgufTensorInfo* d = f.find_tensor(deq_name(type_name, kase->name));
    ASSERT_TRUE(s && q && d) << "fixture lacks the tensors for " << type_name << " / " << kase->name;
    src = as_floats(f.tensor_data(*s));
    ggml_q = f.tensor_data(*q);
    ggml_deq = as_floats(f.tensor_data(*d));
    ASSERT_EQ(src.size(), static_cast<size_t>(kase->rows * kase->cols));
    ASSERT_EQ(ggml_q.size(), row_bytes * kase->rows);
    ASSERT_EQ(ggml_deq.size(), src.size());
  }

  const Case* kase = nullptr;
  std::string_view type_name;
  GgmlType type{};
  int64_t block_elems = 0;
  size_t block_bytes = 0;
  size_t row_bytes = 0;
  std::vector<float> src;
  std::span<const uint8_t> ggml_q;
  std::vector<float> ggml_deq;
};

TEST_P(OracleFormat, QuantizeBytesMatchGgml) {
  std::vector<uint8_t> ours(row_bytes);
  int bad_rows = 0;
  for (int64_t r = 0; r < kase->rows; ++r) {
    const float* x = src.data() + r * kase->cols;
    const uint8_t* want = ggml_q.data() + r * row_bytes;
    quantize(type, x, ours.data(), kase->cols);
    if (std::memcmp(ours.data(), want, row_bytes) == 0) continue;
    if (++bad_rows > 3) continue;  // the first few rows say enough; the count comes at the end
    size_t byte = 0;
    while (ours[byte] == want[byte]) ++byte;
    size_t bad_blocks = 0;
    for (size_t b = 0; b < row_bytes / block_bytes; ++b) {
      bad_blocks += std::memcmp(ours.data() + b * block_bytes, want + b * block_bytes, block_bytes) != 0;
    }
    const size_t block = byte / block_bytes;
    ADD_FAILURE() << "quantize " << type_name << " case " << kase->name << " row " << r << ": first byte "
                  << byte << " differs (block " << block << ", byte " << byte % block_bytes << " in block; "
                  << bad_blocks << " of " << row_bytes / block_bytes << " blocks differ)\n  ggml:\n    "
                  << hex({want + block * block_bytes, block_bytes}) << "\n  fusebench:\n    "
                  << hex({ours.data() + block * block_bytes, block_bytes}) << "\n  source block:\n    "
                  << floats({x + block * block_elems, static_cast<size_t>(block_elems)});
  }
  EXPECT_EQ(bad_rows, 0) << "rows whose bytes differ from ggml_quantize_chunk (" << type_name << ", "
                         << kase->name << ")";
}

TEST_P(OracleFormat, DequantizeBitsMatchGgml) {
  std::vector<float> ours(static_cast<size_t>(kase->cols));
  int bad_rows = 0;
  for (int64_t r = 0; r < kase->rows; ++r) {
    const uint8_t* q = ggml_q.data() + r * row_bytes;
    const float* want = ggml_deq.data() + r * kase->cols;
    dequantize(type, q, ours.data(), kase->cols);
    int64_t i = 0;
    while (i < kase->cols && float_bits(ours[i]) == float_bits(want[i])) ++i;
    if (i == kase->cols) continue;
    if (++bad_rows > 3) continue;
    int64_t n_bad = 0;
    for (int64_t j = 0; j < kase->cols; ++j) n_bad += float_bits(ours[j]) != float_bits(want[j]);
    const int64_t block = i / block_elems;
    ADD_FAILURE() << "dequantize " << type_name << " case " << kase->name << " row " << r << ": element " << i
                  << " (block " << block << ") differs, " << n_bad << " of " << kase->cols
                  << " elements differ\n  ggml to_float: " << floats({want + i, 1})
                  << "\n  fusebench:     " << floats({ours.data() + i, 1}) << "\n  block bytes:\n    "
                  << hex({q + block * block_bytes, block_bytes});
  }
  EXPECT_EQ(bad_rows, 0) << "rows whose dequantized bits differ from ggml's to_float (" << type_name << ", "
                         << kase->name << ")";
}

INSTANTIATE_TEST_SUITE_P(Ggml, OracleFormat, testing::ValuesIn(all_format_cases()),
                         [](const testing::TestParamInfo<FormatCase>& p) {
                           return std::string(kTypes[p.param.type]) + "_" +
                                  std::string(kCases[p.param.kase].name);
                         });

}  // namespace
}  // namespace fb
