#!/usr/bin/env bash
# gpu-check step: where the full-scale gemma4-31b decode step's time goes (issue 4).
#   usage: bash gemmastep.sh BUILD_DIR OUTDIR FUSEBENCH_BINARY
# With the current defaults (TQ4 decode path: FB_TQ4_DECODE_PATH unset = mma; matvec variant auto):
#   1. `fusebench bench` of the whole decode step, fused and unfused, at ctx 512 and 128K
#      (CUDA-graph replays; GEMMASTEP_CONTEXTS to change, GEMMASTEP_MIN_SECONDS, default 0.3);
#   2. `fusebench profile` of the same step at ctx 512, fused and unfused: per-kernel time and
#      kernel count of one eager step (CUPTI + the step's per-launch NVTX ranges);
#   3. summary.txt (scripts/step_profile_summary.py): tok/s, launches, kernel time by kind and the
#      top ranges, and replay median minus the eager kernel sum.
# The GGUF: $FUSEBENCH_STEP_GGUF, else BUILD_DIR/gemma4-31b-full-block-sampled.gguf (GEMMA_WEIGHTS
# picks make-model --weights), the file step.sh uses. When it is missing it is made here with
# step.sh's command: ~20 s block-sampled, 297 s quantized on the 16-core H200 machine (17.4 GiB;
# results/nvidia-h200/2026-11-22-session/step-make-model.log). timeline.txt records each stage's seconds.
# Writes into OUTDIR: timeline.txt, make-model.log (when made), decode.json.gz + decode.log,
# profile.json.gz + profile.txt + profile.log, summary.txt, env-tq4.txt.
# Exit status: non-zero when a binary is missing, the model cannot be made or a run fails.
set -uo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: bash gemmastep.sh BUILD_DIR OUTDIR FUSEBENCH_BINARY" >&2
  exit 64
fi
build="$1"
out="$2"
fb="$3"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
mkdir -p "$out" || exit 1
if [[ ! -x $fb ]]; then
  echo "gemmastep: fusebench binary $fb not found" >&2
  exit 1
fi
# Absolute paths: the runs below start in the repository root (default scenario directory).
out="$(cd "$out" && pwd)"
build="$(cd "$build" && pwd)" || exit 1
[[ $fb == /* ]] || fb="$PWD/$fb"
status=0
t0=$SECONDS
stage() { echo "$(date -u +%H:%M:%S) +$((SECONDS - t0)) s  $*" | tee -a "$out/timeline.txt"; }

weights=${GEMMA_WEIGHTS:-block-sampled}  # as step.sh: make-model --weights
gguf=${FUSEBENCH_STEP_GGUF:-$build/gemma4-31b-full-$weights.gguf}
[[ $gguf == /* ]] || gguf="$PWD/$gguf"
if [[ ! -s $gguf ]]; then
  stage "make-model -> $gguf"
  if ! "$fb" make-model --model gemma4-31b --scale full --weights "$weights" --seed 1 -o "$gguf.tmp" 2>"$out/make-model.log"; then
    stage "make-model FAILED (make-model.log)"
    exit 1
  fi
  mv "$gguf.tmp" "$gguf" || exit 1
fi
export FUSEBENCH_STEP_GGUF=$gguf
echo "FB_TQ4_DECODE_PATH=${FB_TQ4_DECODE_PATH:-(unset: the default, mma)}" >"$out/env-tq4.txt"
echo "FUSEBENCH_MATVEC_VARIANT=${FUSEBENCH_MATVEC_VARIANT:-(unset: auto)}" >>"$out/env-tq4.txt"

ctx_args=()
for c in ${GEMMASTEP_CONTEXTS:-512 131072}; do ctx_args+=(--context "$c"); done
stage "bench decode step ${ctx_args[*]}"
(cd "$root" && "$fb" bench --scenario '^gemma4-31b-decode-step$' "${ctx_args[@]}" \
  --min-seconds "${GEMMASTEP_MIN_SECONDS:-0.3}" --json "$out/decode.json") >"$out/decode.log" 2>&1 || status=1
tail -n 8 "$out/decode.log"

stage "profile decode step --context 512"
(cd "$root" && "$fb" profile '^gemma4-31b-decode-step$' --context 512 --json "$out/profile.json") \
  >"$out/profile.txt" 2>"$out/profile.log" || status=1
stage "done"

if [[ -f $out/decode.json ]]; then
  prof=()
  [[ -f $out/profile.json ]] && prof=(--profile "$out/profile.json")
  python3 "$root/scripts/step_profile_summary.py" --bench "$out/decode.json" "${prof[@]}" >"$out/summary.txt" ||
    status=1
  cat "$out/summary.txt"
fi
for f in "$out/decode.json" "$out/profile.json"; do [[ -f $f ]] && gzip -f "$f"; done
exit $status
