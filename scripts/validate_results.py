#!/usr/bin/env python3
"""Validate fusebench results files against results/schema/fusebench-results.schema.json.

Usage: validate_results.py [--schema SCHEMA] FILE...

Uses the `jsonschema` PyPI package (Draft 2020-12). Beyond the schema it checks what JSON Schema
cannot express, as the C++ fb::validate_results does: `summary` counts match the case verdicts, and
each timing's sample columns (ms, sm_clock_mhz, throttled) have equal length.
Exit status: 0 all valid, 1 any invalid or unreadable, 77 jsonschema not installed (CTest: skipped).
"""
import argparse
import gzip
import json
import pathlib
import sys

DEFAULT_SCHEMA = pathlib.Path(__file__).resolve().parent.parent / "results/schema/fusebench-results.schema.json"


def cross_field_problems(doc):
    """Checks mirrored from the C++ validator; they assume the document already passed the schema."""
    problems = []

    def timing(t, path):
        if t is None:
            return
        lengths = {k: len(v) for k, v in t["samples"].items()}
        if len(set(lengths.values())) > 1:
            problems.append(f"{path}.samples: columns differ in length: {lengths}")

    if doc["baselines"] is not None:
        timing(doc["baselines"]["copy"], "$.baselines.copy")
        timing(doc["baselines"]["gemm"], "$.baselines.gemm")
    for i, case in enumerate(doc["cases"]):
        timing(case["hot"], f"$.cases[{i}].hot")
        timing(case["cold"], f"$.cases[{i}].cold")
        timing(case.get("b2b"), f"$.cases[{i}].b2b")  # absent before schema_minor 1

    counts = {"passed": 0, "failed": 0, "skipped": 0}
    names = {"pass": "passed", "fail": "failed", "skip": "skipped"}
    for case in doc["cases"]:
        counts[names[case["verdict"]]] += 1
    problems += [f"$.summary.{k}: {doc['summary'][k]} but the cases have {v}" for k, v in counts.items()
                 if doc["summary"][k] != v]
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--schema", type=pathlib.Path, default=DEFAULT_SCHEMA)
    ap.add_argument("files", nargs="+", type=pathlib.Path)
    args = ap.parse_args()
    try:
        import jsonschema
    except ImportError:
        print("SKIP: pip install jsonschema")
        return 77

    schema = json.loads(args.schema.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)  # a broken schema is a bug, not a bad file
    validator = jsonschema.Draft202012Validator(schema)

    passed = failed = 0
    for path in args.files:
        try:
            # Large bench results are committed gzipped (results/README.md).
            text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
            doc = json.loads(text)
        except (OSError, ValueError) as e:
            print(f"{path}: FAIL: cannot read: {e}")
            failed += 1
            continue
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        problems = [f"{e.json_path}: {e.message}" for e in errors]
        if not problems:
            problems = cross_field_problems(doc)
        if problems:
            print(f"{path}: FAIL ({len(problems)} problem{'s' if len(problems) != 1 else ''})")
            for p in problems:
                print(f"  {p}")
            failed += 1
        else:
            print(f"{path}: ok")
            passed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
