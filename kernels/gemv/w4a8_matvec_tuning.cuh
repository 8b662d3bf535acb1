#pragma once
// Launch-variant override of the decode matvec (kernels/gemv/w4a8_matvec.cuh), for the config sweep
// (harness/micro/w4a8_matvec_sweep.cu) and for the test that holds every variant bit-exact to the
// legacy kernel. Production code never calls this: "auto" picks a variant per format, M and K.
// The environment variable FUSEBENCH_MATVEC_VARIANT=<name> sets the same override for a whole
// process (e.g. `fusebench bench` per variant); set_variant() takes precedence over it.
//
// Variants (every one computes each row with the same lane-strided fp32 chains and xor-shuffle tree,
// so all give the same bits):
//   auto    per shape (the default)
//   legacy  one warp per row pair, persistent grid, activations read from global through L1
//   r2u6 / r4u3  activations staged planar in shared memory, R rows per warp, U 32-weight units
//           per lane loaded before the first is used, block-balanced grid, per-warp dynamic tasks;
//           they fall back to legacy for the ggml block formats and when the staged activations
//           (M * K/32 * 48 bytes) exceed the shared-memory budget.
//   r6u2    the same with 6 rows per warp and 2 units per lane, for K <= 2048 (no unit slot past a
//           row's end); int4 formats only (legacy elsewhere). Through w4a8_matvec_bf16 at M <= 2 it
//           quantizes the activations itself (no separate quantize launch).
namespace fb::cuda::matvec_tuning {

int variant_count();                  // variants are 0 .. variant_count() - 1; 0 is auto
const char* variant_name(int v);      // nullptr when out of range
int variant_index(const char* name);  // -1 when unknown
void set_variant(int v);              // process-wide; -1 clears the override (env / auto again)

}  // namespace fb::cuda::matvec_tuning
