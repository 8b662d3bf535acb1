#!/usr/bin/env python3
"""Offline sanity check of the regression gate on one real results file (no GPU): splits every
timing's kept samples into the first and second half of the run (time-separated) and compares
  A/A:  first half vs second half              (should flag nothing)
  A/B:  first half vs second half x (1+fraction) (should be SLOWER)
with `fusebench compare`. It sees within-run drift only, not run-to-run drift or a real injected
delay: scripts/calibrate-gate on a GPU is the calibration; this is a quick check of the rule on
real sample distributions (quantization, tails).

usage: scripts/gate-offline-check.py --fusebench BIN RESULTS.json[.gz] [--fraction 0.03] [-o OUT.md]
"""
import argparse
import collections
import copy
import gzip
import json
import os
import subprocess
import sys
import tempfile


def half(doc, first, scale=1.0):
    out = copy.deepcopy(doc)
    for c in out["cases"]:
        for m in ("hot", "cold"):
            t = c.get(m)
            if not t:
                continue
            s = t["samples"]
            n = len(s["ms"]) // 2
            for k in ("ms", "sm_clock_mhz", "throttled"):
                s[k] = s[k][:n] if first else s[k][n:2 * n]
            s["ms"] = [x * scale for x in s["ms"]]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fusebench", required=True)
    ap.add_argument("results")
    ap.add_argument("--fraction", type=float, default=0.03)
    ap.add_argument("-o", "--out")
    a = ap.parse_args()
    opener = gzip.open if a.results.endswith(".gz") else open
    with opener(a.results, "rt") as f:
        doc = json.load(f)
    counts = {}
    with tempfile.TemporaryDirectory() as d:
        paths = {}
        for name, first, scale in (("h1", True, 1.0), ("h2", False, 1.0), ("h2s", False, 1.0 + a.fraction)):
            paths[name] = os.path.join(d, name + ".json")
            with open(paths[name], "w") as f:
                json.dump(half(doc, first, scale), f)
        for label, other in (("A/A", "h2"), (f"+{100 * a.fraction:.0f} %", "h2s")):
            out = os.path.join(d, "cmp.json")
            p = subprocess.run([a.fusebench, "compare", paths["h1"], paths[other], "--json", out],
                               capture_output=True, text=True)
            if p.returncode not in (0, 1):
                sys.exit(f"compare failed ({p.returncode}): {p.stderr}")
            with open(out) as f:
                counts[label] = collections.Counter(r["change"] for r in json.load(f)["rows"])
    md = [f"# Gate offline check: `{os.path.basename(a.results)}` (first vs second half of each timing)", "",
          "| comparison | SLOWER | FASTER | SAME | UNSURE |", "|---|---:|---:|---:|---:|"]
    for label, c in counts.items():
        md.append(f"| {label} | {c['SLOWER']} | {c['FASTER']} | {c['SAME']} | {c['UNSURE']} |")
    md += ["", "Within-run halves only: the GPU calibration (scripts/calibrate-gate) adds run-to-run drift and a real "
           "injected delay."]
    text = "\n".join(md) + "\n"
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
