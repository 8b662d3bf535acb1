#!/usr/bin/env bash
# gpu-check step: gemma4 decode attention kernels, timed at full shapes.
# Usage: attn.sh BUILD_DIR STEP_OUTDIR FUSEBENCH_BINARY
#   tq4_sdpa (TurboQuant 4-bit KV, full layers) and swa_decode (bf16 ring, sliding layers) from the
#   gemma4-31b-decode scenario: T = 1 and 4 at 512 .. 128K context, hot and L2-flushed cold.
#   tq4_sdpa runs twice, once per decode split kernel (FB_TQ4_DECODE_PATH=fp32, =mma): the same cases
#   and numerics checks, so one run says which path is faster and whether both pass. swa_decode runs
#   with the default kernels (T = 4: staged) and with FB_SWA_DECODE_MULTIROW=stream (T = 4: the
#   register-streaming kernel); T = 1 is the same kernel in both.
# Writes attn-tq4-{fp32,mma}.json.gz, attn-swa.json.gz, attn-swa-stream.json.gz, their .log files,
# attn-summary.txt (one line per case) and attn-tq4-paths.txt (T = 1 hot medians side by side).
set -euo pipefail
build=${1:?BUILD_DIR}
out=${2:?STEP_OUTDIR}
fb=${3:?FUSEBENCH_BINARY}
: "$build"
mkdir -p "$out"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
min_s=${ATTN_MIN_SECONDS:-0.2}
rc=0

bench() {  # NAME KERNEL [ENV=VALUE]
  local name=$1 kernel=$2
  shift 2
  env "$@" "$fb" bench --scenario '^gemma4-31b-decode$' --kernel "$kernel" --min-seconds "$min_s" \
    --json "$out/$name.json" >"$out/$name.log" 2>&1 || { echo "attn: $name failed (see $name.log)" >&2; rc=1; }
}
bench attn-tq4-fp32 tq4_sdpa FB_TQ4_DECODE_PATH=fp32
bench attn-tq4-mma tq4_sdpa FB_TQ4_DECODE_PATH=mma
bench attn-swa swa_decode
bench attn-swa-stream swa_decode FB_SWA_DECODE_MULTIROW=stream

: >"$out/attn-summary.txt"
for name in attn-tq4-fp32 attn-tq4-mma attn-swa attn-swa-stream; do
  if [[ -f $out/$name.json ]]; then
    echo "## $name" >>"$out/attn-summary.txt"
    python3 "$here/../summarize_results.py" "$out/$name.json" >>"$out/attn-summary.txt" 2>&1 || rc=1
  else
    echo "attn: no results JSON for $name (see $name.log)" >&2
    rc=1
  fi
done
if [[ -f $out/attn-tq4-fp32.json && -f $out/attn-tq4-mma.json ]]; then
  python3 - "$out/attn-tq4-fp32.json" "$out/attn-tq4-mma.json" >"$out/attn-tq4-paths.txt" <<'PY' || rc=1
import json, sys
def load(p):
    with open(p) as f:
        doc = json.load(f)
    r = {}
    for c in doc["cases"]:
        hot = c["hot"]["summary"]["median_ms"] * 1e3 if c.get("hot") else float("nan")
        r[(c["tokens"], c["context"])] = (hot, c["verdict"], c["shape"].get("decode_path", "?"))
    return r
a, b = load(sys.argv[1]), load(sys.argv[2])
print(f"{'T':>3} {'ctx':>7} {'fp32 us':>9} {'verdict':8} {'mma us':>9} {'verdict':8} {'path':5} speedup")
for k in sorted(set(a) | set(b)):
    fa, fb = a.get(k, (float('nan'), '-', '-')), b.get(k, (float('nan'), '-', '-'))
    print(f"{k[0]:>3} {k[1]:>7} {fa[0]:9.2f} {fa[1]:8} {fb[0]:9.2f} {fb[1]:8} {fb[2]:5} {fa[0] / fb[0]:6.2f}x")
PY
  cat "$out/attn-tq4-paths.txt" >>"$out/attn-summary.txt"
fi
cat "$out/attn-summary.txt"
for name in attn-tq4-fp32 attn-tq4-mma attn-swa attn-swa-stream; do
  [[ -f $out/$name.json ]] && gzip -f "$out/$name.json"
done
exit $rc
