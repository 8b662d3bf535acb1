#!/usr/bin/env python3
"""Test of scripts/calibrate-gate --reanalyze with the built `fusebench compare`, on synthetic runs
made from the schema's example bench file: 2 clean and 2 injected runs of three cases (4 us,
40 us, 200 us). The 4 us case moves by 8 % (0.32 us) between the clean runs, as rms_norm did on
the H200. That shift is below the 0.5 us timer resolution, so it must not count as an A/A flag; a
0.25 us floor would flag it. The injected runs add 3 % to the 40 and
200 us cases (feasible trials, caught). On the 4 us case they add 1.5 us: an inflated launch,
not feasible, below the resolution at 3 %.

usage: scripts/test_calibrate_gate.py FUSEBENCH_BINARY
"""
import copy
import gzip
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FUSEBENCH = None
CASES = (("tiny", 0.004), ("mid", 0.040), ("big", 0.200))  # name, median ms


def samples(rng, center, n=200):
    ms = [rng.gauss(center, center * 0.002) for _ in range(n)]
    return {"ms": ms, "sm_clock_mhz": [1980] * n, "throttled": [False] * n}


def summary(ms):
    q = statistics.quantiles(ms, n=4)
    return {"n": len(ms), "throttled": 0, "median_ms": statistics.median(ms), "p25_ms": q[0], "p75_ms": q[2],
            "iqr_ms": q[2] - q[0], "min_ms": min(ms), "max_ms": max(ms), "mean_ms": statistics.fmean(ms)}


def run_doc(template, rng, centers, injected):
    doc = copy.deepcopy(template)
    doc["env"]["device"]["name"] = "NVIDIA H200"
    doc["env"]["argv"] = ["fusebench", "bench", "--no-cold", "--min-seconds", "0.03", "--scenario", "s",
                          "--tokens", "1"]
    if injected:
        doc["env"]["injected_slowdown"] = 0.03
    proto = doc["cases"][0]
    doc["cases"] = []
    for (name, _), center in zip(CASES, centers):
        c = copy.deepcopy(proto)
        c["repro"] = f"fusebench bench --instance '{name}'"
        c["hot"]["samples"] = samples(rng, center)
        c["hot"]["summary"] = summary(c["hot"]["samples"]["ms"])
        c["cold"] = None
        doc["cases"].append(c)
    return doc


def write_gz(path, text):
    with gzip.open(path, "wt") as f:
        f.write(text)


class Reanalyze(unittest.TestCase):
    def test_rates_and_resolution(self):
        with open(os.path.join(ROOT, "results", "schema", "examples", "example-bench.json")) as f:
            template = json.load(f)
        rng = random.Random(5)
        with tempfile.TemporaryDirectory() as d:
            raw = os.path.join(d, "raw")
            os.makedirs(raw)
            base = [m for _, m in CASES]
            clean = [base, [base[0] * 1.08, base[1], base[2]]]  # sub-resolution A/A shift of the 4 us case
            for k, centers in enumerate(clean, 1):
                write_gz(os.path.join(raw, f"clean-{k}.json.gz"), json.dumps(run_doc(template, rng, centers, False)))
                inj = [centers[0] + 0.0015, centers[1] * 1.03, centers[2] * 1.03]
                write_gz(os.path.join(raw, f"inject-{k}.json.gz"), json.dumps(run_doc(template, rng, inj, True)))
                stderr = "".join(f"[{i + 1}/3] s k {name}\ninject: work 1 us, launch cost 1 us, spin 0 us, "
                                 f"effective fraction {0.375 if name == 'tiny' else 0.03:.4f}\n"
                                 for i, (name, _) in enumerate(CASES))
                write_gz(os.path.join(raw, f"inject-{k}.json.log.gz"), "table\n\n--- stderr ---\n" + stderr)
            out = os.path.join(d, "out")
            p = subprocess.run([sys.executable, os.path.join(HERE, "calibrate-gate"), "--fusebench", FUSEBENCH,
                                "-o", out, "--reanalyze", raw, "--jobs", "2"], capture_output=True, text=True)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            with open(os.path.join(out, "calibration.json")) as f:
                r = json.load(f)
            self.assertEqual(r["judged"]["mode"], "reanalysis")
            self.assertAlmostEqual(r["judged"]["options"]["resolution_ms"], 0.0005)
            self.assertEqual(r["aa"]["compared"], 3)
            self.assertEqual(r["aa"]["flagged"], 0)
            self.assertEqual(r["aa"]["unsure"], 1)  # the 4 us case's 0.32 us shift, +8 %
            self.assertEqual(r["inject"]["trials"], 6)
            self.assertEqual(r["inject"]["feasible_trials"], 4)  # mid and big, both runs
            self.assertEqual(r["inject"]["caught_feasible"], 4)
            self.assertEqual(r["inject"]["below_resolution_trials"], 2)
            self.assertEqual(r["inject"]["below_resolution_cases"], 1)
            self.assertEqual(r["min_seconds"], 0.03)
            self.assertEqual(r["selection"]["scenario"], ["s"])
            by_res = {x["resolution_us"]: x for x in r["sensitivity"]["resolution_us"]}
            self.assertAlmostEqual(by_res[0.25]["aa_flag_rate"], 1 / 3)  # the 0.32 us shift is above 0.25 us
            self.assertEqual(by_res[0.5]["aa_flag_rate"], 0)
            # 3 % of 40 us is 1.2 us: still feasible at a 1 us floor; the 4 us case is below every floor.
            self.assertEqual(by_res[1.0]["trials_below_resolution"], 2)
            self.assertEqual(by_res[1.0]["feasible_trials"], 4)
            with open(os.path.join(out, "calibration.md")) as f:
                md = f.read()
            self.assertIn("re-judged afterwards, without a GPU", md)
            self.assertIn("Sensitivity to the timer resolution", md)
            self.assertTrue(os.path.exists(os.path.join(out, "compare", "compare-aa-1.json")))


if __name__ == "__main__":
    if len(sys.argv) < 2 or not os.access(sys.argv[1], os.X_OK):
        sys.exit("usage: scripts/test_calibrate_gate.py FUSEBENCH_BINARY")
    FUSEBENCH = sys.argv.pop(1)
    unittest.main()
