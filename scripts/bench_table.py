#!/usr/bin/env python3
"""Print the benchmark table of docs/performance.md from criterion's results (target/criterion).

Run `cargo bench -p ptychostitch --bench reassemble` first. Medians, in one run.
"""
import json
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion") / "reassemble_position"
# PtychoPINN TensorFlow times on a 2-core CPU, docs/semantics.md §5 (new batched function).
TF = {100: 0.011, 500: 0.076, 1000: 0.30, 10000: 20.4}  # 10,000: issue #2


def median(kind, n):
    f = root / kind / str(n) / "new" / "estimates.json"
    if not f.exists():
        return None
    return json.loads(f.read_text())["median"]["point_estimate"] / 1e9  # seconds


def fmt(s):
    return "–" if s is None else (f"{s * 1e3:.3f} ms" if s < 1 else f"{s:.2f} s")


sizes = sorted(int(p.name) for p in (root / "fast").iterdir() if p.name.isdigit())
print("| patches | fast (free function) | fast (plan reused) | reference | fast vs reference | fast vs PtychoPINN TF |")
print("|---:|---:|---:|---:|---:|---:|")
for n in sizes:
    fast, reuse, ref = median("fast", n), median("plan_reuse", n), median("reference", n)
    ratio = f"{ref / fast:,.0f}×" if ref and fast else "–"
    tf = f"{TF[n] / fast:,.0f}×" if n in TF and fast else "–"
    print(f"| {n:,} | {fmt(fast)} | {fmt(reuse)} | {fmt(ref)} | {ratio} | {tf} |")
