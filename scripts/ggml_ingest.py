#!/usr/bin/env python3
"""Reads llama.cpp benchmark output by key, never by column position, and maps ggml's rows onto
fusebench cases by shape and type.

- llama-bench `-o json` (one array) and `-o jsonl` (one object per line): fields by name
  (n_prompt, n_gen, n_depth, avg_ts, stddev_ts, model_type, ...).
- test-backend-ops `perf` console lines: `OP(k=v,...): N runs - T us/run - ...`; the op's
  parameters are parsed as key=value pairs (brackets kept together).
- test-backend-ops `--output sql`: `INSERT INTO test_backend_ops (cols...) VALUES (...);` with the
  column list of each statement naming its values.

usage: scripts/ggml_ingest.py FILE   (prints what it read, one row per line, as JSON)
"""
import json
import re
import sys

PERF_LINE = re.compile(r"^\s*([A-Z_0-9]+)\((.*)\):\s+(\d+) runs\s+-\s+([0-9.]+) us/run\b")


def split_params(text):
    """'a=1,b=[1,2],c=x' -> {'a': '1', 'b': '[1,2]', 'c': 'x'} (commas inside brackets kept)."""
    out, depth, cur = {}, 0, ""
    for ch in text + ",":
        if ch == "," and depth == 0:
            if "=" in cur:
                k, v = cur.split("=", 1)
                out[k.strip()] = v.strip()
            cur = ""
            continue
        depth += ch == "["
        depth -= ch == "]"
        cur += ch
    return out


def _num(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        try:
            return float(v)
        except (TypeError, ValueError):
            return v


def parse_perf_console(text):
    rows = []
    for line in text.splitlines():
        m = PERF_LINE.match(line)
        if m:
            rows.append({"op": m.group(1), "params": split_params(m.group(2)), "runs": int(m.group(3)),
                         "us": float(m.group(4)), "source": "console"})
    return rows


def _sql_values(text, i):
    """Reads a SQL VALUES tuple starting after its '(' at text[i]: quoted strings ('' escapes a
    quote), numbers, NULL. Returns (values, index after the closing ')')."""
    vals, n = [], len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n,":
            i += 1
        elif ch == ")":
            return vals, i + 1
        elif ch == "'":
            j, buf = i + 1, []
            while j < n:
                if text[j] == "'" and j + 1 < n and text[j + 1] == "'":
                    buf.append("'")
                    j += 2
                elif text[j] == "'":
                    break
                else:
                    buf.append(text[j])
                    j += 1
            vals.append("".join(buf))
            i = j + 1
        else:
            j = i
            while j < n and text[j] not in ",)":
                j += 1
            tok = text[i:j].strip()
            vals.append(None if tok.upper() == "NULL" else _num(tok))
            i = j
    raise ValueError("unterminated VALUES list")


SQL_INSERT = re.compile(r"INSERT\s+INTO\s+(\w+)\s*\(([^)]*)\)\s*VALUES\s*\(", re.I)


def parse_perf_sql(text):
    rows, pos = [], 0
    while True:
        m = SQL_INSERT.search(text, pos)
        if not m:
            break
        vals, pos = _sql_values(text, m.end())
        if m.group(1) != "test_backend_ops":
            continue
        cols = [c.strip() for c in m.group(2).split(",")]
        if len(cols) != len(vals):
            raise ValueError(f"SQL row has {len(vals)} values for {len(cols)} columns: {m.group(0)[:120]}")
        rec = dict(zip(cols, vals))
        if rec.get("test_mode") not in (None, "perf") or rec.get("time_us") in (None, "", 0):
            continue
        if str(rec.get("supported", "1")).lower() in ("0", "false", "no"):
            continue
        rows.append({"op": rec["op_name"], "params": split_params(str(rec.get("op_params", ""))),
                     "runs": _num(rec.get("n_runs", 0)), "us": float(rec["time_us"]),
                     "backend": rec.get("backend_name"), "source": "sql"})
    return rows


def parse_ggml_perf(text):
    """test-backend-ops perf output, console or SQL (detected)."""
    return parse_perf_sql(text) if "INSERT INTO" in text.upper() else parse_perf_console(text)


def parse_llama_bench(text):
    """llama-bench -o json (array) or -o jsonl (object per line) -> list of dicts with test, depth, tok_s."""
    text = text.strip()
    if not text:
        return []
    records = json.loads(text) if text.startswith("[") else [json.loads(l) for l in text.splitlines() if l.strip()]
    out = []
    for r in records:
        n_prompt, n_gen, depth = int(r.get("n_prompt", 0)), int(r.get("n_gen", 0)), int(r.get("n_depth", 0))
        test = f"pp{n_prompt}" if n_gen == 0 else (f"tg{n_gen}" if n_prompt == 0 else f"pp{n_prompt}+tg{n_gen}")
        out.append({"test": test, "phase": "prefill" if n_gen == 0 else "decode", "n_prompt": n_prompt,
                    "n_gen": n_gen, "depth": depth, "tok_s": float(r["avg_ts"]),
                    "tok_s_sd": float(r.get("stddev_ts", 0.0)), "model": r.get("model_type", ""),
                    "flash_attn": r.get("flash_attn"), "type_k": r.get("type_k"), "gpu": r.get("gpu_info", "")})
    return out


# ---- mapping ggml rows to fusebench cases ------------------------------------------------------

def _ints(v):
    return [int(x) for x in re.findall(r"-?\d+", str(v))]


def ggml_key(row):
    """A shape key comparable with case_key(); None for ops with no fusebench counterpart."""
    p, op = row["params"], row["op"]
    if op == "MUL_MAT":
        return ("matmul", p.get("type_a"), int(p["m"]), int(p["k"]), int(p["n"]))
    if op == "FLASH_ATTN_EXT":
        nr = _ints(p.get("nr23", "[1,1]"))
        kv_heads = int(p["nh"])
        return ("attn", int(p["hsk"]), kv_heads, kv_heads * nr[0], int(p["kv"]), int(p["nb"]), p.get("type_K"))
    if op == "RMS_NORM":
        ne = _ints(p.get("ne", "[]"))
        return ("rms_norm", ne[0], ne[1] if len(ne) > 1 else 1)
    return None


def case_keys(case):
    """Every ggml key one of our cases corresponds to (several for attention: one per KV type)."""
    s, k, t = case.get("shape", {}), case["kernel"], case.get("tokens", 0)
    if k in ("matvec_w4a8", "gate_up_act") and "rows" in s:
        return [("matmul", s.get("type"), s["rows"], s["cols"], t)]
    if k in ("prefill_gemm", "lm_head_prefill") and "N" in s:
        return [("matmul", s.get("type"), s["N"], s["K"], s["M"])]
    if k == "tq4_sdpa":
        kv = case.get("context", 0)
        # ggml has no TurboQuant KV: its 4-bit KV (q4_0) is the like-for-like peer, f16 the fast path.
        return [("attn", s["head_dim"], s["n_kv_heads"], s["n_q_heads"], kv, t, ty) for ty in ("q4_0", "f16")]
    if k in ("swa_decode", "swa_prefill"):
        # A sliding window reads min(window, keys so far) keys: comparable with ggml only once full.
        if case.get("context", 0) < s["window"]:
            return []
        return [("attn", s["head_dim"], s["n_kv_heads"], s["n_q_heads"], s["window"], t, "f16")]
    if k == "rms_norm" and "cols" in s:
        return [("rms_norm", s["cols"], s.get("rows", 1))]
    return []


def match(cases, ggml_rows):
    """[(case, ggml_row)] for every case with a ggml row of the same key (first key that matches)."""
    by_key = {}
    for r in ggml_rows:
        key = ggml_key(r)
        if key is not None:
            by_key.setdefault(key, r)
    out = []
    for c in cases:
        for key in case_keys(c):
            if key in by_key:
                out.append((c, by_key[key], key))
    return out


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    text = open(sys.argv[1], encoding="utf-8").read()
    stripped = text.lstrip()
    rows = parse_llama_bench(text) if stripped.startswith(("[", "{")) else parse_ggml_perf(text)
    for r in rows:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
