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
gguf=${FUSEBENCH_STEP_GGUF:-$build/gemma4-31b-full.gguf}
if [[ ! -s $gguf ]]; then
  echo "step: making $gguf" >&2
  "$fb" make-model --model gemma4-31b --scale full --seed 1 -o "$gguf.tmp" 2>"$out/make-model.log"
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
python3 - "$out" >"$out/step-tok-s.txt" <<'PY'
import json, os, sys
out = sys.argv[1]
print(f"{'scenario':28} {'variant':8} {'T':>5} {'ctx':>7} {'median ms':>10} {'tok/s':>9} {'%copy':>6} verdict")
for name in ("step-tiny.json", "step-decode.json", "step-prefill.json"):
    path = os.path.join(out, name)
    if not os.path.exists(path):
        continue
    for c in json.load(open(path)).get("cases", []):
        if c["scenario"] == "builtin":  # check's built-in format/fusion rows: no step in them
            continue
        hot = c.get("hot") or {}
        med = (hot.get("summary") or {}).get("median_ms")
        tok = c.get("tok_s")
        pct = c.get("copy_roofline_pct")
        print(f"{c['scenario']:28} {c['variant']:8} {c['tokens']:>5} {c['context']:>7} "
              f"{'-' if med is None else f'{med:.3f}':>10} {'-' if tok is None else f'{tok:.1f}':>9} "
              f"{'-' if pct is None else f'{pct:.1f}':>6} {c['verdict']} {c.get('error', '')[:80]}")
PY
cat "$out/step-tok-s.txt"
for f in "$out"/step-*.json; do [[ -f $f ]] && gzip -f "$f"; done
exit $rc
