#pragma once
// CPU truth for the small ops of the dense path (notes/models.md §1.2, §5.2): RMSNorm (w, 1+w and
// weightless), per-head q/k norm, RoPE (full and proportional partial), GELU-tanh, final softcap,
// residual + post-norm + layer scalar, embedding gather with the sqrt(hidden) scale, and the fp64
// GEMM that checks the prefill baseline.
//
// Math in fp64. Each function rounds where the model's PyTorch graph materialises a tensor (bf16
// between ops, fp32 for the logits) and nowhere else, so a kernel that keeps the model's rounding
// points differs from this only by its fp32 arithmetic. Values are passed as float holding bf16
// (or fp32) numbers; outputs are rounded to the kernel's output dtype.
#include <cmath>
#include <cstdint>
#include <vector>

namespace fb::ref {

// Round to the nearest bf16 (RNE) and back: the value a bf16 tensor would hold.
float round_bf16(double v);

// x * rsqrt(mean(x^2) + eps) * weight, per row of `cols`. direct: gemma (weight as is);
// one_plus: qwen's GemmaRMSNorm (1 + w); none: gemma's v_norm (no weight, w may be null).
enum class NormWeight { direct, one_plus, none };
std::vector<float> rms_norm_bf16(const std::vector<float>& x, int64_t rows, int64_t cols, const float* w,
                                 NormWeight mode, double eps);

// HF rotate_half RoPE over a head of `head_dim`: dim i (< rot_dim/2) pairs with i + rot_dim/2, the
// pair's angle is pos * inv_freq[i], inv_freq[i] = theta^(-2i/freq_den) for i < n_freq and 0 beyond
// (cos 1, sin 0: the pair passes through). Dims >= rot_dim pass through.
//   gemma sliding: {256, 256, 128, 256, 1e4}; gemma full (proportional): {512, 512, 64, 512, 1e6}
//   (dims 0..63 pair with 256..319); qwen: {256, 64, 32, 64, 1e7}.
struct RopeSpec {
  int64_t head_dim = 0, rot_dim = 0, n_freq = 0, freq_den = 0;
  double theta = 1e4;
};
// inv_freq as the model holds it: fp32. Computed in fp64 and rounded once (torch computes it in
// fp32, which can differ by an ulp); the kernels receive exactly these values.
std::vector<float> rope_inv_freq(const RopeSpec& spec);
// The angle is the fp32 product float(pos) * inv_freq (torch's outer() in fp32: at pos 1e5 that
// rounding is ~4e-3 rad, far above anything else here, so truth uses the model's angle); cos/sin
// and the rotation are fp64. x: [tokens, heads, head_dim] bf16 values; returns bf16 values.
std::vector<float> rope_bf16(const std::vector<float>& x, int64_t tokens, int64_t heads,
                             const std::vector<int32_t>& pos, const RopeSpec& spec);

double gelu_tanh(double x);
std::vector<float> gelu_tanh_bf16(const std::vector<float>& x);
// gate_up: [tokens, 2*inter] = [gate | up] per token; returns bf16(bf16(gelu(gate)) * up), [tokens, inter].
std::vector<float> gelu_tanh_mul_bf16(const std::vector<float>& gate_up, int64_t tokens, int64_t inter);

// tanh(x / cap) * cap on the fp32 logits; returns fp32 values.
std::vector<float> softcap_f32(const std::vector<float>& x, double cap);

// One residual branch of the gemma "norm sandwich": out = bf16(x + bf16(rmsnorm(h) * w)), then, when
// `scalar` is given (after the MLP branch), bf16(out * scalar). x, h: [rows, cols].
std::vector<float> residual_norm_scale_bf16(const std::vector<float>& x, const std::vector<float>& h,
                                            int64_t rows, int64_t cols, const float* w, double eps,
                                            const float* scalar);

// Embedding: rows of the dequantized table (fp32 values), bf16-rounded as the bf16 table holds them,
// times the fp32 scale in fp32 (model: bf16 tensor * fp32 0-dim buffer), rounded to bf16.
// table_row(token) returns a pointer to that row's `cols` fp32 values.
template <class RowFn>
std::vector<float> embed_bf16(RowFn table_row, const std::vector<int32_t>& tokens, int64_t cols,
                              float scale) {
  std::vector<float> out(tokens.size() * static_cast<size_t>(cols));
  for (size_t t = 0; t < tokens.size(); ++t) {
    const float* row = table_row(tokens[t]);
    for (int64_t c = 0; c < cols; ++c) {
      const float prod = round_bf16(row[c]) * scale;  // fp32 product, as the model computes it
      out[t * cols + c] = round_bf16(prod);
    }
  }
  return out;
}
inline float embed_scale(int64_t hidden) {
  return static_cast<float>(std::sqrt(static_cast<double>(hidden)));
}

// Y[m, n] = sum_k X[m, k] * W[n, k] in fp64 for the listed rows m of X and rows n of W (a sampled
// subset of the output; full GEMMs at prefill scale take minutes on the CPU), rounded to bf16.
// x_rows[i] points at row m_i of X (K values), w_rows[j] at row n_j of W. Result [i][j] row-major.
std::vector<float> gemm_sampled_bf16(const std::vector<const float*>& x_rows,
                                     const std::vector<const float*>& w_rows, int64_t k);

}  // namespace fb::ref
