"""Forward + backward of reassemble_position against the forward alone and against the peers.

    python scripts/bench_gradients.py [--sizes 10000,100000] [--threads 2] [--peer-sizes 1000,10000]
                                      [--ptychopinn /path/to/PtychoPINN]

Bench-grid scan (docs/semantics.md §5: N = 64, M = 20). Medians of repeated runs, all in one
process, so the ratios hold on any CPU:

* ours: ``reassemble_position`` alone, and forward + the vector-Jacobian product for patches
  and offsets (``Plan.vjp`` with the forward's output), ``threads`` workers;
* PyTorch (when installed): the ``grid_sample`` reassembly PtychoPINN's torch code uses (an
  affine translation grid, bilinear, zero padding, real and imaginary parts as channels),
  written here, forward + autograd backward for patches and offsets, in chunks of 256 patches;
* TensorFlow (with ``--ptychopinn``): ``tf.GradientTape`` through PtychoPINN's own
  ``reassemble_position``.
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

import ptychostitch as ps
from ptychostitch import _native


def bench_grid(n, N=64, seed=0):
    rng = np.random.default_rng(seed)
    cols = int(np.ceil(np.sqrt(n)))
    k = np.arange(n)
    off = np.stack([(k % cols) * 3.7, (k // cols) * 3.7], axis=1) + rng.uniform(-0.5, 0.5, (n, 2))
    obj = (rng.standard_normal((n, N, N)) + 1j * rng.standard_normal((n, N, N))).astype(np.complex64)
    return obj[..., None], off.reshape(n, 1, 1, 2)


def median_time(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def ours(obj, off, M, threads, repeat):
    n = obj.shape[0]
    flat = obj[..., 0]
    fwd = lambda: _native.stitch(flat, off.reshape(n, 2), M, "reassemble_position", False, threads)  # noqa: E731

    def both():
        out, _ = fwd()
        plan = _native.Plan(off.reshape(n, 2), obj.shape[1], M, threads)
        cot = np.ones_like(out)
        plan.vjp(flat, cot, "reassemble_position", out, True, True)

    return median_time(fwd, repeat), median_time(both, repeat)


def torch_grid_sample(obj, off, M, repeat, chunk=256):
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    n, N = obj.shape[0], obj.shape[1]
    plan = ps.Plan(off, N, M)
    S, p = plan.canvas_shape[0], plan.pad
    c0 = N // 2 - M // 2
    m = 2 * (M // 2)
    patches = torch.tensor(obj[:, c0:c0 + m, c0:c0 + m, 0], requires_grad=True)
    offsets = torch.tensor(off.reshape(n, 2), requires_grad=True)

    def run():
        shifts = offsets - offsets.mean(0)
        canvas = torch.zeros(2, S, S)
        weights = torch.zeros(1, S, S)
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            part = patches[s:e]
            img = torch.stack([part.real, part.imag], 1)
            img = torch.nn.functional.pad(img, (p, p, p, p))
            ones = torch.nn.functional.pad(torch.ones(e - s, 1, m, m), (p, p, p, p))
            # Output pixel x samples x - a: in align_corners=False coordinates that is a shift
            # of -2a/S of the normalised grid.
            theta = torch.zeros(e - s, 2, 3, dtype=torch.float32)
            theta[:, 0, 0] = 1
            theta[:, 1, 1] = 1
            theta[:, 0, 2] = -2 * shifts[s:e, 0].float() / S
            theta[:, 1, 2] = -2 * shifts[s:e, 1].float() / S
            grid = torch.nn.functional.affine_grid(theta, (e - s, 2, S, S), align_corners=False)
            moved = torch.nn.functional.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            w = torch.nn.functional.grid_sample(ones, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            canvas = canvas + moved.sum(0)
            weights = weights + w.sum(0)
        return canvas / (1e-9 + weights)

    def fwd():
        with torch.no_grad():
            run()

    def both():
        patches.grad = None
        offsets.grad = None
        run().sum().backward()

    return median_time(fwd, repeat), median_time(both, repeat)


def tf_ptychopinn(obj, off, M, root, repeat):
    sys.path.insert(0, root)
    import tensorflow as tf
    from ptycho import params
    from ptycho import tf_helper as hh

    params.set("N", obj.shape[1])
    o, f = tf.Variable(obj), tf.Variable(off)

    def both():
        with tf.GradientTape() as tape:
            y = hh.reassemble_position(o, f, M=M)
            loss = tf.reduce_sum(tf.math.real(y))
        tape.gradient(loss, [o, f])

    return median_time(both, repeat)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--peer-sizes", default="10000,100000")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--ptychopinn", default=None)
    a = ap.parse_args()
    M = 20
    print(f"{'n':>8} {'fwd (ms)':>10} {'fwd+bwd (ms)':>13} {'ratio':>6}  peer fwd+bwd (ms)   ours faster by")
    for n in [int(s) for s in a.sizes.split(",")]:
        obj, off = bench_grid(n)
        f, fb = ours(obj, off, M, a.threads, a.repeat)
        line = f"{n:>8} {f * 1e3:>10.2f} {fb * 1e3:>13.2f} {fb / f:>6.2f}"
        if str(n) in a.peer_sizes.split(","):
            try:
                import torch  # noqa: F401

                tf_, tfb = torch_grid_sample(obj, off, M, max(1, a.repeat // 2))
                line += f"  torch grid_sample {tfb * 1e3:.1f} ({tf_ * 1e3:.1f} fwd)   {tfb / fb:.0f}x"
            except ImportError:
                pass
            if a.ptychopinn:
                t = tf_ptychopinn(obj, off, M, a.ptychopinn, 1)
                line += f"  TF GradientTape (PtychoPINN) {t * 1e3:.0f}   {t / fb:.0f}x"
        print(line, flush=True)


if __name__ == "__main__":
    main()
