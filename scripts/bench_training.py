"""The training-path layer pair (region reassembly + extraction), forward and backward, against
PtychoPINN's own TensorFlow layers and torch helpers, in one run on one machine.

    python scripts/bench_training.py [--root PTYCHOPINN] [--batches 16 64] [--repeat 7]

Each row runs in a fresh process (so its peak RSS is its own): gridsize 2, N = 64, complex
patches, the loss ``Σ Re(conj(W)·extract(reassemble(x)))`` and its gradient with respect to the
patches and the positions. Rows:

* ``ptychostitch tf``: ``reassemble_regions`` (PtychoPINN's TF layer semantics) then
  ``extract_patches_position``, under a TF ``GradientTape`` (eager);
* ``PtychoPINN tf``: PtychoPINN's per-sample reassembly (``mk_reassemble_position_batched_real``
  with its threshold above ``B·C``, what its layer computes below 64 patches) through
  ``reassemble_patches``, then its ``extract_patches_position`` (needs ``--root``);
* ``... tfgraph``: the same TF step inside one ``tf.function`` (what Keras ``fit`` runs);
* ``ptychostitch floor``: four bilinear passes over the pair's ``B·C·N²`` patch pixels (each of
  the reassembly, the extraction and their adjoints evaluates or spreads one bilinear sample per
  patch pixel), timed as ptychostitch's extraction forward, the plainest of them;
* ``ptychostitch torch`` / ``PtychoPINN torch``: ``ptycho_torch.helper``'s
  ``reassemble_patches_position_real`` + ``extract_channels_from_region``, with and without
  ``ptychostitch.ptychopinn.install("ptycho_torch.helper")`` (needs ``--root``), torch autograd.

Prints the median and minimum seconds per forward+backward, the peak RSS (``getrusage``), each
ptychostitch row's speed-up over PtychoPINN's in the same framework, and each row against the
floor.
"""

import argparse
import json
import resource
import subprocess
import sys
import time

ROW = r'''
import json, resource, sys, time
import numpy as np
impl, framework, B, repeat, root = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
if root:
    sys.path.insert(0, root)
N, gs = 64, 2
C = gs * gs
rng = np.random.default_rng(0)
P = N + 2 * 8
x0 = (rng.standard_normal((B, N, N, C)) + 1j * rng.standard_normal((B, N, N, C))).astype(np.complex64)
pos0 = rng.uniform(-4, 4, (B, 1, 2, C)).astype(np.float32)
W = (rng.standard_normal((B * C, N, N, 1)) + 1j * rng.standard_normal((B * C, N, N, 1))).astype(np.complex64)
if framework == "floor":
    # Four bilinear passes over the pair's B·C·N² patch pixels (the reassembly, the extraction
    # and their two adjoints each evaluate or spread one bilinear sample per patch pixel),
    # timed as the plainest of them: ptychostitch's extraction forward, which reads the
    # regions and writes the patches once.
    from ptychostitch import _native
    images = (rng.standard_normal((B, P, P)) + 1j * rng.standard_normal((B, P, P))).astype(np.complex64)
    plan = _native.Extraction(pos0.reshape(B, 2, C).transpose(0, 2, 1).reshape(B * C, 2).astype(np.float64), C, P, N)
    def step():
        for _ in range(4):
            plan.extract(images)
elif framework in ("tf", "tfgraph"):
    import tensorflow as tf
    if impl == "ptychopinn":
        from ptycho import params, tf_helper as hh
        params.cfg["N"], params.cfg["gridsize"] = N, gs
        def pair(x, pos):
            fn = hh.mk_reassemble_position_batched_real(pos, batch_size=B * C + 1, padded_size=P, N=N, gridsize=gs)
            region = hh.reassemble_patches(x, fn_reassemble_real=fn, N=N, gridsize=gs)
            return hh.extract_patches_position(region, pos, 0.0, N=N, gridsize=gs)
    else:
        import ptychostitch as ps
        def pair(x, pos):
            region = ps.reassemble_regions(x, pos, P)
            return ps.extract_patches_position(region, pos, 0.0, N=N, gridsize=gs)
    x, pos, w = tf.Variable(x0), tf.Variable(pos0), tf.constant(W)
    def grads():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.math.real(tf.math.conj(w) * tf.cast(pair(x, pos), tf.complex64)))
        return tape.gradient(loss, [x, pos])
    if framework == "tfgraph":
        grads = tf.function(grads)  # what Keras `fit` runs: one graph per step
    def step():
        dx, dp = grads()
        dx.numpy(); dp.numpy()
else:
    import torch
    from ptycho_torch import helper
    from ptycho_torch.config_params import DataConfig, ModelConfig
    data = DataConfig(N=N, C=C, grid_size=(gs, gs), max_neighbor_distance=16.0)
    model = ModelConfig(C_model=C, C_forward=C)
    assert helper.get_padded_size(data, model) == P
    if impl == "ptychostitch":
        import ptychostitch.ptychopinn
        ptychostitch.ptychopinn.install("ptycho_torch.helper")
    xt = torch.tensor(np.ascontiguousarray(x0.transpose(0, 3, 1, 2)), requires_grad=True)
    pt = torch.tensor(np.ascontiguousarray(pos0.reshape(B, 2, C).transpose(0, 2, 1)[:, :, None, :]), requires_grad=True)
    wt = torch.tensor(W.reshape(B, C, N, N))
    def step():
        region, mask, _ = helper.reassemble_patches_position_real(xt, pt, data, model, padded_size=P)
        patches = helper.extract_channels_from_region(region[:, None], pt, data, model)
        loss = torch.sum(torch.real(torch.conj(wt) * patches))
        torch.autograd.grad(loss, [xt, pt])
step()
times = []
for _ in range(repeat):
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
print(json.dumps(dict(median=float(np.median(times)), min=float(np.min(times)),
                      rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
'''


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", default="")
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    rows = [("ptychostitch", "floor"), ("ptychostitch", "tf"), ("ptychostitch", "tfgraph")]
    if args.root:
        rows += [("ptychopinn", "tf"), ("ptychopinn", "tfgraph"), ("ptychostitch", "torch"), ("ptychopinn", "torch")]
    print(f"{'implementation':<22}{'B':>4}{'median s':>11}{'min s':>9}{'peak RSS MB':>13}{'speed-up':>9}{'vs floor':>15}")
    for B in args.batches:
        medians = {}
        # PtychoPINN's rows first, so that each of ours prints its speed-up beside it.
        for impl, framework in sorted(rows, key=lambda r: (r[1] != "floor", r[0] != "ptychopinn")):
            run = subprocess.run([sys.executable, "-c", ROW, impl, framework, str(B), str(args.repeat), args.root],
                                 capture_output=True, text=True)
            if run.returncode != 0:
                print(f"{impl + ' ' + framework:<22}{B:>4}  failed: {run.stderr.strip().splitlines()[-1][:100]}")
                continue
            r = json.loads(run.stdout.strip().splitlines()[-1])
            medians[(impl, framework)] = r["median"]
            ratio = ""
            rival = {"ptychostitch": "ptychopinn"}.get(impl)
            if (rival, framework) in medians:
                ratio = f"{medians[(rival, framework)] / r['median']:>8.1f}x"
            if framework != "floor" and ("ptychostitch", "floor") in medians:
                ratio += f"{r['median'] / medians[('ptychostitch', 'floor')]:>9.1f}x floor"
            print(f"{impl + ' ' + framework:<22}{B:>4}{r['median']:>11.4f}{r['min']:>9.4f}{r['rss_mb']:>13.0f}{ratio}")



if __name__ == "__main__":
    main()
