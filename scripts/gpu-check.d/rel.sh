#!/usr/bin/env bash
# gpu-check step: reliability on a real GPU (issue 7). Usage: rel.sh BUILD_DIR STEP_OUTDIR FUSEBENCH
#   1. device_guard_gpu_test: an injected CUDA error fails only its case, the run continues; a case
#      larger than free device memory is skipped with "needs X GiB, Y GiB free".
#   2. The same through the CLI: FUSEBENCH_INJECT_CUDA_ERROR=<kernel> `fusebench check` must exit 1
#      with that kernel's cases failed (CUDA's error text) and every other case passed;
#      FUSEBENCH_FAKE_FREE_DEVICE_BYTES=1 must skip every case with the sizes in the reason.
#   3. Determinism on the GPU: check twice with one seed, numerics bit-identical (check_determinism.py).
# About a minute. Exit 1 when any of them fails. (compute-sanitizer runs via gpu-check --sanitize.)
set -uo pipefail
build=${1:?BUILD_DIR}
out=${2:?STEP_OUTDIR}
fb=${3:?FUSEBENCH_BINARY}
here=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$out"
rc=0
scen=gemma4-31b-tiny-decode

exe=$(find "$build" -type f -name device_guard_gpu_test -perm -u+x | head -1)
if [[ -z $exe ]]; then
  echo "rel: device_guard_gpu_test not built"
  rc=1
else
  "$exe" >"$out/device_guard_gpu_test.log" 2>&1 || rc=1
  tail -4 "$out/device_guard_gpu_test.log"
fi

"$fb" check --no-builtin --scenario "$scen" --json "$out/clean.json" >"$out/clean.log" 2>&1 || rc=1
victim=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["cases"][0]["kernel"])' "$out/clean.json")
FUSEBENCH_INJECT_CUDA_ERROR=$victim "$fb" check --no-builtin --scenario "$scen" --json "$out/injected.json" \
  >"$out/injected.log" 2>&1
inj_rc=$?
python3 - "$out/clean.json" "$out/injected.json" "$victim" "$inj_rc" <<'PY' || rc=1
import json, sys
clean, hit = (json.load(open(p))["cases"] for p in sys.argv[1:3])
victim, code = sys.argv[3], int(sys.argv[4])
bad = []
if code != 1: bad.append(f"exit {code}, expected 1")
for c, h in zip(clean, hit):
    if h["kernel"] == victim and c["verdict"] != "skip":
        if h["verdict"] != "fail" or "cudaErrorInvalidValue" not in h["error"]:
            bad.append(f"{h['kernel']}/{h['variant']}: {h['verdict']} {h['error'][:120]}")
    elif h["verdict"] != c["verdict"]:
        bad.append(f"{h['kernel']}/{h['variant']}: {c['verdict']} -> {h['verdict']} after the injected error")
n_victim = sum(h["kernel"] == victim for h in hit)
print(f"rel: injected CUDA error into {victim}: {n_victim} cases failed with CUDA's text, "
      f"{len(hit) - n_victim} others unchanged" if not bad else "rel: injection: " + "; ".join(bad[:5]))
sys.exit(1 if bad else 0)
PY

FUSEBENCH_FAKE_FREE_DEVICE_BYTES=1 "$fb" check --no-builtin --scenario "$scen" --json "$out/nomem.json" \
  >"$out/nomem.log" 2>&1 || true
python3 - "$out/nomem.json" <<'PY' || rc=1
import json, sys
cases = json.load(open(sys.argv[1]))["cases"]
# Cases without a device path at this shape run their CPU twin (backend cpu-reference): they need no
# device memory and must run; every other case must be skipped with the sizes.
dev = [c for c in cases if c.get("backend") != "cpu-reference"]
cpu = [c for c in cases if c.get("backend") == "cpu-reference"]
bad = [c for c in dev if c["verdict"] != "skip" or "of device memory, 1 byte free" not in c["skip_reason"]]
bad += [c for c in cpu if c["verdict"] == "skip"]
print(f"rel: fake 1 byte free: {len(dev) - sum(c in bad for c in dev)}/{len(dev)} device cases skipped, e.g. "
      f"'{dev[0]['skip_reason'] if dev else ''}'; {len(cpu)} CPU-twin cases ran")
for c in bad[:5]:
    print(f"rel:   unexpected: {c['kernel']}/{c['variant']} ({c.get('backend')}): {c['verdict']} {c['skip_reason'][:100]}")
sys.exit(1 if bad or not dev else 0)
PY

python3 "$here/scripts/check_determinism.py" "$fb" "$out/determinism" --gpu --scenario "$scen" || rc=1
gzip -f "$out"/*.json 2>/dev/null
exit $rc
