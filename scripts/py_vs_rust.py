#!/usr/bin/env python3
"""reassemble_position on the bench-grid scan (docs/semantics.md §5) through Python vs through Rust, one run.

Usage: python scripts/py_vs_rust.py [n] (needs the package installed and the release CLI built:
`cargo build --release -p ptychostitch-cli`).
"""
import json
import math
import subprocess
import sys
import time

import numpy as np

import ptychostitch as ps

n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
rng = np.random.default_rng(1)
cols = math.ceil(math.sqrt(n))
k = np.arange(n)
off = np.stack([(k % cols) * 3.7 + rng.uniform(-0.5, 0.5, n), (k // cols) * 3.7 + rng.uniform(-0.5, 0.5, n)], axis=1)
obj = (rng.standard_normal((n, 64, 64)) + 1j * rng.standard_normal((n, 64, 64))).astype(np.complex64)[..., None]
off = off.reshape(n, 1, 1, 2)

ps.reassemble_position(obj, off, M=20)  # warm-up
times = []
for _ in range(15):
    t = time.perf_counter()
    out = ps.reassemble_position(obj, off, M=20)
    times.append(time.perf_counter() - t)
py = float(np.median(times))
rust = json.loads(
    subprocess.run(
        ["target/release/ptychostitch", "bench", "--sizes", str(n), "--runs", "15", "--json"],
        check=True, capture_output=True, text=True,
    ).stdout
)[0]["median_s"]
print(f"n={n}, canvas {out.shape}: Python {py * 1e3:.2f} ms, Rust {rust * 1e3:.2f} ms, Python/Rust {py / rust:.2f}")
