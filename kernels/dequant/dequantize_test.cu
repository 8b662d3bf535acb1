// CUDA dequantization vs the CPU reference fb::dequantize: every output bit must match (DESIGN §4),
// for fp32 and bf16 outputs, random blocks from a recorded seed with NaN/inf/subnormal scales mixed
// in, NaN-poisoned outputs and guard words behind them.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "kernels/common/cuda_check.h"
#include "kernels/dequant/dequantize.cuh"
#include "reference/formats/blocks.h"
#include "reference/formats/dequantize.h"
#include "reference/formats/ggml_type.h"
#include "reference/formats/half.h"

namespace {

using fb::GgmlType;

constexpr uint64_t kDefaultSeed = 20250101;
// Signalling-NaN patterns: no conversion or arithmetic in the reference can produce them (results are
// quieted), so an element the kernel never wrote cannot pass by accident.
constexpr uint32_t kPoisonF32 = 0x7FBADBADu;
constexpr uint16_t kPoisonBF16 = 0x7FBAu;
constexpr uint32_t kGuardF32 = 0xCAFEF00Du;
constexpr uint16_t kGuardBF16 = 0xF00Du;
constexpr size_t kGuardElems = 64;

struct Case {
  GgmlType type;
  int64_t rows;
  int64_t cols;
  int special_every;  // 0: realistic scales only; k: about one block in k gets a special d/dmin
  bool misaligned;    // destination offset by one element: exercises the scalar-store path
};

const char* type_name(GgmlType t) {
  switch (t) {
    case GgmlType::F32:
      return "F32";
    case GgmlType::F16:
      return "F16";
    case GgmlType::BF16:
      return "BF16";
    case GgmlType::Q8_0:
      return "Q8_0";
    case GgmlType::Q4_K:
      return "Q4_K";
    case GgmlType::Q5_K:
      return "Q5_K";
    case GgmlType::Q6_K:
      return "Q6_K";
    default:
      return "unknown";
  }
}

std::string case_name(const Case& c) {
  std::ostringstream os;
  os << type_name(c.type) << '_' << c.rows << 'x' << c.cols;
  if (c.special_every) os << "_special" << c.special_every;
  if (c.misaligned) os << "_misaligned";
  return os.str();
}

// gtest_discover_tests appends the parameter to the ctest name; keep it short and readable.
void PrintTo(const Case& c, std::ostream* os) { *os << case_name(c); }

uint64_t base_seed() {
  if (const char* s = std::getenv("FUSEBENCH_SEED")) return std::strtoull(s, nullptr, 0);
  return kDefaultSeed;
}

// Per-case stream so cases stay reproducible alone and in any order.
uint64_t case_seed(uint64_t base, const Case& c) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a over the name
  for (char ch : case_name(c)) h = (h ^ static_cast<unsigned char>(ch)) * 1099511628211ull;
  return base ^ h;
}

// Scales as the quantizers produce them: positive, |d| between 2^-14 and 2^-2.
uint16_t realistic_scale(std::mt19937_64& rng) {
  std::uniform_real_distribution<float> log2d(-14.0f, -2.0f);
  return fb::fp32_to_fp16(std::exp2(log2d(rng)));
}

uint16_t special_scale(std::mt19937_64& rng) {
  const uint16_t sign = (rng() & 1) ? 0x8000 : 0;
  const uint16_t mant = static_cast<uint16_t>(rng() & 0x3FF);
  switch (rng() % 6) {
    case 0:
      return sign | 0x7C00 | (mant ? mant : 1);  // NaN, signalling or quiet, random payload
    case 1:
      return sign | 0x7C00;  // inf: inf*0 and inf-inf give the default NaN
    case 2:
      return sign | (mant ? mant : 1);  // fp16 subnormal
    case 3:
      return sign;  // ±0
    case 4:
      return sign | 0x7BFF;  // largest finite
    default:
      return sign | 0x0400;  // smallest normal
  }
}

void set_u16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, sizeof v); }

// Random bytes are valid quants and scales for every quantized type; only the fp16 super-block
// scales are replaced so that most blocks look like real weights.
std::vector<uint8_t> make_input(const Case& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const fb::GgmlTypeInfo& info = fb::ggml_type_info(c.type);
  const int64_t n_blocks = c.rows * (c.cols / info.block_elems);
  std::vector<uint8_t> bytes(static_cast<size_t>(n_blocks) * info.block_bytes);
  for (size_t i = 0; i < bytes.size(); i += 8) {
    const uint64_t r = rng();
    std::memcpy(bytes.data() + i, &r, std::min<size_t>(8, bytes.size() - i));
  }
  if (info.block_elems == 1) return bytes;  // plain types: every bit pattern, NaNs included

  // Offsets of the fp16 scale fields inside each block.
  std::vector<size_t> scale_fields;
  switch (c.type) {
    case GgmlType::Q4_K:
      scale_fields = {offsetof(fb::BlockQ4K, d), offsetof(fb::BlockQ4K, dmin)};
      break;
    case GgmlType::Q5_K:
      scale_fields = {offsetof(fb::BlockQ5K, d), offsetof(fb::BlockQ5K, dmin)};
      break;
    case GgmlType::Q6_K:
      scale_fields = {offsetof(fb::BlockQ6K, d)};
      break;
    case GgmlType::Q8_0:
      scale_fields = {offsetof(fb::BlockQ8_0, d)};
      break;
    default:
      ADD_FAILURE() << "no generator for " << type_name(c.type);
  }
  for (int64_t b = 0; b < n_blocks; ++b) {
    uint8_t* block = bytes.data() + b * info.block_bytes;
    for (size_t off : scale_fields) set_u16(block + off, realistic_scale(rng));
    if (c.special_every && rng() % c.special_every == 0) {
      // One field or all of them: both d and dmin special reaches NaN-minus-NaN and inf-minus-inf.
      const size_t which = rng() % (scale_fields.size() + 1);
      for (size_t f = 0; f < scale_fields.size(); ++f) {
        if (which == scale_fields.size() || which == f) set_u16(block + scale_fields[f], special_scale(rng));
      }
    }
  }
  return bytes;
}

std::vector<float> cpu_reference(const Case& c, const std::vector<uint8_t>& src) {
  std::vector<float> out(static_cast<size_t>(c.rows * c.cols));
  const size_t row_bytes = fb::ggml_row_bytes(c.type, c.cols);
  for (int64_t r = 0; r < c.rows; ++r) {
    fb::dequantize(c.type, src.data() + r * row_bytes, out.data() + r * c.cols, c.cols);
  }
  return out;
}

template <class Bits>
std::string hex(Bits v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, sizeof(Bits) == 2 ? "0x%04x" : "0x%08x", static_cast<unsigned>(v));
  return buf;
}

std::string reproducer(const Case& c, uint64_t base) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string full = std::string(info->test_suite_name()) + "." + info->name();
  std::ostringstream os;
  // ctest names carry a "  # GetParam() = ..." suffix, hence the open-ended pattern.
  os << "reproduce: FUSEBENCH_SEED=" << base << " ctest --test-dir <build> -R '/" << case_name(c)
     << "( |$)' --output-on-failure   (or: FUSEBENCH_SEED=" << base
     << " <build>/kernels/fb_dequantize_gpu_test --gtest_filter='" << full << "')";
  return os.str();
}

// Bits of the output element type, compared with memcmp semantics (NaN payloads count).
template <class Out>
using BitsOf = std::conditional_t<sizeof(Out) == 4, uint32_t, uint16_t>;

template <class Out>
void check_one(const Case& c, uint64_t base, uint64_t seed, const std::vector<uint8_t>& src_host,
               const fb::DeviceBuffer<uint8_t>& src_dev, const std::vector<float>& ref_f32,
               cudaStream_t stream) {
  using Bits = BitsOf<Out>;
  constexpr bool kF32 = sizeof(Out) == 4;
  const char* out_name = kF32 ? "f32" : "bf16";
  const size_t n = ref_f32.size();
  const size_t offset = c.misaligned ? 1 : 0;

  std::vector<Bits> want(n);
  for (size_t i = 0; i < n; ++i) {
    if constexpr (kF32) {
      want[i] = fb::float_bits(ref_f32[i]);
    } else {
      want[i] = fb::fp32_to_bf16(ref_f32[i]);
    }
  }

  // [offset pad][n outputs][guard words]
  std::vector<Bits> host(offset + n + kGuardElems);
  std::fill(host.begin(), host.begin() + offset + n, static_cast<Bits>(kF32 ? kPoisonF32 : kPoisonBF16));
  std::fill(host.begin() + offset + n, host.end(), static_cast<Bits>(kF32 ? kGuardF32 : kGuardBF16));
  fb::DeviceBuffer<Bits> dst(host.size());
  FB_CUDA_CHECK(cudaMemcpyAsync(dst.get(), host.data(), dst.bytes(), cudaMemcpyHostToDevice, stream));
  fb::cuda::dequantize(c.type, src_dev.get(), reinterpret_cast<Out*>(dst.get() + offset), c.rows, c.cols,
                       stream);
  FB_CUDA_CHECK(cudaMemcpyAsync(host.data(), dst.get(), dst.bytes(), cudaMemcpyDeviceToHost, stream));
  FB_CUDA_CHECK(cudaStreamSynchronize(stream));

  const std::string where = std::string(type_name(c.type)) + " -> " + out_name + ", shape " +
                            std::to_string(c.rows) + "x" + std::to_string(c.cols) + ", seed " +
                            std::to_string(seed) + " (base " + std::to_string(base) + ")";
  for (size_t g = 0; g < kGuardElems; ++g) {
    const Bits got = host[offset + n + g];
    if (got != static_cast<Bits>(kF32 ? kGuardF32 : kGuardBF16)) {
      ADD_FAILURE() << where << ": guard word " << g << " after the output was overwritten (" << hex(got)
                    << ")\n"
                    << reproducer(c, base);
      return;
    }
  }
  if (std::memcmp(host.data() + offset, want.data(), n * sizeof(Bits)) == 0) return;

  size_t first = n, count = 0;
  for (size_t i = 0; i < n; ++i) {
    if (host[offset + i] != want[i]) {
      if (first == n) first = i;
      ++count;
    }
  }
  const fb::GgmlTypeInfo& info = fb::ggml_type_info(c.type);
  const size_t block = first / info.block_elems;
  std::ostringstream bytes;
  for (size_t b = 0; b < info.block_bytes; ++b) {
    char buf[4];
    std::snprintf(buf, sizeof buf, "%02x", src_host[block * info.block_bytes + b]);
    bytes << buf;
  }
  ADD_FAILURE() << where << ": " << count << " of " << n << " outputs differ; first at index " << first
                << " (row " << first / c.cols << ", col " << first % c.cols << ", block " << block
                << ", element " << first % info.block_elems << "): gpu " << hex(host[offset + first])
                << " cpu " << hex(want[first]) << " (cpu f32 " << hex(fb::float_bits(ref_f32[first]))
                << ")\n  source block bytes: " << bytes.str() << "\n  " << reproducer(c, base);
}

class DequantizeGpu : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (auto reason = fb::cuda_device_unavailable_reason()) GTEST_SKIP() << *reason;
  }
};

TEST_P(DequantizeGpu, BitExactVsCpu) {
  const Case& c = GetParam();
  const uint64_t base = base_seed();
  const uint64_t seed = case_seed(base, c);
  RecordProperty("seed", std::to_string(seed));
  const std::vector<uint8_t> src = make_input(c, seed);
  const std::vector<float> ref = cpu_reference(c, src);

  fb::Stream stream;
  fb::DeviceBuffer<uint8_t> src_dev(src.size());
  FB_CUDA_CHECK(cudaMemcpyAsync(src_dev.get(), src.data(), src.size(), cudaMemcpyHostToDevice, stream.get()));
  check_one<float>(c, base, seed, src, src_dev, ref, stream.get());
  check_one<__nv_bfloat16>(c, base, seed, src, src_dev, ref, stream.get());
}

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  // 5376 = 21 * 256: a real hidden size whose block count per row is odd and not a power of two.
  for (GgmlType t : {GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K}) {
    cases.push_back({t, 1, 256, 0, false});
    cases.push_back({t, 3, 768, 0, false});
    cases.push_back({t, 5, 256 * 7, 0, true});
    cases.push_back({t, 64, 1024, 3, false});
    cases.push_back({t, 17, 512, 2, true});
    cases.push_back({t, 4096, 5376, 251, false});
  }
  cases.push_back({GgmlType::Q8_0, 1, 32, 0, false});
  cases.push_back({GgmlType::Q8_0, 3, 96, 0, false});
  cases.push_back({GgmlType::Q8_0, 7, 32 * 33, 0, true});
  cases.push_back({GgmlType::Q8_0, 64, 1024, 3, false});
  cases.push_back({GgmlType::Q8_0, 4096, 5376, 251, false});
  // Plain types take every bit pattern (NaNs too); odd sizes reach the partial last thread.
  for (GgmlType t : {GgmlType::F16, GgmlType::BF16, GgmlType::F32}) {
    cases.push_back({t, 1, 1, 0, false});
    cases.push_back({t, 3, 7, 0, false});
    cases.push_back({t, 5, 1023, 0, true});
    cases.push_back({t, 4096, 5376, 0, false});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Types, DequantizeGpu, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return case_name(info.param); });

}  // namespace
