#!/usr/bin/env python3
"""Writes the committed malformed-GGUF corpus (reference/gguf/testdata/malformed/*.gguf) and keeps
MANIFEST.tsv in step: existing rows are kept, a new case gets a row of "?" placeholders. Each row's
code, byte offset, message and expected text are the reader's exact error, checked by
fb_gguf_corpus_test, which prints the actual row of any file that does not match; paste it in
after confirming the error is the one the case's name promises. The bytes come from a small
byte-level emitter independent of both GgufWriter and gguf-py, so the corpus cannot inherit a
writer bug.

    python3 reference/gguf/testdata/make_malformed.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "malformed")

F32, Q4_K = 0, 12
T_U32, T_I32, T_STR, T_ARR, T_U64 = 4, 5, 8, 9, 10


class G:
    """A GGUF byte string plus the offsets of every field a case may cut or corrupt."""

    def __init__(self):
        self.b = bytearray()
        self.at = {}

    def mark(self, name):
        self.at[name] = len(self.b)

    def raw(self, x):
        self.b += x

    def u32(self, v):
        self.b += struct.pack("<I", v & 0xFFFFFFFF)

    def i32(self, v):
        self.b += struct.pack("<i", v)

    def u64(self, v):
        self.b += struct.pack("<Q", v & 0xFFFFFFFFFFFFFFFF)

    def i64(self, v):
        self.b += struct.pack("<q", v)

    def s(self, x):
        x = x if isinstance(x, bytes) else x.encode()
        self.u64(len(x))
        self.b += x

    def put_u32(self, at, v):
        self.b[at:at + 4] = struct.pack("<I", v & 0xFFFFFFFF)

    def put_u64(self, at, v):
        self.b[at:at + 8] = struct.pack("<Q", v & 0xFFFFFFFFFFFFFFFF)


def build(kvs=None, tensors=None, version=3, align=32, data=True):
    """kvs: list of (key bytes, type, payload builder); tensors: (name, ne list, type, offset, nbytes)."""
    g = G()
    if kvs is None:
        kvs = [(b"general.architecture", T_STR, lambda g: g.s("llama")),
               (b"tokenizer.ggml.tokens", T_ARR, lambda g: (g.i32(T_STR), g.u64(2), g.s("a"), g.s("\u00e9"))),
               (b"general.alignment", T_U32, lambda g: g.u32(align))]
    if tensors is None:
        tensors = [("w", [8, 2], F32, 0, 64), ("b", [8], F32, 64, 32)]
    g.raw(b"GGUF")
    g.mark("version")
    g.u32(version)
    g.mark("n_tensors")
    g.i64(len(tensors))
    g.mark("n_kv")
    g.i64(len(kvs))
    for i, (k, t, payload) in enumerate(kvs):
        g.mark(f"kv{i}")
        g.s(k)
        g.mark(f"kv{i}.type")
        g.i32(t)
        g.mark(f"kv{i}.value")
        payload(g)
    for i, (name, ne, t, off, _) in enumerate(tensors):
        g.mark(f"t{i}")
        g.s(name)
        g.mark(f"t{i}.ndims")
        g.u32(len(ne))
        g.mark(f"t{i}.ne")
        for e in ne:
            g.i64(e)
        g.mark(f"t{i}.type")
        g.u32(t)
        g.mark(f"t{i}.offset")
        g.u64(off)
    g.mark("pad")
    if tensors and data:
        g.raw(bytes((-len(g.b)) % align))
        g.mark("data")
        end = max(off + n for (_, _, _, off, n) in tensors)
        g.raw(bytes((i * 37 + 11) & 0xFF for i in range(end)))
        g.raw(bytes((-len(g.b)) % align))
    g.mark("end")
    return g


CASES = []


def case(name, code, offset_of):
    def reg(fn):
        CASES.append((name, code, offset_of, fn))
        return fn
    return reg


def base():
    return build()


def one_kv():
    # No tensors and a single long KV: the header counts still fit in a file cut inside the KV, so
    # the cut is found as a truncation rather than by the up-front count check.
    toks = ["<s>", "</s>", "hello", "world"]
    return build(kvs=[(b"tokenizer.ggml.tokens", T_ARR,
                       lambda g: (g.i32(T_STR), g.u64(len(toks)), [g.s(t) for t in toks]))], tensors=[])


def cut(field, make=base):
    def fn():
        g = make()
        at = g.at[field] if isinstance(field, str) else field(g)
        g.b = g.b[:at]
        return g
    return fn


# --- truncation at every section boundary (and inside the fields that have one) ---
for name, field in [("trunc_00_empty", lambda g: 0), ("trunc_01_in_magic", lambda g: 2),
                    ("trunc_02_before_version", "version"), ("trunc_03_before_n_tensors", "n_tensors"),
                    ("trunc_04_before_n_kv", "n_kv"), ("trunc_05_before_first_kv", "kv0"),
                    ("trunc_06_in_key_length", lambda g: g.at["kv0"] + 3),
                    ("trunc_11_before_tensor_info", "t0"), ("trunc_12_before_n_dims", "t0.ndims"),
                    ("trunc_13_in_ne", lambda g: g.at["t0.ne"] + 12), ("trunc_14_before_ggml_type", "t0.type"),
                    ("trunc_15_before_data_offset", "t0.offset"), ("trunc_16_in_padding", lambda g: g.at["pad"] + 1),
                    ("trunc_17_in_tensor_data", lambda g: g.at["data"] + 40),
                    ("trunc_18_in_last_tensor", lambda g: g.at["data"] + 64 + 16)]:
    CASES.append((name, None, None, cut(field)))
for name, field in [("trunc_07_before_value_type", "kv0.type"), ("trunc_08_before_value", "kv0.value"),
                    ("trunc_09_in_array_count", lambda g: g.at["kv0.value"] + 6),
                    ("trunc_10_in_array_string", lambda g: g.at["end"] - 3),
                    ("trunc_10b_in_array_string_length", lambda g: g.at["end"] - 9)]:
    CASES.append((name, None, None, cut(field, one_kv)))


def with_kvs(kvs, tensors=None):
    return lambda: build(kvs=kvs, tensors=tensors)


ARCH = (b"general.architecture", T_STR, lambda g: g.s("llama"))


# --- header ---
def bad_magic():
    g = base(); g.b[0:4] = b"GGML"; return g


def version(v):
    def fn():
        g = base(); g.put_u32(g.at["version"], v); return g
    return fn


def counts(field, v):
    def fn():
        g = base(); g.put_u64(g.at[field], v); return g
    return fn


CASES += [("magic_ggml", None, None, bad_magic), ("version_2", None, None, version(2)),
          ("version_big_endian", None, None, version(0x03000000)),
          ("count_n_tensors_huge", None, None, counts("n_tensors", 1 << 40)),
          ("count_n_tensors_negative", None, None, counts("n_tensors", -1)),
          ("count_n_kv_huge", None, None, counts("n_kv", 0x7FFFFFFFFFFFFFFF)),
          ("count_n_kv_negative", None, None, counts("n_kv", -5))]


# --- strings, keys, values ---
def patch_len(field, v):
    def fn():
        g = base(); g.put_u64(g.at[field], v); return g
    return fn


CASES += [("string_key_length_past_eof", None, None, patch_len("kv0", 1 << 62)),
          ("string_value_length_past_eof", None, None, patch_len("kv0.value", 0xFFFFFFFFFFFFFFFF)),
          ("string_tensor_name_64_bytes", None, None,
           lambda: build(tensors=[("n" * 64, [8], F32, 0, 32)])),
          ("string_value_not_utf8", None, None,
           with_kvs([(b"general.architecture", T_STR, lambda g: g.s(b"ll\xc3\x28ma"))])),
          ("string_value_overlong_utf8", None, None,
           with_kvs([(b"general.name", T_STR, lambda g: g.s(b"\xc0\xaf"))])),
          ("string_value_surrogate", None, None,
           with_kvs([(b"general.name", T_STR, lambda g: g.s(b"x\xed\xa0\x80"))])),
          ("key_not_utf8", None, None, with_kvs([(b"general.\xff", T_U32, lambda g: g.u32(1))])),
          ("key_empty", None, None, with_kvs([(b"", T_U32, lambda g: g.u32(1))])),
          ("key_duplicate", None, None,
           with_kvs([ARCH, (b"a", T_U32, lambda g: g.u32(1)), (b"a", T_U32, lambda g: g.u32(2))])),
          ("value_type_unknown_13", None, None, with_kvs([(b"k", 13, lambda g: g.u32(0))])),
          ("value_type_negative", None, None, with_kvs([(b"k", -1, lambda g: g.u32(0))])),
          ("array_nested", None, None,
           with_kvs([(b"k", T_ARR, lambda g: (g.i32(T_ARR), g.u64(1), g.i32(T_U32), g.u64(0)))])),
          ("array_elem_type_unknown", None, None,
           with_kvs([(b"k", T_ARR, lambda g: (g.i32(42), g.u64(1), g.u32(0)))])),
          ("array_count_larger_than_file", None, None,
           with_kvs([(b"k", T_ARR, lambda g: (g.i32(T_U64), g.u64(1 << 33), g.u64(0)))])),
          ("array_string_not_utf8", None, None,
           with_kvs([(b"tokenizer.ggml.tokens", T_ARR, lambda g: (g.i32(T_STR), g.u64(2), g.s("ok"), g.s(b"\xfe")))])),
          ("alignment_zero", None, None, with_kvs([(b"general.alignment", T_U32, lambda g: g.u32(0))])),
          ("alignment_not_power_of_two", None, None,
           with_kvs([(b"general.alignment", T_U32, lambda g: g.u32(48))])),
          ("alignment_wrong_type", None, None,
           with_kvs([(b"general.alignment", T_U64, lambda g: g.u64(32))]))]

# --- tensor infos ---
ONE = [ARCH]
CASES += [("tensor_name_empty", None, None, with_kvs(ONE, [("", [8], F32, 0, 32)])),
          ("tensor_name_duplicate", None, None, with_kvs(ONE, [("w", [8], F32, 0, 32), ("w", [8], F32, 32, 32)])),
          ("tensor_name_not_utf8", None, None, lambda: build(kvs=ONE, tensors=[("w", [8], F32, 0, 32)])),
          ("tensor_n_dims_5", None, None, with_kvs(ONE, [("w", [8, 1, 1, 1, 1], F32, 0, 32)])),
          ("tensor_ne_negative", None, None, with_kvs(ONE, [("w", [8, -2], F32, 0, 32)])),
          ("tensor_ne_overflow", None, None, with_kvs(ONE, [("w", [1 << 32, 1 << 32], F32, 0, 32)])),
          ("tensor_bytes_overflow", None, None, with_kvs(ONE, [("w", [1 << 31, 1 << 31], F32, 0, 32)])),
          ("tensor_type_unknown", None, None, with_kvs(ONE, [("w", [8], 99, 0, 32)])),
          ("tensor_type_removed_q4_2", None, None, with_kvs(ONE, [("w", [32], 4, 0, 32)])),
          ("tensor_ne0_not_block_multiple", None, None, with_kvs(ONE, [("w", [100], Q4_K, 0, 32)])),
          ("offset_misaligned", None, None, with_kvs(ONE, [("w", [8], F32, 0, 32), ("b", [8], F32, 36, 32)])),
          ("offset_overlapping", None, None, with_kvs(ONE, [("w", [16], F32, 0, 64), ("b", [8], F32, 32, 32)])),
          ("offset_gap", None, None, with_kvs(ONE, [("w", [8], F32, 0, 32), ("b", [8], F32, 64, 32)])),
          ("offset_out_of_order", None, None, with_kvs(ONE, [("w", [8], F32, 32, 32), ("b", [8], F32, 0, 32)])),
          ("offset_past_eof", None, None,
           lambda: build(kvs=ONE, tensors=[("w", [8], F32, 0, 32), ("b", [8], F32, 1 << 40, 32)], data=False))]


def fix_tensor_name_not_utf8():
    g = build(kvs=ONE, tensors=[("w", [8], F32, 0, 32)])
    g.b[g.at["t0"] + 8] = 0xC1  # "w" -> a lone lead byte of an overlong form
    return g


CASES = [(n, c, o, fix_tensor_name_not_utf8 if n == "tensor_name_not_utf8" else f) for (n, c, o, f) in CASES]


def main():
    os.makedirs(OUT, exist_ok=True)
    manifest = os.path.join(OUT, "MANIFEST.tsv")
    old = {}
    if os.path.exists(manifest):
        for line in open(manifest, encoding="utf-8"):
            if line.startswith("#") or not line.strip():
                continue
            f = line.rstrip("\n").split("\t")
            old[f[0]] = f
    for fn in os.listdir(OUT):
        if fn.endswith(".gguf"):
            os.remove(os.path.join(OUT, fn))
    rows = []
    for name, _, _, fn in CASES:
        g = fn()
        with open(os.path.join(OUT, name + ".gguf"), "wb") as f:
            f.write(bytes(g.b))
        rows.append(old.get(name + ".gguf", [name + ".gguf", "?", "?", "?", "?"]))
    with open(manifest, "w", encoding="utf-8") as f:
        f.write("# file\tcode\toffset\tmessage\texpected  (reference/gguf/gguf_corpus_test.cpp checks each)\n")
        for r in rows:
            f.write("\t".join(r) + "\n")
    print(f"{len(rows)} files in {OUT}")


if __name__ == "__main__":
    main()
