#!/usr/bin/env bash
# gpu-check step: regression-gate calibration and a CUPTI profile (issue 6).
# Usage: gate.sh BUILD_DIR STEP_OUTDIR FUSEBENCH_BINARY
#   1. scripts/calibrate-gate: 4 clean and 4 FUSEBENCH_INJECT_SLOWDOWN=0.03 bench runs of ~60 decode
#      cases, interleaved; A/A flag rate and 3 % catch rate -> calibration.{json,md}. Measured on an
#      H200: ~50 s per bench run (the fp64 references of the full-shape cases dominate), so ~7 min:
#      run this step in a device call of its own (gpu-check --no-tests --no-check --step gate).
#   2. `fusebench profile` of the gemma4-31b decode kernels at ctx 8192, T=1 (per-kernel share from
#      CUPTI records mapped to NVTX ranges) -> profile-decode.json.gz, and of the whole decode step
#      when its GGUF exists (scripts/gpu-check.d/step.sh makes it; it runs after this step).
#   3. `fusebench compare auto` of the first clean calibration run against results/baselines/<gpu>/
#      (exercises --compare-to's baseline lookup on a real run; a regression there is reported, not
#      fatal: the calibration selection is a subset and short).
#   4. `fusebench report` of the profile and the committed baselines against the ggml peer timings.
# Exit 1 when calibration misses a target or a command fails.
set -uo pipefail
build=${1:?BUILD_DIR}
out=${2:?STEP_OUTDIR}
fb=${3:?FUSEBENCH_BINARY}
here=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$out"
rc=0

python3 "$here/scripts/calibrate-gate" --fusebench "$fb" -o "$out/calibration" \
  --runs "${GATE_RUNS:-4}" --min-seconds "${GATE_MIN_SECONDS:-0.03}" >"$out/calibration.log" 2>&1 || rc=1
tail -20 "$out/calibration.log"

"$fb" profile gemma4-31b-decode --context 8192 --tokens 1 --json "$out/profile-decode.json" \
  >"$out/profile-decode.txt" 2>"$out/profile-decode.log" || rc=1
head -60 "$out/profile-decode.txt"
gguf=${FUSEBENCH_STEP_GGUF:-$build/gemma4-31b-full-${GEMMA_WEIGHTS:-block-sampled}.gguf}  # made by step.sh
if [[ -s $gguf ]]; then
  FUSEBENCH_STEP_GGUF=$gguf "$fb" profile gemma4-31b-decode-step --context 8192 \
    --json "$out/profile-step.json" >"$out/profile-step.txt" 2>"$out/profile-step.log" || rc=1
fi

first_clean=$out/calibration/raw/clean-1.json.gz
if [[ -s $first_clean ]]; then
  "$fb" compare auto "$first_clean" --markdown "$out/compare-auto.md" >"$out/compare-auto.txt" 2>&1
  echo "compare auto: exit $? (0 ok, 1 regression, 2 refused)" | tee -a "$out/compare-auto.txt"
fi

peer=$here/results/peers/nvidia-h200/ggml-d99724f2-2026-11-21.perf.txt
report_args=("$out/profile-decode.json" "$here"/results/baselines/*/bench-*.json.gz)
[[ -f $peer ]] && report_args+=(--ggml-perf "$peer")
"$fb" report "${report_args[@]}" -o "$out/report" >"$out/report.log" 2>&1 || echo "report failed (see report.log)"

gzip -f "$out"/profile-*.json 2>/dev/null || true
exit $rc
