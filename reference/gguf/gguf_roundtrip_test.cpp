// Every metadata type and several tensor types/shapes survive write -> read, and a copy of the
// file is byte-identical.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>

#include "reference/gguf/gguf_file.h"
#include "reference/gguf/gguf_test_util.h"
#include "reference/gguf/gguf_writer.h"

namespace fb {
namespace {

using test::TempDir;

template <typename T>
GgufValue arr(GgufValueType t, std::vector<T> v) {
  GgufArray a;
  a.elem_type = t;
  a.values = std::move(v);
  return {std::move(a)};
}

std::vector<GgufKv> all_kinds_of_metadata() {
  using T = GgufValueType;
  return {
      {"general.architecture", {std::string("llama")}},
      {"t.u8", {uint8_t{250}}},
      {"t.i8", {int8_t{-7}}},
      {"t.u16", {uint16_t{65535}}},
      {"t.i16", {int16_t{-32768}}},
      {"t.u32", {uint32_t{4000000000u}}},
      {"t.i32", {int32_t{-2000000000}}},
      {"t.f32", {1.5f}},
      {"t.bool_true", {GgufBool{true}}},
      {"t.bool_false", {GgufBool{false}}},
      {"t.str_utf8", {std::string("h\xC3\xA9llo \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x8E\x89")}},
      {"t.str_empty", {std::string()}},
      {"t.u64", {uint64_t{0xFFFFFFFFFFFFFFFFull}}},
      {"t.i64", {int64_t{-(int64_t{1} << 62)}}},
      {"t.f64", {-0.125e300}},
      {"t.\xCE\xBA\xCE\xBB\xCE\xB5\xCE\xB9\xCE\xB4\xCE\xAF", {uint32_t{1}}},  // UTF-8 key
      {"a.u8", arr<uint8_t>(T::UINT8, {0, 1, 255})},
      {"a.i8", arr<int8_t>(T::INT8, {-128, 0, 127})},
      {"a.u16", arr<uint16_t>(T::UINT16, {1, 65535})},
      {"a.i16", arr<int16_t>(T::INT16, {-1, 2, -3})},
      {"a.u32", arr<uint32_t>(T::UINT32, {7, 8, 9, 10})},
      {"a.i32", arr<int32_t>(T::INT32, {-1, 1})},
      {"a.f32", arr<float>(T::FLOAT32, {0.5f, -2.25f, 1e-30f})},
      {"a.bool", arr<uint8_t>(T::BOOL, {1, 0, 1, 1})},
      {"a.str", arr<std::string>(T::STRING, {"a", "", "\xC3\xBC\xE2\x82\xAC\xF0\x90\x8D\x88", "<|im_end|>"})},
      {"a.u64", arr<uint64_t>(T::UINT64, {0, 1ull << 63})},
      {"a.i64", arr<int64_t>(T::INT64, {INT64_MIN, INT64_MAX})},
      {"a.f64", arr<double>(T::FLOAT64, {3.141592653589793, -1e-300})},
      {"a.empty_i32", arr<int32_t>(T::INT32, {})},
      {"a.empty_str", arr<std::string>(T::STRING, {})},
  };
}

struct TensorSpec {
  std::string name;
  GgmlType type;
  std::vector<int64_t> ne;
};

std::vector<TensorSpec> tensor_specs() {
  return {
      {"scalar", GgmlType::F32, {}},
      {"vec.f32", GgmlType::F32, {7}},
      {"mat.f16", GgmlType::F16, {16, 3}},
      {"cube.q8_0", GgmlType::Q8_0, {64, 2, 3}},
      {"blk.0.q4_k", GgmlType::Q4_K, {256, 2, 1, 2}},
      {"empty.bf16", GgmlType::BF16, {0, 4}},
      {"w.q6_k", GgmlType::Q6_K, {512, 1}},
      {"w.q5_k", GgmlType::Q5_K, {256, 3}},
      {"bf16.odd", GgmlType::BF16, {5, 1, 1, 1}},
  };
}

class GgufRoundTrip : public ::testing::TestWithParam<uint32_t> {};  // 0: no general.alignment key

TEST_P(GgufRoundTrip, EveryTypeSurvivesAndCopyIsByteIdentical) {
  const uint32_t align_key = GetParam();
  TempDir dir;
  const auto path = dir / "rt.gguf";

  std::vector<GgufKv> kvs = all_kinds_of_metadata();
  if (align_key != 0) kvs.insert(kvs.begin() + 3, GgufKv{"general.alignment", {uint32_t{align_key}}});
  const uint32_t align = align_key != 0 ? align_key : kGgufDefaultAlignment;

  GgufWriter w(path);
  for (const auto& kv : kvs) w.add_kv(kv.key, kv.value);
  std::vector<std::vector<uint8_t>> data;
  std::vector<std::span<const uint8_t>> spans;
  const auto specs = tensor_specs();
  for (size_t i = 0; i < specs.size(); ++i) {
    const size_t idx = w.add_tensor(specs[i].name, specs[i].type, specs[i].ne);
    data.push_back(test::random_bytes(w.tensors()[idx].nbytes, 1000 + i));
  }
  for (const auto& d : data) spans.emplace_back(d);
  EXPECT_EQ(w.alignment(), align);
  w.write_all(spans);

  const GgufFile f = GgufFile::open(path);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), align);
  EXPECT_EQ(f.data_offset() % align, 0u);
  EXPECT_EQ(f.name(), path.string());
  ASSERT_EQ(f.metadata().size(), kvs.size());
  for (size_t i = 0; i < kvs.size(); ++i) {
    EXPECT_EQ(f.metadata()[i].key, kvs[i].key) << i;
    EXPECT_EQ(f.metadata()[i].value, kvs[i].value)
        << kvs[i].key << ": " << f.metadata()[i].value.to_display();
    EXPECT_EQ(f.metadata()[i].value.type(), kvs[i].value.type());
  }

  ASSERT_EQ(f.tensors().size(), specs.size());
  uint64_t expect_offset = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    const GgufTensorInfo& t = f.tensors()[i];
    EXPECT_EQ(t.name, specs[i].name);
    EXPECT_EQ(t.ggml_type(), specs[i].type);
    EXPECT_EQ(t.ne, specs[i].ne);
    EXPECT_EQ(t.offset, expect_offset);
    EXPECT_EQ(t.offset % align, 0u);
    const auto bytes = f.tensor_data(t);
    ASSERT_EQ(bytes.size(), data[i].size()) << t.name;
    EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), data[i].begin())) << t.name;
    EXPECT_EQ(f.find_tensor(t.name), &t);
    expect_offset += (t.nbytes + align - 1) / align * align;
  }
  EXPECT_EQ(f.file_size(), f.data_offset() + expect_offset);
  EXPECT_EQ(f.find_tensor("nope"), nullptr);

  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_uint("t.u32"), 4000000000u);
  EXPECT_EQ(f.get_uint("t.u8"), 250u);
  EXPECT_EQ(f.get_float("t.f32"), 1.5);
  EXPECT_EQ(f.get_uint("missing"), std::nullopt);

  const auto copy = dir / "copy.gguf";
  gguf_copy(f, copy);
  EXPECT_EQ(test::read_bytes(copy), test::read_bytes(path));
  // parse() over caller-owned bytes sees the same thing as open().
  const auto bytes = test::read_bytes(path);
  const GgufFile g = GgufFile::parse(bytes);
  EXPECT_EQ(g.metadata(), f.metadata());
  EXPECT_EQ(g.data_offset(), f.data_offset());
}

INSTANTIATE_TEST_SUITE_P(Alignments, GgufRoundTrip, ::testing::Values(0u, 1u, 8u, 32u, 64u, 4096u));

TEST(GgufFile, TypedGettersRejectWrongTypes) {
  TempDir dir;
  GgufWriter w(dir / "g.gguf");
  w.add_kv("s", {std::string("x")});
  w.add_kv("neg", {int32_t{-1}});
  w.add_kv("i", {uint32_t{3}});
  w.write_all({});
  const GgufFile f = GgufFile::open(dir / "g.gguf");
  EXPECT_EQ(f.get_float("i"), 3.0);
  for (auto fn : {+[](const GgufFile& f) { (void)f.get_uint("s"); },
                  +[](const GgufFile& f) { (void)f.get_uint("neg"); },
                  +[](const GgufFile& f) { (void)f.get_string("i"); },
                  +[](const GgufFile& f) { (void)f.get_float("s"); }}) {
    try {
      fn(f);
      ADD_FAILURE() << "no throw";
    } catch (const GgufError& e) {
      EXPECT_EQ(e.code(), GgufErrc::bad_metadata) << e.what();
      EXPECT_GE(e.offset(), 24u);
    }
  }
}

TEST(GgufFile, TokenizerSizedArrays) {
  // A 262144-entry vocabulary, as in gemma: the parse must stay linear and cheap.
  constexpr size_t kVocab = 262144;
  std::vector<std::string> tokens(kVocab);
  std::vector<float> scores(kVocab);
  for (size_t i = 0; i < kVocab; ++i) {
    tokens[i] = "tok\xE2\x96\x81" + std::to_string(i);
    scores[i] = -static_cast<float>(i);
  }
  TempDir dir;
  GgufWriter w(dir / "tok.gguf");
  w.add_kv("tokenizer.ggml.tokens", arr<std::string>(GgufValueType::STRING, tokens));
  w.add_kv("tokenizer.ggml.scores", arr<float>(GgufValueType::FLOAT32, scores));
  w.write_all({});
  const auto t0 = std::chrono::steady_clock::now();
  const GgufFile f = GgufFile::open(dir / "tok.gguf");
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("parsed %zu tokens in %.1f ms\n", kVocab, ms);
  const auto& got = std::get<std::vector<std::string>>(f.find("tokenizer.ggml.tokens")->as_array()->values);
  EXPECT_EQ(got, tokens);
  EXPECT_EQ(f.find("tokenizer.ggml.scores")->as_array()->size(), kVocab);
  gguf_copy(f, dir / "copy.gguf");
  EXPECT_EQ(test::read_bytes(dir / "copy.gguf"), test::read_bytes(dir / "tok.gguf"));
}

}  // namespace
}  // namespace fb
