#include "reference/formats/ggml_type.h"

#include <fmt/format.h>

#include <array>
#include <stdexcept>

namespace fb {
namespace {

// Geometry from ggml's type_traits and the block_* static_asserts in ggml-common.h; the byte
// counts are written as the sums of the block fields so each can be checked against that source.
constexpr GgmlTypeInfo kInfos[] = {
    {0, "f32", 1, 4, true},
    {1, "f16", 1, 2, true},
    {2, "q4_0", 32, 2 + 16, false},
    {3, "q4_1", 32, 2 + 2 + 16, false},
    {6, "q5_0", 32, 2 + 4 + 16, false},
    {7, "q5_1", 32, 2 + 2 + 4 + 16, false},
    {8, "q8_0", 32, 2 + 32, true},
    {9, "q8_1", 32, 2 + 2 + 32, false},
    {10, "q2_K", 256, 2 + 2 + 16 + 64, false},
    {11, "q3_K", 256, 2 + 64 + 32 + 12, false},
    {12, "q4_K", 256, 2 + 2 + 12 + 128, true},
    {13, "q5_K", 256, 2 + 2 + 12 + 32 + 128, true},
    {14, "q6_K", 256, 2 + 16 + 192, true},
    {15, "q8_K", 256, 4 + 256 + 32, false},
    {16, "iq2_xxs", 256, 2 + 64, false},
    {17, "iq2_xs", 256, 2 + 64 + 8, false},
    {18, "iq3_xxs", 256, 2 + 96, false},
    {19, "iq1_s", 256, 2 + 32 + 16, false},
    {20, "iq4_nl", 32, 2 + 16, false},
    {21, "iq3_s", 256, 2 + 13 * 8 + 4, false},
    {22, "iq2_s", 256, 2 + 64 + 16, false},
    {23, "iq4_xs", 256, 2 + 2 + 4 + 128, false},
    {24, "i8", 1, 1, false},
    {25, "i16", 1, 2, false},
    {26, "i32", 1, 4, false},
    {27, "i64", 1, 8, false},
    {28, "f64", 1, 8, false},
    {29, "iq1_m", 256, 32 + 16 + 8, false},
    {30, "bf16", 1, 2, true},
    {34, "tq1_0", 256, 2 + 4 + 48, false},
    {35, "tq2_0", 256, 2 + 64, false},
    {39, "mxfp4", 32, 1 + 16, false},
    {40, "nvfp4", 64, 4 + 32, false},
    {41, "q1_0", 128, 2 + 16, false},
};

// Dense by id so lookup is an index; holes (removed ids) stay null.
constexpr std::array<const GgmlTypeInfo*, kGgmlTypeCount> make_index() {
  std::array<const GgmlTypeInfo*, kGgmlTypeCount> index{};
  for (const GgmlTypeInfo& info : kInfos) index[info.id] = &info;
  return index;
}
constexpr auto kIndex = make_index();

constexpr char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  }
  return true;
}

const GgmlTypeInfo& checked_info(GgmlType t) {
  const GgmlTypeInfo* info = ggml_type_info(static_cast<uint32_t>(t));
  if (info == nullptr) {
    throw std::invalid_argument(fmt::format("unknown ggml type id {}", static_cast<uint32_t>(t)));
  }
  return *info;
}

}  // namespace

const GgmlTypeInfo* ggml_type_info(uint32_t id) { return id < kIndex.size() ? kIndex[id] : nullptr; }

std::optional<GgmlType> parse_ggml_type(std::string_view name) {
  for (const GgmlTypeInfo& info : kInfos) {
    if (iequals(info.name, name)) return static_cast<GgmlType>(info.id);
  }
  return std::nullopt;
}

// Used in error messages, so an unknown id yields a placeholder rather than another exception.
std::string_view ggml_type_name(GgmlType t) {
  const GgmlTypeInfo* info = ggml_type_info(static_cast<uint32_t>(t));
  return info != nullptr ? info->name : std::string_view("unknown");
}

const GgmlTypeInfo& require_convertible(const char* caller, GgmlType type, int64_t n) {
  const GgmlTypeInfo* info = ggml_type_info(static_cast<uint32_t>(type));
  if (info == nullptr || !info->convertible) {
    throw std::invalid_argument(fmt::format("{}: type {} (id {}) is not supported (n={})", caller,
                                            ggml_type_name(type), static_cast<uint32_t>(type), n));
  }
  if (n < 0 || n % info->block_elems != 0) {
    throw std::invalid_argument(fmt::format("{}: n={} is not a multiple of the {} block size {}", caller, n,
                                            info->name, info->block_elems));
  }
  return *info;
}

size_t ggml_row_bytes(GgmlType t, int64_t n) {
  const GgmlTypeInfo& info = checked_info(t);
  return info.block_bytes * static_cast<size_t>(n / info.block_elems);
}

}  // namespace fb
