#pragma once
// The whole gemma4 step on the GPU, assembled from the kernels in kernels/ (DESIGN §3 "Whole steps").
// Gemma4DeviceWeights is loaded once from a GGUF (mmap; host memory stays at a few tensors per
// thread): decode weights repacked to the matvec's device layouts (Q4_K -> coalesced int4 u8 codes,
// Q6_K -> planar int6 i8 codes), prefill weights as raw ggml blocks. Projections of a load-time
// fusion group (reference/fusion guards) are stored back to back, so the fused weight is one
// pointer and the parts are views into it: fused and unfused variants share one copy.
// Gemma4GpuStep owns the KV caches and activations of one (phase, T, context) and enqueues a whole
// step; positions, kv_len and tokens live in device memory, so one captured CUDA graph replays.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "reference/gguf/gguf_file.h"
#include "reference/model/model_config.h"
#include "reference/step/gemma4_step.h"

namespace fb {

struct Gemma4DeviceWeights;  // opaque: device allocations and views

// raw: also upload ggml blocks (the prefill path); packed: the repacked decode layouts.
std::shared_ptr<Gemma4DeviceWeights> load_gemma4_device_weights(const GgufFile& file,
                                                                const ModelConfig& config, bool packed,
                                                                bool raw);
// Load-time fusion lines ("fused q+k+v on 50 of 60 attention layers", ...).
std::vector<std::string> gemma4_fusion_summary(const Gemma4DeviceWeights& w);

enum class StepVariant { fused, unfused };

class Gemma4GpuStep {
 public:
  // T = 1 for decode; prefill any T >= 5. context = positions already cached; the caches hold
  // context + T positions.
  Gemma4GpuStep(std::shared_ptr<const Gemma4DeviceWeights> w, bool prefill, int64_t T, int64_t context,
                StepVariant variant);
  ~Gemma4GpuStep();
  Gemma4GpuStep(const Gemma4GpuStep&) = delete;
  Gemma4GpuStep& operator=(const Gemma4GpuStep&) = delete;

  // Exact cache content (tiny models: the CPU reference starts from the same state).
  void upload_kv(const ref::Gemma4KvState& kv);
  // Seeded random valid content, tiled from a small host pattern (full scale: GBs of cache).
  void fill_kv_random(uint64_t seed);
  void set_tokens(const std::vector<int32_t>& tokens);  // T ids; positions context .. context+T-1
  // Every launch of one step on `stream` (NVTX range per launch when not capturing).
  void enqueue(cudaStream_t stream);
  std::vector<float> logits(cudaStream_t stream) const;  // fp32 [vocab]
  // Bytes one step must read: weights used + KV read + KV written.
  uint64_t bytes() const;
  uint64_t flops() const;
  int64_t launches() const { return m_launches; }
  int64_t capacity() const;  // TQ4 cache positions (context + T rounded up); upload_kv needs this size

 private:
  struct Impl;
  std::unique_ptr<Impl> m;
  int64_t m_launches = 0;
};

}  // namespace fb
