#!/usr/bin/env python3
"""Prints a compact table of a fusebench results JSON (plain or .gz): one line per case with the
hot/cold/b2b (back-to-back, per launch) medians, the achieved rate and % of the run's measured baselines. Filters by substring.

usage: scripts/summarize_results.py FILE [--kernel K] [--contains TEXT] [--variant V]
"""
import argparse
import gzip
import json
import sys


def load(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("--kernel", action="append", default=[])
    ap.add_argument("--contains", action="append", default=[])
    ap.add_argument("--variant", action="append", default=[])
    a = ap.parse_args()
    doc = load(a.file)
    base = doc.get("baselines") or {}
    dev = doc["env"]["device"]
    print(f"# {dev.get('name', 'no GPU')}: copy {base.get('copy_gbps', 0):.0f} GB/s, "
          f"bf16 GEMM {base.get('bf16_gemm_tflops', 0):.0f} TFLOP/s; git {doc['env']['git_sha'][:10]}")
    print(f"{'verdict':7} {'kernel':16} {'instance':44} {'variant':8} {'T':>5} {'ctx':>7} "
          f"{'hot us':>9} {'cold us':>9} {'b2b us':>9} {'GB/s':>7} {'%copy':>6} {'TFLOP/s':>8}")
    for c in doc["cases"]:
        inst = str(c["shape"].get("tensor", c["shape"].get("instance", c["shape"].get("check", ""))))
        line = f"{c['kernel']} {inst} {c['variant']}"
        if a.kernel and c["kernel"] not in a.kernel:
            continue
        if a.variant and c["variant"] not in a.variant:
            continue
        if a.contains and not all(t in line for t in a.contains):
            continue
        hot = c["hot"]["summary"]["median_ms"] * 1e3 if c.get("hot") else float("nan")
        cold = c["cold"]["summary"]["median_ms"] * 1e3 if c.get("cold") else float("nan")
        b2b = c["b2b"]["summary"]["median_ms"] * 1e3 if c.get("b2b") else float("nan")  # absent in old files
        gbs = c["bytes"] / (hot * 1e-6) / 1e9 if c.get("hot") and hot > 0 else float("nan")
        tfl = c["flops"] / (hot * 1e-6) / 1e12 if c.get("hot") and hot > 0 and c["flops"] else float("nan")
        pct = c.get("copy_roofline_pct") or float("nan")
        print(f"{c['verdict']:7} {c['kernel'][:16]:16} {inst[:44]:44} {c['variant'][:8]:8} {c['tokens']:>5} "
              f"{c['context']:>7} {hot:9.2f} {cold:9.2f} {b2b:9.2f} {gbs:7.0f} {pct:6.1f} {tfl:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
