#include "reference/gguf/gguf_value.h"

#include <gtest/gtest.h>

#include "reference/gguf/gguf_error.h"

namespace fb {
namespace {

TEST(GgufValue, IntegerAccessors) {
  EXPECT_EQ(GgufValue{uint8_t{200}}.as_int(), 200);
  EXPECT_EQ(GgufValue{int8_t{-3}}.as_int(), -3);
  EXPECT_EQ(GgufValue{int8_t{-3}}.as_uint(), std::nullopt);
  EXPECT_EQ(GgufValue{uint64_t{1} << 63}.as_int(), std::nullopt);
  EXPECT_EQ(GgufValue{uint64_t{1} << 63}.as_uint(), uint64_t{1} << 63);
  EXPECT_EQ(GgufValue{int64_t{5}}.as_uint(), 5u);
  EXPECT_EQ(GgufValue{GgufBool{true}}.as_int(), std::nullopt);
  EXPECT_EQ(GgufValue{1.5f}.as_int(), std::nullopt);
  EXPECT_EQ(GgufValue{1.5f}.as_float(), 1.5);
  EXPECT_EQ(GgufValue{std::string("x")}.as_float(), std::nullopt);
  EXPECT_NE(GgufValue{std::string("x")}.as_string(), nullptr);
  EXPECT_EQ(GgufValue{uint32_t{1}}.as_string(), nullptr);
}

TEST(GgufValue, TypesMatchTheirAlternatives) {
  EXPECT_EQ(GgufValue{uint8_t{}}.type(), GgufValueType::UINT8);
  EXPECT_EQ(GgufValue{int8_t{}}.type(), GgufValueType::INT8);
  EXPECT_EQ(GgufValue{uint16_t{}}.type(), GgufValueType::UINT16);
  EXPECT_EQ(GgufValue{int16_t{}}.type(), GgufValueType::INT16);
  EXPECT_EQ(GgufValue{uint32_t{}}.type(), GgufValueType::UINT32);
  EXPECT_EQ(GgufValue{int32_t{}}.type(), GgufValueType::INT32);
  EXPECT_EQ(GgufValue{float{}}.type(), GgufValueType::FLOAT32);
  EXPECT_EQ(GgufValue{GgufBool{}}.type(), GgufValueType::BOOL);
  EXPECT_EQ(GgufValue{std::string()}.type(), GgufValueType::STRING);
  EXPECT_EQ(GgufValue{GgufArray{}}.type(), GgufValueType::ARRAY);
  EXPECT_EQ(GgufValue{uint64_t{}}.type(), GgufValueType::UINT64);
  EXPECT_EQ(GgufValue{int64_t{}}.type(), GgufValueType::INT64);
  EXPECT_EQ(GgufValue{double{}}.type(), GgufValueType::FLOAT64);
  EXPECT_EQ(gguf_scalar_size(GgufValueType::FLOAT64), 8u);
  EXPECT_EQ(gguf_scalar_size(GgufValueType::BOOL), 1u);
  EXPECT_EQ(gguf_scalar_size(GgufValueType::STRING), 0u);
  EXPECT_STREQ(to_string(GgufValueType::UINT32), "UINT32");
  EXPECT_STREQ(to_string(GgufErrc::bad_tensor_offset), "bad_tensor_offset");
}

TEST(GgufValue, Display) {
  EXPECT_EQ(GgufValue{uint8_t{65}}.to_display(), "65");
  EXPECT_EQ(GgufValue{int8_t{-1}}.to_display(), "-1");
  EXPECT_EQ(GgufValue{uint64_t{18446744073709551615ull}}.to_display(), "18446744073709551615");
  EXPECT_EQ(GgufValue{GgufBool{true}}.to_display(), "true");
  EXPECT_EQ(GgufValue{0.5f}.to_display(), "0.5");
  EXPECT_EQ(GgufValue{std::string("a\"b\n\x01")}.to_display(), "\"a\\\"b\\n\\x01\"");
  GgufArray a;
  a.elem_type = GgufValueType::INT32;
  a.values = std::vector<int32_t>{1, 2, 3, 4, 5};
  EXPECT_EQ(GgufValue{a}.to_display(3), "[1, 2, 3, ... (5 items)]");
  EXPECT_EQ(GgufValue{a}.to_display(), "[1, 2, 3, 4, 5]");
  GgufArray b;
  b.elem_type = GgufValueType::BOOL;
  b.values = std::vector<uint8_t>{1, 0};
  EXPECT_EQ(GgufValue{b}.to_display(), "[true, false]");
  GgufArray s;
  s.elem_type = GgufValueType::STRING;
  s.values = std::vector<std::string>{"x"};
  EXPECT_EQ(GgufValue{s}.to_display(), "[\"x\"]");
  EXPECT_EQ(GgufValue{GgufArray{}}.to_display(), "[]");
}

}  // namespace
}  // namespace fb
