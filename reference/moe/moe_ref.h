#pragma once
// CPU truth for qwen3.5-moe's sparse MoE block (notes/models.md §5.2, §5.3):
//   router logits = W_r x (W_r F32 [E][H]); top-k of E (ties: lower index first); softmax over the k;
//   per (token, slot) pair: h = W13_e x = [gate | up]  (GEMM1), a = silu(gate) * up,
//   y_t = sum_s w_s * W2_e a                               (GEMM2, routing weight applied, summed);
//   the shared expert is one more slot per token: expert id E (its weights appended after the E
//   routed experts, a load-time row-concat), weight sigmoid(w_sh . x), so routed + gate * shared is
//   the same sum (notes §5.2 "out = routed + sigmoid(shared_expert_gate(x)) * shared").
// Expert formats: symmetric INT4 (executorch fused_moe; below) and ggml Q4_K blocks as in GGUF
// ([E][N] rows of K/256 blocks). Truth is fp64 on the dequantized weights and the bf16 activations.
#include <cstdint>
#include <functional>
#include <vector>

#include "reference/formats/ggml_type.h"

namespace fb {

// Symmetric INT4 experts: u = q + 8 in [0, 15], two per byte (even k in the low nibble), a bf16 scale
// per `group` consecutive k of a row; w = (u - 8) * scale. No zero point.
struct SymInt4Experts {
  int64_t experts = 0, n = 0, k = 0, group = 32;
  std::vector<uint8_t> qdata;   // [E][N][K/2]
  std::vector<uint16_t> scale;  // bf16 [E][N][K/group]

  int q(int64_t e, int64_t row, int64_t col) const;  // signed, [-8, 7]
  float scale_of(int64_t e, int64_t row, int64_t group_index) const;
  double weight(int64_t e, int64_t row, int64_t col) const;
  uint64_t device_bytes() const { return qdata.size() + scale.size() * 2; }
};

// torchao choose_qparams_affine SYMMETRIC with qmin -8, qmax 7: s = amax / 7.5 (fp32, then stored
// bf16), q = clamp(round_half_even(w / s_bf16), -8, 7); an all-zero group gets s = 0, q = 0.
// w: [E][N][K] fp32. K % group == 0, group even.
SymInt4Experts quantize_sym_int4(const float* w, int64_t experts, int64_t n, int64_t k, int64_t group);
// Rows [row0, row0 + rows) of every expert (e.g. the gate or up half of a fused [gate; up] tensor).
SymInt4Experts expert_rows(const SymInt4Experts& src, int64_t row0, int64_t rows);
// Rows [row0, row0 + rows) of every expert of a ggml tensor [E][N] rows of `row_bytes` bytes.
std::vector<uint8_t> expert_rows(const std::vector<uint8_t>& blocks, int64_t experts, int64_t n,
                                 uint64_t row_bytes, int64_t row0, int64_t rows);

struct Routing {
  int64_t tokens = 0, top_k = 0, slots = 0;  // slots = top_k (+ 1 with the shared expert)
  std::vector<int32_t> ids;                  // [T][slots]
  std::vector<float> weights;                // [T][slots] fp32
  // [T], when top_k < E: (logit_k - logit_k+1) / (rms(x) * |w_k - w_k+1|), k and k+1 the last chosen
  // and the first unchosen expert: the relative rms change of the token's router input that closes
  // the top-k gap (ref::Qwen35Trace::routing_margin). Near 0: a near-tie any rounding may flip.
  std::vector<double> margins;
};
// x: [T][H] bf16 values; w_router: [E][H]; w_shared: [H] or null. Logits, softmax and the shared
// sigmoid in fp64, weights rounded to fp32 (the kernels' dtype).
Routing route_fp64(const std::vector<float>& x, const std::vector<float>& w_router, const float* w_shared,
                   int64_t T, int64_t H, int64_t E, int64_t top_k);
// [T][columns] with each slot's weight at its expert id, 0 elsewhere: a wrong selection shows as a
// large error at two places, a weight error as a small one.
std::vector<double> dense_gates(const Routing& r, int64_t columns);

// Row `row` of expert `e`'s weight as double (k values).
using ExpertRows = std::function<void(int64_t e, int64_t row, double* dst)>;
ExpertRows sym_int4_rows(const SymInt4Experts& w);
ExpertRows ggml_expert_rows(GgmlType type, const uint8_t* blocks, int64_t n, int64_t k);

// GEMM1: h[p][0:n] = W_e x_t for pair p = t * slots + s, e = ids[p]. x: [T][k] values.
std::vector<double> moe_gemm1_fp64(const ExpertRows& w13, int64_t n, int64_t k, const std::vector<double>& x,
                                   const Routing& r);
// GEMM2: y[t][0:hidden] = sum_s weights[p] * W2_e (silu(h_gate) * h_up), h: [P][2 * inter].
std::vector<double> moe_gemm2_fp64(const ExpertRows& w2, int64_t hidden, int64_t inter,
                                   const std::vector<double>& h, const Routing& r);

}  // namespace fb
