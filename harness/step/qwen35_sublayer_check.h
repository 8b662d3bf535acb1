#pragma once
// The qwen3.5-moe step's fused-vs-unfused kernel check, one sublayer at a time: each sublayer (a
// layer's mixer, GDN or attention, or its MoE, each through its residual add) runs fused and
// unfused on the unfused twin's input and, for an MoE, on the twin's expert choice, and the two
// contributions (output minus input) are compared. Why not the two whole chains' outputs: at full
// scale 40 random synthetic layers amplify rounding, so one bf16 ulp on one element per token moves
// the twin's own prefill output (T 512) to cosine 0.975 on an H200 while every sublayer matches its
// twin to >= 0.99999952 (results/nvidia-h200/2026-11-22-session3/README.md). The chain's end then
// measures the model, not the kernels. Used by the full-scale prefill harness case
// (harness/runner/kernels/qwen35_step.cpp) and qwen35_full_prefill_gpu_test.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "harness/check/metrics.h"
#include "harness/runner/case_result.h"
#include "harness/step/qwen35_gpu_step.h"
#include "reference/model/model_config.h"

namespace fb {

struct Qwen35SublayerDiff {
  int64_t sublayer = 0;  // 2 * layer (mixer) or 2 * layer + 1 (MoE)
  int64_t layer = 0;
  std::string kind;             // "GDN" | "attention" | "MoE"
  Metrics residual;             // the residual stream after the sublayer, unfused (ref) vs fused
  Metrics contribution;         // the sublayer's own part: the residual carried through dominates the sum
  double tolerance_used = 0.0;  // of the contribution, see qwen35_tolerance_used
  std::string line() const;     // one log line: sublayer, kind, both cosines, NMSE, elements differing
};

struct Qwen35SublayerCheck {
  std::vector<Qwen35SublayerDiff> sublayers;  // all 2 * n_layers, in order
  size_t worst = 0;                           // the sublayer using most of its tolerance (first of equals)
  // The twin's residual after sublayer 0 and its expert choice per layer ([T][top_k + 1] each), for
  // runs that continue the twin's chain (the test's sensitivity runs).
  std::vector<float> twin_after_first;
  std::vector<std::vector<int32_t>> routing_ids;
  std::vector<std::vector<float>> routing_weights;

  const Qwen35SublayerDiff& worst_sublayer() const { return sublayers.at(worst); }
  int64_t bit_exact_count() const;
  // "sublayer 34 (layer 17 GDN)"
  static std::string name(const Qwen35SublayerDiff& d);
};

// How much of `t` the metrics use: the largest of metric / bound over the bounds t sets (for the
// cosine (1 - cos) / (1 - min_cosine)); > 1 exactly where the runner's judge() fails them. Non-finite
// outputs, or any difference under a bit-exact tolerance, give +inf.
double qwen35_tolerance_used(const Metrics& m, const Tolerance& t);

// Runs every sublayer fused and unfused, T = tokens.size() tokens at `context`, both from the state
// fill_state_random(state_seed); two steps are made (one per variant) and each runs each sublayer
// once, so each layer's state advances once as in a whole step. Costs about two whole steps plus
// 2 * n_layers residual round trips to the host. Enqueues on `stream`.
Qwen35SublayerCheck check_qwen35_sublayers(const std::shared_ptr<const Qwen35DeviceWeights>& weights,
                                           const ModelConfig& config, const std::vector<int32_t>& tokens,
                                           int64_t context, uint64_t state_seed, const Tolerance& tolerance,
                                           cudaStream_t stream);

}  // namespace fb
