#include "reference/formats/ggml_type.h"

#include <gtest/gtest.h>

#include <stdexcept>

#include "reference/formats/blocks.h"

namespace fb {
namespace {

TEST(GgmlTypeTest, RemovedAndUnknownIdsHaveNoInfo) {
  for (uint32_t id : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u, kGgmlTypeCount, 1000u}) {
    EXPECT_EQ(ggml_type_info(id), nullptr) << id;
  }
}

TEST(GgmlTypeTest, EveryKnownIdIsConsistent) {
  int known = 0;
  for (uint32_t id = 0; id < kGgmlTypeCount; ++id) {
    const GgmlTypeInfo* info = ggml_type_info(id);
    if (info == nullptr) continue;
    ++known;
    EXPECT_EQ(info->id, id);
    EXPECT_GT(info->block_elems, 0) << info->name;
    EXPECT_GT(info->block_bytes, 0u) << info->name;
    EXPECT_EQ(parse_ggml_type(info->name), static_cast<GgmlType>(id)) << info->name;
    EXPECT_EQ(ggml_type_name(static_cast<GgmlType>(id)), info->name);
  }
  EXPECT_EQ(known, 34);  // 42 ids minus the 8 removed ones
}

TEST(GgmlTypeTest, GeometryOfTheConvertedTypesMatchesTheBlockStructs) {
  EXPECT_EQ(ggml_type_info(GgmlType::Q4_K).block_bytes, sizeof(BlockQ4K));
  EXPECT_EQ(ggml_type_info(GgmlType::Q5_K).block_bytes, sizeof(BlockQ5K));
  EXPECT_EQ(ggml_type_info(GgmlType::Q6_K).block_bytes, sizeof(BlockQ6K));
  EXPECT_EQ(ggml_type_info(GgmlType::Q8_0).block_bytes, sizeof(BlockQ8_0));
  EXPECT_EQ(ggml_type_info(GgmlType::Q4_K).block_elems, kQK_K);
  EXPECT_EQ(ggml_type_info(GgmlType::Q8_0).block_elems, kQK8_0);
  for (GgmlType t : kConvertibleTypes) EXPECT_TRUE(ggml_type_info(t).convertible) << ggml_type_name(t);
  EXPECT_FALSE(ggml_type_info(GgmlType::Q4_0).convertible);
}

TEST(GgmlTypeTest, SpotCheckSizesAgainstGgmlCommon) {
  // (id, elems, bytes) from the block_* static_asserts in the vendored ggml-common.h.
  struct Row {
    GgmlType t;
    int64_t elems;
    size_t bytes;
  };
  for (const Row& r :
       {Row{GgmlType::Q2_K, 256, 84}, Row{GgmlType::Q3_K, 256, 110}, Row{GgmlType::Q8_K, 256, 292},
        Row{GgmlType::IQ4_XS, 256, 136}, Row{GgmlType::IQ3_S, 256, 110}, Row{GgmlType::IQ1_M, 256, 56},
        Row{GgmlType::TQ1_0, 256, 54}, Row{GgmlType::MXFP4, 32, 17}, Row{GgmlType::NVFP4, 64, 36},
        Row{GgmlType::Q1_0, 128, 18}, Row{GgmlType::F64, 1, 8}, Row{GgmlType::BF16, 1, 2}}) {
    EXPECT_EQ(ggml_type_info(r.t).block_elems, r.elems) << ggml_type_name(r.t);
    EXPECT_EQ(ggml_type_info(r.t).block_bytes, r.bytes) << ggml_type_name(r.t);
  }
}

TEST(GgmlTypeTest, ParseIsCaseInsensitiveAndRejectsUnknown) {
  EXPECT_EQ(parse_ggml_type("q4_K"), GgmlType::Q4_K);
  EXPECT_EQ(parse_ggml_type("Q4_K"), GgmlType::Q4_K);
  EXPECT_EQ(parse_ggml_type("q4_k"), GgmlType::Q4_K);
  EXPECT_EQ(parse_ggml_type("BF16"), GgmlType::BF16);
  EXPECT_EQ(parse_ggml_type("IQ2_XXS"), GgmlType::IQ2_XXS);
  EXPECT_FALSE(parse_ggml_type("q4_K_M").has_value());
  EXPECT_FALSE(parse_ggml_type("").has_value());
  EXPECT_FALSE(parse_ggml_type("DEPRECATED").has_value());
}

TEST(GgmlTypeTest, RowBytes) {
  EXPECT_EQ(ggml_row_bytes(GgmlType::Q4_K, 5376), 21u * 144u);
  EXPECT_EQ(ggml_row_bytes(GgmlType::Q6_K, 256), 210u);
  EXPECT_EQ(ggml_row_bytes(GgmlType::Q8_0, 64), 68u);
  EXPECT_EQ(ggml_row_bytes(GgmlType::F32, 7), 28u);
  EXPECT_EQ(ggml_row_bytes(GgmlType::BF16, 7), 14u);
  EXPECT_EQ(ggml_row_bytes(GgmlType::F16, 0), 0u);
  EXPECT_THROW(ggml_row_bytes(static_cast<GgmlType>(4), 32), std::invalid_argument);
  EXPECT_EQ(ggml_type_name(static_cast<GgmlType>(4)), "unknown");
}

}  // namespace
}  // namespace fb
