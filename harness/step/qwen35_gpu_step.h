#pragma once
// The whole qwen3.5-moe decode step on the GPU, assembled from kernels/ (DESIGN §3 "Whole steps";
// CPU truth reference/step/qwen35_step.h). Weights are loaded once from a GGUF (harness/step/
// repacked_weights.h): the dense projections repacked for the decode matvec (Q4_K -> int4 u8 codes,
// Q6_K -> int6 i8 codes) and/or as raw ggml blocks for prefill's dequantize + GEMM, only the layouts
// asked for; lm_head repacked only (both phases run it as a matvec); the experts as raw Q4_K blocks
// (the MoE kernels read them in place). Projections of a load-time fusion group sit back to back so
// the fused weight is one pointer and the parts are views into it. Experts: [gate; up] per expert
// row-concatenated for the fused GEMM1, gate and up
// separately for the unfused twin, down; the shared expert appended as expert id E of each.
// Requires the Q4_K recipe (make-model --recipe q4_k): the MoE kernels take Q4_K experts only and
// the matvec has no Q5_K path (Q4_K_M gives attn_qkv Q5_K and some ffn_down Q6_K); anything else
// throws std::invalid_argument naming the tensor.
//
// Qwen35GpuStep owns the KV caches (bf16), GDN conv/recurrent states and activations of one step of
// T tokens at one context, and enqueues it; tokens and positions live in device memory, so one
// captured CUDA graph replays (each replay advances the GDN states, as decode does).
// Decode (T = 1): W4A8 matvecs on the repacked weights. Prefill (T > 1; simple, not tuned): each linear
// dequantizes its ggml blocks to bf16 and runs a cuBLAS GEMM (kernels/prefill); the GDN conv and
// delta rule run sequentially over T inside their kernels; SDPA is causal over the new tokens; the
// MoE runs the decode kernels over T x slots pairs (fused GEMM2 in token chunks that fit its shared
// memory); lm_head on the last token only.
//
// Fused vs unfused: q+k+v and GDN in_proj one matvec vs one per part; qwen_attn_prep vs split ->
// norm -> rope -> append; SDPA with the fused sigmoid output gate vs SDPA -> gate kernel; manual
// conv vs naive conv chain (not bit-exact: fp32 sums in another order); fused delta rule vs its
// prenormed pieces; MoE GEMM1 [gate; up] vs two launches; GEMM2 with SiLU/weight/sum vs the chain.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "reference/gguf/gguf_file.h"
#include "reference/model/model_config.h"
#include "reference/step/qwen35_step.h"

namespace fb {

struct Qwen35DeviceWeights;  // opaque

// packed: the decode layouts of the dense projections; raw: their ggml blocks (prefill). A step
// throws std::invalid_argument when its phase's layout is missing.
std::shared_ptr<Qwen35DeviceWeights> load_qwen35_device_weights(const GgufFile& file,
                                                                const ModelConfig& config, bool packed,
                                                                bool raw);
std::vector<std::string> qwen35_fusion_summary(const Qwen35DeviceWeights& w);

enum class Qwen35Variant { fused, unfused };

class Qwen35GpuStep {
 public:
  // T >= 1 tokens at positions context .. context+T-1; capacity = context + T.
  Qwen35GpuStep(std::shared_ptr<const Qwen35DeviceWeights> w, int64_t T, int64_t context,
                Qwen35Variant variant);
  ~Qwen35GpuStep();
  Qwen35GpuStep(const Qwen35GpuStep&) = delete;
  Qwen35GpuStep& operator=(const Qwen35GpuStep&) = delete;

  int64_t capacity() const;
  // Exact state (tiny models: the CPU reference starts from the same state; capacity must match).
  void upload_state(const ref::Qwen35State& s);
  // Seeded random valid content, tiled from a small pattern (full scale: GBs of cache).
  void fill_state_random(uint64_t seed);
  void set_tokens(const std::vector<int32_t>& tokens);  // T ids
  void enqueue(cudaStream_t stream);
  std::vector<float> logits(cudaStream_t stream) const;  // [vocab] of the last token, bf16 values
  // Diagnosis: enqueue only the first n layers (no final norm / lm_head; -1 = all) and read the
  // residual stream x [T][hidden] after them, to compare layer by layer with ref::Qwen35Trace.
  void set_layer_limit(int64_t n);
  std::vector<float> residual(cudaStream_t stream) const;
  // Diagnosis, sublayer by sublayer: sublayer 2i is layer i's mixer (attention or GDN through its
  // residual add), 2i + 1 its MoE (through its residual add). Enqueue sublayers [begin, end) only
  // (end -1 = all): begin > 0 skips the embedding and starts from the residual set_residual()
  // uploaded, so one sublayer can run on the CPU reference's input (ref::Qwen35Trace); an end short
  // of the last sublayer skips the final norm and lm_head. set_layer_limit(n) = range [0, 2n).
  void set_sublayer_range(int64_t begin, int64_t end);
  void set_residual(const std::vector<float>& x);  // [T][hidden], bf16 values
  // Routing, layer by layer, in the router's layout [T][top_k + 1] (the shared expert as id
  // n_experts): record copies each layer's router output aside (read back with recorded_routing);
  // force_routing replaces the router's output of each layer given a non-empty entry with it, so the
  // MoE kernels can be checked on the reference's expert choice (a near-tie the GPU's rounding flips
  // is not a kernel error). Both cost one device copy per layer and are off by default.
  void set_record_routing(bool on);
  std::vector<std::vector<int32_t>> recorded_routing_ids(cudaStream_t stream) const;    // [layer]
  std::vector<std::vector<float>> recorded_routing_weights(cudaStream_t stream) const;  // [layer]
  void force_routing(const std::vector<std::vector<int32_t>>& ids,
                     const std::vector<std::vector<float>>& weights);
  uint64_t bytes() const;  // weights used + KV read/written + states
  uint64_t flops() const;
  int64_t launches() const { return m_launches; }

 private:
  struct Impl;
  std::unique_ptr<Impl> m;
  int64_t m_launches = 0;
};

}  // namespace fb
