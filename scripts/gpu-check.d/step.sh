#!/usr/bin/env bash
# gpu-check step: whole gemma4-31b decode and prefill steps (DESIGN §3 "Whole steps").
# Usage: step.sh BUILD_DIR STEP_OUTDIR FUSEBENCH_BINARY
# Makes the full synthetic GGUF once (cached in BUILD_DIR, ~17.4 GiB, ~1.5 min on 16 cores), then
#   1. the tiny step scenarios (GPU step vs the fp64 CPU step, fused vs unfused),
#   2. decode at 512 .. 128K, fused and unfused, timed as CUDA-graph replays,
#   3. prefill T = 512 at 512 .. 128K (STEP_PREFILL_TOKENS to change),
# and writes gzip'd results JSON plus step-tok-s.txt (tok/s per case).
set -euo pipefail
build=${1:?BUILD_DIR}
out=${2:?STEP_OUTDIR}
fb=${3:?FUSEBENCH_BINARY}
mkdir -p "$out"
# Block-sampled weights by default (make-model --weights; ~20 s instead of ~5 min): timing and the
# fused-vs-unfused checks need identical valid weights, not every row quantized. GEMMA_WEIGHTS=quantized
# for the fully quantized model.
weights=${GEMMA_WEIGHTS:-block-sampled}
gguf=${FUSEBENCH_STEP_GGUF:-$build/gemma4-31b-full-$weights.gguf}
if [[ ! -s $gguf ]]; then
  echo "step: making $gguf" >&2
  "$fb" make-model --model gemma4-31b --scale full --weights "$weights" --seed 1 -o "$gguf.tmp" 2>"$out/make-model.log"
  mv "$gguf.tmp" "$gguf"
fi
export FUSEBENCH_STEP_GGUF=$gguf
min_s=${STEP_MIN_SECONDS:-0.3}
rc=0
"$fb" check --scenario 'gemma4-31b-tiny-.*-step' --json "$out/step-tiny.json" \
  >"$out/step-tiny.log" 2>&1 || rc=1
"$fb" bench --scenario gemma4-31b-decode-step --min-seconds "$min_s" --json "$out/step-decode.json" \
  >"$out/step-decode.log" 2>&1 || rc=1
"$fb" bench --scenario gemma4-31b-prefill-step --tokens "${STEP_PREFILL_TOKENS:-512}" --min-seconds "$min_s" \
  --json "$out/step-prefill.json" >"$out/step-prefill.log" 2>&1 || rc=1
python3 "$(dirname "${BASH_SOURCE[0]}")/../step_profile_summary.py" --bench "$out/step-tiny.json" \
  --bench "$out/step-decode.json" --bench "$out/step-prefill.json" >"$out/step-tok-s.txt" || rc=1
cat "$out/step-tok-s.txt"
for f in "$out"/step-*.json; do [[ -f $f ]] && gzip -f "$f"; done
exit $rc
