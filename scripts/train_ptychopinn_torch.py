"""A real ptycho_torch training loop through its ForwardModel, with and without
``ptychostitch.ptychopinn.install("ptycho_torch.helper")``.

Needs PtychoPINN (commit 712c23f) importable from ROOT and torch (scratch environment):

    python scripts/train_ptychopinn_torch.py ROOT [--batch 16] [--steps 5] [--install]

PtychoPINN's ``ptycho_torch.model.ForwardModel`` (object.big: its centre-mask reassembly, its
extraction, probe illumination, far-field diffraction) maps object patches to diffraction
amplitudes. The object patches are the trained parameter (Adam, lr 0.01) against the amplitudes of
a fixed random object (seeded), gridsize 2, N = 64, on the CPU. Prints the loss per step and the
mean step time after the first.
"""

import argparse
import sys
import time

import numpy as np

parser = argparse.ArgumentParser()
parser.add_argument("root")
parser.add_argument("--batch", type=int, default=16)
parser.add_argument("--steps", type=int, default=5)
parser.add_argument("--install", action="store_true")
args = parser.parse_args()
sys.path.insert(0, args.root)

import torch  # noqa: E402
from ptycho_torch.config_params import DataConfig, ModelConfig  # noqa: E402
from ptycho_torch.model import ForwardModel  # noqa: E402

if args.install:
    import ptychostitch.ptychopinn

    ptychostitch.ptychopinn.install("ptycho_torch.helper")

torch.manual_seed(0)
N, gs, B = 64, 2, args.batch
C = gs * gs
data = DataConfig(N=N, C=C, grid_size=(gs, gs), max_neighbor_distance=8.0)
model_config = ModelConfig(C_model=C, C_forward=C, object_big=True)
forward = ForwardModel(model_config, data)
rng = np.random.default_rng(0)
positions = torch.tensor(rng.uniform(-4, 4, (B, C, 1, 2)).astype(np.float32))
yy, xx = np.mgrid[:N, :N] - N / 2
probe = torch.tensor(np.exp(-(xx**2 + yy**2) / (2 * 12.0**2)).astype(np.complex64)[None, None, None])
scale = torch.ones(B, 1, 1, 1)


def phase_object(seed):
    r = np.random.default_rng(seed)
    return torch.tensor(np.exp(1j * r.uniform(-0.5, 0.5, (B, C, N, N))).astype(np.complex64))


with torch.no_grad():
    target = forward(phase_object(1), None, positions, probe, scale)
x = torch.nn.Parameter(phase_object(2))
optimizer = torch.optim.Adam([x], lr=0.01)
print(f"installed={args.install} B={B} gridsize={gs} N={N} region={forward.data_config.N}")
times = []
for step in range(args.steps):
    started = time.perf_counter()
    optimizer.zero_grad()
    pred = forward(x, None, positions, probe, scale)
    loss = torch.mean((pred - target) ** 2)
    loss.backward()
    optimizer.step()
    times.append(time.perf_counter() - started)
    print(f"step {step}: loss {loss.item():.6g}  {times[-1]:.3f} s")
print(f"mean step after the first: {np.mean(times[1:]):.3f} s")
