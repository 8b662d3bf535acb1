#include "reference/model/make_model.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <filesystem>
#include <mutex>
#include <thread>

#include "reference/formats/quantize.h"
#include "reference/gguf/gguf_writer.h"
#include "reference/util/splitmix.h"

namespace fb {

void generate_tensor_rows(const TensorSpec& spec, uint64_t seed, int64_t row0, int64_t n_rows, float* out) {
  const CounterRng rng(seed, fnv1a64(spec.name.data(), spec.name.size()));
  const int64_t cols = spec.ne[0];
  const uint64_t base = static_cast<uint64_t>(row0) * static_cast<uint64_t>(cols);
  const uint64_t n = static_cast<uint64_t>(n_rows) * static_cast<uint64_t>(cols);
  for (uint64_t k = 0; k < n; ++k) {
    const uint64_t idx = base + k;
    float v = 0.0f;
    switch (spec.init) {
      case TensorInit::linear:
        v = 0.02f * rng.normal(idx);
        break;
      case TensorInit::norm_direct:
        v = 1.0f + 0.1f * rng.normal(idx);
        break;
      case TensorInit::qk_norm:
        v = static_cast<float>(qk_norm_scale(cols) * (1.0 + 0.1 * rng.normal(idx)));
        break;
      case TensorInit::norm_offset:
        v = 0.1f * rng.normal(idx);
        break;
      case TensorInit::layer_scalar:
        v = 0.5f + 0.5f * rng.uniform(idx);
        break;
      case TensorInit::conv:
        v = 0.25f * rng.normal(idx);
        break;
      case TensorInit::ssm_a:
        v = -(1.0f + 15.0f * rng.uniform(idx));
        break;
      case TensorInit::dt_bias: {
        const double dt = std::exp(std::log(1e-3) + rng.uniform(idx) * (std::log(1e-1) - std::log(1e-3)));
        v = static_cast<float>(std::log(std::expm1(dt)));
        break;
      }
      case TensorInit::rope_freqs:
        v = static_cast<int64_t>(idx) < spec.rotated_pairs ? 1.0f : 1e30f;
        break;
    }
    out[k] = v;
  }
}

namespace {

// Runs fn(i) for i in [0, n) on up to `threads` threads. The first exception a worker throws is
// rethrown here after every worker has joined (an exception escaping a std::thread terminates).
template <class Fn>
void parallel_for(int64_t n, unsigned threads, Fn&& fn) {
  const unsigned t = static_cast<unsigned>(std::min<int64_t>(threads, n));
  if (t <= 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::vector<std::thread> pool;
  std::exception_ptr error;
  std::mutex error_mutex;
  std::atomic<bool> failed{false};
  pool.reserve(t);
  for (unsigned w = 0; w < t; ++w) {
    pool.emplace_back([&, w] {
      try {
        for (int64_t i = w; i < n && !failed.load(std::memory_order_relaxed); i += t) fn(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        failed = true;
      }
    });
  }
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
}

// Row r >= pool of a block-sampled tensor: block b is block b of pool row pick(r, b).
void sample_row(const uint8_t* pool, int64_t pool_rows, const CounterRng& rng, int64_t row, int64_t blocks,
                size_t block_bytes, uint8_t* dst) {
  const size_t row_bytes = static_cast<size_t>(blocks) * block_bytes;
  for (int64_t b = 0; b < blocks; ++b) {
    const uint64_t pick =
        rng.bits(static_cast<uint64_t>(row) * static_cast<uint64_t>(blocks) + static_cast<uint64_t>(b)) %
        static_cast<uint64_t>(pool_rows);
    std::memcpy(dst + b * block_bytes, pool + pick * row_bytes + b * block_bytes, block_bytes);
  }
}

}  // namespace

const char* to_string(WeightFill f) { return f == WeightFill::quantized ? "quantized" : "block-sampled"; }

MakeModelResult make_model(const ModelConfig& config, const std::filesystem::path& out,
                           const MakeModelOptions& options) {
  const std::vector<TensorSpec> specs = model_tensors(config, options.recipe);
  const unsigned threads =
      options.threads ? options.threads : std::max(1u, std::thread::hardware_concurrency());

  GgufWriter writer(out);
  for (GgufKv& kv : model_metadata(config, options.recipe, options.seed)) {
    writer.add_kv(std::move(kv.key), std::move(kv.value));
  }
  writer.add_kv("fusebench.weights", GgufValue{std::string(to_string(options.fill))});
  for (const TensorSpec& s : specs) writer.add_tensor(s.name, s.type, s.ne);
  writer.begin_data();

  MakeModelResult result;
  std::vector<uint8_t> batch;
  for (size_t t = 0; t < specs.size(); ++t) {
    const TensorSpec& s = specs[t];
    const int64_t cols = s.ne[0];
    const int64_t rows = s.n_rows();
    const uint64_t row_bytes = ggml_row_bytes(s.type, cols);
    const int64_t rows_per_batch =
        std::max<int64_t>(1, std::min<int64_t>(rows, static_cast<int64_t>(options.chunk_bytes / row_bytes)));
    const GgmlTypeInfo& info = ggml_type_info(s.type);
    const bool sampled =
        options.fill == WeightFill::block_sampled && info.block_elems > 1 && rows > kSampledPoolRows;
    const int64_t pool_rows = sampled ? kSampledPoolRows : 0;
    std::vector<uint8_t> pool;  // the first pool_rows rows, quantized (also written as rows 0..)
    const CounterRng pick_rng(options.seed, fnv1a64(s.name.data(), s.name.size()) ^ 0x5A3D1E0Bull);
    // A sampled tensor's first batch is exactly the pool, so no row samples a pool row still being made.
    for (int64_t r0 = 0, nr = 0; r0 < rows; r0 += nr) {
      nr = sampled && r0 == 0 ? pool_rows : std::min(rows_per_batch, rows - r0);
      batch.resize(static_cast<size_t>(nr) * row_bytes);
      // Rows per work item: enough to amortise thread start-up, few enough to spread over threads.
      const int64_t rows_per_item = std::max<int64_t>(1, nr / (4 * static_cast<int64_t>(threads)));
      const int64_t items = (nr + rows_per_item - 1) / rows_per_item;
      parallel_for(items, threads, [&](int64_t item) {
        const int64_t a = item * rows_per_item;
        const int64_t b = std::min(nr, a + rows_per_item);
        std::vector<float> values(static_cast<size_t>(cols));
        for (int64_t r = a; r < b; ++r) {
          uint8_t* dst = batch.data() + static_cast<size_t>(r) * row_bytes;
          if (r0 + r < pool_rows || !sampled) {
            generate_tensor_rows(s, options.seed, r0 + r, 1, values.data());
            quantize(s.type, values.data(), dst, cols);
          } else {
            sample_row(pool.data(), pool_rows, pick_rng, r0 + r, cols / info.block_elems, info.block_bytes,
                       dst);
          }
        }
      });
      if (sampled && r0 == 0)
        pool.assign(batch.begin(), batch.begin() + static_cast<ptrdiff_t>(pool_rows * row_bytes));
      writer.append(batch);
    }
    result.n_params += static_cast<uint64_t>(s.n_elements());
    if (options.on_tensor) options.on_tensor(t, specs.size(), s);
  }
  writer.finish();
  result.n_tensors = specs.size();
  result.n_bytes = std::filesystem::file_size(out);
  return result;
}

}  // namespace fb
