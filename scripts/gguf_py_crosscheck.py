#!/usr/bin/env python3
"""Cross-check `fusebench gguf` against gguf-py, llama.cpp's own Python GGUF package (PyPI `gguf`).

* Files written by `fusebench gguf quantize` must open in gguf.GGUFReader with the expected
  metadata, tensor name, type and shape.
* gguf-py's numpy dequantization of our tensors must equal `fusebench gguf dequant` bit for bit,
  for every type fusebench writes (Q4_K, Q5_K, Q6_K, Q8_0, F16, BF16, F32).
* Where gguf-py can quantize (Q8_0 and BF16; its Q8_0 is documented as bit-exact with ggml's C
  reference) and for F16 (numpy's float16 cast rounds like ggml), our bytes must equal its bytes.
* A file written by gguf.GGUFWriter must be readable by `fusebench gguf inspect --json` and
  `fusebench gguf dequant`.

Exit status: 0 all passed, 1 something failed, 77 numpy or gguf missing (CTest SKIP_RETURN_CODE).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:
    print("SKIP: python package numpy missing (pip install gguf numpy)")
    sys.exit(77)
try:
    import gguf
    from gguf import quants
    from gguf.constants import GGMLQuantizationType as QT
except ImportError:
    print("SKIP: python package gguf missing (pip install gguf numpy)")
    sys.exit(77)

# Exit codes from harness/cli/exit_codes.h.
EXIT_USAGE, EXIT_BAD_INPUT, EXIT_IO = 2, 3, 4

TYPES = {"q4_K": QT.Q4_K, "q5_K": QT.Q5_K, "q6_K": QT.Q6_K, "q8_0": QT.Q8_0,
         "f16": QT.F16, "bf16": QT.BF16, "f32": QT.F32}
QUANTIZED = {"q4_K", "q5_K", "q6_K", "q8_0"}
# Loose sanity bounds on RMS(error) / RMS(input): bit-equality with gguf-py already pins the
# decoding, these catch an encoder that is consistently wrong in a way both decoders agree on.
REL_RMS = {"q4_K": 0.12, "q5_K": 0.06, "q6_K": 0.03, "q8_0": 0.01, "f16": 1e-3, "bf16": 8e-3, "f32": 0.0}


class Checker:
    def __init__(self, fusebench, workdir):
        self.fusebench = fusebench
        self.workdir = workdir
        self.passed = 0
        self.failed = 0

    def path(self, name):
        return os.path.join(self.workdir, name)

    def run(self, *args):
        return subprocess.run([self.fusebench, *args], capture_output=True, text=True)

    def case(self, name, fn):
        try:
            fn()
        except AssertionError as e:
            self.failed += 1
            print(f"FAIL {name}: {e}")
        except Exception as e:  # a crash in a case is a failure of that case, not of the run
            self.failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}")
        else:
            self.passed += 1
            print(f"ok   {name}")


def check(cond, msg):
    """`msg` may be a callable, for messages that can only be computed when the check fails."""
    if not cond:
        raise AssertionError(msg() if callable(msg) else msg)


def field_value(reader, key):
    f = reader.fields.get(key)
    check(f is not None, f"key {key} missing")
    return f.contents(), f.types


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def first_difference(a, b):
    diff = np.argwhere(bits(a) != bits(b))
    i = tuple(int(k) for k in diff[0])
    x, y = a[i], b[i]
    return (f"{len(diff)} elements differ; first at {i}: gguf-py {x} (0x{int(np.float32(x).view(np.uint32)):08x}) "
            f"vs fusebench {y} (0x{int(np.float32(y).view(np.uint32)):08x})")


def matrices():
    rng = np.random.default_rng(20261121)
    out = []
    for rows, cols in [(4, 512), (3, 1024), (1, 256)]:
        out.append((f"normal{rows}x{cols}", rng.standard_normal((rows, cols), dtype=np.float32)))
    m = rng.standard_normal((6, 512), dtype=np.float32)
    m[0, ::37] *= 60.0                       # scattered outliers
    m[1, 5] = 1000.0                         # one huge value in a block
    m[2, :] = 0.0                            # all-zero row: scales 0
    m[3, :] = 0.25                           # constant row: min == max
    m[4, :] = np.abs(m[4, :])                # all positive: min 0
    m[5, :] = rng.uniform(-1e-3, 1e-3, 512)  # tiny values: fp16 scales near subnormal
    out.append(("outliers6x512", m.astype(np.float32)))
    return out


def special_matrix():
    # Values only the float types can carry: inf, NaN, fp16 overflow, subnormals.
    x = np.random.default_rng(7).standard_normal((2, 64), dtype=np.float32)
    x[0, :8] = [np.inf, -np.inf, np.nan, 1e5, -7e4, 1e-8, -3e-41, 65519.0]
    return x


def quantize_case(c, label, x, tname):
    npy_in = c.path(f"{label}.npy")
    out = c.path(f"{label}_{tname}.gguf")
    deq = c.path(f"{label}_{tname}.npy")
    np.save(npy_in, x)
    name = f"blk.0.{label}.weight"
    r = c.run("gguf", "quantize", npy_in, "--type", tname, "--name", name, "-o", out)
    check(r.returncode == 0, f"quantize rc {r.returncode}: {r.stderr.strip()}")

    reader = gguf.GGUFReader(out)
    arch, _ = field_value(reader, "general.architecture")
    check(arch == "fusebench", f"general.architecture {arch!r}")
    if tname in QUANTIZED:
        v, types = field_value(reader, "general.quantization_version")
        check(v == 2 and types == [gguf.GGUFValueType.UINT32], f"quantization_version {v!r} {types}")
    else:
        check("general.quantization_version" not in reader.fields, "quantization_version on a float type")
    check(len(reader.tensors) == 1, f"{len(reader.tensors)} tensors")
    t = reader.tensors[0]
    rows, cols = x.shape
    check(t.name == name, f"name {t.name!r}")
    check(t.tensor_type == TYPES[tname], f"type {t.tensor_type!r}")
    check([int(d) for d in t.shape] == [cols, rows], f"ne {list(t.shape)} (expected [{cols}, {rows}])")

    py = quants.dequantize(t.data, t.tensor_type).reshape(rows, cols)
    r = c.run("gguf", "dequant", out, name, "-o", deq)
    check(r.returncode == 0, f"dequant rc {r.returncode}: {r.stderr.strip()}")
    ours = np.load(deq)
    check(ours.dtype == np.float32 and ours.shape == (rows, cols), f"dequant gave {ours.dtype} {ours.shape}")
    check(np.array_equal(bits(py), bits(ours)), lambda: first_difference(py, ours))

    raw = np.asarray(t.data).reshape(-1).view(np.uint8)
    if tname in ("q8_0", "bf16"):
        theirs = quants.quantize(x, TYPES[tname]).reshape(-1).view(np.uint8)
        check(np.array_equal(theirs, raw), f"quantize bytes differ from gguf-py's {tname} "
              f"({int(np.count_nonzero(theirs != raw))} of {raw.size} bytes)")
    if tname == "f16":
        with np.errstate(over="ignore"):  # values past 65504 become inf, as in ggml
            theirs = x.astype(np.float16).reshape(-1).view(np.uint8)
        check(np.array_equal(theirs, raw), "f16 bytes differ from numpy's float16 cast")
    if tname == "f32":
        check(np.array_equal(bits(x), bits(ours)), "f32 round trip changed values")
    finite = np.isfinite(x)
    if finite.all():
        err = np.sqrt(np.mean((ours.astype(np.float64) - x) ** 2)) / max(np.sqrt(np.mean(x.astype(np.float64) ** 2)), 1e-30)
        check(err <= REL_RMS[tname], f"relative RMS error {err:.3g} above {REL_RMS[tname]}")


def gguf_py_file_case(c):
    path = c.path("from_gguf_py.gguf")
    rng = np.random.default_rng(99)
    f32 = rng.standard_normal((3, 64), dtype=np.float32)
    q8src = rng.standard_normal((4, 96), dtype=np.float32)
    q8 = quants.quantize(q8src, QT.Q8_0)
    bf = quants.quantize(rng.standard_normal((2, 32), dtype=np.float32), QT.BF16)
    f16 = rng.standard_normal((5, 16), dtype=np.float32).astype(np.float16)
    experts = rng.standard_normal((2, 3, 32), dtype=np.float32)

    w = gguf.GGUFWriter(path, "llama")
    w.add_name("crosscheck")
    w.add_uint32("llama.context_length", 4096)
    w.add_int32("test.i32", -7)
    w.add_uint64("test.u64", 2**40 + 3)
    w.add_int64("test.i64", -(2**40))
    w.add_float32("test.f32", 0.125)
    w.add_float64("test.f64", -2.5)
    w.add_bool("test.bool", True)
    w.add_uint8("test.u8", 250)
    w.add_int16("test.i16", -300)
    w.add_string("test.str", "héllo\nworld")
    w.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(30)])
    w.add_array("test.ints", [1, -2, 3])
    w.add_tensor("f32.weight", f32)
    w.add_tensor("q8.weight", q8, raw_dtype=QT.Q8_0)
    w.add_tensor("bf16.weight", bf, raw_dtype=QT.BF16)
    w.add_tensor("f16.weight", f16)
    w.add_tensor("experts.weight", experts)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    r = c.run("gguf", "inspect", "--json", path)
    check(r.returncode == 0, f"inspect rc {r.returncode}: {r.stderr.strip()}")
    j = json.loads(r.stdout)
    reader = gguf.GGUFReader(path)
    check(j["file_size"] == os.path.getsize(path), "file_size")
    meta = {m["key"]: m for m in j["metadata"]}
    expect = {"general.architecture": ("string", "llama"), "general.name": ("string", "crosscheck"),
              "llama.context_length": ("u32", 4096), "test.i32": ("i32", -7), "test.u64": ("u64", 2**40 + 3),
              "test.i64": ("i64", -(2**40)), "test.f32": ("f32", 0.125), "test.f64": ("f64", -2.5),
              "test.bool": ("bool", True), "test.u8": ("u8", 250), "test.i16": ("i16", -300),
              "test.str": ("string", "héllo\nworld")}
    for key, (typ, val) in expect.items():
        check(key in meta, f"inspect lost key {key}")
        check((meta[key]["type"], meta[key]["value"]) == (typ, val), f"{key}: {meta[key]} (expected {typ} {val!r})")
    tok = meta["tokenizer.ggml.tokens"]
    check(tok["type"] == "array" and tok["elem_type"] == "string" and tok["count"] == 30, f"tokens {tok}")
    check(tok["value"][:3] == ["tok0", "tok1", "tok2"], f"tokens {tok['value'][:3]}")
    check(meta["test.ints"]["value"] == [1, -2, 3], f"ints {meta['test.ints']}")
    # The data section starts where gguf-py says the first tensor's data does (it is at offset 0).
    by_name = {t["name"]: t for t in j["tensors"]}
    check(len(by_name) == len(reader.tensors), f"{len(by_name)} tensors, gguf-py sees {len(reader.tensors)}")
    for t in reader.tensors:
        ours = by_name[t.name]
        check(ours["file_offset"] == t.data_offset, f"{t.name}: file_offset {ours['file_offset']} vs {t.data_offset}")
        check(ours["ne"] == [int(d) for d in t.shape], f"{t.name}: ne {ours['ne']} vs {list(t.shape)}")
        check(ours["type"] == t.tensor_type.name.lower().replace("_k", "_K"), f"{t.name}: type {ours['type']}")
        check(ours["bytes"] == t.n_bytes, f"{t.name}: bytes {ours['bytes']} vs {t.n_bytes}")

        py = quants.dequantize(t.data, t.tensor_type)
        cols = int(t.shape[0])
        py = np.asarray(py, dtype=np.float32).reshape(-1, cols)
        out = c.path(f"py_{t.name}.npy")
        r = c.run("gguf", "dequant", path, t.name, "-o", out)
        check(r.returncode == 0, f"dequant {t.name} rc {r.returncode}: {r.stderr.strip()}")
        got = np.load(out)
        check(got.shape == py.shape, f"{t.name}: shape {got.shape} vs {py.shape}")
        check(np.array_equal(bits(py), bits(got)), lambda: f"{t.name}: " + first_difference(py, got))
        if len(t.shape) > 2:
            check("flattened" in r.stderr, f"{t.name}: no flattening note on stderr")
    check(np.array_equal(bits(np.load(c.path("py_f32.weight.npy"))), bits(f32)), "f32 tensor changed")


def npy_interop_case(c):
    x = np.random.default_rng(3).standard_normal((2, 64), dtype=np.float32)
    for version in [(1, 0), (2, 0), (3, 0)]:
        p = c.path(f"v{version[0]}.npy")
        with open(p, "wb") as f:
            np.lib.format.write_array(f, x, version=version)
        r = c.run("gguf", "quantize", p, "--type", "f32", "-o", c.path("v.gguf"))
        check(r.returncode == 0, f"npy v{version}: rc {r.returncode}: {r.stderr.strip()}")
        got = quants.dequantize(gguf.GGUFReader(c.path("v.gguf")).tensors[0].data, QT.F32).reshape(x.shape)
        check(np.array_equal(bits(got), bits(x)), f"npy v{version}: values changed")


def error_cases(c):
    x = np.random.default_rng(5).standard_normal((2, 100), dtype=np.float32)
    np.save(c.path("c100.npy"), x)
    np.save(c.path("f64.npy"), x.astype(np.float64))
    np.save(c.path("fortran.npy"), np.asfortranarray(np.random.default_rng(1).standard_normal((3, 64), dtype=np.float32)))
    np.save(c.path("ok.npy"), np.zeros((1, 256), np.float32))
    r = c.run("gguf", "quantize", c.path("ok.npy"), "--type", "q8_0", "-o", c.path("ok.gguf"))
    check(r.returncode == 0, f"ok quantize rc {r.returncode}")
    cases = [
        (["gguf", "quantize", c.path("c100.npy"), "--type", "q4_K", "-o", c.path("x.gguf")], EXIT_BAD_INPUT,
         "multiple of"),
        (["gguf", "quantize", c.path("f64.npy"), "--type", "f32", "-o", c.path("x.gguf")], EXIT_BAD_INPUT,
         "astype(np.float32)"),
        (["gguf", "quantize", c.path("fortran.npy"), "--type", "f32", "-o", c.path("x.gguf")], EXIT_BAD_INPUT,
         "fortran_order"),
        (["gguf", "quantize", c.path("ok.npy"), "--type", "q4_0", "-o", c.path("x.gguf")], EXIT_USAGE, "q4_K"),
        (["gguf", "quantize", c.path("missing.npy"), "--type", "f32", "-o", c.path("x.gguf")], EXIT_IO, "missing.npy"),
        (["gguf", "dequant", c.path("ok.gguf"), "tensr", "-o", c.path("x.npy")], EXIT_BAD_INPUT, "close names: tensor"),
        (["gguf", "dequant", c.path("ok.npy"), "tensor", "-o", c.path("x.npy")], EXIT_BAD_INPUT, "offset"),
        (["gguf", "inspect", c.path("missing.gguf")], EXIT_IO, "missing.gguf"),
    ]
    for args, rc, text in cases:
        r = c.run(*args)
        check(r.returncode == rc and text in r.stderr,
              f"`{' '.join(args[:3])} ...`: rc {r.returncode} (expected {rc}), stderr {r.stderr.strip()!r} "
              f"(expected to mention {text!r})")
    check(not os.path.exists(c.path("x.gguf")) and not os.path.exists(c.path("x.npy")), "failed runs left output")
    for sub in ["inspect", "dequant", "quantize"]:
        r = c.run("gguf", sub, "--help")
        check(r.returncode == 0 and "Examples:" in r.stdout, f"gguf {sub} --help: rc {r.returncode}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fusebench", required=True, help="path to the fusebench binary")
    ap.add_argument("--keep", action="store_true", help="keep the work directory and print its path")
    args = ap.parse_args()
    if not os.access(args.fusebench, os.X_OK):
        print(f"error: {args.fusebench} is not an executable", file=sys.stderr)
        return 2
    try:
        from importlib.metadata import version
        gguf_version = version("gguf")
    except Exception:
        gguf_version = "?"
    print(f"gguf-py {gguf_version}, numpy {np.__version__}")

    work = tempfile.mkdtemp(prefix="gguf_py_crosscheck_")
    c = Checker(args.fusebench, work)
    for label, x in matrices():
        for tname in TYPES:
            c.case(f"quantize {label} {tname}", lambda x=x, label=label, tname=tname: quantize_case(c, label, x, tname))
    for tname in ("f32", "f16", "bf16"):
        c.case(f"quantize special {tname}", lambda tname=tname: quantize_case(c, "special", special_matrix(), tname))
    c.case("gguf-py writer -> fusebench inspect/dequant", lambda: gguf_py_file_case(c))
    c.case("npy v1/v2/v3 from numpy", lambda: npy_interop_case(c))
    c.case("error exit codes and --help", lambda: error_cases(c))

    if args.keep:
        print(f"work directory: {work}")
    else:
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    print(f"{c.passed} passed, {c.failed} failed")
    return 0 if c.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
