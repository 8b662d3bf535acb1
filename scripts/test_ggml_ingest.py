#!/usr/bin/env python3
"""Tests of scripts/ggml_ingest.py and scripts/fusebench_report.py: llama.cpp formats read by key
(columns reordered on purpose), shape/type matching, and a report end to end on a synthetic results
file (plots checked when matplotlib is importable)."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ggml_ingest as gi  # noqa: E402

CONSOLE = """\
  MUL_MAT(type_a=q4_K,type_b=f32,m=43008,n=1,k=5376,bs=[1,1],nr=[1,1],per=[0,1,2,3],k_v=0,o=1,src_overlap=0):                  14973 runs -    67.40 us/run - 462.42 MFLOP/run -   6.86 TFLOPS
  FLASH_ATTN_EXT(hsk=512,hsv=512,nh=4,nr23=[8,1],kv=8192,nb=1,mask=1,type_K=q4_0,type_V=q4_0,permute=[0,1,2,3]):                   8415 runs -   120.88 us/run - 536.87 MFLOP/run -   4.44 TFLOPS
  RMS_NORM(type=f32,ne=[5376,1,1,1],v=0,eps=0.000001,inplace=0):              303067 runs -     3.35 us/run -       42 kB/run -   11.97 GB/s
  Backend CUDA0: OK
"""

# Columns deliberately not in llama.cpp's order, and a quote inside a string: read by key.
SQL = """CREATE TABLE IF NOT EXISTS test_backend_ops (test_time TEXT, op_name TEXT, time_us REAL);
INSERT INTO test_backend_ops (time_us, op_name, test_mode, op_params, backend_name, supported, n_runs, error_message) VALUES (67.4, 'MUL_MAT', 'perf', 'type_a=q4_K,type_b=f32,m=43008,n=1,k=5376,bs=[1,1]', 'CUDA0', 1, 14973, 'it''s fine');
INSERT INTO test_backend_ops (op_name, time_us, test_mode, op_params, supported) VALUES ('MUL_MAT', 0, 'perf', 'type_a=q6_K,m=1,n=1,k=1', 0);
"""

LLAMA_JSON = json.dumps([
    {"avg_ts": 41.5, "n_gen": 128, "n_prompt": 0, "n_depth": 8192, "stddev_ts": 0.2, "model_type": "gemma4 31B Q4_K_M"},
    {"n_prompt": 512, "avg_ts": 2900.0, "n_gen": 0, "n_depth": 0, "stddev_ts": 10, "model_type": "gemma4 31B Q4_K_M"},
])


def matvec_case(rows, cols, t, ms, variant="fused", layout="coalesced_u8"):
    return {"scenario": "gemma4-31b-decode", "kernel": "matvec_w4a8", "variant": variant, "layout": layout,
            "backend": "cuda", "tokens": t, "context": 0, "seed": 1, "verdict": "pass",
            "shape": {"rows": rows, "cols": cols, "type": "q4_K", "tensor": f"x@{rows}x{cols}"},
            "hot": {"summary": {"median_ms": ms}}, "cold": None, "copy_roofline_pct": 50.0, "tok_s": None}


def attn_case(ctx, ms):
    return {"scenario": "gemma4-31b-decode", "kernel": "tq4_sdpa", "variant": "fused", "layout": "tq4",
            "backend": "cuda", "tokens": 1, "context": ctx, "seed": 1, "verdict": "pass",
            "shape": {"head_dim": 512, "n_kv_heads": 4, "n_q_heads": 32}, "hot": {"summary": {"median_ms": ms}},
            "cold": None, "copy_roofline_pct": 5.0, "tok_s": None}


class Formats(unittest.TestCase):
    def test_console(self):
        rows = gi.parse_ggml_perf(CONSOLE)
        self.assertEqual([r["op"] for r in rows], ["MUL_MAT", "FLASH_ATTN_EXT", "RMS_NORM"])
        self.assertEqual(rows[0]["params"]["m"], "43008")
        self.assertEqual(rows[0]["params"]["bs"], "[1,1]")
        self.assertAlmostEqual(rows[1]["us"], 120.88)

    def test_sql_by_key(self):
        rows = gi.parse_ggml_perf(SQL)
        self.assertEqual(len(rows), 1)  # the unsupported row is left out
        self.assertEqual(rows[0]["op"], "MUL_MAT")
        self.assertAlmostEqual(rows[0]["us"], 67.4)
        self.assertEqual(rows[0]["runs"], 14973)
        self.assertEqual(gi.ggml_key(rows[0]), ("matmul", "q4_K", 43008, 5376, 1))

    def test_llama_bench_json_and_jsonl(self):
        rows = gi.parse_llama_bench(LLAMA_JSON)
        self.assertEqual([r["test"] for r in rows], ["tg128", "pp512"])
        self.assertEqual(rows[0]["depth"], 8192)
        jsonl = "\n".join(json.dumps(r) for r in json.loads(LLAMA_JSON))
        self.assertEqual(gi.parse_llama_bench(jsonl), rows)

    def test_matching_by_shape_and_type(self):
        ggml = gi.parse_ggml_perf(CONSOLE)
        cases = [matvec_case(43008, 5376, 1, 0.05), matvec_case(43008, 5376, 4, 0.07), attn_case(8192, 0.15)]
        m = gi.match(cases, ggml)
        self.assertEqual(len(m), 2)
        self.assertEqual(m[0][1]["op"], "MUL_MAT")
        self.assertEqual(m[1][1]["params"]["type_K"], "q4_0")


class Report(unittest.TestCase):
    def test_llama_peer_nearest_depth_and_prompt_length(self):
        import fusebench_report as fr
        rows = [{"phase": "prefill", "n_prompt": 512, "depth": 0, "tok_s": 1.0},
                {"phase": "prefill", "n_prompt": 2048, "depth": 0, "tok_s": 2.0},
                {"phase": "decode", "n_prompt": 0, "depth": 8000, "tok_s": 4.0},
                {"phase": "decode", "n_prompt": 0, "depth": 8192, "tok_s": 3.0}]
        self.assertEqual(fr.llama_peer(rows, "prefill", 2048, 0)["tok_s"], 2.0)  # not the first pp row
        self.assertEqual(fr.llama_peer(rows, "decode", 1, 8192)["tok_s"], 3.0)   # nearest, not the first
        self.assertIsNone(fr.llama_peer(rows, "decode", 1, 512))

    def test_end_to_end(self):
        doc = {"schema": "fusebench-results", "schema_version": 1, "kind": "bench",
               "env": {"device": {"name": "NVIDIA H200"}, "git_sha": "0123456789abcdef", "git_dirty": False,
                       "started_utc": "2026-11-21T23:57:43.180Z"},
               "cases": [matvec_case(43008, 5376, 1, 0.045), matvec_case(43008, 5376, 1, 0.050, "unfused"),
                         attn_case(8192, 0.15), attn_case(32768, 0.23)]}
        with tempfile.TemporaryDirectory() as d:
            res = os.path.join(d, "bench.json")
            perf = os.path.join(d, "perf.txt")
            llama = os.path.join(d, "llama.json")
            for path, text in ((res, json.dumps(doc)), (perf, CONSOLE), (llama, LLAMA_JSON)):
                with open(path, "w") as f:
                    f.write(text)
            out = os.path.join(d, "out")
            subprocess.run([sys.executable, os.path.join(HERE, "fusebench_report.py"), res, "--ggml-perf", perf,
                            "--llama-bench", llama, "-o", out], check=True)
            with open(os.path.join(out, "report.md")) as f:
                md = f.read()
            self.assertIn("| ctx |", md.replace("| T | ctx |", "| ctx |"))
            self.assertIn("| matvec_w4a8 | x@43008x5376 | 1 |", md)
            self.assertIn("1.50×", md)  # ggml 67.4 us / ours 45 us
            with open(os.path.join(out, "report.json")) as f:
                data = json.load(f)
            self.assertEqual(len(data["kernels"]), 2)
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                return
            for png in ("kernel_time_vs_context.png", "ratio_vs_ggml.png", "kernel_share.png"):
                with open(os.path.join(out, png), "rb") as f:
                    self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n", png)


if __name__ == "__main__":
    unittest.main()
