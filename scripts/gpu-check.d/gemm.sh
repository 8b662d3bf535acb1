#!/usr/bin/env bash
# gpu-check step: the fused int4 dequant-GEMM for prefill (kernels/prefill/int4_gemm) and the decode
# lm_head matvec, on gemma4-31b shapes.
#   usage: bash gemm.sh BUILD_DIR OUTDIR FUSEBENCH_BINARY
# Writes into OUTDIR:
#   int4_gemm_test.log       fb_int4_gemm_gpu_test: numerics of every tile config plus its
#                            informational per-tile timing table (what pick_tile was chosen from)
#   prefill.json.gz / .log   fusebench bench of prefill_int4_gemm on ffn_gate+ffn_up (43008 x 5376),
#                            T = 512 and 2048, both scale encodings: fused vs the dequant + cuBLAS twin
#   lm_head.json.gz / .log   fusebench bench of lm_head_decode (262144 x 5376 Q6_K) at T = 1, all layouts
# Exit status: non-zero when a binary is missing or a run fails.
set -uo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: bash gemm.sh BUILD_DIR OUTDIR FUSEBENCH_BINARY" >&2
  exit 64
fi
build="$1"
out="$2"
cli="$3"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
mkdir -p "$out" || exit 1
status=0

t="$build/kernels/prefill/fb_int4_gemm_gpu_test"
if [[ -x "$t" ]]; then
  "$t" >"$out/int4_gemm_test.log" 2>&1 || status=1
else
  echo "gemm: $t not built" | tee -a "$out/int4_gemm_test.log"
  status=1
fi

if [[ -x "$cli" ]]; then
  (cd "$root" && "$cli" bench --scenario gemma4-31b-prefill --kernel prefill_int4_gemm \
    --instance ffn_gate+ffn_up --tokens 512 --tokens 2048 --context 512 --no-cold --min-seconds 0.2 \
    --json "$out/prefill.json") >"$out/prefill.log" 2>&1 || status=1
  gzip -f "$out/prefill.json" 2>/dev/null || true
  (cd "$root" && "$cli" bench --scenario gemma4-31b-decode --kernel lm_head_decode --tokens 1 \
    --context 512 --no-cold --min-seconds 0.2 --json "$out/lm_head.json") >"$out/lm_head.log" 2>&1 || status=1
  gzip -f "$out/lm_head.json" 2>/dev/null || true
else
  echo "gemm: fusebench binary $cli not found" | tee -a "$out/prefill.log"
  status=1
fi
exit $status
