"""Issue 33, item 1 (in part): ``install("ptycho_torch.reassembly")`` replaces PtychoPINN's torch
inference stitching, ``reassemble_single_channel`` and ``reassemble_multi_channel``, with
ptychostitch's region reassembly: the same signatures and results, in ``O(S² + n·M²)`` memory
where PtychoPINN pads every patch to the whole canvas (``O(n·S²)``), with no TensorFlow.

Goldens: PtychoPINN 712c23f's own functions (``tests/data/torch_reassembly``, made by
``scripts/make_torch_reassembly_goldens.py``). Bit for bit where PtychoPINN's sum over the patches
is sequential (small batches); for a batch of 300 torch's ``sum(dim=0)`` adds in its own
(vectorised) order, and the results agree to float32 rounding (measured below)."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (scripts/test.sh installs it)")

import ptychostitch.ptychopinn as installer  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "torch_reassembly"


def load(name):
    return dict(np.load(DATA / f"{name}.npz"))


class Config:
    def __init__(self, **values):
        self.__dict__.update(values)


@pytest.fixture
def reassembly(monkeypatch):
    """A stand-in ``ptycho_torch.reassembly`` whose functions say when they run, installed."""
    module = types.ModuleType("ptycho_torch.reassembly")

    def reassemble_single_channel(*args, **kwargs):
        raise AssertionError("PtychoPINN's reassemble_single_channel ran")

    def reassemble_multi_channel(*args, **kwargs):
        raise AssertionError("PtychoPINN's reassemble_multi_channel ran")

    module.reassemble_single_channel = reassemble_single_channel
    module.reassemble_multi_channel = reassemble_multi_channel
    monkeypatch.setitem(sys.modules, "ptycho_torch.reassembly", module)
    installer.install("ptycho_torch.reassembly")
    yield module
    installer.uninstall()
    assert module.reassemble_single_channel is reassemble_single_channel


def single(module, f):
    return module.reassemble_single_channel(
        torch.tensor(f["im"]), torch.tensor(f["com"]), torch.tensor(f["max_offset"]), torch.tensor(f["coords"]),
        Config(N=int(f["N"]), C=int(f["C"])), middle=int(f["middle"]),
    )


@pytest.mark.parametrize("name", ["single_n6", "single_c4_n5"])
def test_single_channel_is_ptychopinns_bit_for_bit(reassembly, name):
    f = load(name)
    image, counts = single(reassembly, f)
    for got, want, what in ((image, f["image"], "image"), (counts, f["counts"], "counts")):
        assert got.dtype == torch.complex64 and tuple(got.shape) == want.shape, what
        assert got.numpy().tobytes() == want.tobytes(), what


def test_single_channel_of_300_patches_agrees_to_float32_rounding(reassembly):
    f = load("single_n300")
    image, counts = single(reassembly, f)
    for got, want in ((image.numpy(), f["image"]), (counts.numpy(), f["counts"])):
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-6 * np.abs(want).max()
        # The same pixels covered, and nothing dropped at the edges.
        assert np.array_equal(got != 0, want != 0)


def test_multi_channel_stitches_the_solution_regions_bit_for_bit(reassembly, monkeypatch):
    """Stage 1 is PtychoPINN's helper as installed (here a stand-in giving PtychoPINN's own
    stage-1 output, stored in the golden); stage 2 is ptychostitch's."""
    f = load("multi_b6")
    helper = types.ModuleType("ptycho_torch.helper")
    helper.reassemble_patches_position_real = lambda *a, **k: (
        torch.tensor(f["stage1_regions"]), torch.tensor(f["stage1_mask"]), int(f["stage1_size"]))
    monkeypatch.setitem(sys.modules, "ptycho_torch.helper", helper)
    image, counts = reassembly.reassemble_multi_channel(
        torch.tensor(f["im"]), torch.tensor(f["com"]), torch.tensor(f["max_offset"]), torch.tensor(f["rel"]),
        torch.tensor(f["centers"]), Config(N=32, C=4), Config(), middle=int(f["middle"]),
    )
    assert image.numpy().tobytes() == f["image"].tobytes() and image.shape == f["image"].shape
    assert counts.dtype == torch.float32 and counts.numpy().tobytes() == f["counts"].tobytes()


def test_memory_is_bounded_by_the_canvas_not_n_canvases(reassembly):
    """5,000 patches of 64×64 (centre 20×20) on a 1,020-pixel canvas: PtychoPINN's padded stack
    alone would be 5,000 × 1,020² complex64 = 41.6 GB. This runs in the test's memory."""
    rng = np.random.default_rng(5)
    n, N = 5000, 64
    im = torch.tensor(rng.standard_normal((n, 1, N, N)).astype(np.float32)).to(torch.complex64)
    coords = torch.tensor(rng.uniform(0, 1000, (n, 1, 1, 2)).astype(np.float32))
    com = coords.reshape(n, 2).mean(0)
    image, counts = reassembly.reassemble_single_channel(
        im, com, (coords.reshape(n, 2) - com).abs().max(), coords, Config(N=N, C=1), middle=20)
    assert image.shape == counts.shape and image.shape[0] >= 1000
    assert float(counts.real.max()) > 1 and float(counts.real.sum()) == pytest.approx(n * 400, rel=1e-3)


ROOT = os.environ.get("PTYCHOPINN_ROOT")


@pytest.mark.skipif(not ROOT, reason="PTYCHOPINN_ROOT is not set: PtychoPINN (GPL, not a dependency) is not on this machine")
def test_ptychopinns_own_module_after_install():
    script = f"""
import numpy as np, torch
import ptycho_torch.reassembly as R
from ptycho_torch.config_params import DataConfig, ModelConfig
import ptychostitch.ptychopinn as installer
installer.install("ptycho_torch.reassembly")
assert getattr(R.reassemble_single_channel, "__ptychostitch__", False)
f = dict(np.load({str(DATA / 'single_n6.npz')!r}))
dc = DataConfig(); dc.N, dc.C = int(f["N"]), int(f["C"])
image, counts = R.reassemble_single_channel(torch.tensor(f["im"]), torch.tensor(f["com"]), torch.tensor(f["max_offset"]),
                                            torch.tensor(f["coords"]), dc, middle=int(f["middle"]))
assert image.numpy().tobytes() == f["image"].tobytes() and counts.numpy().tobytes() == f["counts"].tobytes()
f = dict(np.load({str(DATA / 'multi_b6.npz')!r}))
dc = DataConfig(); dc.N, dc.C, dc.grid_size = 32, 4, (2, 2)
image, counts = R.reassemble_multi_channel(torch.tensor(f["im"]), torch.tensor(f["com"]), torch.tensor(f["max_offset"]),
                                           torch.tensor(f["rel"]), torch.tensor(f["centers"]), dc, ModelConfig(), middle=10)
assert image.numpy().tobytes() == f["image"].tobytes() and counts.numpy().tobytes() == f["counts"].tobytes()
print("ok")
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0 and "ok" in run.stdout, run.stdout[-2000:] + run.stderr[-3000:]
