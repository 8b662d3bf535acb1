#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <vector>

#include <cuda_runtime_api.h>

#include "harness/check/checks.h"
#include "kernels/common/cuda_check.h"
#include "kernels/dequant/dequantize.cuh"
#include "reference/formats/dequantize.h"
#include "reference/formats/half.h"
#include "reference/util/splitmix.h"

namespace fb {

namespace {

// Valid random blocks: random bytes everywhere, except that fp16 scale fields get finite values
// of realistic magnitude (random bytes there would make NaN/inf scales in ~3 % of blocks).
std::vector<uint8_t> random_blocks(GgmlType t, int64_t rows, int64_t cols, uint64_t seed) {
  const size_t bytes = ggml_row_bytes(t, cols) * static_cast<size_t>(rows);
  std::vector<uint8_t> v(bytes);
  const CounterRng rng(seed, static_cast<uint64_t>(t));
  for (size_t i = 0; i < bytes; ++i) v[i] = static_cast<uint8_t>(rng.bits(i));
  auto put_half = [&](size_t at, uint64_t k) {
    const uint16_t h = fp32_to_fp16(1e-3f + 0.02f * rng.uniform(bytes + k));
    std::memcpy(v.data() + at, &h, 2);
  };
  const auto& info = ggml_type_info(t);
  const size_t nblocks = bytes / info.block_bytes;
  for (size_t b = 0; b < nblocks; ++b) {
    const size_t base = b * info.block_bytes;
    switch (t) {
      case GgmlType::Q4_K:
      case GgmlType::Q5_K:
        put_half(base, 2 * b);
        put_half(base + 2, 2 * b + 1);
        break;
      case GgmlType::Q6_K:
        put_half(base + 208, b);
        break;
      case GgmlType::Q8_0:
        put_half(base, b);
        break;
      case GgmlType::F16:
        put_half(base, b);
        break;
      case GgmlType::F32: {
        const float f = rng.normal(bytes + b);
        std::memcpy(v.data() + base, &f, 4);
        break;
      }
      default:
        break;  // BF16: every bit pattern is a valid value, NaNs included; kept as drawn
    }
  }
  return v;
}

}  // namespace

std::vector<CheckCase> run_gpu_checks(uint64_t seed) {
  std::vector<CheckCase> out;
  const auto reason = cuda_device_unavailable_reason();
  constexpr int64_t kRows = 512, kCols = 5376;  // 5376 = gemma4 hidden = 21 super-blocks
  for (GgmlType t : kConvertibleTypes) {
    CheckCase c;
    c.section = "gpu";
    c.name = fmt::format("{} CUDA dequant vs CPU", ggml_type_name(t));
    c.criterion = "bit-exact";
    c.repro = fmt::format("fusebench check --section gpu --seed {}", seed);
    if (reason) {
      c.status = CheckStatus::skip;
      c.detail = *reason;
      out.push_back(std::move(c));
      continue;
    }
    try {
      const auto host = random_blocks(t, kRows, kCols, seed);
      std::vector<float> ref(static_cast<size_t>(kRows * kCols)), got(ref.size());
      const size_t row_bytes = ggml_row_bytes(t, kCols);
      for (int64_t r = 0; r < kRows; ++r)
        dequantize(t, host.data() + r * row_bytes, ref.data() + r * kCols, kCols);
      DeviceBuffer<uint8_t> d_src(host.size());
      DeviceBuffer<float> d_dst(ref.size());
      FB_CUDA_CHECK(cudaMemcpy(d_src.get(), host.data(), host.size(), cudaMemcpyHostToDevice));
      FB_CUDA_CHECK(cudaMemset(d_dst.get(), 0xFF, ref.size() * sizeof(float)));  // NaN poison
      cuda::dequantize(t, d_src.get(), d_dst.get(), kRows, kCols, nullptr);
      FB_CUDA_CHECK(cudaGetLastError());
      FB_CUDA_CHECK(cudaMemcpy(got.data(), d_dst.get(), got.size() * sizeof(float), cudaMemcpyDeviceToHost));
      const Metrics m = compare(ref, got);
      c.status = m.bit_exact ? CheckStatus::pass : CheckStatus::fail;
      c.detail = m.summary();
      c.data = {{"type", std::string(ggml_type_name(t))},
                {"rows", kRows},
                {"cols", kCols},
                {"metrics", to_json(m)}};
    } catch (const std::exception& e) {
      c.status = CheckStatus::fail;
      c.detail = e.what();
    }
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace fb
