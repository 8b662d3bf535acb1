#pragma once
// Writes a synthetic model GGUF: real tensor names, shapes and metadata, random weights quantized
// with ggml's reference quantizers per the chosen recipe. Streams tensor data in row chunks, so
// memory stays bounded (a full-scale model is ~18 GB on disk); deterministic for a seed whatever
// the thread count.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "reference/model/model_config.h"
#include "reference/model/model_tensors.h"

namespace fb {

// How quantized tensors are filled. `quantized`: every row is quantize(generate_tensor_rows(row)).
// `block_sampled`: the first kSampledPoolRows rows of each block-quantized tensor are made that way
// and every later row is a seeded random pick, block column by block column, of those rows' blocks:
// valid blocks with the same value distribution, written at disk speed instead of the quantizers'
// (a full-scale qwen3.5-moe takes ~7 min quantized on 16 cores). For timing and for fused-vs-unfused
// checks on identical weights; the file records it as fusebench.weights = "block-sampled".
enum class WeightFill { quantized, block_sampled };
inline constexpr int64_t kSampledPoolRows = 256;
const char* to_string(WeightFill f);

struct MakeModelOptions {
  uint64_t seed = 0;
  QuantRecipe recipe = QuantRecipe::q4_k_m;
  WeightFill fill = WeightFill::quantized;
  unsigned threads = 0;                // 0: std::thread::hardware_concurrency()
  uint64_t chunk_bytes = 64ull << 20;  // output bytes per parallel batch
  // Called after each tensor with (index, count, spec); for progress on stderr.
  std::function<void(size_t, size_t, const TensorSpec&)> on_tensor;
};

struct MakeModelResult {
  uint64_t n_tensors = 0;
  uint64_t n_params = 0;
  uint64_t n_bytes = 0;  // file size
};

MakeModelResult make_model(const ModelConfig& config, const std::filesystem::path& out,
                           const MakeModelOptions& options);

// Float values of rows [row0, row0 + n_rows) of a tensor, as make_model draws them.
void generate_tensor_rows(const TensorSpec& spec, uint64_t seed, int64_t row0, int64_t n_rows, float* out);

}  // namespace fb
