#include <climits>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/common/cuda_check.h"
#include "kernels/common/q8_quantize.cuh"
#include "kernels/dequant/dequant_decoders.h"
#include "kernels/ops/ops.cuh"
#include "reference/formats/blocks.h"
#include "reference/formats/half.h"

// Every fp32 operation below is an explicit _rn intrinsic and the library is built with
// --fmad=false: the fused kernels and their twins must round identically (see ops.cuh).

namespace fb::cuda {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kVec = 8;  // bf16 per 16-byte access
constexpr int kMaxCols = 8192;
constexpr int kEwThreads = 256;

// ---- bf16 <-> fp32 -------------------------------------------------------------------------------

__device__ __forceinline__ void load8(const bf16* p, float v[kVec]) {
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    v[2 * k] = __uint_as_float(w[k] << 16);
    v[2 * k + 1] = __uint_as_float(w[k] & 0xFFFF0000u);
  }
}

// RNE with the NaN rule of the CPU reference (fb::fp32_to_bf16), not the hardware's canonical NaN.
__device__ __forceinline__ float round_bf(float f) {
  return __uint_as_float(uint32_t{fp32_to_bf16(f)} << 16);
}

// v holds bf16-representable values: the upper halves are the bf16 bits.
__device__ __forceinline__ void store8(bf16* p, const float v[kVec]) {
  uint32_t w[4];
#pragma unroll
  for (int k = 0; k < 4; ++k)
    w[k] = (__float_as_uint(v[2 * k]) >> 16) | (__float_as_uint(v[2 * k + 1]) & 0xFFFF0000u);
  *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
}

// ---- shared math ---------------------------------------------------------------------------------

__device__ __forceinline__ float gelu_f32(float x) {
  const float x3 = __fmul_rn(__fmul_rn(x, x), x);
  const float inner = __fmul_rn(0.7978845608028654f, __fadd_rn(x, __fmul_rn(0.044715f, x3)));
  return __fmul_rn(__fmul_rn(0.5f, x), __fadd_rn(1.0f, tanhf(inner)));
}

// sincosf is the precise one (no fast-math): at 128K positions the first pairs' angles exceed
// 105615 rad, where it takes the Payne-Hanek reduction; that path's 32-byte stack frame is the
// local memory ptxas reports for the two rope kernels (not a register spill).
// Rotates the 8 dims d0..d0+7 of one head given the 8 values of their partners (d +- rot_dim/2).
// Inputs and outputs are bf16 values; the rotation is fp32 with one rounding at the end.
__device__ __forceinline__ void rope8(float y[kVec], const float p[kVec], int d0, int pos,
                                      const RopeParams& rp) {
  const int half = rp.rot_dim / 2;
  if (d0 >= rp.rot_dim) return;
  const bool first = d0 < half;
  const int j0 = first ? d0 : d0 - half;
  const float fpos = static_cast<float>(pos);
#pragma unroll
  for (int k = 0; k < kVec; ++k) {
    const int j = j0 + k;
    if (j >= rp.n_freq) continue;  // inv_freq 0: cos 1, sin 0, the value passes unchanged
    float s, c;
    sincosf(__fmul_rn(fpos, rp.inv_freq[j]), &s, &c);
    const float r = first ? __fsub_rn(__fmul_rn(y[k], c), __fmul_rn(p[k], s))
                          : __fadd_rn(__fmul_rn(y[k], c), __fmul_rn(p[k], s));
    y[k] = round_bf(r);
  }
}

// ---- norms ---------------------------------------------------------------------------------------

// A row of `cols` is handled by `tpr` threads, thread t owning elements 8t..8t+7 (threads past the
// row end hold zeros); a block holds 256 / tpr rows (1 when tpr >= 256). tpr is a power of two up
// to 32, else a multiple of 32: a row never shares a warp with a partial other row.
struct NormGeom {
  int tpr = 0, rpb = 0;
};
NormGeom norm_geom(int cols) {
  const int vecs = cols / kVec;
  NormGeom g;
  if (vecs <= 32) {
    g.tpr = 1;
    while (g.tpr < vecs) g.tpr *= 2;
  } else {
    g.tpr = (vecs + 31) / 32 * 32;
  }
  g.rpb = g.tpr >= 256 ? 1 : 256 / g.tpr;
  return g;
}

// The one row reduction every norm kernel uses: per-thread sequential sum, xor butterfly within
// the warp (every lane gets the same bits: fp add is commutative), then warp partials summed in
// warp order. Must be called by all threads of the block.
__device__ __forceinline__ float row_sum(float s, int tpr, float* partials) {
  if (tpr <= 32) {
    for (int o = tpr / 2; o > 0; o /= 2) s = __fadd_rn(s, __shfl_xor_sync(0xFFFFFFFFu, s, o));
    return s;
  }
#pragma unroll
  for (int o = 16; o > 0; o /= 2) s = __fadd_rn(s, __shfl_xor_sync(0xFFFFFFFFu, s, o));
  const int warp = threadIdx.x / 32;
  if (threadIdx.x % 32 == 0) partials[warp] = s;
  __syncthreads();
  const int first = (threadIdx.x / tpr) * (tpr / 32);
  float r = 0.0f;
  for (int k = 0; k < tpr / 32; ++k) r = __fadd_rn(r, partials[first + k]);
  return r;
}

enum class NormKind { plain, rope, residual, add };

struct NormArgs {
  const bf16* in = nullptr;     // the normalized tensor (h for the residual kind)
  const bf16* resid = nullptr;  // residual kind: x
  const float* w = nullptr;
  NormWeight mode = NormWeight::direct;
  float eps = 0.0f;
  bf16* out = nullptr;
  int64_t rows = 0;
  int cols = 0, tpr = 0;
  const int32_t* pos = nullptr;  // rope kind: row r is token r / heads
  int heads = 1;
  const float* scalar = nullptr;  // residual kind, optional
  // add kind: in = x (the residual stream); addend (optional) is added first, the sum written back
  // through x_out (= in); q8 (optional) receives the quantized norm output.
  const bf16* addend = nullptr;
  bf16* x_out = nullptr;
  Q8Block* q8 = nullptr;
};

// The quantize of fb::cuda::quantize_activations_q8 on a thread's 8 values, 4 threads per 32-value
// block (kernels/common/q8_quantize.cuh). blk null: take part in the shuffles, store nothing.
__device__ __forceinline__ void quantize8_q8(const float y[kVec], int t, Q8Block* blk) {
  const Q8Eighth e = quantize_q8_eighth(y);
  if (blk == nullptr) return;
  const int part = t & 3;  // elements 8 * part .. 8 * part + 7 of the block
  reinterpret_cast<uint32_t*>(blk->qs_even)[part] = e.even;
  reinterpret_cast<uint32_t*>(blk->qs_odd)[part] = e.odd;
  if (part == 0) {
    blk->d = e.d;
    blk->sum_lo = e.half_sum;
    blk->pad = 0;
  }
  if (part == 2) blk->sum_hi = e.half_sum;
}

template <NormKind kKind>
__global__ void __launch_bounds__(1024) norm_kernel(const NormArgs a, const __grid_constant__ RopeParams rp) {
  extern __shared__ float smem[];  // [32] warp partials, then (rope) rpb rows of cols floats
  const int tpr = a.tpr, rib = threadIdx.x / tpr, t = threadIdx.x % tpr;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / tpr) + rib;
  const bool live = row < a.rows && t * kVec < a.cols;
  const int64_t off = row * a.cols + t * kVec;
  float v[kVec] = {};
  if (live) load8(a.in + off, v);
  if constexpr (kKind == NormKind::add) {
    if (live && a.addend != nullptr) {
      float h[kVec];
      load8(a.addend + off, h);
#pragma unroll
      for (int k = 0; k < kVec; ++k) v[k] = round_bf(__fadd_rn(v[k], h[k]));  // fb::cuda::add's bits
      store8(a.x_out + off, v);
    }
  }
  float ss = 0.0f;
#pragma unroll
  for (int k = 0; k < kVec; ++k) ss = __fadd_rn(ss, __fmul_rn(v[k], v[k]));
  ss = row_sum(ss, tpr, smem);
  const float inv = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(__fdiv_rn(ss, static_cast<float>(a.cols)), a.eps)));
  float y[kVec];
#pragma unroll
  for (int k = 0; k < kVec; ++k) {
    y[k] = __fmul_rn(v[k], inv);
    if (live && a.mode == NormWeight::direct) y[k] = __fmul_rn(y[k], a.w[t * kVec + k]);
    if (live && a.mode == NormWeight::one_plus) y[k] = __fmul_rn(y[k], __fadd_rn(1.0f, a.w[t * kVec + k]));
    y[k] = round_bf(y[k]);  // the model's norm output is a bf16 tensor
  }
  if constexpr (kKind == NormKind::rope) {
    float* rowbuf = smem + 32 + rib * a.cols;
    if (live)
      for (int k = 0; k < kVec; ++k) rowbuf[t * kVec + k] = y[k];
    __syncthreads();
    if (!live) return;
    const int d0 = t * kVec, half = rp.rot_dim / 2;
    if (d0 < rp.rot_dim) {
      const int pd = d0 < half ? d0 + half : d0 - half;
      float p[kVec];
      for (int k = 0; k < kVec; ++k) p[k] = rowbuf[pd + k];
      rope8(y, p, d0, a.pos[row / a.heads], rp);
    }
  }
  if constexpr (kKind == NormKind::add) {
    // Every thread of the warp takes part in the shuffles (dead ones hold zeros); with cols % 32 == 0
    // a block's 4 threads are all live or all dead, and only live ones store.
    if (a.q8 != nullptr) quantize8_q8(y, t, live ? a.q8 + (row * a.cols + t * kVec) / 32 : nullptr);
  }
  if (!live) return;
  if constexpr (kKind == NormKind::residual) {
    float x[kVec];
    load8(a.resid + off, x);
    const float s = a.scalar != nullptr ? *a.scalar : 1.0f;
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      y[k] = round_bf(__fadd_rn(x[k], y[k]));
      if (a.scalar != nullptr) y[k] = round_bf(__fmul_rn(y[k], s));
    }
  }
  store8(a.out + off, y);
}

// ---- standalone rope -----------------------------------------------------------------------------

// One thread per 8-dim vector of the first rotated half (it also writes the partner vector, so the
// op is safe in place) or of the pass-through tail.
__global__ void __launch_bounds__(kEwThreads)
    rope_kernel(const bf16* x, const int32_t* pos, bf16* out, int64_t rows, int heads,
                const __grid_constant__ RopeParams rp) {
  const int vpr = rp.head_dim / kVec;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= rows * vpr) return;
  const int64_t row = idx / vpr;
  const int d0 = static_cast<int>(idx % vpr) * kVec, half = rp.rot_dim / 2;
  const int64_t base = row * rp.head_dim;
  if (d0 >= half && d0 < rp.rot_dim) return;  // written by its partner's thread
  float y[kVec];
  load8(x + base + d0, y);
  if (d0 >= rp.rot_dim) {
    store8(out + base + d0, y);
    return;
  }
  float p[kVec];
  load8(x + base + d0 + half, p);
  float y2[kVec], p2[kVec];
  for (int k = 0; k < kVec; ++k) y2[k] = p[k], p2[k] = y[k];
  const int ps = pos[row / heads];
  rope8(y, p, d0, ps, rp);
  rope8(y2, p2, d0 + half, ps, rp);
  store8(out + base + d0, y);
  store8(out + base + d0 + half, y2);
}

// ---- elementwise ---------------------------------------------------------------------------------

enum class Ew { gelu, mul, gelu_mul, add, scale, softcap };

template <Ew kOp, class Out>
__global__ void __launch_bounds__(kEwThreads)
    ew_kernel(const bf16* a, int64_t lda, const bf16* b, int64_t ldb, Out* out, int64_t ldo, int64_t rows,
              int64_t vpr, const float* scalar, float cap) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= rows * vpr) return;
  const int64_t r = idx / vpr, c = (idx % vpr) * kVec;
  float x[kVec], y[kVec], o[kVec];
  load8(a + r * lda + c, x);
  if constexpr (kOp == Ew::mul || kOp == Ew::gelu_mul || kOp == Ew::add) load8(b + r * ldb + c, y);
  const float s = kOp == Ew::scale ? *scalar : 0.0f;
#pragma unroll
  for (int k = 0; k < kVec; ++k) {
    if constexpr (kOp == Ew::gelu) o[k] = round_bf(gelu_f32(x[k]));
    if constexpr (kOp == Ew::mul) o[k] = round_bf(__fmul_rn(x[k], y[k]));
    if constexpr (kOp == Ew::gelu_mul) o[k] = round_bf(__fmul_rn(round_bf(gelu_f32(x[k])), y[k]));
    if constexpr (kOp == Ew::add) o[k] = round_bf(__fadd_rn(x[k], y[k]));
    if constexpr (kOp == Ew::scale) o[k] = round_bf(__fmul_rn(x[k], s));
    if constexpr (kOp == Ew::softcap) o[k] = __fmul_rn(tanhf(__fdiv_rn(x[k], cap)), cap);
  }
  if constexpr (kOp == Ew::softcap) {
    float4* dst = reinterpret_cast<float4*>(out + r * ldo + c);
    dst[0] = make_float4(o[0], o[1], o[2], o[3]);
    dst[1] = make_float4(o[4], o[5], o[6], o[7]);
  } else {
    store8(out + r * ldo + c, o);
  }
}

// ---- embedding -----------------------------------------------------------------------------------

template <class Decoder>
__global__ void __launch_bounds__(kEwThreads)
    embed_kernel(const uint8_t* table, size_t row_bytes, int64_t vocab, int64_t cols, const int32_t* tokens,
                 float scale, bf16* out) {
  const int64_t e = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 4;
  if (e >= cols) return;
  const int64_t t = blockIdx.y;
  const int32_t tok = tokens[t];
  float v[4];
  if (tok < 0 || tok >= vocab) {
    for (float& f : v) f = __uint_as_float(0x7FC00000u);
  } else {
    const auto* row =
        reinterpret_cast<const typename Decoder::Block*>(table + static_cast<size_t>(tok) * row_bytes);
    if constexpr (Decoder::kBlockElems == 1) {
      for (int k = 0; k < 4; ++k) v[k] = Decoder::one(row[e + k]);
    } else {
      Decoder::run(row[e / Decoder::kBlockElems], static_cast<int>(e % Decoder::kBlockElems), v);
    }
  }
  uint32_t b[4];
  for (int k = 0; k < 4; ++k)
    b[k] = fp32_to_bf16(__fmul_rn(round_bf(v[k]), scale));  // bf16 table, fp32 scale
  *reinterpret_cast<uint2*>(out + t * cols + e) = make_uint2(b[0] | (b[1] << 16), b[2] | (b[3] << 16));
}

// ---- validation and launchers --------------------------------------------------------------------

void require(bool ok, const char* fn, const std::string& what) {
  if (!ok) throw std::invalid_argument(std::string("fb::cuda::") + fn + ": " + what);
}
bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

void check_rows(const char* fn, int64_t rows, int64_t cols) {
  require(rows >= 0, fn, "negative row count");
  require(cols > 0 && cols % kVec == 0 && cols <= kMaxCols, fn,
          "cols must be a positive multiple of 8 and at most 8192, got " + std::to_string(cols));
}

void check_rope(const char* fn, const RopeParams& rp) {
  require(rp.head_dim > 0 && rp.head_dim % kVec == 0 && rp.head_dim <= kMaxCols, fn, "head_dim");
  require(rp.rot_dim >= 0 && rp.rot_dim % (2 * kVec) == 0 && rp.rot_dim <= rp.head_dim &&
              rp.rot_dim / 2 <= RopeParams::kMaxHalf,
          fn, "rot_dim must be a multiple of 16, <= head_dim and <= 512");
  require(rp.n_freq >= 0 && 2 * rp.n_freq <= rp.rot_dim, fn, "n_freq must be <= rot_dim / 2");
}

template <NormKind kKind>
void launch_norm(const char* fn, const NormArgs& args, const RopeParams& rp, cudaStream_t stream) {
  check_rows(fn, args.rows, args.cols);
  require(args.in != nullptr && args.out != nullptr && aligned16(args.in) && aligned16(args.out), fn,
          "null or not 16-byte aligned tensor");
  require(
      args.mode == NormWeight::none || (args.w != nullptr && reinterpret_cast<uintptr_t>(args.w) % 4 == 0),
      fn, "weight required for this NormWeight mode");
  if (args.rows == 0) return;
  NormArgs a = args;
  const NormGeom g = norm_geom(a.cols);
  a.tpr = g.tpr;
  const int64_t blocks = (a.rows + g.rpb - 1) / g.rpb;
  require(blocks <= INT_MAX, fn, "too many rows");
  size_t smem = 32 * sizeof(float);
  if (kKind == NormKind::rope) smem += static_cast<size_t>(g.rpb) * a.cols * sizeof(float);
  norm_kernel<kKind><<<static_cast<unsigned>(blocks), g.rpb * g.tpr, smem, stream>>>(a, rp);
  FB_CUDA_CHECK_LAUNCH();
}

unsigned ew_blocks(const char* fn, int64_t threads) {
  const int64_t b = (threads + kEwThreads - 1) / kEwThreads;
  require(b <= INT_MAX, fn, "tensor too large for one launch");
  return static_cast<unsigned>(b);
}

template <Ew kOp, class Out>
void launch_ew(const char* fn, const bf16* a, int64_t lda, const bf16* b, int64_t ldb, Out* out, int64_t ldo,
               int64_t rows, int64_t cols, const float* scalar, float cap, cudaStream_t stream) {
  require(rows >= 0 && cols >= 0 && cols % kVec == 0, fn, "cols must be a multiple of 8");
  require(lda % kVec == 0 && ldb % kVec == 0 && ldo % kVec == 0 && lda >= cols && ldo >= cols, fn,
          "row strides must be multiples of 8 and >= cols");
  const bool needs_b = kOp == Ew::mul || kOp == Ew::gelu_mul || kOp == Ew::add;
  require(
      a != nullptr && out != nullptr && aligned16(a) && aligned16(out) && (!needs_b || (b && aligned16(b))),
      fn, "null or not 16-byte aligned tensor");
  require(kOp != Ew::scale || scalar != nullptr, fn, "null scalar");
  if (rows == 0 || cols == 0) return;
  const int64_t vpr = cols / kVec;
  ew_kernel<kOp, Out><<<ew_blocks(fn, rows * vpr), kEwThreads, 0, stream>>>(a, lda, b, ldb, out, ldo, rows,
                                                                            vpr, scalar, cap);
  FB_CUDA_CHECK_LAUNCH();
}

}  // namespace

RopeParams make_rope_params(int head_dim, int rot_dim, int n_freq, int freq_den, double theta) {
  RopeParams rp;
  rp.head_dim = head_dim;
  rp.rot_dim = rot_dim;
  rp.n_freq = n_freq;
  check_rope("make_rope_params", rp);
  require(freq_den > 0, "make_rope_params", "freq_den must be positive");
  for (int i = 0; i < n_freq; ++i)
    rp.inv_freq[i] =
        static_cast<float>(std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(freq_den)));
  return rp;
}

void rms_norm(const bf16* x, const float* w, NormWeight mode, float eps, bf16* out, int64_t rows, int cols,
              cudaStream_t stream) {
  NormArgs a;
  a.in = x, a.w = w, a.mode = mode, a.eps = eps, a.out = out, a.rows = rows, a.cols = cols;
  launch_norm<NormKind::plain>("rms_norm", a, RopeParams{}, stream);
}

void head_norm_rope(const bf16* x, const float* w, NormWeight mode, float eps, const int32_t* d_pos,
                    const RopeParams& rope, bf16* out, int64_t tokens, int heads, cudaStream_t stream) {
  check_rope("head_norm_rope", rope);
  require(heads > 0 && tokens >= 0 && d_pos != nullptr, "head_norm_rope", "heads, tokens or positions");
  require(x != out, "head_norm_rope", "in place is not supported (a row is re-read after other rows wrote)");
  NormArgs a;
  a.in = x, a.w = w, a.mode = mode, a.eps = eps, a.out = out, a.rows = tokens * heads, a.cols = rope.head_dim;
  a.pos = d_pos, a.heads = heads;
  launch_norm<NormKind::rope>("head_norm_rope", a, rope, stream);
}

void rope(const bf16* x, const int32_t* d_pos, const RopeParams& rp, bf16* out, int64_t tokens, int heads,
          cudaStream_t stream) {
  check_rope("rope", rp);
  require(heads > 0 && tokens >= 0 && d_pos != nullptr, "rope", "heads, tokens or positions");
  require(x != nullptr && out != nullptr && aligned16(x) && aligned16(out), "rope",
          "null or misaligned tensor");
  const int64_t rows = tokens * heads;
  if (rows == 0) return;
  rope_kernel<<<ew_blocks("rope", rows * (rp.head_dim / kVec)), kEwThreads, 0, stream>>>(x, d_pos, out, rows,
                                                                                         heads, rp);
  FB_CUDA_CHECK_LAUNCH();
}

void gelu_tanh(const bf16* x, int64_t ldx, bf16* out, int64_t ldo, int64_t rows, int64_t cols,
               cudaStream_t stream) {
  launch_ew<Ew::gelu>("gelu_tanh", x, ldx, nullptr, 0, out, ldo, rows, cols, nullptr, 0.0f, stream);
}

void mul(const bf16* a, int64_t lda, const bf16* b, int64_t ldb, bf16* out, int64_t ldo, int64_t rows,
         int64_t cols, cudaStream_t stream) {
  launch_ew<Ew::mul>("mul", a, lda, b, ldb, out, ldo, rows, cols, nullptr, 0.0f, stream);
}

void gelu_tanh_mul(const bf16* gate_up, bf16* out, int64_t tokens, int64_t inter, cudaStream_t stream) {
  require(gate_up != nullptr, "gelu_tanh_mul", "null gate_up");
  launch_ew<Ew::gelu_mul>("gelu_tanh_mul", gate_up, 2 * inter, gate_up + inter, 2 * inter, out, inter, tokens,
                          inter, nullptr, 0.0f, stream);
}

void add(const bf16* a, const bf16* b, bf16* out, int64_t n, cudaStream_t stream) {
  launch_ew<Ew::add>("add", a, n, b, n, out, n, 1, n, nullptr, 0.0f, stream);
}

void scale(const bf16* a, const float* d_scalar, bf16* out, int64_t n, cudaStream_t stream) {
  launch_ew<Ew::scale>("scale", a, n, nullptr, 0, out, n, 1, n, d_scalar, 0.0f, stream);
}

void softcap(const bf16* x, float* out, int64_t n, float cap, cudaStream_t stream) {
  require(cap > 0.0f, "softcap", "cap must be positive");
  launch_ew<Ew::softcap>("softcap", x, n, nullptr, 0, out, n, 1, n, nullptr, cap, stream);
}

void residual_norm_scale(const bf16* x, const bf16* h, const float* w, float eps, const float* d_scalar,
                         bf16* out, int64_t rows, int cols, cudaStream_t stream) {
  require(x != nullptr && aligned16(x), "residual_norm_scale", "null or misaligned residual");
  NormArgs a;
  a.in = h, a.resid = x, a.w = w, a.mode = NormWeight::direct, a.eps = eps, a.out = out, a.rows = rows,
  a.cols = cols;
  a.scalar = d_scalar;
  launch_norm<NormKind::residual>("residual_norm_scale", a, RopeParams{}, stream);
}

void add_rms_norm_q8(bf16* x, const bf16* h, const float* w, NormWeight mode, float eps, bf16* out,
                     Q8Block* q8, int64_t rows, int cols, cudaStream_t stream) {
  const char* fn = "add_rms_norm_q8";
  require(x != nullptr && aligned16(x) && (h == nullptr || aligned16(h)), fn, "null or misaligned x / h");
  require(q8 == nullptr || (cols % 32 == 0 && reinterpret_cast<uintptr_t>(q8) % 16 == 0), fn,
          "q8 needs cols % 32 == 0 and a 16-byte aligned buffer");
  require(out != x && out != h, fn, "out must not alias x or h");
  NormArgs a;
  a.in = x, a.x_out = x, a.addend = h, a.w = w, a.mode = mode, a.eps = eps, a.out = out, a.q8 = q8;
  a.rows = rows, a.cols = cols;
  launch_norm<NormKind::add>(fn, a, RopeParams{}, stream);
}

bool embed_supported(GgmlType type) { return type == GgmlType::Q6_K || type == GgmlType::BF16; }

void embed(GgmlType type, const void* table, int64_t vocab, int64_t cols, const int32_t* d_tokens,
           int64_t tokens, float scale, bf16* out, cudaStream_t stream) {
  require(embed_supported(type), "embed", "table type must be Q6_K or BF16");
  require(vocab > 0 && tokens >= 0 && tokens <= 65535, "embed", "vocab > 0 and 0 <= tokens <= 65535");
  require(cols > 0 && (cols % kQK_K == 0 || (type == GgmlType::BF16 && cols % kVec == 0)), "embed",
          "cols must be a multiple of the block size (256 for Q6_K, 8 for BF16)");
  require(table != nullptr && d_tokens != nullptr && out != nullptr &&
              reinterpret_cast<uintptr_t>(out) % 8 == 0 && reinterpret_cast<uintptr_t>(table) % 2 == 0,
          "embed", "null or misaligned pointer");
  if (tokens == 0) return;
  const dim3 grid(ew_blocks("embed", cols / 4), static_cast<unsigned>(tokens));
  const auto* t = static_cast<const uint8_t*>(table);
  // Row bytes from the block structs, not ggml_type_info(): kernels depend on the POD headers only.
  if (type == GgmlType::Q6_K) {
    const size_t row_bytes = static_cast<size_t>(cols / kQK_K) * sizeof(BlockQ6K);
    embed_kernel<detail::DecodeQ6K>
        <<<grid, kEwThreads, 0, stream>>>(t, row_bytes, vocab, cols, d_tokens, scale, out);
  } else {
    const size_t row_bytes = static_cast<size_t>(cols) * sizeof(uint16_t);
    embed_kernel<detail::DecodeBF16>
        <<<grid, kEwThreads, 0, stream>>>(t, row_bytes, vocab, cols, d_tokens, scale, out);
  }
  FB_CUDA_CHECK_LAUNCH();
}

}  // namespace fb::cuda
