#!/usr/bin/env python3
"""Same seed, same numerics: runs `fusebench check` twice on a tiny scenario with one seed and
compares every case's numerics fields in the two results files (verdicts, shapes, bytes, flops and
each comparison's metrics and tolerance), which must be identical to the bit; then once with another
seed, whose metrics must differ somewhere (otherwise the comparison would prove nothing).

usage: check_determinism.py FUSEBENCH WORKDIR [--gpu] [--scenario NAME] [--seed S]
Without --gpu the run is --cpu-only (CI); exit 0 identical, 1 a difference (printed), 2 usage/run error.
"""
import argparse
import json
import os
import subprocess
import sys

NUMERIC_FIELDS = ("scenario", "kernel", "variant", "layout", "backend", "tokens", "context", "seed",
                  "shape", "verdict", "skip_reason", "error", "bytes", "flops", "comparisons")


def die(msg):
    """Exit 2, not sys.exit(msg)'s 1: 1 means "numerics differ" and must not hide a failed run."""
    print(msg, file=sys.stderr)
    sys.exit(2)


def run(fb, out, scenario, seed, gpu):
    cmd = [fb, "check", "--no-builtin", "--scenario", scenario, "--seed", str(seed), "--json", out]
    if not gpu:
        cmd.append("--cpu-only")
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as e:
        die(f"check_determinism: cannot run {fb}: {e}")
    if p.returncode not in (0, 1):  # 1 = a case failed: still a results file to compare
        sys.stderr.write(p.stdout)
        die(f"check_determinism: {' '.join(cmd)} exited {p.returncode}")
    try:
        with open(out, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        sys.stderr.write(p.stdout)
        die(f"check_determinism: {' '.join(cmd)} exited {p.returncode} without a readable results file: {e}")
    return [{k: c.get(k) for k in NUMERIC_FIELDS} for c in doc["cases"]]


def first_difference(a, b, path=""):
    if type(a) is not type(b):
        return f"{path}: {a!r} != {b!r}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            d = first_difference(a.get(k), b.get(k), f"{path}/{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_difference(x, y, f"{path}/{i}")
            if d:
                return d
        return None
    # Floats parsed from the same decimal text are the same double; a repr difference is a bit difference.
    return None if repr(a) == repr(b) else f"{path}: {a!r} != {b!r}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("fusebench")
    ap.add_argument("workdir")
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--scenario", default="gemma4-31b-tiny-decode")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    first = run(a.fusebench, os.path.join(a.workdir, "det-a.json"), a.scenario, a.seed, a.gpu)
    second = run(a.fusebench, os.path.join(a.workdir, "det-b.json"), a.scenario, a.seed, a.gpu)
    other = run(a.fusebench, os.path.join(a.workdir, "det-c.json"), a.scenario, a.seed + 1, a.gpu)
    if not first:
        die("check_determinism: the scenario produced no cases")
    diff = first_difference(first, second, "/cases")
    if diff:
        print(f"check_determinism: seed {a.seed} twice gave different numerics: {diff}")
        return 1
    strip = lambda cases: [c["comparisons"] for c in cases]
    if first_difference(strip(first), strip(other)) is None:
        print(f"check_determinism: seeds {a.seed} and {a.seed + 1} gave identical metrics: the inputs ignore the seed")
        return 1
    print(f"check_determinism: {len(first)} cases bit-identical across two runs with seed {a.seed} "
          f"({'gpu' if a.gpu else 'cpu-only'}); seed {a.seed + 1} differs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
