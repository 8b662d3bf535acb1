// Pins the exact byte layout with files emitted field by field, independently of GgufWriter.
#include <gtest/gtest.h>

#include "reference/gguf/gguf_file.h"
#include "reference/gguf/gguf_test_util.h"
#include "reference/gguf/gguf_writer.h"

namespace fb {
namespace {

using test::Bytes;
using test::TempDir;

std::vector<uint8_t> f32_bytes(std::vector<float> v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

TEST(GgufLayout, HeaderBytesAreLiteral) {
  TempDir dir;
  GgufWriter w(dir / "h.gguf");
  w.add_kv("general.architecture", {std::string("x")});
  w.write_all({});
  const auto got = test::read_bytes(dir / "h.gguf");
  const std::vector<uint8_t> want_prefix = {
      'G', 'G', 'U', 'F', 3,   0,   0,   0,  // magic, version
      0,   0,   0,   0,   0,   0,   0,   0,  // n_tensors (int64)
      1,   0,   0,   0,   0,   0,   0,   0,  // n_kv (int64)
      20,  0,   0,   0,   0,   0,   0,   0,  // key length (u64, no NUL)
      'g', 'e', 'n', 'e', 'r', 'a', 'l', '.', 'a', 'r', 'c', 'h',
      'i', 't', 'e', 'c', 't', 'u', 'r', 'e', 8,   0,   0,   0,  // value type STRING (int32)
      1,   0,   0,   0,   0,   0,   0,   0,   'x',               // string value
  };
  ASSERT_GE(got.size(), want_prefix.size());
  EXPECT_EQ(std::vector<uint8_t>(got.begin(), got.begin() + want_prefix.size()), want_prefix);
  // ggml's writer pads to the alignment even with no tensors; the rest is that zero padding.
  EXPECT_EQ(want_prefix.size(), 65u);
  EXPECT_EQ(got.size(), 96u);
  EXPECT_TRUE(std::all_of(got.begin() + want_prefix.size(), got.end(), [](uint8_t c) { return c == 0; }));

  // ...but its reader does not skip the padding when there are no tensors.
  const GgufFile f = GgufFile::parse(got);
  EXPECT_EQ(f.data_offset(), want_prefix.size());
}

TEST(GgufLayout, WriterMatchesHandBuiltFileWithTensors) {
  const auto d0 = f32_bytes({1.0f, 2.0f, 3.0f});
  const auto d1 = test::random_bytes(2 * 34, 7);  // q8_0 [64, 1]: 2 blocks of 34 bytes
  Bytes b;
  b.header(2, 2).kv_str("general.architecture", "x").kv_u32("general.alignment", 64);
  const size_t t0_at = b.size();
  b.tinfo("t", {3}, 0, 0);
  const size_t t1_at = b.size();
  b.tinfo("q", {64, 1}, 8, 64);
  b.pad(64);
  const size_t data_offset = b.size();
  b.raw(d0.data(), d0.size()).pad(64).raw(d1.data(), d1.size()).pad(64);

  TempDir dir;
  GgufWriter w(dir / "t.gguf");
  w.add_kv("general.architecture", {std::string("x")});
  w.add_kv("general.alignment", {uint32_t{64}});
  w.add_tensor("t", GgmlType::F32, {3});
  w.add_tensor("q", GgmlType::Q8_0, {64, 1});
  w.write_all({d0, d1});
  EXPECT_EQ(test::read_bytes(dir / "t.gguf"), b.b);

  const GgufFile f = GgufFile::parse(b.b);
  EXPECT_EQ(f.data_offset(), data_offset);
  EXPECT_EQ(f.alignment(), 64u);
  ASSERT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.tensors()[1].offset, 64u);
  EXPECT_EQ(f.tensors()[1].nbytes, 68u);
  EXPECT_EQ(f.tensors()[0].info_offset, t0_at);
  EXPECT_EQ(f.tensors()[1].info_offset, t1_at);
  EXPECT_EQ(f.tensors()[0].n_elements(), 3);
  EXPECT_EQ(f.tensors()[1].n_rows(), 1);
}

TEST(GgufLayout, ReaderDecodesHandBuiltValues) {
  Bytes b;
  b.header(0, 5);
  b.str("b").i32(7).u8(2);  // ggml reads any nonzero byte as true
  b.str("arr.bool").i32(9).i32(7).u64(3).u8(0).u8(1).u8(9);
  b.str("arr.str").i32(9).i32(8).u64(2).str("\xE2\x82\xAC").str("");
  b.str("f64").i32(12).le(2.5);
  b.str("i16").i32(3).le<int16_t>(-3);
  const GgufFile f = GgufFile::parse(b.b);
  ASSERT_EQ(f.metadata().size(), 5u);
  EXPECT_EQ(f.find("b")->v, GgufValueStorage(GgufBool{true}));
  const GgufArray* a = f.find("arr.bool")->as_array();
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->elem_type, GgufValueType::BOOL);
  EXPECT_EQ(std::get<std::vector<uint8_t>>(a->values), (std::vector<uint8_t>{0, 1, 1}));
  const GgufArray* s = f.find("arr.str")->as_array();
  EXPECT_EQ(std::get<std::vector<std::string>>(s->values), (std::vector<std::string>{"\xE2\x82\xAC", ""}));
  EXPECT_EQ(f.find("f64")->as_float(), 2.5);
  EXPECT_EQ(f.find("i16")->as_int(), -3);
  EXPECT_EQ(f.data_offset(), b.size());
  EXPECT_TRUE(f.tensors().empty());
}

TEST(GgufLayout, TensorDataNeedNotEndWithPaddingWhenAligned) {
  // 64 bytes of f32 fill the alignment exactly, so the file legitimately ends with the data.
  const auto d = test::random_bytes(64, 3);
  Bytes b;
  b.header(1, 0).tinfo("w", {16}, 0, 0).pad(32).raw(d.data(), d.size());
  const GgufFile f = GgufFile::parse(b.b);
  EXPECT_EQ(f.tensor_data(f.tensors()[0]).size(), 64u);
}

}  // namespace
}  // namespace fb
