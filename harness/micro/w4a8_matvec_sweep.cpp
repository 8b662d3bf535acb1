// fusebench_matvec_sweep: the decode matvec's launch variants (kernels/gemv/w4a8_matvec_tuning.cuh)
// on the gemma4-31b decode shapes, one Google Benchmark entry per shape x layout x T x variant, to
// pick the per-shape default. Times what the `matvec_w4a8` / `gate_up_act` harness cases time:
// w4a8_matvec_bf16 (activation quantization + matvec, PDL between them), hot L2, one gated
// CUDA-event sample per iteration (harness/timing, as fusebench_micro). Weights are constant bytes:
// the kernels' work does not depend on the values. Names:
//   matvec_sweep/<shape>/<layout>/T<m>/<variant>
// Counters: bytes_per_second over weight + activation + output bytes (as the harness cases count).
#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "harness/timing/timing.h"
#include "kernels/common/cuda_check.h"
#include "kernels/gemv/w4a8_matvec.cuh"
#include "kernels/gemv/w4a8_matvec_tuning.cuh"

namespace fb {
namespace {

using cuda::MatvecEpilogue;
using cuda::MatvecFormat;

struct Shape {
  std::string name;
  int64_t n, k;
  bool glu;
};

bool is_int4(MatvecFormat f) { return f == MatvecFormat::int4_bf16 || f == MatvecFormat::int4_u8; }

// Device bytes of the weights as the layouts store them (reference/layouts device_bytes()).
uint64_t weight_bytes(MatvecFormat f, int64_t n, int64_t k) {
  const uint64_t w = static_cast<uint64_t>(n) * static_cast<uint64_t>(k);
  switch (f) {
    case MatvecFormat::int4_bf16:
      return w / 2 + w / 32 * 4;
    case MatvecFormat::int4_u8:
      return w / 2 + w / 32 * 2 + w / 256 * 4;
    case MatvecFormat::int6_bf16:
      return w / 2 + w / 4 + w / 16 * 2;
    case MatvecFormat::int6_i8:
      return w / 2 + w / 4 + w / 16 + w / 256 * 2;
    default:
      return 0;
  }
}

// One weight set per (format, n, k), kept for the process: lm_head alone is 1.2 GB.
struct Weights {
  std::vector<DeviceBuffer<uint8_t>> bufs;
  cuda::MatvecWeights view;
};
Weights& weights(MatvecFormat f, int64_t n, int64_t k) {
  static std::map<std::tuple<int, int64_t, int64_t>, std::unique_ptr<Weights>> cache;
  auto& slot = cache[{static_cast<int>(f), n, k}];
  if (slot) return *slot;
  slot = std::make_unique<Weights>();
  Weights& w = *slot;
  auto add = [&](size_t bytes, int byte) {
    w.bufs.emplace_back(bytes);
    FB_CUDA_CHECK(cudaMemset(w.bufs.back().get(), byte, bytes));
    return static_cast<const void*>(w.bufs.back().get());
  };
  const size_t nk = static_cast<size_t>(n) * static_cast<size_t>(k);
  w.view.format = f;
  w.view.n = n;
  w.view.k = k;
  w.view.qdata = add(nk / 2, 0x5A);
  if (is_int4(f)) {
    const bool u8 = f == MatvecFormat::int4_u8;
    w.view.scale = add(nk / 32 * (u8 ? 1 : 2), 0x3C);  // bf16 0x3C3C ~ 0.0115; u8 code 60
    w.view.zero = add(nk / 32 * (u8 ? 1 : 2), 0x3F);
    if (u8) {
      w.view.scale_step = static_cast<const uint16_t*>(add(nk / 256 * 2, 0x1C));  // fp16 ~ 0.004
      w.view.zero_step = static_cast<const uint16_t*>(add(nk / 256 * 2, 0x1C));
    }
  } else {
    const bool i8 = f == MatvecFormat::int6_i8;
    w.view.qhigh = add(nk / 4, 0xA5);
    w.view.scale = add(nk / 16 * (i8 ? 1 : 2), 0x3C);
    if (i8) w.view.scale_step = static_cast<const uint16_t*>(add(nk / 256 * 2, 0x1C));
  }
  FB_CUDA_CHECK(cudaDeviceSynchronize());
  return w;
}

void run(benchmark::State& state, Shape shape, MatvecFormat f, int64_t m, int variant) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    state.SkipWithError("no usable GPU");
    return;
  }
  try {
    cuda::matvec_tuning::set_variant(variant);
    Weights& w = weights(f, shape.n, shape.k);
    DeviceBuffer<uint16_t> x(static_cast<size_t>(m * shape.k));
    FB_CUDA_CHECK(cudaMemset(x.get(), 0x3F, x.bytes()));
    DeviceBuffer<Q8Block> q8(static_cast<size_t>(m * shape.k / 32));
    const int64_t out_cols = shape.glu ? shape.n / 2 : shape.n;
    DeviceBuffer<uint16_t> y(static_cast<size_t>(m * out_cols));
    const MatvecEpilogue ep = shape.glu ? MatvecEpilogue::glu_gelu_tanh : MatvecEpilogue::none;
    Stream stream;
    auto launch = [&](cudaStream_t s) {
      cuda::w4a8_matvec_bf16(w.view, reinterpret_cast<const __nv_bfloat16*>(x.get()), m, q8.get(),
                             reinterpret_cast<__nv_bfloat16*>(y.get()), ep, s);
    };
    launch(stream.get());  // warm-up (first-use occupancy queries, module load)
    FB_CUDA_CHECK(cudaStreamSynchronize(stream.get()));
    TimingOptions one;
    one.warmup = 0;
    one.min_samples = 1;
    one.max_samples = 1;
    one.min_seconds = 0.0;
    for (auto _ : state) {
      const Timing t = time_cuda(launch, stream.get(), one);
      state.SetIterationTime(t.samples.at(0).ms * 1e-3);
    }
    const uint64_t bytes =
        weight_bytes(f, shape.n, shape.k) + static_cast<uint64_t>(m * shape.k * 2 + m * out_cols * 2);
    state.SetBytesProcessed(static_cast<int64_t>(bytes) * state.iterations());
    state.counters["bytes"] = static_cast<double>(bytes);
    cuda::matvec_tuning::set_variant(-1);
  } catch (const std::exception& e) {
    cuda::matvec_tuning::set_variant(-1);
    state.SkipWithError(e.what());
  }
}

void register_all() {
  struct Entry {
    Shape shape;
    std::vector<MatvecFormat> formats;
    std::vector<int64_t> tokens;
  };
  const std::vector<Entry> entries = {
      {{"ffn_gate@21504x5376", 21504, 5376, false}, {MatvecFormat::int4_u8, MatvecFormat::int4_bf16}, {1, 4}},
      {{"ffn_gate+ffn_up+gelu@43008x5376", 43008, 5376, true},
       {MatvecFormat::int4_u8, MatvecFormat::int4_bf16},
       {1, 4}},
      {{"attn_q+attn_k+attn_v@16384x5376", 16384, 5376, false}, {MatvecFormat::int4_u8}, {1, 4}},
      {{"attn_output@5376x8192", 5376, 8192, false}, {MatvecFormat::int4_u8}, {1}},
      {{"ffn_down@5376x21504", 5376, 21504, false}, {MatvecFormat::int4_u8, MatvecFormat::int6_i8}, {1}},
      // Q6_K in both planar encodings (the int6 bf16 default was set without a measurement of its own).
      {{"ffn_down@5376x21504", 5376, 21504, false}, {MatvecFormat::int6_bf16}, {1, 4}},
      {{"attn_v@4096x5376", 4096, 5376, false}, {MatvecFormat::int6_i8, MatvecFormat::int6_bf16}, {1}},
      {{"lm_head@262144x5376", 262144, 5376, false}, {MatvecFormat::int6_i8, MatvecFormat::int4_u8}, {1}},
  };
  for (const Entry& e : entries)
    for (MatvecFormat f : e.formats)
      for (int64_t m : e.tokens)
        for (int v = 0; v < cuda::matvec_tuning::variant_count(); ++v) {
          const std::string name = fmt::format("matvec_sweep/{}/{}/T{}/{}", e.shape.name, cuda::to_string(f),
                                               m, cuda::matvec_tuning::variant_name(v));
          benchmark::RegisterBenchmark(name.c_str(), run, e.shape, f, m, v)
              ->UseManualTime()
              ->Unit(benchmark::kMicrosecond)
              ->MinTime(0.1);
        }
}

}  // namespace
}  // namespace fb

int main(int argc, char** argv) {
  fb::register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
