#pragma once
// The contract between ggml_fixture_writer (built against real ggml) and ggml_oracle_test (built
// against fusebench only): which metadata values, tensors and shapes the fixture holds. Both sides
// include this header, so the test asserts against values it did not read from the file.
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

namespace fb::oracle {

// --- metadata ------------------------------------------------------------------------------------
// Extremes and sign bits are chosen so that a reader that widens, narrows or sign-extends a value
// produces a different number.
inline constexpr std::string_view kArchitecture = "fusebench-oracle";
inline constexpr uint8_t kU8 = 0xA5;
inline constexpr int8_t kI8 = -128;
inline constexpr uint16_t kU16 = 0xBEEF;
inline constexpr int16_t kI16 = -12345;
inline constexpr uint32_t kU32 = 0xDEADBEEFu;
inline constexpr int32_t kI32 = std::numeric_limits<int32_t>::min() + 7;
inline constexpr float kF32 = 3.14159274f;
inline constexpr float kF32Denormal = 1.0e-40f;  // subnormal: must survive bit for bit
inline constexpr float kF32NegZero = -0.0f;
inline constexpr uint64_t kU64 = 0xFEDCBA9876543210ull;
inline constexpr int64_t kI64 = std::numeric_limits<int64_t>::min() + 3;
inline constexpr double kF64 = 2.718281828459045;
inline constexpr std::string_view kAscii = "hello, gguf";
// 2-, 3- and 4-byte UTF-8 sequences (é, 漢, 🦙) and an embedded double quote.
inline constexpr std::string_view kUtf8 = "h\xC3\xA9llo \xE6\xBC\xA2\xE5\xAD\x97 \xF0\x9F\xA6\x99 \"q\"";

inline constexpr uint8_t kArrU8[] = {0, 1, 127, 128, 255};
inline constexpr int8_t kArrI8[] = {-128, -1, 0, 1, 127};
inline constexpr uint16_t kArrU16[] = {0, 1, 0x8000, 0xFFFF};
inline constexpr int16_t kArrI16[] = {-32768, -1, 0, 32767};
inline constexpr uint32_t kArrU32[] = {0, 1, 0x80000000u, 0xFFFFFFFFu};
inline constexpr int32_t kArrI32[] = {std::numeric_limits<int32_t>::min(), -1, 0, 1,
                                      std::numeric_limits<int32_t>::max()};
inline constexpr uint64_t kArrU64[] = {0, 1, 0x8000000000000000ull, 0xFFFFFFFFFFFFFFFFull};
inline constexpr int64_t kArrI64[] = {std::numeric_limits<int64_t>::min(), -1, 0,
                                      std::numeric_limits<int64_t>::max()};
inline constexpr float kArrF32[] = {0.0f, -0.0f, 1.5f, -2.25e-38f, 3.0e38f, 1.0e-45f};
inline constexpr double kArrF64[] = {0.0, -0.0, 1.0 / 3.0, -1.0e308, 5.0e-324};
inline constexpr bool kArrBool[] = {true, false, false, true};
inline constexpr std::string_view kArrStr[] = {"", "a", "h\xC3\xA9llo", "\xF0\x9F\xA6\x99 llama",
                                               "tab\there"};

inline constexpr uint32_t kAlignment64 = 64;

// --- tensors -------------------------------------------------------------------------------------
// ggml spellings, as used in tensor names ("q.q4_K.gaussian").
inline constexpr std::string_view kTypes[] = {"f32", "f16", "bf16", "q8_0", "q4_K", "q5_K", "q6_K"};
inline constexpr uint32_t kTypeIds[] = {0, 1, 30, 8, 12, 13, 14};

struct Case {
  std::string_view name;
  int64_t rows;
  int64_t cols;  // a multiple of 256 so every type, K-quants included, can hold it
};

inline constexpr Case kCases[] = {
    {"gaussian", 16, 1024},  // N(0, 1)
    {"uniform", 8, 2048},    // U(-1, 1)
    {"constant", 8, 256},    // each row one value (positive, negative, zero, huge, tiny)
    {"outlier", 8, 1024},    // N(0, 1) plus one value of +-1e4..1e6 per row
    {"tiny", 8, 512},        // ~1e-30 mixed with exact zeros and float subnormals
    {"mixed", 8, 1024},      // magnitude changes by decades from one 16-value sub-block to the next
    {"zero", 4, 256},        // +0 rows and -0 rows
    {"positive", 4, 512},    // strictly positive rows and strictly negative rows (K-quant min paths)
    {"ties", 4, 256},        // exact fp16 / bf16 rounding ties and near-ties
    {"large", 4, 256},       // up to the fp16 limit (65504) and rows that overflow fp16 scales
};

inline std::string src_name(std::string_view c) { return "src." + std::string(c); }
inline std::string q_name(std::string_view t, std::string_view c) {
  return "q." + std::string(t) + "." + std::string(c);
}
inline std::string deq_name(std::string_view t, std::string_view c) {
  return "deq." + std::string(t) + "." + std::string(c);
}

}  // namespace fb::oracle
