#!/usr/bin/env python3
"""Markdown report + PNG plots from fusebench results JSON (plain or .gz), optionally against
llama.cpp: llama-bench JSON/JSONL and test-backend-ops perf output (console or --output sql), all
read by key (scripts/ggml_ingest.py). `fusebench report` runs this script.

Writes DIR/report.md, DIR/report.json (the tables' data) and, when matplotlib is importable,
DIR/tok_s_vs_context.png (or kernel time vs context while no step results exist),
DIR/kernel_share.png and DIR/ratio_vs_ggml.png.

usage: scripts/fusebench_report.py RESULTS... [--llama-bench F]... [--ggml-perf F]... -o DIR [--no-plots]
"""
import argparse
import gzip
import json
import os
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ggml_ingest  # noqa: E402


def load(path):
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError, EOFError) as e:  # missing, bad gzip, not JSON: one line, not a traceback
        raise SystemExit(f"{path}: cannot read results: {e}")
    if not isinstance(doc, dict) or doc.get("schema") != "fusebench-results":
        raise SystemExit(f"{path}: not a fusebench results document")
    return doc


def hot_us(c):
    return c["hot"]["summary"]["median_ms"] * 1e3 if c.get("hot") else None


def instance(c):
    s = c.get("shape", {})
    name = s.get("tensor") or s.get("id") or s.get("instance")
    if not name and "head_dim" in s:
        name = f"{s.get('n_q_heads')}q/{s.get('n_kv_heads')}kv x{s['head_dim']}"
    return str(name or "")


def fmt_us(v):
    return "–" if v is None else (f"{v:.1f} µs" if v < 1000 else f"{v / 1e3:.2f} ms")


def fmt_pct(v):
    return "–" if v is None else f"{v:.1f}%"


def best(cases):
    """Fastest case (hot median) among layouts; None if none timed. A layout holding the weights as
    pre-dequantized bf16 (4x the bytes of the quantized model) is taken only when it is the only one:
    it is not the same memory budget as a quantized kernel."""
    timed = [c for c in cases if hot_us(c) is not None and c.get("verdict") == "pass"]
    if any(c["layout"] != "bf16" for c in timed):
        timed = [c for c in timed if c["layout"] != "bf16"]
    return min(timed, key=hot_us) if timed else None


def fused_and_unfused(group):
    fused = best([c for c in group if c["variant"] in ("fused", "single", "default", "chunked")])
    unfused = best([c for c in group if c["variant"] == "unfused"])
    return fused, unfused


def llama_peer(llama, phase, tokens, ctx):
    """The llama-bench row for a step: same phase, depth within max(64, ctx/16) and the nearest one;
    for prefill the same prompt length when such a row exists (pp tok/s depends on it)."""
    rows = [r for r in llama if r["phase"] == phase and abs(r["depth"] - ctx) <= max(64, ctx // 16)]
    if phase == "prefill" and any(r["n_prompt"] == tokens for r in rows):
        rows = [r for r in rows if r["n_prompt"] == tokens]
    return min(rows, key=lambda r: abs(r["depth"] - ctx), default=None)


def step_table(cases, llama):
    """ctx | fused | unfused | llama.cpp | roofline for step cases (tok_s set)."""
    steps = [c for c in cases if c.get("tok_s")]
    out = []
    groups = defaultdict(list)
    for c in steps:
        groups[(c["scenario"], c["tokens"], c["context"])].append(c)
    for (scen, t, ctx), grp in sorted(groups.items()):
        fused = max((c for c in grp if c["variant"] != "unfused"), key=lambda c: c["tok_s"], default=None)
        unfused = max((c for c in grp if c["variant"] == "unfused"), key=lambda c: c["tok_s"], default=None)
        phase = "prefill" if "prefill" in scen else "decode"
        ll = llama_peer(llama, phase, t, ctx)
        out.append({"scenario": scen, "tokens": t, "context": ctx,
                    "fused_tok_s": fused["tok_s"] if fused else None,
                    "unfused_tok_s": unfused["tok_s"] if unfused else None,
                    "llama_tok_s": ll["tok_s"] if ll else None,
                    "roofline_pct": fused.get("copy_roofline_pct") if fused else None})
    return out


def context_table(cases, ggml_by_case):
    """Kernels whose work depends on the context: time per ctx (fallback while no steps exist)."""
    groups = defaultdict(list)
    for c in cases:
        if c.get("context") and c.get("hot") and not c.get("tok_s"):
            groups[(c["scenario"], c["kernel"], instance(c), c["tokens"], c["context"])].append(c)
    out = []
    for (scen, kern, inst, t, ctx), grp in sorted(groups.items()):
        fused, unfused = fused_and_unfused(grp)
        g = ggml_by_case.get(id(fused)) if fused else None
        out.append({"scenario": scen, "kernel": kern, "instance": inst, "tokens": t, "context": ctx,
                    "fused_us": hot_us(fused) if fused else None, "unfused_us": hot_us(unfused) if unfused else None,
                    "ggml_us": g["us"] if g else None, "ggml_what": g["what"] if g else "",
                    "roofline_pct": fused.get("copy_roofline_pct") if fused else None})
    return out


def describe_ggml(row, key):
    p = row["params"]
    if row["op"] == "MUL_MAT":
        return f"MUL_MAT {p.get('type_a')} m={p['m']} n={p['n']} k={p['k']}"
    if row["op"] == "FLASH_ATTN_EXT":
        return f"FLASH_ATTN_EXT hs={p['hsk']} kv={p['kv']} nb={p['nb']} K={p.get('type_K')}"
    return f"{row['op']} {','.join(f'{k}={v}' for k, v in list(p.items())[:3])}"


def kernel_table(cases, ggml_rows):
    """Per kernel instance: ours (best layout, fused and unfused) vs the ggml row of the same shape."""
    matches = ggml_ingest.match(cases, ggml_rows)
    first = {}
    for c, row, key in matches:
        first.setdefault(id(c), (row, key))
    groups = defaultdict(list)
    for c in cases:
        if id(c) in first:
            groups[(c["scenario"], c["kernel"], instance(c), c["tokens"], c["context"])].append(c)
    rows, ggml_by_case = [], {}
    for (scen, kern, inst, t, ctx), grp in sorted(groups.items()):
        fused, unfused = fused_and_unfused(grp)
        if fused is None:
            continue
        row, key = first[id(fused)] if id(fused) in first else first[id(grp[0])]
        ggml_by_case[id(fused)] = {"us": row["us"], "what": describe_ggml(row, key)}
        ours = hot_us(fused)
        rows.append({"scenario": scen, "kernel": kern, "instance": inst, "tokens": t, "context": ctx,
                     "layout": fused["layout"], "variant": fused["variant"], "ours_us": ours,
                     "unfused_us": hot_us(unfused) if unfused else None, "ggml_us": row["us"],
                     "ggml": describe_ggml(row, key), "speedup": row["us"] / ours if ours else None})
    return rows, ggml_by_case


def share_table(docs):
    out = []
    for path, doc in docs:
        for g in (doc.get("profile") or {}).get("groups", []):
            for k in g["kernels"]:
                out.append({"file": os.path.basename(path), "group": g["name"], "range": k["range"],
                            "kernel": k["kernel"], "share_pct": k["share_pct"], "calls": k["calls"],
                            "us_per_call": k["gpu_ns"] / 1e3 / max(1, k["calls"])})
    return out


def bench_share(cases):
    """Without a profile: each kernel's share of the summed fused-case times of one decode scenario
    at T=1 and the smallest context (a sum of isolated kernel timings, not a profiled step)."""
    dec = [c for c in cases if c.get("hot") and c["tokens"] == 1 and "decode" in c["scenario"]]
    if not dec:
        return []
    ctxs = sorted({c["context"] for c in dec if c["context"]})
    ctx = ctxs[0] if ctxs else 0
    per = defaultdict(float)
    seen = set()
    for c in dec:
        if c["context"] not in (0, ctx) or c["variant"] == "unfused":
            continue
        key = (c["kernel"], instance(c))
        grp = [d for d in dec if (d["kernel"], instance(d)) == key and d["context"] in (0, ctx)
               and d["variant"] == c["variant"]]
        if key in seen:
            continue
        seen.add(key)
        b = best(grp)
        if b:
            per[c["kernel"]] += hot_us(b)
    total = sum(per.values())
    return [{"kernel": k, "share_pct": 100 * v / total, "us": v} for k, v in sorted(per.items(), key=lambda x: -x[1])]


def plots(outdir, steps, ctx_rows, kernels, shares, bshare):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["matplotlib is not installed: no plots (pip install matplotlib)"]
    made = []
    fig, ax = plt.subplots(figsize=(8, 5))
    if steps:
        by = defaultdict(list)
        for r in steps:
            by[(r["scenario"], r["tokens"])].append(r)
        for (scen, t), rs in sorted(by.items()):
            rs.sort(key=lambda r: r["context"])
            x = [r["context"] for r in rs]
            for col, style, lab in (("fused_tok_s", "-o", "fused"), ("unfused_tok_s", "--s", "unfused"),
                                    ("llama_tok_s", ":^", "llama.cpp")):
                y = [r[col] for r in rs]
                if any(v is not None for v in y):
                    ax.plot(x, [v if v is not None else float("nan") for v in y], style, label=f"{scen} T={t} {lab}")
        ax.set_ylabel("tokens/s")
        ax.set_title("Decode/prefill throughput vs context")
        name = "tok_s_vs_context.png"
    else:
        by = defaultdict(list)
        for r in ctx_rows:
            by[(r["kernel"], r["instance"], r["tokens"])].append(r)
        for (kern, inst, t), rs in sorted(by.items()):
            rs.sort(key=lambda r: r["context"])
            x = [r["context"] for r in rs]
            ax.plot(x, [r["fused_us"] for r in rs], "-o", label=f"{kern} T={t} (fusebench)")
            with_ggml = [r for r in rs if r["ggml_us"]]
            if with_ggml:
                ax.plot(x, [r["ggml_us"] or float("nan") for r in rs], ":^",
                        label=f"{kern} T={t} (ggml, {with_ggml[0]['ggml_what'].split()[-1]})")
        ax.set_ylabel("kernel time (µs, hot median)")
        ax.set_title("Kernel time vs context (no whole-step results yet)")
        name = "kernel_time_vs_context.png"
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("context (tokens)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, name), dpi=110)
    plt.close(fig)
    made.append(name)

    data = shares or bshare
    if data:
        if shares:
            # The group with the most kernels: a whole step, not a one-kernel case (which is 100 %).
            counts = {}
            for r in shares:
                counts[r["group"]] = counts.get(r["group"], 0) + 1
            grp = max(counts, key=counts.get)  # ties: the first group, as max keeps the first
            items = [(f"{r['range']}: {r['kernel']}"[:60], r["share_pct"]) for r in shares if r["group"] == grp]
            title = f"Per-kernel share (CUPTI profile): {grp}"
        else:
            items = [(r["kernel"], r["share_pct"]) for r in bshare]
            title = ("Share of summed isolated decode kernel times per kernel family (T=1, every instance once;\n"
                     "bench timings, not a profiled step: alternatives such as gate_up_act vs matvec both count)")
        items = items[:15][::-1]
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(items) + 1.5))
        ax.barh([k for k, _ in items], [v for _, v in items], color="#4c72b0")
        for i, (_, v) in enumerate(items):
            ax.text(v, i, f" {v:.1f}%", va="center", fontsize=8)
        ax.set_xlabel("% of kernel time")
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        fig.savefig(os.path.join(outdir, "kernel_share.png"), dpi=110)
        plt.close(fig)
        made.append("kernel_share.png")

    if kernels:
        ks = sorted(kernels, key=lambda r: r["speedup"])
        labels = [f"{r['kernel']} {r['instance'] or ''} T={r['tokens']}" + (f" ctx={r['context']}" if r["context"] else "") for r in ks]
        fig, ax = plt.subplots(figsize=(9, 0.28 * len(ks) + 1.5))
        colors = ["#55a868" if r["speedup"] >= 1 else "#c44e52" for r in ks]
        # Bars grow from 1x (parity), left for slower, right for faster: a bar from the axis edge
        # would make a 0.6x kernel look like a small speed-up on the log scale.
        ax.barh(range(len(ks)), [r["speedup"] - 1.0 for r in ks], left=1.0, color=colors)
        ax.set_yticks(range(len(ks)))
        ax.set_yticklabels(labels, fontsize=6)
        ax.axvline(1.0, color="black", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("speed-up vs ggml (ggml time / fusebench time; > 1: fusebench faster)")
        ax.set_title("fusebench vs ggml CUDA kernels at the same shapes")
        fig.subplots_adjust(left=0.34, right=0.97, top=1 - 0.5 / fig.get_figheight(), bottom=0.7 / fig.get_figheight())
        fig.savefig(os.path.join(outdir, "ratio_vs_ggml.png"), dpi=110)
        plt.close(fig)
        made.append("ratio_vs_ggml.png")
    return made


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+")
    ap.add_argument("--llama-bench", action="append", default=[])
    ap.add_argument("--ggml-perf", action="append", default=[])
    ap.add_argument("-o", "--outdir", required=True)
    ap.add_argument("--no-plots", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    docs = [(p, load(p)) for p in a.results]
    cases = [c for _, d in docs for c in d["cases"] if c.get("scenario") != "builtin"]
    ggml_rows, llama, rows_read = [], [], {}  # rows_read: per input file, for the header lines
    for p in a.ggml_perf:
        with open(p, encoding="utf-8") as f:
            got = ggml_ingest.parse_ggml_perf(f.read())
        rows_read[p] = len(got)
        ggml_rows += got
    for p in a.llama_bench:
        with open(p, encoding="utf-8") as f:
            got = ggml_ingest.parse_llama_bench(f.read())
        rows_read[p] = len(got)
        llama += got

    steps = step_table(cases, llama)
    kernels, ggml_by_case = kernel_table(cases, ggml_rows)
    ctx_rows = context_table(cases, ggml_by_case)
    shares = share_table(docs)
    bshare = [] if shares else bench_share(cases)
    notes = [] if a.no_plots else None
    made = [] if a.no_plots else plots(a.outdir, steps, ctx_rows, kernels, shares, bshare)
    if made and isinstance(made[0], str) and made[0].startswith("matplotlib"):
        notes, made = made, []

    md = ["# fusebench report", "",
          "Made with `fusebench report " + " ".join(a.results) +
          "".join(f" --llama-bench {p}" for p in a.llama_bench) + "".join(f" --ggml-perf {p}" for p in a.ggml_perf) +
          f" -o {a.outdir}`.", ""]
    md.append("| results | kind | GPU | git | started | cases |")
    md.append("|---|---|---|---|---|---:|")
    for p, d in docs:
        env = d["env"]
        md.append(f"| `{os.path.basename(p)}` | {d['kind']} | {env['device'].get('name') or 'no GPU'} | "
                  f"`{env['git_sha'][:10]}`{'+dirty' if env['git_dirty'] else ''} | {env['started_utc'][:16]} | {len(d['cases'])} |")
    for p in a.ggml_perf:
        md.append(f"\nggml peer timings: `{os.path.basename(p)}` ({rows_read[p]} perf rows read by key)")
    for p in a.llama_bench:
        md.append(f"\nllama-bench: `{os.path.basename(p)}` ({rows_read[p]} rows)")
    if len({r["model"] for r in llama}) > 1:
        md.append("\n> llama-bench rows of several models are matched to steps by phase, prompt length and depth "
                  "only: give one model's file per report.")
    md.append("")
    if steps:
        md += ["## Throughput vs context", "", "| scenario | T | ctx | fused tok/s | unfused tok/s | llama.cpp tok/s | roofline |",
               "|---|---:|---:|---:|---:|---:|---:|"]
        for r in steps:
            f = lambda v: "–" if v is None else f"{v:.1f}"
            md.append(f"| {r['scenario']} | {r['tokens']} | {r['context']} | {f(r['fused_tok_s'])} | {f(r['unfused_tok_s'])} | "
                      f"{f(r['llama_tok_s'])} | {fmt_pct(r['roofline_pct'])} |")
        md.append("")
    else:
        md += ["## Throughput vs context", "",
               "No whole-step (decode/prefill step) results among the inputs yet: tok/s per context appears here once "
               "`run = \"step\"` scenarios are benched. Meanwhile, the kernels whose work grows with the context:", ""]
    if ctx_rows:
        md += ["| kernel | T | ctx | fused | unfused | llama.cpp (ggml) | roofline (copy) |", "|---|---:|---:|---:|---:|---:|---:|"]
        for r in ctx_rows:
            md.append(f"| {r['kernel']} {r['instance']} | {r['tokens']} | {r['context']} | {fmt_us(r['fused_us'])} | "
                      f"{fmt_us(r['unfused_us'])} | {fmt_us(r['ggml_us'])} | {fmt_pct(r['roofline_pct'])} |")
        md.append("")
        if any(r["ggml_us"] for r in ctx_rows):
            md.append("llama.cpp column: ggml `FLASH_ATTN_EXT` at the same heads, head size, KV length and T; for TurboQuant "
                      "4-bit KV the like-for-like peer is ggml's q4_0 KV.\n")
    if kernels:
        md += ["## Per kernel vs ggml", "",
               "ours = fastest layout of the fused (or only) variant, hot median; ratio = ggml / ours (> 1: fusebench faster).", "",
               "| kernel | instance | T | ctx | layout | ours | unfused | ggml | ratio | ggml row |",
               "|---|---|---:|---:|---|---:|---:|---:|---:|---|"]
        for r in kernels:
            md.append(f"| {r['kernel']} | {r['instance']} | {r['tokens']} | {r['context'] or '–'} | {r['layout']} | "
                      f"{fmt_us(r['ours_us'])} | {fmt_us(r['unfused_us'])} | {fmt_us(r['ggml_us'])} | "
                      f"{r['speedup']:.2f}× | {r['ggml']} |")
        md.append("")
        unmatched = [r for r in ggml_rows if ggml_ingest.ggml_key(r) is None]
        if unmatched:
            ops = sorted({r["op"] for r in unmatched})
            md.append(f"ggml rows with no fusebench counterpart yet ({len(unmatched)}): {', '.join(ops)}.\n")
    if shares:
        md += ["## Per-kernel share (CUPTI profile)", "", "| group | NVTX range | kernel | calls | µs/call | share |",
               "|---|---|---|---:|---:|---:|"]
        for r in shares:
            md.append(f"| {r['group']} | {r['range']} | `{r['kernel']}` | {r['calls']} | {r['us_per_call']:.2f} | {r['share_pct']:.1f}% |")
        md.append("")
    elif bshare:
        md += ["## Per-kernel share (from bench timings)", "",
               "No profile among the inputs (`fusebench profile --json`): shares of the summed isolated kernel "
               "timings of the decode scenario at T=1 (fused variants, best layout, smallest context), not of a profiled step.", "",
               "| kernel | summed time | share |", "|---|---:|---:|"]
        for r in bshare:
            md.append(f"| {r['kernel']} | {fmt_us(r['us'])} | {r['share_pct']:.1f}% |")
        md.append("")
    if made:
        md += ["## Plots", ""] + [f"![{m}]({m})" for m in made] + [""]
    for n in notes or []:
        md.append(f"> {n}")
    with open(os.path.join(a.outdir, "report.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(md) + "\n")
    with open(os.path.join(a.outdir, "report.json"), "w", encoding="utf-8") as f:
        json.dump({"steps": steps, "context": ctx_rows, "kernels": kernels, "shares": shares, "bench_share": bshare},
                  f, indent=1)
    print(f"report: wrote {os.path.join(a.outdir, 'report.md')} and {len(made)} plot(s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
