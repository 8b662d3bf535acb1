#!/usr/bin/env bash
# gpu-check step: the decode matvec (kernels/gemv/w4a8_matvec) on gemma4-31b decode shapes.
#   usage: bash matvec.sh BUILD_DIR OUTDIR FUSEBENCH_BINARY
# Writes into OUTDIR:
#   sweep.json.gz   fusebench_matvec_sweep: every launch variant x shape x layout x T (Google Benchmark
#                   JSON; what the per-shape default in w4a8_matvec.cu was picked from)
#   bench.json.gz   fusebench bench of matvec_w4a8 and gate_up_act at T = 1 and 4, hot only (the
#                   default variant; results schema), and bench.log
# Extra arguments after the three are passed to `fusebench bench` (e.g. --instance ffn_gate).
# Exit status: non-zero when a binary is missing or a run fails.
set -uo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: bash matvec.sh BUILD_DIR OUTDIR FUSEBENCH_BINARY [bench args...]" >&2
  exit 64
fi
build="$1"
out="$2"
cli="$3"
shift 3
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
mkdir -p "$out" || exit 1
status=0

sweep="$build/harness/micro/fusebench_matvec_sweep"
if [[ -x "$sweep" ]]; then
  "$sweep" --benchmark_out="$out/sweep.json" --benchmark_out_format=json >"$out/sweep.log" 2>&1 || status=1
  gzip -f "$out/sweep.json" 2>/dev/null || true
else
  echo "matvec: $sweep not built" | tee -a "$out/sweep.log"
  status=1
fi

if [[ -x "$cli" ]]; then
  (cd "$root" && "$cli" bench --scenario gemma4-31b-decode --kernel matvec_w4a8 --kernel gate_up_act \
    --context 512 --no-cold --min-seconds 0.2 --json "$out/bench.json" "$@") >"$out/bench.log" 2>&1 || status=1
  gzip -f "$out/bench.json" 2>/dev/null || true
else
  echo "matvec: fusebench binary $cli not found" | tee -a "$out/bench.log"
  status=1
fi
exit $status
