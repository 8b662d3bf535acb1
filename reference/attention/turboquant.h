#pragma once
// TurboQuant 4-bit KV cache (notes/models.md §4.1): the Lloyd-Max codebook, the Haar-random
// rotation, compression into the packed cache and decompression, plus the fp64 attention that the
// CUDA tq4_sdpa kernel is judged against. CPU only, fp64 accumulation.
#include <cstdint>
#include <vector>

namespace fb::tq4 {

constexpr int kLevels = 16;  // 4 bits

struct Codebook {
  int head_dim = 0;
  std::vector<float> centroids;      // 16, ascending, fp32 (as upstream stores them)
  std::vector<uint16_t> boundaries;  // 15 midpoints, bf16 bits
  int iterations = 0;                // Lloyd iterations until the largest shift fell below tol
};

// Lloyd-Max for N(0, 1/d) truncated to [-3 sigma, 3 sigma]; init uniform on that interval, at most
// `max_iter` iterations, stop when the largest centroid shift < tol. The conditional means are
// closed form: E[x | a < x < b] = sigma (phi(a/s) - phi(b/s)) / (Phi(b/s) - Phi(a/s)).
Codebook lloyd_max_codebook(int head_dim, int max_iter = 200, double tol = 1e-10);

// Mean squared error of quantizing N(0, sigma^2) (untruncated: the tails map to the end
// centroids) with the codebook's fp32 centroids and exact midpoints, in closed form.
double codebook_mse(const Codebook& cb, double sigma);

struct Rotation {
  int head_dim = 0;
  std::vector<float> rotation;       // Pi, d x d row-major fp32
  std::vector<uint16_t> rotation_t;  // Pi^T, d x d row-major bf16 bits (rotation_t[j*d+i] = Pi[i][j])
};

// Haar-random orthogonal Pi = Q * sign(diag(R)) from Eigen's HouseholderQR (fp64) of a d x d
// standard-normal matrix drawn from fb::CounterRng(seed, "tq4_rotation"). Upstream draws from a
// torch CPU generator seeded 42, which this does not reproduce bit for bit: the law is the same.
Rotation haar_rotation(int head_dim, uint64_t seed);
// The same Q in fp64 (what the orthogonality test checks before the fp32 rounding).
std::vector<double> haar_rotation_fp64(int head_dim, uint64_t seed);
Rotation from_matrix(int head_dim, const std::vector<float>& rotation);

// Compress n_vec vectors of head_dim bf16 values (bits) into packed bytes (head_dim/2 per vector,
// even coordinate in the HIGH nibble) and bf16 norms, following upstream's bf16 arithmetic:
//   norm = bf16(||x||); u_j = bf16(x_j / bf16(norm + 1e-10)); y_i = bf16(sum_j u_j * bf16(Pi[i][j]))
//   idx_i = #{boundaries b : b < y_i}   (torch.bucketize, right=False)
// Sums accumulate in fp64 and are rounded once (a GPU summing in fp32 may differ by one bf16 ulp
// of y in rare cases, moving an index by one where y sits on a boundary).
void compress(const uint16_t* x, int64_t n_vec, const Codebook& cb, const Rotation& rot, uint8_t* packed,
              uint16_t* norms);
// x_hat = norm * Pi^T c[idx], fp64, with the fp32 rotation and centroids.
void decompress(const uint8_t* packed, const uint16_t* norms, int64_t n_vec, const Codebook& cb,
                const Rotation& rot, double* out);

// Exact softmax attention in fp64. q: [T][n_q_heads][d]; k, v: [n_kv_heads][kv_stride][d]
// (positions [0, kv_len) are used); out: [T][n_q_heads][d]. GQA: q head h reads kv head
// h / (n_q_heads / n_kv_heads). Causal: query t sits at position kv_len - T + t and attends keys
// p <= that position (for T = 1 that is every key below kv_len). scores = scale * q.k.
void attention_fp64(const double* q, const double* k, const double* v, int64_t T, int n_q_heads,
                    int n_kv_heads, int head_dim, int64_t kv_stride, int64_t kv_len, double scale,
                    double* out);

// The same attention over the dequantized TQ4 cache without materialising it: since
// k_hat = norm Pi^T c, q.k_hat = norm (Pi q).c and sum_n p_n v_hat_n = Pi^T sum_n p_n norm_n c_n, so it
// works in the rotated domain (O(d^2) per query instead of per cached vector). Mathematically
// equal to decompress + attention_fp64 (the CPU test checks 1e-12). Threads over (t, head).
// packed: [n_kv][kv_stride][d/2]; norms: [n_kv][kv_stride].
void tq4_attention_fp64(const double* q, const uint8_t* k_packed, const uint16_t* k_norms,
                        const uint8_t* v_packed, const uint16_t* v_norms, const Codebook& cb,
                        const Rotation& rot, int64_t T, int n_q_heads, int n_kv_heads, int64_t kv_stride,
                        int64_t kv_len, double scale, double* out);

}  // namespace fb::tq4
