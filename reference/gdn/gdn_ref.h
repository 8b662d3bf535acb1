#pragma once
// CPU truth for qwen3.5-moe's GatedDeltaNet mixer (notes/models.md §5.2), after the fused in_proj
// (whose output is [qkv (conv_dim) | z (value_dim) | b (v_heads) | a (v_heads)] per token):
//   1. depthwise causal conv, kernel K = 4, over the qkv channels, with a K-slot state per channel
//      holding the last K inputs (executorch's manual form: the oldest slot is unused for the first
//      output), fp32/fp64 accumulation, then SiLU;
//   2. q/k L2-normalised per head (x / max(|x|, 1e-6)), q scaled by dk^-1/2; v-head h uses k-head
//      h / (v_heads / k_heads); beta = sigmoid(b); g = A * softplus(a + dt_bias) with A = ssm_a, the
//      GGUF tensor that already holds -exp(A_log); softplus passes x through above 20;
//   3. per v-head, state S [dk][dv]:  S *= exp(g);  delta = beta (v - S^T k);  S += k delta^T;
//      o = S^T q;
//   4. gated RMSNorm per v-head: out = bf16(w * bf16(rmsnorm(o)) * silu(z)) (w direct, not 1+w).
// fp64 truth: inputs are the bf16 (or fp32 parameter) values the kernels read; nothing is rounded
// inside; callers round outputs to the kernels' dtype. The fp32 mirrors run the same formulas in
// float with sequential sums: they stand for a kernel's arithmetic in CPU-only checks.
#include <cstdint>
#include <vector>

namespace fb::ref {

struct GdnShape {
  int64_t k_heads = 0, v_heads = 0, dk = 0, dv = 0, conv_kernel = 4;
  int64_t key_dim() const { return k_heads * dk; }
  int64_t value_dim() const { return v_heads * dv; }
  int64_t conv_dim() const { return 2 * key_dim() + value_dim(); }
};

// x: [T][C] conv inputs (bf16 values); state: [C][K] the last K inputs, oldest first, updated in
// place to the last K of cat(state, x); w: [C][K] (GGUF ssm_conv1d, ne = {K, C}).
// Returns silu(sum_j inp[t + 1 + j] * w[j]) for t < T (inp = cat(state, x)), fp64 (not rounded).
std::vector<double> causal_conv_silu_fp64(const std::vector<float>& x, int64_t T, int64_t C,
                                          std::vector<float>& state, const std::vector<float>& w, int64_t K);

double softplus(double x);  // threshold 20, as torch.nn.functional.softplus
double sigmoid(double x);
double silu(double x);

// q, k: [T][key_dim], v: [T][value_dim] (conv outputs, bf16 values); b, a: [T][v_heads] (bf16
// values); ssm_a, dt_bias: [v_heads]. state: [v_heads][dk][dv], updated. Returns o [T][v_heads][dv].
std::vector<double> gated_delta_rule_fp64(const GdnShape& s, int64_t T, const std::vector<float>& q,
                                          const std::vector<float>& k, const std::vector<float>& v,
                                          const std::vector<float>& b, const std::vector<float>& a,
                                          const std::vector<float>& ssm_a, const std::vector<float>& dt_bias,
                                          std::vector<double>& state);
// The same in fp32 (sequential sums in index order); state fp32.
std::vector<float> gated_delta_rule_f32(const GdnShape& s, int64_t T, const std::vector<float>& q,
                                        const std::vector<float>& k, const std::vector<float>& v,
                                        const std::vector<float>& b, const std::vector<float>& a,
                                        const std::vector<float>& ssm_a, const std::vector<float>& dt_bias,
                                        std::vector<float>& state);

// o, z: [rows][D] (o fp32/bf16 values, z bf16 values); w: [D]. Returns bf16 values.
std::vector<float> gated_rms_norm_bf16(const std::vector<float>& o, const std::vector<float>& z, int64_t rows,
                                       int64_t D, const float* w, double eps);

}  // namespace fb::ref
