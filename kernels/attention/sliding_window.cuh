#pragma once
// Sliding-window attention over a bf16 ring buffer (gemma4 sliding layers; CPU truth:
// reference/attention/sliding_window.h, whose layouts and position rule these kernels share).
//
//   q, out        [T][n_q_heads][head_dim] bf16
//   new_k, new_v  [T][n_kv_heads][head_dim] bf16 (this step's tokens, positions pos .. pos+T-1)
//   ring_k/ring_v [n_kv_heads][2 x window][head_dim] bf16, position p in slot p % (2 x window)
//   d_pos         one int32 in device memory: the tokens already cached (the first new position)
//
// The position is read on the device so a captured CUDA graph replays for any step. The attention
// kernels read keys p < pos from the ring and p >= pos from new_k/new_v, so they may run before or
// after sliding_window_append when T <= window (a decode step appends, then attends); for
// T > window the append must come after the attention, since it overwrites slots that the earliest
// queries still read. Query at position x attends p with 0 <= x - p < window; scale multiplies q.k.
// The first decode/prefill call for a shape sets function attributes and probes the cluster size;
// make it outside stream capture (later calls enqueue the launch only).
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace fb::cuda {

struct SlidingWindowDims {
  int n_q_heads = 0, n_kv_heads = 0, head_dim = 0, window = 0;
};

// Shapes the kernels are built for: head_dim 256 (gemma4) or 32 (the tiny test model); n_q_heads a
// multiple of n_kv_heads; window >= 1. Decode: 1 <= T <= 4 and T x group <= 8. Prefill: group 1, 2
// or 4, any T >= 1. All pointers non-null and 16-byte aligned. Violations throw
// std::invalid_argument before anything is enqueued; launch failures throw fb::CudaError.
void sliding_window_append(const SlidingWindowDims& dims, const __nv_bfloat16* new_k,
                           const __nv_bfloat16* new_v, int T, const int32_t* d_pos, __nv_bfloat16* ring_k,
                           __nv_bfloat16* ring_v, cudaStream_t stream);

// T = 1..4: both (all) q heads of a kv head in one CTA; the window is split over a thread-block
// cluster whose CTAs merge their partial softmax states through distributed shared memory. One
// launch, no workspace. Up to 2 query rows (T x group; the gemma4 T = 1 step): CTAs stream K/V rows
// straight into registers (online softmax per lane group), 8-CTA clusters. More rows (T = 4): CTAs
// stage their slice of K and V in shared memory (16-CTA clusters where the device co-schedules them;
// FB_SWA_DECODE_SPLITS=8 forces 8); FB_SWA_DECODE_MULTIROW=stream runs the streaming kernel there
// instead (any value other than staged / stream throws before enqueuing).
void sliding_window_decode(const SlidingWindowDims& dims, const __nv_bfloat16* q, const __nv_bfloat16* ring_k,
                           const __nv_bfloat16* ring_v, const __nv_bfloat16* new_k,
                           const __nv_bfloat16* new_v, int T, const int32_t* d_pos, float scale,
                           __nv_bfloat16* out, cudaStream_t stream);

// How the prefill kernel loads its mma B fragments from shared memory: ldmatrix (fast, default) or
// scalar 16/32-bit loads (the plain form; same fragments, so the output is bit-identical).
enum class SlidingWindowFragments { ldmatrix, scalar };

// Any T: tensor-core (mma.sync m16n8k16 bf16, fp32 accumulate) flash attention, causal + window
// mask built in the kernel.
void sliding_window_prefill(const SlidingWindowDims& dims, const __nv_bfloat16* q,
                            const __nv_bfloat16* ring_k, const __nv_bfloat16* ring_v,
                            const __nv_bfloat16* new_k, const __nv_bfloat16* new_v, int T,
                            const int32_t* d_pos, float scale, __nv_bfloat16* out, cudaStream_t stream,
                            SlidingWindowFragments fragments = SlidingWindowFragments::ldmatrix);

// How many CTAs split one kv head's window in the T = 1 decode kernel (8; 16 with
// FB_SWA_DECODE_SPLITS=16 where the device can co-schedule 16-CTA clusters); exposed for the
// benchmark's shape record.
int sliding_window_decode_splits(const SlidingWindowDims& dims);

}  // namespace fb::cuda
