#include <cooperative_groups.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>

#include "kernels/attention/sliding_window.cuh"
#include "kernels/common/cuda_check.h"
#include "kernels/common/launch.cuh"

namespace fb::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr float kLog2e = 1.4426950408889634f;

// ---- shared helpers ------------------------------------------------------------------------------

// Keys below pos live in the ring; the step's own tokens are read from new_k/new_v (see the header).
__device__ __forceinline__ const __nv_bfloat16* key_row(const __nv_bfloat16* ring, const __nv_bfloat16* fresh,
                                                        int kvh, int p, int pos, int n_kv, int ring_slots,
                                                        int D) {
  return p < pos ? ring + (static_cast<int64_t>(kvh) * ring_slots + p % ring_slots) * D
                 : fresh + (static_cast<int64_t>(p - pos) * n_kv + kvh) * D;
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// L1 is bypassed (.cg): every byte is read once per CTA.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(smem)), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void bf16x8_to_float(const uint4& u, float f[8]) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 v = __bfloat1622float2(h[i]);
    f[2 * i] = v.x;
    f[2 * i + 1] = v.y;
  }
}

// ---- append ----------------------------------------------------------------------------------------

// One thread per 16 bytes of one token's K and V row.
__global__ void __launch_bounds__(256)
    append_kernel(const uint4* __restrict__ new_k, const uint4* __restrict__ new_v, int T,
                  const int32_t* __restrict__ d_pos, uint4* __restrict__ ring_k, uint4* __restrict__ ring_v,
                  int n_kv, int chunks_per_row, int ring_slots) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t per_token = static_cast<int64_t>(n_kv) * chunks_per_row;
  if (i >= per_token * T) return;
  const int t = static_cast<int>(i / per_token);
  // With T > ring slots a slot is written twice; only the later position may land (no write race).
  if (T - t > ring_slots) return;
  const int h = static_cast<int>((i % per_token) / chunks_per_row);
  const int c = static_cast<int>(i % chunks_per_row);
  const int slot = (*d_pos + t) % ring_slots;
  const int64_t dst = (static_cast<int64_t>(h) * ring_slots + slot) * chunks_per_row + c;
  ring_k[dst] = new_k[i];
  ring_v[dst] = new_v[i];
}

// ---- decode ----------------------------------------------------------------------------------------

constexpr int kDecThreads = 256;
constexpr int kDecWarps = kDecThreads / 32;
constexpr int kDecMaxRows = 8;  // T x group query rows per kv head
constexpr int kDecMaxT = 4;
constexpr int kDecMaxSplits = 16;  // CTAs per cluster (16 needs the non-portable cluster size)
constexpr int kDecBatch = 4;       // keys per lane group in flight at once (K and V rows)

struct DecodeParams {
  const __nv_bfloat16* q;
  const __nv_bfloat16* ring_k;
  const __nv_bfloat16* ring_v;
  const __nv_bfloat16* new_k;
  const __nv_bfloat16* new_v;
  const int32_t* d_pos;
  __nv_bfloat16* out;
  int T, n_q, n_kv, group, window;
  float scale_log2;  // scale x log2(e): softmax in exp2
  int cap;           // staged kernel only: keys one CTA can hold
};

// Lane groups of D/8 lanes each own one key at a time (16 bytes = 8 dims per lane): one group per
// warp at head_dim 256, eight at 32. Each group keeps its own online-softmax state.
template <int D>
__host__ __device__ constexpr int decode_states() {
  return kDecWarps * (32 / (D / 8));
}

// Per-state partials [states][rows][D] + (max, sum) [states][rows], the CTA's merged partial
// [rows][D] + (max, sum) [rows] that the cluster reads, and the merge weights [rows][splits].
template <int D, int kRows>
constexpr size_t decode_smem_bytes() {
  return sizeof(float) * (static_cast<size_t>(decode_states<D>()) * kRows * (D + 2) + kRows * (D + 2) +
                          kRows * kDecMaxSplits);
}

// Grid (splits, n_kv), one cluster of `splits` CTAs per kv head; each CTA takes a contiguous slice
// of the window. No staging: every lane group streams its keys straight into registers, kDecBatch
// K rows and V rows in flight per lane (32 KB per CTA), scores by xor shuffles inside the group and
// a batched online softmax (one rescale per batch). The CTA's states merge in shared memory, then
// the cluster merges the CTAs' partials through distributed shared memory: CTA r finalises output
// elements r, r + splits x threads, ... No workspace, no second launch, nothing to reset between
// replays. kRows (2 or 8) sizes the per-row registers: the gemma4 decode (T = 1, group 2) fits two
// CTAs per SM, so a 16-CTA cluster per kv head is resident in one wave.
template <int D, int kRows>
__global__ void __launch_bounds__(kDecThreads, kRows <= 2 ? 2 : 1) decode_kernel(const DecodeParams p) {
  constexpr int kLanesPerKey = D / 8;
  constexpr int kGroups = 32 / kLanesPerKey;
  constexpr int kStates = decode_states<D>();
  static_assert(D % 8 == 0 && kLanesPerKey <= 32 && 32 % kLanesPerKey == 0, "head_dim");

  cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank());
  const int splits = static_cast<int>(cluster.num_blocks());
  const int kvh = blockIdx.y;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int grp = lane / kLanesPerKey, sub = lane % kLanesPerKey;
  const int state = warp * kGroups + grp;
  const int ring_slots = 2 * p.window;
  const int rows = p.T * p.group;

  extern __shared__ __align__(16) unsigned char smem[];
  float* Os = reinterpret_cast<float*>(smem);                 // [kStates][kRows][D]
  float* Ms = Os + static_cast<size_t>(kStates) * kRows * D;  // [kStates][kRows]
  float* Ls = Ms + kStates * kRows;                           // [kStates][kRows]
  float* Opart = Ls + kStates * kRows;                        // [kRows][D]
  float* Mpart = Opart + kRows * D;                           // [kRows]
  float* Lpart = Mpart + kRows;                               // [kRows]
  float* coef = Lpart + kRows;                                // [kRows][kDecMaxSplits]

  const int pos = *p.d_pos;
  const int first = max(0, pos - p.window + 1);
  const int last = pos + p.T - 1;
  const int n = last - first + 1;
  const int chunk = (n + splits - 1) / splits;
  const int k0 = first + rank * chunk;
  const int nk = max(0, min(k0 + chunk, last + 1) - k0);

  // The first batch of K/V rows does not depend on q: start pulling it before the q loads.
#pragma unroll
  for (int b = 0; b < kDecBatch; ++b) {
    const int i = warp * kGroups + grp + b * kStates;
    if (i < nk) {
      const int off = sub * 8;
      asm volatile("prefetch.global.L2 [%0];\n" ::"l"(
          key_row(p.ring_k, p.new_k, kvh, k0 + i, pos, p.n_kv, ring_slots, D) + off));
      asm volatile("prefetch.global.L2 [%0];\n" ::"l"(
          key_row(p.ring_v, p.new_v, kvh, k0 + i, pos, p.n_kv, ring_slots, D) + off));
    }
  }

  // q rows in registers, pre-scaled into the log2 domain: row r = t x group + g is query token t of
  // q head kvh x group + g. Rows past `rows` are zero and fully masked below.
  float qf[kRows][8];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    if (r < rows) {
      const int t = r / p.group, h = kvh * p.group + r % p.group;
      const uint4 u =
          *reinterpret_cast<const uint4*>(p.q + (static_cast<int64_t>(t) * p.n_q + h) * D + sub * 8);
      bf16x8_to_float(u, qf[r]);
#pragma unroll
      for (int j = 0; j < 8; ++j) qf[r][j] *= p.scale_log2;
    } else {
#pragma unroll
      for (int j = 0; j < 8; ++j) qf[r][j] = 0.0f;
    }
  }

  float m[kRows], l[kRows], acc[kRows][8];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[r][j] = 0.0f;
  }

  // The loop bound is the warp's first state (uniform across the warp): every lane stays in the loop
  // for the full-mask shuffles below, lanes whose key is past nk just see it masked.
  for (int wbase = warp * kGroups; wbase < nk; wbase += kStates * kDecBatch) {
    const int base = wbase + grp;
    uint4 kr[kDecBatch], vr[kDecBatch];
#pragma unroll
    for (int b = 0; b < kDecBatch; ++b) {
      const int i = base + b * kStates;
      if (i < nk) {
        kr[b] = __ldcs(reinterpret_cast<const uint4*>(
                           key_row(p.ring_k, p.new_k, kvh, k0 + i, pos, p.n_kv, ring_slots, D)) +
                       sub);
        vr[b] = __ldcs(reinterpret_cast<const uint4*>(
                           key_row(p.ring_v, p.new_v, kvh, k0 + i, pos, p.n_kv, ring_slots, D)) +
                       sub);
      } else {
        kr[b] = vr[b] = make_uint4(0, 0, 0, 0);
      }
    }
    float s[kDecBatch][kRows];
#pragma unroll
    for (int b = 0; b < kDecBatch; ++b) {
      float kf[8];
      bf16x8_to_float(kr[b], kf);
      const int kpos = k0 + base + b * kStates;
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        float dot = 0.0f;
#pragma unroll
        for (int j = 0; j < 8; ++j) dot = fmaf(qf[r][j], kf[j], dot);
#pragma unroll
        for (int off = kLanesPerKey / 2; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off);
        const int qpos = pos + r / p.group;
        const bool visible = r < rows && base + b * kStates < nk && kpos <= qpos && qpos - kpos < p.window;
        s[b][r] = visible ? dot : -INFINITY;
      }
    }
#pragma unroll
    for (int b = 0; b < kDecBatch; ++b) {
      float vf[8];
      bf16x8_to_float(vr[b], vf);
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        // Per key (alpha = 1 while the max holds); a row with no visible key yet (m = -inf) is
        // skipped, so it keeps l = 0 and acc = 0 instead of NaN.
        const float m_new = fmaxf(m[r], s[b][r]);
        if (m_new == -INFINITY) continue;
        const float alpha = exp2f(m[r] - m_new), pw = exp2f(s[b][r] - m_new);
        m[r] = m_new;
        l[r] = fmaf(l[r], alpha, pw);
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[r][j] = fmaf(acc[r][j], alpha, pw * vf[j]);
      }
    }
  }

#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    float* o = Os + (static_cast<size_t>(state) * kRows + r) * D + sub * 8;
    *reinterpret_cast<float4*>(o) = make_float4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
    *reinterpret_cast<float4*>(o + 4) = make_float4(acc[r][4], acc[r][5], acc[r][6], acc[r][7]);
    if (sub == 0) {
      Ms[state * kRows + r] = m[r];
      Ls[state * kRows + r] = l[r];
    }
  }
  __syncthreads();
  // Merge the CTA's states: element (r, d) over kStates partials, in a fixed order.
  for (int e = tid; e < kRows * D; e += kDecThreads) {
    const int r = e / D, d = e % D;
    float mx = -INFINITY;
#pragma unroll 8
    for (int st = 0; st < kStates; ++st) mx = fmaxf(mx, Ms[st * kRows + r]);
    float o = 0.0f, sum = 0.0f;
    if (mx != -INFINITY) {
#pragma unroll 8
      for (int st = 0; st < kStates; ++st) {
        const float ms = Ms[st * kRows + r];
        const float w = ms == -INFINITY ? 0.0f : exp2f(ms - mx);
        o = fmaf(w, Os[(static_cast<size_t>(st) * kRows + r) * D + d], o);
        sum = fmaf(w, Ls[st * kRows + r], sum);
      }
    }
    Opart[r * D + d] = o;
    if (d == 0) {
      Mpart[r] = mx;
      Lpart[r] = sum;
    }
  }

  // Release this CTA's partials to the cluster, acquire the others'. Then each CTA turns the
  // cluster's (max, sum) pairs into per-slice weights exp2(m_j - m) / l, kept in its own coef (which
  // no other CTA reads), so an output element costs `splits` independent remote loads.
  cluster.sync();
  if (tid < rows * splits) {
    const int r = tid / splits, jj = tid % splits;
    float mj[kDecMaxSplits], lj[kDecMaxSplits];
#pragma unroll
    for (int j = 0; j < kDecMaxSplits; ++j) {
      mj[j] = j < splits ? *cluster.map_shared_rank(Mpart + r, j) : -INFINITY;
      lj[j] = j < splits ? *cluster.map_shared_rank(Lpart + r, j) : 0.0f;
    }
    float mx = -INFINITY;
#pragma unroll
    for (int j = 0; j < kDecMaxSplits; ++j) mx = fmaxf(mx, mj[j]);
    float sum = 0.0f, mine = 0.0f;
#pragma unroll
    for (int j = 0; j < kDecMaxSplits; ++j) {
      // A slice with no visible key for this row has m_j = -inf and weight 0.
      const float w = mj[j] == -INFINITY ? 0.0f : exp2f(mj[j] - mx);
      sum = fmaf(lj[j], w, sum);
      if (j == jj) mine = w;
    }
    coef[r * kDecMaxSplits + jj] = sum > 0.0f ? mine / sum : 0.0f;
  }
  __syncthreads();
  for (int e = rank * kDecThreads + tid; e < rows * D; e += splits * kDecThreads) {
    const int r = e / D, d = e % D;
    float o = 0.0f;
#pragma unroll
    for (int j = 0; j < kDecMaxSplits; ++j) {
      if (j < splits)
        o = fmaf(coef[r * kDecMaxSplits + j], *cluster.map_shared_rank(Opart + r * D + d, j), o);
    }
    const int t = r / p.group, h = kvh * p.group + r % p.group;
    p.out[(static_cast<int64_t>(t) * p.n_q + h) * D + d] = __float2bfloat16_rn(o);
  }
  // No CTA may exit while another still reads its shared memory.
  cluster.sync();
}

// ---- decode, staged (T x group > 2 query rows: the T = 4 verify step) ------------------------------
//
// The streaming kernel above keeps 8 rows x (acc[8] + m + l) in registers at kRows = 8 (~250
// registers, one CTA per SM) and measured slower at T = 4 (53.1 / 68.1 us at 512 / full window vs
// 38.8 / 56.9 us) than this earlier kernel, which stages the CTA's slice of K and V in shared memory
// and keeps only q in registers. It runs every multi-row step (FB_SWA_DECODE_MULTIROW=stream selects
// the streaming kernel instead, for A/B timing); T = 1 with group <= 2 keeps the streaming kernel.

// S holds the scores, later the merge weights [rows][kDecMaxSplits]: sized for the larger.
__host__ __device__ constexpr int staged_s_floats(int cap) {
  return kDecMaxRows * (cap > kDecMaxSplits ? cap : kDecMaxSplits);
}

template <int D>
size_t staged_smem_bytes(int cap) {
  return 2ull * cap * D * sizeof(__nv_bfloat16) +
         sizeof(float) * (staged_s_floats(cap) + kDecMaxRows * D + 2 * kDecMaxRows);
}

// Grid (splits, n_kv), one cluster of `splits` CTAs per kv head. Each CTA pulls its slice of the
// window (<= cap keys of K and V) into shared memory with every copy in flight at once, computes a
// partial softmax state (max, sum, unnormalised O) for all T x group query rows, and the cluster then
// merges the partials: CTA r finalises output elements r, r + splits x threads, ... reading the
// others' shared memory directly. No workspace, no second launch, nothing to reset between replays.
template <int D>
__global__ void __launch_bounds__(kDecThreads) staged_decode_kernel(const DecodeParams p) {
  constexpr int kLanesPerKey = D / 8;  // each lane holds 8 dims (16 bytes)
  constexpr int kKeysPerWarp = 32 / kLanesPerKey;
  static_assert(D % 8 == 0 && kLanesPerKey <= 32 && 32 % kLanesPerKey == 0, "head_dim");
  static_assert(kDecThreads % (D / 2) == 0, "the PV loop gives each thread one dim pair");

  cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank());
  const int splits = static_cast<int>(cluster.num_blocks());
  const int kvh = blockIdx.y;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int ring_slots = 2 * p.window;
  const int rows = p.T * p.group;

  extern __shared__ __align__(16) unsigned char smem[];
  __nv_bfloat16* Ks = reinterpret_cast<__nv_bfloat16*>(smem);
  __nv_bfloat16* Vs = Ks + static_cast<size_t>(p.cap) * D;
  float* S = reinterpret_cast<float*>(Vs + static_cast<size_t>(p.cap) * D);  // [rows][cap]
  float* Opart = S + staged_s_floats(p.cap);                                 // [rows][D]
  float* Mpart = Opart + kDecMaxRows * D;
  float* Lpart = Mpart + kDecMaxRows;

  const int pos = *p.d_pos;
  const int first = max(0, pos - p.window + 1);
  const int last = pos + p.T - 1;
  const int n = last - first + 1;
  const int chunk = (n + splits - 1) / splits;
  const int k0 = first + rank * chunk;
  const int nk = max(0, min(k0 + chunk, last + 1) - k0);

  // Every copy of this CTA in flight at once: K in one group, V in the next, so scores start as
  // soon as K lands while V is still arriving.
  for (int i = tid; i < nk * kLanesPerKey; i += kDecThreads) {
    const int r = i / kLanesPerKey, c = i % kLanesPerKey;
    cp_async16(Ks + r * D + c * 8,
               key_row(p.ring_k, p.new_k, kvh, k0 + r, pos, p.n_kv, ring_slots, D) + c * 8);
  }
  cp_async_commit();
  for (int i = tid; i < nk * kLanesPerKey; i += kDecThreads) {
    const int r = i / kLanesPerKey, c = i % kLanesPerKey;
    cp_async16(Vs + r * D + c * 8,
               key_row(p.ring_v, p.new_v, kvh, k0 + r, pos, p.n_kv, ring_slots, D) + c * 8);
  }
  cp_async_commit();

  // q rows in registers: row r = t x group + g is query token t of q head kvh x group + g.
  const int sub = lane % kLanesPerKey;
  float qf[kDecMaxRows][8];
#pragma unroll
  for (int r = 0; r < kDecMaxRows; ++r) {
    if (r < rows) {
      const int t = r / p.group, h = kvh * p.group + r % p.group;
      const uint4 u =
          *reinterpret_cast<const uint4*>(p.q + (static_cast<int64_t>(t) * p.n_q + h) * D + sub * 8);
      bf16x8_to_float(u, qf[r]);
    } else {
#pragma unroll
      for (int j = 0; j < 8; ++j) qf[r][j] = 0.0f;
    }
  }

  cp_async_wait<1>();
  __syncthreads();

  // Scores, log2 domain: a group of kLanesPerKey lanes per key, reduced by xor shuffles inside it.
  for (int base = warp * kKeysPerWarp; base < nk; base += kDecWarps * kKeysPerWarp) {
    const int r = base + lane / kLanesPerKey;
    float kf[8];
    if (r < nk) {
      bf16x8_to_float(*reinterpret_cast<const uint4*>(Ks + r * D + sub * 8), kf);
    } else {
#pragma unroll
      for (int j = 0; j < 8; ++j) kf[j] = 0.0f;
    }
#pragma unroll
    for (int row = 0; row < kDecMaxRows; ++row) {
      if (row < rows) {  // uniform across the warp
        float dot = 0.0f;
#pragma unroll
        for (int j = 0; j < 8; ++j) dot = fmaf(qf[row][j], kf[j], dot);
#pragma unroll
        for (int off = kLanesPerKey / 2; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off);
        if (r < nk && sub == 0) {
          const int qpos = pos + row / p.group, kpos = k0 + r;
          const bool visible = kpos <= qpos && qpos - kpos < p.window;
          S[row * p.cap + r] = visible ? dot * p.scale_log2 : -INFINITY;
        }
      }
    }
  }
  __syncthreads();

  // Partial softmax: warp `row` owns one query row (kDecWarps >= kDecMaxRows).
  static_assert(kDecWarps >= kDecMaxRows, "one warp per query row");
  if (warp < rows) {
    float* s = S + warp * p.cap;
    float m = -INFINITY;
    for (int i = lane; i < nk; i += 32) m = fmaxf(m, s[i]);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
    float l = 0.0f;
    for (int i = lane; i < nk; i += 32) {
      // A row whose keys in this slice are all masked has m = -inf: its weights are 0, not NaN.
      const float w = m == -INFINITY ? 0.0f : exp2f(s[i] - m);
      s[i] = w;
      l += w;
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) l += __shfl_xor_sync(0xffffffffu, l, off);
    if (lane == 0) {
      Mpart[warp] = m;
      Lpart[warp] = l;
    }
  }
  cp_async_wait<0>();
  __syncthreads();

  // O partial: thread owns dim pair `dp` and every n_phase-th key; phases summed in shared memory.
  constexpr int kPairs = D / 2;
  constexpr int kPhases = kDecThreads / kPairs;
  const int dp = tid % kPairs, phase = tid / kPairs;
  float acc[kDecMaxRows][2];
#pragma unroll
  for (int r = 0; r < kDecMaxRows; ++r) acc[r][0] = acc[r][1] = 0.0f;
  for (int k = phase; k < nk; k += kPhases) {
    const float2 v = __bfloat1622float2(reinterpret_cast<const __nv_bfloat162*>(Vs + k * D)[dp]);
#pragma unroll
    for (int r = 0; r < kDecMaxRows; ++r) {
      if (r < rows) {
        const float w = S[r * p.cap + k];
        acc[r][0] = fmaf(w, v.x, acc[r][0]);
        acc[r][1] = fmaf(w, v.y, acc[r][1]);
      }
    }
  }
#pragma unroll 1
  for (int ph = 0; ph < kPhases; ++ph) {
    if (phase == ph) {
#pragma unroll
      for (int r = 0; r < kDecMaxRows; ++r) {
        if (r < rows) {
          float2* o = reinterpret_cast<float2*>(Opart + r * D) + dp;
          *o = ph == 0 ? make_float2(acc[r][0], acc[r][1]) : make_float2(o->x + acc[r][0], o->y + acc[r][1]);
        }
      }
    }
    __syncthreads();
  }

  // Release this CTA's partials to the cluster, acquire the others'. Then each CTA turns the
  // cluster's (max, sum) pairs into per-slice weights exp2(m_j - m) / l, kept in its own S (which no
  // other CTA reads), so an output element costs `splits` independent remote loads.
  cluster.sync();
  float* coef = S;  // [rows][kDecMaxSplits]
  if (tid < rows * splits) {
    const int r = tid / splits, jj = tid % splits;
    float mj[kDecMaxSplits], lj[kDecMaxSplits];
#pragma unroll
    for (int j = 0; j < kDecMaxSplits; ++j) {
      mj[j] = j < splits ? *cluster.map_shared_rank(Mpart + r, j) : -INFINITY;
      lj[j] = j < splits ? *cluster.map_shared_rank(Lpart + r, j) : 0.0f;
    }
    float m = -INFINITY;
#pragma unroll
    for (int j = 0; j < kDecMaxSplits; ++j) m = fmaxf(m, mj[j]);
    float l = 0.0f, mine = 0.0f;
#pragma unroll
    for (int j = 0; j < kDecMaxSplits; ++j) {
      // A slice with no visible key for this row has m_j = -inf and weight 0.
      const float w = mj[j] == -INFINITY ? 0.0f : exp2f(mj[j] - m);
      l = fmaf(lj[j], w, l);
      if (j == jj) mine = w;
    }
    coef[r * kDecMaxSplits + jj] = l > 0.0f ? mine / l : 0.0f;
  }
  __syncthreads();
  for (int e = rank * kDecThreads + tid; e < rows * D; e += splits * kDecThreads) {
    const int r = e / D, d = e % D;
    float o = 0.0f;
#pragma unroll
    for (int j = 0; j < kDecMaxSplits; ++j) {
      if (j < splits)
        o = fmaf(coef[r * kDecMaxSplits + j], *cluster.map_shared_rank(Opart + r * D + d, j), o);
    }
    const int t = r / p.group, h = kvh * p.group + r % p.group;
    p.out[(static_cast<int64_t>(t) * p.n_q + h) * D + d] = __float2bfloat16_rn(o);
  }
  // No CTA may exit while another still reads its shared memory.
  cluster.sync();
}

// ---- prefill ---------------------------------------------------------------------------------------

constexpr int kPreThreads = 128;  // 4 warps x 16 query rows
constexpr int kPreRows = 64;
constexpr int kPreKeys = 64;  // keys per tile

struct PrefillParams {
  const __nv_bfloat16* q;
  const __nv_bfloat16* ring_k;
  const __nv_bfloat16* ring_v;
  const __nv_bfloat16* new_k;
  const __nv_bfloat16* new_v;
  const int32_t* d_pos;
  __nv_bfloat16* out;
  int T, n_q, n_kv, group, window;
  float scale_log2;
};

// Rows padded by 16 bytes: the fragment loads of a warp (8 rows x 4 words) then hit 32 distinct banks.
template <int D>
constexpr int kStride = D + 8;

template <int D>
constexpr size_t prefill_smem_bytes() {
  return static_cast<size_t>(kPreRows + 2 * kPreKeys) * kStride<D> * sizeof(__nv_bfloat16);
}

__device__ __forceinline__ void mma_bf16_16816(float c[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                               uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Four 8x8 b16 matrices; lane L addresses row L % 8 of matrix L / 8. Plain: lane gets row lane/4,
// columns 2(lane%4)..+1 of each matrix; .trans: rows 2(lane%4)..+1 of column lane/4 - exactly the
// mma B fragments of K (stored key-major) and of V (stored key-major, read transposed).
__device__ __forceinline__ void ldsm_x4(uint32_t r[4], const __nv_bfloat16* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(row)));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t r[4], const __nv_bfloat16* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(row)));
}

__device__ __forceinline__ uint32_t ld_smem_u32(const __nv_bfloat16* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}
__device__ __forceinline__ uint32_t pack_bf16(__nv_bfloat16 lo, __nv_bfloat16 hi) {
  return static_cast<uint32_t>(__bfloat16_as_ushort(lo)) |
         (static_cast<uint32_t>(__bfloat16_as_ushort(hi)) << 16);
}
__device__ __forceinline__ uint32_t pack_float_bf16(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);  // .x (lo) in the low half
  return *reinterpret_cast<const uint32_t*>(&h);
}

// Loads kPreKeys key rows starting at position kb; rows outside [kb, klast] are zero-filled, since a
// masked score times a garbage (possibly NaN) value would still poison the P.V product.
template <int D>
__device__ __forceinline__ void load_kv_tile(__nv_bfloat16* dst, const __nv_bfloat16* ring,
                                             const __nv_bfloat16* fresh, int kvh, int kb, int klast, int pos,
                                             int n_kv, int ring_slots) {
  constexpr int kChunks = D / 8;
  for (int i = threadIdx.x; i < kPreKeys * kChunks; i += kPreThreads) {
    const int r = i / kChunks, c = i % kChunks;
    __nv_bfloat16* s = dst + r * kStride<D> + c * 8;
    if (kb + r <= klast) {
      cp_async16(s, key_row(ring, fresh, kvh, kb + r, pos, n_kv, ring_slots, D) + c * 8);
    } else {
      *reinterpret_cast<uint4*>(s) = make_uint4(0, 0, 0, 0);
    }
  }
}

// Grid (ceil(T / tokens_per_cta), n_kv). A CTA holds 64 query rows: all `group` q heads of one kv
// head for 64 / group consecutive tokens, so each K/V tile read serves the whole GQA group. Warp w
// owns rows 16w .. 16w+15 (one q head). FlashAttention-2 style: S = Q K^T and O += P V on
// mma.sync m16n8k16 (bf16 in, fp32 accumulate), online softmax in fp32 registers, P rounded to bf16
// for the second product. K(j+1) loads while P V(j) runs, V(j+1) while S(j+1) runs.
// kLdsm: B fragments by ldmatrix (default); false: by 16/32-bit shared loads, the plainly-correct
// form kept as a bit-exact twin (the same fragments reach the same mma in the same order).
template <int D, bool kLdsm>
__global__ void __launch_bounds__(kPreThreads) prefill_kernel(const PrefillParams p) {
  constexpr int S_ = kStride<D>;
  constexpr int kDimTiles = D / 8;  // n-tiles of O
  constexpr int kKSteps = D / 16;   // k-steps of Q K^T
  constexpr int kKeyTiles = kPreKeys / 8;
  static_assert(D % 16 == 0 && kDimTiles % 2 == 0, "head_dim");

  extern __shared__ __align__(16) unsigned char smem[];
  __nv_bfloat16* Qs = reinterpret_cast<__nv_bfloat16*>(smem);
  __nv_bfloat16* Ks = Qs + kPreRows * S_;
  __nv_bfloat16* Vs = Ks + kPreKeys * S_;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, tq = lane & 3;  // mma fragment coordinates
  const int kvh = blockIdx.y;
  const int tokens = kPreRows / p.group;
  const int t0 = blockIdx.x * tokens;
  const int ring_slots = 2 * p.window;
  const int pos = *p.d_pos;
  const int t_end = min(t0 + tokens, p.T);
  const int kfirst = max(0, pos + t0 - p.window + 1);
  const int klast = pos + t_end - 1;
  const int n_tiles = (klast - kfirst + kPreKeys) / kPreKeys;

  // Q rows: row i is token t0 + i % tokens of q head kvh x group + i / tokens. Tokens past T: zeros.
  for (int i = tid; i < kPreRows * (D / 8); i += kPreThreads) {
    const int r = i / (D / 8), c = i % (D / 8);
    const int t = t0 + r % tokens, h = kvh * p.group + r / tokens;
    __nv_bfloat16* s = Qs + r * S_ + c * 8;
    if (t < p.T) {
      cp_async16(s, p.q + (static_cast<int64_t>(t) * p.n_q + h) * D + c * 8);
    } else {
      *reinterpret_cast<uint4*>(s) = make_uint4(0, 0, 0, 0);
    }
  }
  load_kv_tile<D>(Ks, p.ring_k, p.new_k, kvh, kfirst, klast, pos, p.n_kv, ring_slots);
  cp_async_commit();
  load_kv_tile<D>(Vs, p.ring_v, p.new_v, kvh, kfirst, klast, pos, p.n_kv, ring_slots);
  cp_async_commit();

  // This thread's two rows (g and g + 8 of the warp's 16) as query positions.
  const int row0 = warp * 16 + g;
  const int qpos0 = pos + t0 + row0 % tokens;
  const int qpos1 = pos + t0 + (row0 + 8) % tokens;

  float o[kDimTiles][4];
#pragma unroll
  for (int i = 0; i < kDimTiles; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;

  const __nv_bfloat16* qa = Qs + (warp * 16 + g) * S_ + 2 * tq;
#pragma unroll 1
  for (int j = 0; j < n_tiles; ++j) {
    const int kb = kfirst + j * kPreKeys;
    cp_async_wait<1>();  // K(j) (and Q) landed; V(j) may still be in flight
    __syncthreads();

    float s[kKeyTiles][4];
#pragma unroll
    for (int n = 0; n < kKeyTiles; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < kKSteps; ++kk) {
      const uint32_t a0 = ld_smem_u32(qa + kk * 16);
      const uint32_t a1 = ld_smem_u32(qa + 8 * S_ + kk * 16);
      const uint32_t a2 = ld_smem_u32(qa + kk * 16 + 8);
      const uint32_t a3 = ld_smem_u32(qa + 8 * S_ + kk * 16 + 8);
      if constexpr (kLdsm) {
        // Matrices: (keys n, dims lo), (keys n, dims hi), (keys n+1, lo), (keys n+1, hi).
        const int mat = lane >> 3, rr = lane & 7;
#pragma unroll
        for (int n = 0; n < kKeyTiles; n += 2) {
          uint32_t b[4];
          ldsm_x4(b, Ks + ((n + (mat >> 1)) * 8 + rr) * S_ + kk * 16 + (mat & 1) * 8);
          mma_bf16_16816(s[n], a0, a1, a2, a3, b[0], b[1]);
          mma_bf16_16816(s[n + 1], a0, a1, a2, a3, b[2], b[3]);
        }
      } else {
#pragma unroll
        for (int n = 0; n < kKeyTiles; ++n) {
          const __nv_bfloat16* kp = Ks + (n * 8 + g) * S_ + kk * 16 + 2 * tq;
          mma_bf16_16816(s[n], a0, a1, a2, a3, ld_smem_u32(kp), ld_smem_u32(kp + 8));
        }
      }
    }

    // Mask (causal + window, and keys past klast), scale into the log2 domain, online softmax.
    float tmax0 = -INFINITY, tmax1 = -INFINITY;
#pragma unroll
    for (int n = 0; n < kKeyTiles; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int kpos = kb + n * 8 + 2 * tq + (e & 1);
        const int qpos = e < 2 ? qpos0 : qpos1;
        const bool visible = kpos <= qpos && qpos - kpos < p.window;
        s[n][e] = visible ? s[n][e] * p.scale_log2 : -INFINITY;
      }
      tmax0 = fmaxf(tmax0, fmaxf(s[n][0], s[n][1]));
      tmax1 = fmaxf(tmax1, fmaxf(s[n][2], s[n][3]));
    }
#pragma unroll
    for (int off = 1; off < 4; off <<= 1) {
      tmax0 = fmaxf(tmax0, __shfl_xor_sync(0xffffffffu, tmax0, off));
      tmax1 = fmaxf(tmax1, __shfl_xor_sync(0xffffffffu, tmax1, off));
    }
    const float mn0 = fmaxf(m0, tmax0), mn1 = fmaxf(m1, tmax1);
    // While a row has seen no visible key its max stays -inf: keep its weights 0 rather than NaN.
    const float alpha0 = mn0 == -INFINITY ? 1.0f : exp2f(m0 - mn0);
    const float alpha1 = mn1 == -INFINITY ? 1.0f : exp2f(m1 - mn1);
    m0 = mn0;
    m1 = mn1;
    float rs0 = 0.0f, rs1 = 0.0f;
#pragma unroll
    for (int n = 0; n < kKeyTiles; ++n) {
      s[n][0] = mn0 == -INFINITY ? 0.0f : exp2f(s[n][0] - mn0);
      s[n][1] = mn0 == -INFINITY ? 0.0f : exp2f(s[n][1] - mn0);
      s[n][2] = mn1 == -INFINITY ? 0.0f : exp2f(s[n][2] - mn1);
      s[n][3] = mn1 == -INFINITY ? 0.0f : exp2f(s[n][3] - mn1);
      rs0 += s[n][0] + s[n][1];
      rs1 += s[n][2] + s[n][3];
    }
    l0 = l0 * alpha0 + rs0;  // per-thread partial sums; the 4 lanes of a row are added at the end
    l1 = l1 * alpha1 + rs1;
#pragma unroll
    for (int i = 0; i < kDimTiles; ++i) {
      o[i][0] *= alpha0;
      o[i][1] *= alpha0;
      o[i][2] *= alpha1;
      o[i][3] *= alpha1;
    }

    __syncthreads();  // every warp is done with K(j)
    if (j + 1 < n_tiles) {
      load_kv_tile<D>(Ks, p.ring_k, p.new_k, kvh, kb + kPreKeys, klast, pos, p.n_kv, ring_slots);
    }
    cp_async_commit();   // possibly empty: keeps the group count uniform for wait<1>
    cp_async_wait<1>();  // V(j) landed
    __syncthreads();

    // O += P V. The S accumulator layout of key tiles 2ks, 2ks+1 is exactly the A fragment of P.
#pragma unroll
    for (int ks = 0; ks < kPreKeys / 16; ++ks) {
      const uint32_t a0 = pack_float_bf16(s[2 * ks][0], s[2 * ks][1]);
      const uint32_t a1 = pack_float_bf16(s[2 * ks][2], s[2 * ks][3]);
      const uint32_t a2 = pack_float_bf16(s[2 * ks + 1][0], s[2 * ks + 1][1]);
      const uint32_t a3 = pack_float_bf16(s[2 * ks + 1][2], s[2 * ks + 1][3]);
      if constexpr (kLdsm) {
        // Matrices: (keys lo, dims i), (keys hi, dims i), (keys lo, dims i+1), (keys hi, dims i+1).
        const int mat = lane >> 3, rr = lane & 7;
        const __nv_bfloat16* vrow = Vs + (ks * 16 + (mat & 1) * 8 + rr) * S_ + (mat >> 1) * 8;
#pragma unroll
        for (int i = 0; i < kDimTiles; i += 2) {
          uint32_t b[4];
          ldsm_x4_trans(b, vrow + i * 8);
          mma_bf16_16816(o[i], a0, a1, a2, a3, b[0], b[1]);
          mma_bf16_16816(o[i + 1], a0, a1, a2, a3, b[2], b[3]);
        }
      } else {
        const __nv_bfloat16* vp = Vs + (ks * 16 + 2 * tq) * S_ + g;
#pragma unroll
        for (int i = 0; i < kDimTiles; ++i) {
          const __nv_bfloat16* v = vp + i * 8;
          const uint32_t b0 = pack_bf16(v[0], v[S_]);
          const uint32_t b1 = pack_bf16(v[8 * S_], v[9 * S_]);
          mma_bf16_16816(o[i], a0, a1, a2, a3, b0, b1);
        }
      }
    }

    __syncthreads();  // every warp is done with V(j)
    if (j + 1 < n_tiles) {
      load_kv_tile<D>(Vs, p.ring_v, p.new_v, kvh, kb + kPreKeys, klast, pos, p.n_kv, ring_slots);
    }
    cp_async_commit();
  }
  cp_async_wait<0>();

#pragma unroll
  for (int off = 1; off < 4; off <<= 1) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, off);
    l1 += __shfl_xor_sync(0xffffffffu, l1, off);
  }
  const float inv0 = l0 > 0.0f ? 1.0f / l0 : 0.0f;
  const float inv1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = row0 + 8 * half;
    const int t = t0 + r % tokens, h = kvh * p.group + r / tokens;
    if (t >= p.T) continue;
    const float inv = half == 0 ? inv0 : inv1;
    __nv_bfloat16* dst = p.out + (static_cast<int64_t>(t) * p.n_q + h) * D + 2 * tq;
#pragma unroll
    for (int i = 0; i < kDimTiles; ++i) {
      *reinterpret_cast<__nv_bfloat162*>(dst + i * 8) =
          __floats2bfloat162_rn(o[i][2 * half] * inv, o[i][2 * half + 1] * inv);
    }
  }
}

// ---- launchers -------------------------------------------------------------------------------------

void check_common(const SlidingWindowDims& d, const char* what) {
  auto fail = [&](const std::string& why) {
    throw std::invalid_argument(std::string("fb::cuda::") + what + ": " + why);
  };
  if (d.head_dim != 256 && d.head_dim != 32)
    fail("head_dim must be 256 or 32, got " + std::to_string(d.head_dim));
  if (d.n_q_heads <= 0 || d.n_kv_heads <= 0 || d.n_q_heads % d.n_kv_heads != 0) {
    fail("n_q_heads must be a positive multiple of n_kv_heads");
  }
  if (d.window <= 0 || d.window > (1 << 28)) fail("window out of range");
  if (d.n_kv_heads > 65535) fail("too many kv heads for one grid dimension");
}

void check_ptr(const void* ptr, const char* name, const char* what) {
  if (ptr == nullptr || reinterpret_cast<uintptr_t>(ptr) % 16 != 0) {
    throw std::invalid_argument(std::string("fb::cuda::") + what + ": " + name +
                                " null or not 16-byte aligned");
  }
}

// Function attributes are raised once per kernel and size (not per launch), so a launch inside stream
// capture issues nothing but the launch itself. Every attribute change goes through here and the
// dynamic shared memory limit only ever grows: the split pickers probe sizes for other windows, and a
// probe that lowered the limit behind this cache made a later launch at a larger size fail with
// cudaErrorInvalidValue (seen as a compute-sanitizer-only failure, where 8-CTA clusters change sizes).
cudaError_t raise_attributes(const void* fn, size_t smem, bool non_portable_cluster) {
  static std::mutex mu;
  static std::map<const void*, std::pair<size_t, bool>> done;
  std::lock_guard<std::mutex> lock(mu);
  auto& [bytes, cluster] = done[fn];
  if (smem > bytes) {
    const cudaError_t e =
        cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) return e;
    bytes = smem;
  }
  if (non_portable_cluster && !cluster) {
    const cudaError_t e = cudaFuncSetAttribute(fn, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
    if (e != cudaSuccess) return e;
    cluster = true;
  }
  return cudaSuccess;
}

void ensure_attributes(const void* fn, size_t smem, bool non_portable_cluster) {
  FB_CUDA_CHECK(raise_attributes(fn, smem, non_portable_cluster));
}

// The register variant the decode runs: 2 query rows (T = 1 with group <= 2, the gemma4 decode)
// or up to 8.
int decode_rows(int T, int group) { return T * group <= 2 ? 2 : kDecMaxRows; }

template <int D, int kRows>
void* decode_fn() {
  return reinterpret_cast<void*>(&decode_kernel<D, kRows>);
}

struct DecodeVariant {
  void* fn;
  size_t smem;
};
DecodeVariant decode_variant(int head_dim, int rows) {
  if (head_dim == 256) {
    return rows <= 2 ? DecodeVariant{decode_fn<256, 2>(), decode_smem_bytes<256, 2>()}
                     : DecodeVariant{decode_fn<256, kDecMaxRows>(), decode_smem_bytes<256, kDecMaxRows>()};
  }
  return rows <= 2 ? DecodeVariant{decode_fn<32, 2>(), decode_smem_bytes<32, 2>()}
                   : DecodeVariant{decode_fn<32, kDecMaxRows>(), decode_smem_bytes<32, kDecMaxRows>()};
}

// Portable 8-CTA clusters by default: on an H200 they measured faster than 16-CTA clusters (gemma4
// T = 1: 14.1 vs 19.3 us at 512 keys, 18.7 vs 22.6 us at the full window). FB_SWA_DECODE_SPLITS=16
// tries 16 first (used where the device can co-schedule them), for A/B timing.
// Cached per (head_dim, row variant): the answer does not change during a run.
int pick_splits(const SlidingWindowDims& d, int rows) {
  static std::mutex mu;
  static std::map<std::pair<int, int>, int> cache;
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_pair(d.head_dim, rows);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  int chosen = 8;
  const DecodeVariant v = decode_variant(d.head_dim, rows);
  const char* force = std::getenv("FB_SWA_DECODE_SPLITS");
  const bool try16 = force != nullptr && std::string(force) == "16";
  for (int splits : {16, 8}) {
    if (!try16 && splits != 8) continue;
    if (raise_attributes(v.fn, v.smem, splits > 8) != cudaSuccess) {
      (void)cudaGetLastError();
      continue;
    }
    cudaLaunchAttribute attrs[2];
    const cudaLaunchConfig_t cfg = launch_config(dim3(splits, 1, 1), dim3(kDecThreads, 1, 1), v.smem, nullptr,
                                                 LaunchAttrs{static_cast<unsigned>(splits)}, attrs);
    int clusters = 0;
    if (cudaOccupancyMaxActiveClusters(&clusters, v.fn, &cfg) == cudaSuccess && clusters > 0) {
      chosen = splits;
      break;
    }
    (void)cudaGetLastError();
  }
  cache[key] = chosen;
  return chosen;
}

template <int D, int kRows>
void launch_decode(const DecodeParams& prm, int splits, int n_kv, cudaStream_t stream) {
  constexpr size_t smem = decode_smem_bytes<D, kRows>();
  ensure_attributes(reinterpret_cast<const void*>(&decode_kernel<D, kRows>), smem, splits > 8);
  launch_kernel(decode_kernel<D, kRows>, dim3(splits, n_kv, 1), dim3(kDecThreads, 1, 1), smem, stream,
                LaunchAttrs{static_cast<unsigned>(splits)}, prm);
}

// ---- staged multi-row decode: split choice and launch ----

int staged_cap(const SlidingWindowDims& d, int splits) {
  return (d.window + kDecMaxT - 1 + splits - 1) / splits;
}

template <int D>
void* staged_fn() {
  return reinterpret_cast<void*>(&staged_decode_kernel<D>);
}

// FB_SWA_DECODE_MULTIROW: "staged" (default) or "stream" (the register-streaming kernel). Any other
// value throws before anything is enqueued.
bool multirow_uses_staged() {
  const char* e = std::getenv("FB_SWA_DECODE_MULTIROW");
  if (e == nullptr || *e == '\0' || std::string(e) == "staged") return true;
  if (std::string(e) == "stream") return false;
  throw std::invalid_argument(
      std::string("fb::cuda::sliding_window_decode: FB_SWA_DECODE_MULTIROW must be staged "
                  "or stream, got '") +
      e + "'");
}

// The staged kernel's configuration when it measured 38.8 / 56.9 us at T = 4: 16-CTA clusters where
// the device can co-schedule one (smaller slices per CTA), else 8. FB_SWA_DECODE_SPLITS=8 forces 8.
// Cached per (head_dim, window, forced): the answer does not change during a run.
int pick_staged_splits(const SlidingWindowDims& d) {
  static std::mutex mu;
  static std::map<std::tuple<int, int, bool>, int> cache;
  std::lock_guard<std::mutex> lock(mu);
  const char* force = std::getenv("FB_SWA_DECODE_SPLITS");
  const bool force8 = force != nullptr && std::string(force) == "8";
  const auto key = std::make_tuple(d.head_dim, d.window, force8);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  int chosen = 8;
  for (int splits : {16, 8}) {
    if (force8 && splits != 8) continue;
    const int cap = staged_cap(d, splits);
    const size_t smem = d.head_dim == 256 ? staged_smem_bytes<256>(cap) : staged_smem_bytes<32>(cap);
    void* fn = d.head_dim == 256 ? staged_fn<256>() : staged_fn<32>();
    if (raise_attributes(fn, smem, splits > 8) != cudaSuccess) {
      (void)cudaGetLastError();
      continue;
    }
    cudaLaunchAttribute attrs[2];
    const cudaLaunchConfig_t cfg = launch_config(dim3(splits, 1, 1), dim3(kDecThreads, 1, 1), smem, nullptr,
                                                 LaunchAttrs{static_cast<unsigned>(splits)}, attrs);
    int clusters = 0;
    if (cudaOccupancyMaxActiveClusters(&clusters, fn, &cfg) == cudaSuccess && clusters > 0) {
      chosen = splits;
      break;
    }
    (void)cudaGetLastError();
  }
  cache[key] = chosen;
  return chosen;
}

template <int D>
void launch_staged_decode(const DecodeParams& prm, int splits, int n_kv, cudaStream_t stream) {
  const size_t smem = staged_smem_bytes<D>(prm.cap);
  ensure_attributes(reinterpret_cast<const void*>(&staged_decode_kernel<D>), smem, splits > 8);
  launch_kernel(staged_decode_kernel<D>, dim3(splits, n_kv, 1), dim3(kDecThreads, 1, 1), smem, stream,
                LaunchAttrs{static_cast<unsigned>(splits)}, prm);
}

template <int D, bool kLdsm>
void launch_prefill(const PrefillParams& prm, cudaStream_t stream) {
  constexpr size_t smem = prefill_smem_bytes<D>();
  ensure_attributes(reinterpret_cast<const void*>(&prefill_kernel<D, kLdsm>), smem, false);
  const int tokens = kPreRows / prm.group;
  const dim3 grid((prm.T + tokens - 1) / tokens, prm.n_kv, 1);
  prefill_kernel<D, kLdsm><<<grid, kPreThreads, smem, stream>>>(prm);
  FB_CUDA_CHECK_LAUNCH();
}

}  // namespace

int sliding_window_decode_splits(const SlidingWindowDims& dims) {
  check_common(dims, "sliding_window_decode_splits");
  return pick_splits(dims, decode_rows(1, dims.n_q_heads / dims.n_kv_heads));
}

void sliding_window_append(const SlidingWindowDims& dims, const __nv_bfloat16* new_k,
                           const __nv_bfloat16* new_v, int T, const int32_t* d_pos, __nv_bfloat16* ring_k,
                           __nv_bfloat16* ring_v, cudaStream_t stream) {
  const char* what = "sliding_window_append";
  check_common(dims, what);
  if (T < 0) throw std::invalid_argument("fb::cuda::sliding_window_append: negative T");
  check_ptr(new_k, "new_k", what);
  check_ptr(new_v, "new_v", what);
  check_ptr(ring_k, "ring_k", what);
  check_ptr(ring_v, "ring_v", what);
  if (d_pos == nullptr) throw std::invalid_argument("fb::cuda::sliding_window_append: d_pos null");
  if (T == 0) return;
  const int chunks = dims.head_dim / 8;
  const int64_t threads = static_cast<int64_t>(T) * dims.n_kv_heads * chunks;
  const int64_t blocks = (threads + 255) / 256;
  if (blocks > 0x7fffffff) throw std::invalid_argument("fb::cuda::sliding_window_append: too large");
  append_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
      reinterpret_cast<const uint4*>(new_k), reinterpret_cast<const uint4*>(new_v), T, d_pos,
      reinterpret_cast<uint4*>(ring_k), reinterpret_cast<uint4*>(ring_v), dims.n_kv_heads, chunks,
      2 * dims.window);
  FB_CUDA_CHECK_LAUNCH();
}

void sliding_window_decode(const SlidingWindowDims& dims, const __nv_bfloat16* q, const __nv_bfloat16* ring_k,
                           const __nv_bfloat16* ring_v, const __nv_bfloat16* new_k,
                           const __nv_bfloat16* new_v, int T, const int32_t* d_pos, float scale,
                           __nv_bfloat16* out, cudaStream_t stream) {
  const char* what = "sliding_window_decode";
  check_common(dims, what);
  const int group = dims.n_q_heads / dims.n_kv_heads;
  if (T < 1 || T > kDecMaxT || T * group > kDecMaxRows) {
    throw std::invalid_argument(
        "fb::cuda::sliding_window_decode: need 1 <= T <= 4 and T x group <= 8, got T " + std::to_string(T) +
        " group " + std::to_string(group));
  }
  for (auto [ptr, name] : {std::pair<const void*, const char*>{q, "q"},
                           {ring_k, "ring_k"},
                           {ring_v, "ring_v"},
                           {new_k, "new_k"},
                           {new_v, "new_v"},
                           {out, "out"}}) {
    check_ptr(ptr, name, what);
  }
  if (d_pos == nullptr) throw std::invalid_argument("fb::cuda::sliding_window_decode: d_pos null");
  const int rows = decode_rows(T, group);
  if (rows > 2 && multirow_uses_staged()) {
    const int splits = pick_staged_splits(dims);
    const DecodeParams prm{
        q, ring_k,         ring_v,          new_k, new_v,       d_pos,          out,
        T, dims.n_q_heads, dims.n_kv_heads, group, dims.window, scale * kLog2e, staged_cap(dims, splits)};
    if (dims.head_dim == 256) {
      launch_staged_decode<256>(prm, splits, dims.n_kv_heads, stream);
    } else {
      launch_staged_decode<32>(prm, splits, dims.n_kv_heads, stream);
    }
    return;
  }
  const int splits = pick_splits(dims, rows);
  const DecodeParams prm{q, ring_k,         ring_v,          new_k, new_v,       d_pos,          out,
                         T, dims.n_q_heads, dims.n_kv_heads, group, dims.window, scale * kLog2e, 0};
  if (dims.head_dim == 256) {
    rows <= 2 ? launch_decode<256, 2>(prm, splits, dims.n_kv_heads, stream)
              : launch_decode<256, kDecMaxRows>(prm, splits, dims.n_kv_heads, stream);
  } else {
    rows <= 2 ? launch_decode<32, 2>(prm, splits, dims.n_kv_heads, stream)
              : launch_decode<32, kDecMaxRows>(prm, splits, dims.n_kv_heads, stream);
  }
}

void sliding_window_prefill(const SlidingWindowDims& dims, const __nv_bfloat16* q,
                            const __nv_bfloat16* ring_k, const __nv_bfloat16* ring_v,
                            const __nv_bfloat16* new_k, const __nv_bfloat16* new_v, int T,
                            const int32_t* d_pos, float scale, __nv_bfloat16* out, cudaStream_t stream,
                            SlidingWindowFragments fragments) {
  const char* what = "sliding_window_prefill";
  check_common(dims, what);
  const int group = dims.n_q_heads / dims.n_kv_heads;
  if (group != 1 && group != 2 && group != 4) {
    throw std::invalid_argument("fb::cuda::sliding_window_prefill: group must be 1, 2 or 4, got " +
                                std::to_string(group));
  }
  if (T < 1) throw std::invalid_argument("fb::cuda::sliding_window_prefill: T must be >= 1");
  for (auto [ptr, name] : {std::pair<const void*, const char*>{q, "q"},
                           {ring_k, "ring_k"},
                           {ring_v, "ring_v"},
                           {new_k, "new_k"},
                           {new_v, "new_v"},
                           {out, "out"}}) {
    check_ptr(ptr, name, what);
  }
  if (d_pos == nullptr) throw std::invalid_argument("fb::cuda::sliding_window_prefill: d_pos null");
  const PrefillParams prm{q, ring_k,         ring_v,          new_k, new_v,       d_pos,         out,
                          T, dims.n_q_heads, dims.n_kv_heads, group, dims.window, scale * kLog2e};
  const bool ldsm = fragments == SlidingWindowFragments::ldmatrix;
  if (dims.head_dim == 256) {
    ldsm ? launch_prefill<256, true>(prm, stream) : launch_prefill<256, false>(prm, stream);
  } else {
    ldsm ? launch_prefill<32, true>(prm, stream) : launch_prefill<32, false>(prm, stream);
  }
}

}  // namespace fb::cuda
