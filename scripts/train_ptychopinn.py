"""A real PtychoPINN TensorFlow training run, with and without ``ptychostitch.ptychopinn.install()``.

Needs PtychoPINN (commit 712c23f) importable from ROOT and TensorFlow 2.21 with tf-keras,
tensorflow-probability and PtychoPINN's other imports (scratch environment; PtychoPINN is not
a dependency of ptychostitch):

    python scripts/train_ptychopinn.py ROOT [--batch 16] [--steps 5] [--gridsize 2] [--N 64] [--install]

Builds ``create_compiled_model(gridsize, N)`` as PtychoPINN's ``tests/test_model_factory.py``
sets up ``params.cfg``, and runs ``train_on_batch`` on a fixed synthetic batch (seeded): prints
one line per step (loss, seconds) and, at the end, the mean step time after the first and the
two reassembly layers' share. Without ``--install`` PtychoPINN's own layers run (at
``B·gridsize² ≥ 64`` they crash in the backward pass, which is printed).
"""

import argparse
import sys
import time

import numpy as np

parser = argparse.ArgumentParser()
parser.add_argument("root")
parser.add_argument("--batch", type=int, default=16)
parser.add_argument("--steps", type=int, default=5)
parser.add_argument("--gridsize", type=int, default=2)
parser.add_argument("--N", type=int, default=64)
parser.add_argument("--install", action="store_true")
args = parser.parse_args()
sys.path.insert(0, args.root)

import tensorflow as tf  # noqa: E402
from ptycho import params as p  # noqa: E402
from ptycho import probe  # noqa: E402

N, gs = args.N, args.gridsize
p.cfg["N"] = N
p.cfg["gridsize"] = gs
p.cfg["offset"] = 4
if p.cfg.get("default_probe_scale") is None:
    p.cfg["default_probe_scale"] = 4.0
p.cfg["probe"] = probe.get_default_probe(N, fmt="tf")
p.cfg.setdefault("intensity_scale", 1.0)
p.cfg.setdefault("nphotons", 1e9)

if args.install:
    import ptychostitch.ptychopinn

    ptychostitch.ptychopinn.install()

from ptycho import model  # noqa: E402

tf.keras.utils.set_random_seed(0)
autoencoder, _ = model.create_compiled_model(gridsize=gs, N=N)
C = gs * gs
rng = np.random.default_rng(0)
B = args.batch
X = rng.uniform(0, 1, (B, N, N, C)).astype(np.float32)
positions = rng.uniform(-3, 3, (B, 1, 2, C)).astype(np.float32)
Y_obj = (rng.uniform(0.5, 1, (B, N, N, 1)) * np.exp(1j * rng.uniform(-0.5, 0.5, (B, N, N, 1)))).astype(np.complex64)
Y_amp = rng.uniform(0, 1, (B, N, N, C)).astype(np.float32)
targets = [Y_obj, Y_amp, Y_amp**2]
print(f"installed={args.install} B={B} gridsize={gs} N={N} padded_size={p.get_padded_size()}")
times = []
for step in range(args.steps):
    started = time.perf_counter()
    try:
        loss = autoencoder.train_on_batch([X, positions], targets)
    except Exception as e:  # PtychoPINN's own layers at B·C >= 64
        print(f"step {step}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        sys.exit(1)
    times.append(time.perf_counter() - started)
    total = float(np.sum(loss)) if np.ndim(loss) else float(loss)
    print(f"step {step}: loss {total:.6g}  {times[-1]:.3f} s")
if len(times) > 1:
    print(f"mean step after the first: {np.mean(times[1:]):.3f} s")
