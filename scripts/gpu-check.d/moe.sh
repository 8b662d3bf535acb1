#!/usr/bin/env bash
# gpu-check step: qwen3.5-moe decode kernels (issue 5: GDN, MoE, shared expert), timed at full shapes.
# Usage: moe.sh BUILD_DIR STEP_OUTDIR FUSEBENCH_BINARY
#   1. `fusebench check` of the tiny qwen scenarios for these kernels (GPU vs fp64 reference, fused vs
#      unfused twin);
#   2. `fusebench bench` of the qwen3.5-moe-decode scenario (T = 1 and 4; these kernels do not depend
#      on the context, so each runs once per T): gdn_conv, gdn_delta_rule, gdn_gated_norm, moe_router,
#      moe_gemm1, moe_gemm2 (fused and unfused, layouts sym_int4 and ggml) and the GDN in_proj
#      (matvec_w4a8, instance attn_qkv+attn_gate+ssm_beta+ssm_alpha), hot and L2-flushed cold.
# Targets on H200 (ggml d99724f2, shared/peers/ggml-h200-2026-11-21.md): GEMM1 <= 5 us (8.7),
# GEMM2 <= 5 us (7.0), in_proj 12352x2048 <= 6 us (11.6), conv <= 2 us (3.2), delta rule <= 3 us (3.5).
# Writes moe-check.json.gz, moe-decode.json.gz, logs and moe-summary.txt (one line per case).
set -euo pipefail
build=${1:?BUILD_DIR}
out=${2:?STEP_OUTDIR}
fb=${3:?FUSEBENCH_BINARY}
: "$build"
mkdir -p "$out"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
min_s=${MOE_MIN_SECONDS:-0.2}
kernels=(--kernel gdn_conv --kernel gdn_delta_rule --kernel gdn_gated_norm --kernel moe_router
         --kernel moe_gemm1 --kernel moe_gemm2)
rc=0
"$fb" check --scenario '^qwen3.5-moe-tiny-(decode|prefill)$' "${kernels[@]}" --json "$out/moe-check.json" \
  >"$out/moe-check.log" 2>&1 || rc=1
"$fb" bench --scenario '^qwen3.5-moe-decode$' "${kernels[@]}" --context 512 --min-seconds "$min_s" \
  --json "$out/moe-decode.json" >"$out/moe-decode.log" 2>&1 || rc=1
"$fb" bench --scenario '^qwen3.5-moe-decode$' --kernel matvec_w4a8 --instance attn_qkv+attn_gate+ssm_beta+ssm_alpha \
  --context 512 --min-seconds "$min_s" --json "$out/moe-inproj.json" >"$out/moe-inproj.log" 2>&1 || rc=1
: >"$out/moe-summary.txt"
for name in moe-decode moe-inproj; do
  if [[ -f $out/$name.json ]]; then
    python3 "$here/../summarize_results.py" "$out/$name.json" >>"$out/moe-summary.txt" 2>&1 || rc=1
  else
    echo "moe: no $name.json (see $name.log)" >&2
    rc=1
  fi
done
cat "$out/moe-summary.txt"
for f in "$out"/moe-check.json "$out"/moe-decode.json "$out"/moe-inproj.json; do
  [[ -f $f ]] && gzip -f "$f"
done
exit $rc
