#!/usr/bin/env python3
"""Where a whole decode step's time goes: step bench results + `fusebench profile` of the same step.

usage: step_profile_summary.py --bench BENCH.json[.gz] [--bench ...] [--profile PROFILE.json[.gz]] [--top N]

From the bench or check JSONs of whole-step cases: per scenario, variant, tokens and context the
graph-replay median, tok/s, % of the copy roofline, the launch count and the verdict (the tok/s
table scripts/gpu-check.d/step.sh and qwen.sh write; missing files are skipped). From the profile JSON (kind profile): per step case
the kernel time of the one eager step that `fusebench profile` attributes to NVTX ranges (the graph
replays that follow carry no ranges and are reported as "outside"), split into matvec / attention /
other by range name, the ranges with the most time, and the difference between that kernel sum and
the replay median of the same case: positive = launch gaps and idle time a replay still has,
negative = kernels overlapping (PDL) so durations add up to more than the wall time. An eager step
is not a replay (host launch overhead hides inside gaps, not inside kernel durations), so the split
is an estimate of where the time goes, not a second measurement.
Exit status: 0 printed a summary; 2 unreadable or mismatched input.
"""
import argparse
import gzip
import json
import os
import re
import sys
from collections import defaultdict


def load(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return json.load(f)


# NVTX range names of harness/step/gemma4_gpu_step.cpp (and qwen35_gpu_step.cpp) by kind of work.
MATVEC = re.compile(r"(_proj|_proj_part|_matvec|_gemm|lm_head|quantize_q8|_dequant|ssm_out)$|^moe_(gemm|down)")
ATTENTION = re.compile(r"^(tq4_|swa_|qwen_sdpa|sdpa)")


def category(range_name):
    if MATVEC.search(range_name):
        return "matvec+quantize"
    if ATTENTION.search(range_name):
        return "attention"
    return "norm/rope/elementwise/other"


CASE_RE = re.compile(r"\b(fused|unfused) ctx (\d+)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", required=True, action="append")
    ap.add_argument("--profile")
    ap.add_argument("--top", type=int, default=12)
    a = ap.parse_args()
    try:
        benches = [load(b) for b in a.bench if os.path.exists(b)]
        prof = load(a.profile) if a.profile else None
    except (OSError, ValueError) as e:
        print(f"step_profile_summary: {e}", file=sys.stderr)
        return 2

    replay = {}  # (scenario, variant, ctx) -> median ms
    print(f"{'scenario':30} {'variant':8} {'T':>5} {'ctx':>7} {'median ms':>10} {'tok/s':>9} {'%copy':>6} "
          f"{'launches':>8} verdict")
    for bench in benches:
        for c in bench.get("cases", []):
            if c.get("scenario") == "builtin":  # check's built-in format/fusion rows: no step in them
                continue
            med = ((c.get("hot") or {}).get("summary") or {}).get("median_ms")
            launches = (c.get("shape") or {}).get("launches")
            if med is not None:
                replay[(c["scenario"], c["variant"], int(c["context"]))] = med
            tok, pct = c.get("tok_s"), c.get("copy_roofline_pct")
            print(f"{c['scenario']:30} {c['variant']:8} {c['tokens']:>5} {c['context']:>7} "
                  f"{'-' if med is None else f'{med:.3f}':>10} {'-' if tok is None else f'{tok:.1f}':>9} "
                  f"{'-' if pct is None else f'{pct:.1f}':>6} {'-' if launches is None else launches:>8} "
                  f"{c['verdict']} {c.get('error', '')[:80]}")

    if prof is None:
        return 0
    groups = (prof.get("profile") or {}).get("groups")
    if groups is None:
        print("step_profile_summary: the profile file has no profile.groups", file=sys.stderr)
        return 2
    for g in groups:
        m = CASE_RE.search(g["name"])
        kernels = g.get("kernels", [])
        total_ms = g["gpu_ns"] / 1e6
        calls = sum(k["calls"] for k in kernels)
        print(f"\n{g['name']}")
        print(f"  one eager step: {calls} kernels, {total_ms:.3f} ms of kernel time in ranges "
              f"({g.get('outside_ranges_ns', 0) / 1e6:.1f} ms outside ranges: the graph replays)")
        key = (g["name"].split()[0], m.group(1), int(m.group(2))) if m else None
        if key in replay:
            med = replay[key]
            print(f"  replay median {med:.3f} ms - kernel sum {total_ms:.3f} ms = {med - total_ms:+.3f} ms "
                  f"({(med - total_ms) * 1e3 / max(calls, 1):+.2f} us per launch)")
        by_cat = defaultdict(lambda: [0, 0])
        by_range = defaultdict(lambda: [0, 0])
        for k in kernels:
            by_cat[category(k["range"])][0] += k["gpu_ns"]
            by_cat[category(k["range"])][1] += k["calls"]
            by_range[k["range"]][0] += k["gpu_ns"]
            by_range[k["range"]][1] += k["calls"]
        for name, (ns, n) in sorted(by_cat.items(), key=lambda x: -x[1][0]):
            share = 100.0 * ns / g["gpu_ns"] if g["gpu_ns"] else 0.0
            print(f"  {name:30} {ns / 1e6:8.3f} ms {share:5.1f}%  {n:5} kernels  {ns / 1e3 / max(n, 1):7.2f} us each")
        print("  top ranges:")
        for name, (ns, n) in sorted(by_range.items(), key=lambda x: -x[1][0])[: a.top]:
            share = 100.0 * ns / g["gpu_ns"] if g["gpu_ns"] else 0.0
            print(f"    {name:26} {ns / 1e6:8.3f} ms {share:5.1f}%  x{n:<5} {ns / 1e3 / max(n, 1):7.2f} us/call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
