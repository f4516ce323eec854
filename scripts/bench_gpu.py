#!/usr/bin/env python3
"""GPU benchmark: ptychostitch's CUDA path from torch tensors, next to a torch baseline, in one run.

    python3 scripts/bench_gpu.py [--sizes 10000,100000,1000000] [--runs 10] [--json FILE]

The bench-grid scan of docs/semantics.md (N = 64, M = 20, step 3.7 px, jittered), patches random
complex64 made on the GPU. For each n, medians of --runs after two warm-ups:

* ptychostitch, torch tensor in -> torch tensor out through `Plan.reassemble_position` (tables
  cached): wall time to the result (synchronised), and the time between two CUDA events recorded
  around the Python call ("call, events"): that brackets the host work of the call (argument
  checks, DLPack import, launch) as well as the kernel, so it is not a device time;
* ptychostitch kernel alone ("kernel"): the same call captured in a CUDA graph and replayed, which
  runs the kernel with no host work between -- the one number here that is the kernel's time. If
  capture is refused, back-to-back calls timed by events, named as such (host work included);
* a careful torch baseline: crop, bilinear weights, four `index_add_` splats (atomic,
  nondeterministic) for the image and the weights, then the division;
* the floor: one read of the whole patch stack (`sum`), and the bytes the work needs (the kept
  m x m centres) at that bandwidth.

Checks in the same run: the GPU canvas equals the CPU path bit for bit (NaN by position) at the
smallest n, repeated GPU runs are identical, and the baseline's largest difference is reported.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import numpy as np
import torch

import ptychostitch as ps

N, M, STEP = 64, 20, 3.7


def bench_grid_offsets(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cols = max(1, math.ceil(math.sqrt(n)))
    k = np.arange(n)
    off = np.empty((n, 1, 1, 2))
    off[:, 0, 0, 0] = (k % cols) * STEP + rng.uniform(-0.5, 0.5, n)
    off[:, 0, 0, 1] = (k // cols) * STEP + rng.uniform(-0.5, 0.5, n)
    return off


def timed(fn, runs: int):
    """Median wall ms and median event ms of `fn()`, each run synchronised."""
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    wall, device = [], []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter()
        start.record()
        fn()
        end.record()
        end.synchronize()
        wall.append((time.perf_counter() - t0) * 1e3)
        device.append(start.elapsed_time(end))
    return statistics.median(wall), statistics.median(device)


def kernel_only(call, runs: int):
    """Device ms of `call()` with no host work: a CUDA graph replay, else back-to-back calls."""
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            call()  # warm-up on the capture stream
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            call()
        _, ms = timed(graph.replay, runs)
        return ms, "CUDA graph replay"
    except Exception as e:  # capture refused: say so and time back-to-back calls
        reason = f"back-to-back calls, host work included (graph capture failed: {type(e).__name__}: {e})"
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(runs):
        call()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / runs, reason


class TorchIndexAdd:
    """Bilinear splatting with index_add_ (forward form of docs/semantics.md §2 step 4)."""

    def __init__(self, plan: ps.Plan, offsets: np.ndarray, device):
        self.S, self.p = plan.canvas_shape[0], plan.pad
        a = torch.tensor(offsets.reshape(-1, 2), dtype=torch.float32, device=device)
        a = a - a.mean(0)
        whole = torch.floor(a)
        frac = a - whole
        m = 2 * (M // 2)
        self.c0, self.m = N // 2 - M // 2, m
        W = self.S + 1  # one spare row and column for zero-weight splats at the far edge
        r = torch.arange(m, device=device)
        local = (r[:, None] * W + r[None, :]).reshape(1, -1)
        base_y = (whole[:, 1].long() + self.p)[:, None]
        base_x = (whole[:, 0].long() + self.p)[:, None]
        self.splats = []
        for dy, wy in ((0, 1 - frac[:, 1]), (1, frac[:, 1])):
            for dx, wx in ((0, 1 - frac[:, 0]), (1, frac[:, 0])):
                index = ((base_y + dy) * W + base_x + dx + local).reshape(-1)
                self.splats.append((index, (wy * wx)[:, None, None]))
        self.W = W
        ones = torch.ones((a.shape[0], m, m), dtype=torch.float32, device=device)
        self.weights = self._splat(ones).view(W, W)[: self.S, : self.S]

    def _splat(self, values: torch.Tensor) -> torch.Tensor:
        lanes = 2 if values.is_complex() else 1
        canvas = torch.zeros((self.W * self.W, lanes), dtype=torch.float32, device=values.device)
        for index, weight in self.splats:
            v = values * weight
            v = torch.view_as_real(v) if v.is_complex() else v[..., None]
            canvas.index_add_(0, index, v.reshape(-1, lanes))
        return torch.view_as_complex(canvas) if lanes == 2 else canvas[:, 0]

    def reassemble_position(self, x: torch.Tensor) -> torch.Tensor:
        x = x[..., 0] if x.dim() == 4 else x
        crop = x[:, self.c0 : self.c0 + self.m, self.c0 : self.c0 + self.m]
        image = self._splat(crop).view(self.W, self.W)[: self.S, : self.S]
        return (image / (1e-9 + self.weights))[:, :, None]


def same_bits_nan_by_position(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = a.view(np.float32).ravel(), b.view(np.float32).ravel()
    nan = np.isnan(b)
    return bool(np.array_equal(np.isnan(a), nan) and np.array_equal(a[~nan].view(np.uint32), b[~nan].view(np.uint32)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--json")
    args = ap.parse_args()
    info = ps.gpu_available()
    if not info or not torch.cuda.is_available():
        print(f"SKIPPED: no GPU ({info.reason or 'torch sees none'})")
        return 0
    dev = torch.device("cuda", 0)
    print(f"GPU: {info.device}; torch {torch.__version__}; ptychostitch {ps.__version__}")
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        off = bench_grid_offsets(n)
        gen = torch.Generator(device=dev).manual_seed(n)
        x = torch.randn((n, N, N, 1), dtype=torch.complex64, device=dev, generator=gen)
        t0 = time.perf_counter()
        plan = ps.Plan(off, N, M)
        plan_ms = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        first = plan.reassemble_position(x)  # uploads the tables to the GPU
        torch.cuda.synchronize()
        upload_ms = (time.perf_counter() - t0) * 1e3
        row = {"n": n, "canvas": plan.canvas_shape[0], "plan_ms": plan_ms, "first_call_ms": upload_ms}
        wall, events = timed(lambda: plan.reassemble_position(x), args.runs)
        row["ours_call_wall_ms"], row["ours_call_events_ms"] = wall, events
        out = torch.empty_like(first)
        native = plan._plan
        stream = lambda: torch.cuda.current_stream().cuda_stream  # noqa: E731
        row["ours_kernel_ms"], row["kernel_timing"] = kernel_only(
            lambda: native.run_cuda(x, "reassemble_position", stream(), out), args.runs
        )
        again = plan.reassemble_position(x)
        row["deterministic"] = same_bits_nan_by_position(again.cpu().numpy(), first.cpu().numpy())
        if n <= 100_000:
            cpu = ps.Plan(off, N, M).reassemble_position(x.cpu().numpy())
            row["equals_cpu"] = same_bits_nan_by_position(first.cpu().numpy(), cpu)
        try:
            base = TorchIndexAdd(plan, off, dev)
            reference = base.reassemble_position(x)
            row["torch_index_add_max_abs_diff"] = float((reference - first).abs().max())
            _, row["torch_index_add_ms"] = timed(lambda: base.reassemble_position(x), args.runs)
            del base, reference
        except torch.cuda.OutOfMemoryError as e:
            row["torch_index_add_ms"] = f"out of memory: {e}"
        torch.cuda.empty_cache()
        _, row["read_stack_ms"] = timed(lambda: torch.view_as_real(x).sum(), args.runs)
        row["floor_kept_centres_ms"] = row["read_stack_ms"] * (M * M) / (N * N)
        rows.append(row)
        print(json.dumps(row), flush=True)
        del x, first, again, out
        torch.cuda.empty_cache()
    print("\n| n | ours: kernel (graph replay) | ours: torch in -> torch out, call (events / wall) | torch index_add_ | read stack | floor (kept centres) | exact vs CPU |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        base = r["torch_index_add_ms"]
        base = f"{base:.3f} ms" if isinstance(base, float) else base
        print(
            f"| {r['n']:,} | {r['ours_kernel_ms']:.4f} ms{'' if r['kernel_timing'] == 'CUDA graph replay' else ' (no graph: ' + r['kernel_timing'] + ')'} | {r['ours_call_events_ms']:.3f} / "
            f"{r['ours_call_wall_ms']:.3f} ms | {base} | {r['read_stack_ms']:.3f} ms | "
            f"{r['floor_kept_centres_ms']:.4f} ms | {r.get('equals_cpu', 'not checked')} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
