"""PtychoPINN's torch inference accumulators (``ptycho_torch.reassembly``) against ptychostitch's
drop-ins (``ptychostitch.splat``), in one run on one machine.

    python scripts/bench_accumulators.py [--root PTYCHOPINN] [--patches 10000] [--batch 256]

The scene of ``reconstruct_image_barycentric``: ``--patches`` patches of ``--size``² complex64
(its ``middle_trim``) in batches of ``--batch``, weighted by a probe intensity, on a canvas that
holds them all. Each row runs in a fresh process (so its peak RSS is its own) and prints the
median seconds for the whole accumulation, and how far the peak RSS (``getrusage``) rose above
its level once the inputs were made:

* ``PtychoPINN weighted`` / ``barycentric``: its own classes (needs ``--root``);
* ``ptychostitch weighted`` / ``barycentric``: the drop-ins (all cores, and one thread);
* ``floor``: reading the patches' bytes once (NumPy sum), the least any accumulation must do.
"""

import argparse
import json
import subprocess
import sys

ROW = r'''
import json, resource, sys, time, warnings
import numpy as np
impl, kind, n, batch, size, side, repeat, threads, root = sys.argv[1:10]
n, batch, size, side, repeat, threads = map(int, (n, batch, size, side, repeat, threads))
if root:
    sys.path.insert(0, root)
import torch
torch.set_num_threads(max(threads, 1) if threads else torch.get_num_threads())
rng = np.random.default_rng(0)
patches = torch.tensor((rng.standard_normal((n, size, size)) + 1j * rng.standard_normal((n, size, size))).astype(np.complex64))
positions = torch.tensor(rng.uniform(size, side - size, (n, 2)).astype(np.float32))
yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
probe = torch.tensor(np.exp(-(xx ** 2 + yy ** 2) / (2 * (size / 5) ** 2)).astype(np.float32))
if impl == "floor":
    raw = patches.numpy().view(np.float32)
    run = lambda: float(raw.sum())
else:
    if impl == "PtychoPINN":
        import ptycho_torch.reassembly as R
    else:
        import ptychostitch.ptychopinn as R
        if threads:
            import ptychostitch
            _splat = ptychostitch.splat
            ptychostitch.splat = lambda *a, **k: _splat(*a, **dict(k, threads=threads))
    cls = R.VectorizedWeightedAccumulator if kind == "weighted" else R.VectorizedBarycentricAccumulator
    def run():
        canvas = torch.zeros((side, side), dtype=torch.complex64)
        weights = torch.zeros((side, side))
        acc = cls((side, side), torch.device("cpu"))
        for s in range(0, n, batch):
            p, x = patches[s:s + batch], positions[s:s + batch]
            if kind == "weighted":
                acc.accumulate_batch(canvas, weights, p, x, probe, size)
            else:
                acc.accumulate_batch(canvas, weights, p, x, size)
        return canvas
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
run()
times = []
for _ in range(repeat):
    t = time.perf_counter(); run(); times.append(time.perf_counter() - t)
print(json.dumps({"median": sorted(times)[len(times) // 2], "rss_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}))
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="", help="a PtychoPINN checkout (its own rows)")
    ap.add_argument("--patches", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--side", type=int, default=800)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rows = [("floor", "-", 0)]
    for kind in ("weighted", "barycentric"):
        if args.root:
            rows.append(("PtychoPINN", kind, 0))
        rows += [("ptychostitch", kind, 0), ("ptychostitch", kind, 1)]
    print(f"{args.patches} patches of {args.size}², batches of {args.batch}, canvas {args.side}², median of {args.repeat}")
    print(f"{'row':<36}{'seconds':>10}{'vs PtychoPINN':>15}{'vs floor':>10}{'peak RSS +MB':>14}")
    base, floor = {}, None
    for impl, kind, threads in rows:
        argv = [sys.executable, "-c", ROW, impl, kind, str(args.patches), str(args.batch), str(args.size),
                str(args.side), str(args.repeat), str(threads), args.root]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        if impl == "floor":
            floor = r["median"]
        if impl == "PtychoPINN":
            base[kind] = r["median"]
        label = f"{impl} {kind}" + (" (1 thread)" if threads == 1 else "") if impl != "floor" else "floor: read the patches once"
        ratio = f"{base[kind] / r['median']:.1f}x" if kind in base else "-"
        print(f"{label:<36}{r['median']:>10.4f}{ratio:>15}{r['median'] / floor:>9.1f}x{r['rss_mb']:>14.0f}")


if __name__ == "__main__":
    main()
