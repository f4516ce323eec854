"""Issue 33, item 1: ``install("ptycho_torch.reassembly")`` replaces PtychoPINN's torch inference
accumulators, ``VectorizedWeightedAccumulator`` and ``VectorizedBarycentricAccumulator``, with
:func:`ptychostitch.splat`: the same constructors, ``accumulate_batch`` and counters, PtychoPINN's
bits, no index tensors, deterministic; at the canvas's edge, clipping instead of PtychoPINN's
dropping unless asked for.

Goldens: PtychoPINN 712c23f's own classes (``tests/data/accumulators``, made by
``scripts/make_accumulator_goldens.py``), each case also on a canvas ``margin`` pixels larger
where PtychoPINN drops nothing: clipping on the small canvas must give its centre bit for bit."""

from __future__ import annotations

import os
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (scripts/test.sh installs it)")

import ptychostitch as ps  # noqa: E402
import ptychostitch.ptychopinn as installer  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "accumulators"
CASES = ["weighted_c1", "weighted_uniform", "barycentric_c1", "weighted_c4", "weighted_nonfinite"]


def load(name):
    return dict(np.load(DATA / f"{name}.npz"))


def same_bits(a, b):
    """Equal in every bit, every NaN counted as one pattern (torch and we make the same NaNs on
    x86, but the payload is not part of the contract)."""
    a, b = (np.ascontiguousarray(x).view(np.uint32).copy() for x in (a, b))
    for x in (a, b):
        x[(x & 0x7F800000 == 0x7F800000) & (x & 0x007FFFFF != 0)] = 0x7FC00000
    return np.array_equal(a, b)


@pytest.fixture
def reassembly(monkeypatch):
    """A stand-in ``ptycho_torch.reassembly`` whose accumulators fail if they are used, installed."""
    module = types.ModuleType("ptycho_torch.reassembly")

    class VectorizedWeightedAccumulator:
        def __init__(self, *args, **kwargs):
            raise AssertionError("PtychoPINN's VectorizedWeightedAccumulator ran")

    class VectorizedBarycentricAccumulator(VectorizedWeightedAccumulator):
        pass

    module.VectorizedWeightedAccumulator = VectorizedWeightedAccumulator
    module.VectorizedBarycentricAccumulator = VectorizedBarycentricAccumulator
    monkeypatch.setitem(sys.modules, "ptycho_torch.reassembly", module)
    installer.install("ptycho_torch.reassembly")
    yield module
    installer.uninstall()
    assert module.VectorizedWeightedAccumulator is VectorizedWeightedAccumulator


def accumulate(module, f, edge=None, margin=0):
    shape = tuple(int(d) + 2 * margin for d in f["canvas_shape"])
    canvas = torch.zeros(shape, dtype=torch.complex64)
    weights = torch.zeros(shape, dtype=torch.float32)
    weighted = str(f["kind"]) == "weighted"
    cls = module.VectorizedWeightedAccumulator if weighted else module.VectorizedBarycentricAccumulator
    acc = cls(shape, torch.device("cpu"), **({} if edge is None else {"edge": edge}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(int(f["batches"])):
            patches = torch.tensor(f[f"patches_{k}"])
            positions = torch.tensor(f[f"positions_{k}"] + np.float32(margin))
            if weighted:
                acc.accumulate_batch(canvas, weights, patches, positions, torch.tensor(f["probe_mag_sq"]),
                                     patches.shape[-1], uniform_weighting=bool(f["uniform"]))
            else:
                acc.accumulate_batch(canvas, weights, patches, positions, patches.shape[-1])
    return canvas.numpy(), weights.numpy(), acc


@pytest.mark.parametrize("name", CASES)
def test_ptychopinns_edge_gives_its_bits_and_counts(reassembly, name):
    f = load(name)
    canvas, weights, acc = accumulate(reassembly, f, edge="ptychopinn")
    assert same_bits(canvas, f["canvas"]) and same_bits(weights, f["weights"])
    if str(f["kind"]) == "weighted":
        assert (acc.patches_accepted, acc.patches_total) == (int(f["accepted"]), int(f["total"]))
    assert acc.patches_clipped == 0


@pytest.mark.parametrize("name", CASES)
def test_clipping_gives_the_centre_of_a_canvas_where_nothing_is_dropped(reassembly, name):
    f = load(name)
    canvas, weights, acc = accumulate(reassembly, f)  # the default edge: clip
    m = int(f["margin"])
    h, w = (int(d) for d in f["canvas_shape"])
    assert same_bits(canvas, f["big_canvas"][m:m + h, m:m + w])
    assert same_bits(weights, f["big_weights"][m:m + h, m:m + w])
    # Every patch that touches the canvas counts; those that PtychoPINN dropped are clipped.
    assert acc.patches_accepted >= int(f["accepted"]) if str(f["kind"]) == "weighted" else True
    assert acc.patches_total == sum(len(f[f"positions_{k}"]) for k in range(int(f["batches"])))
    if name == "weighted_c1":
        assert acc.patches_accepted > int(f["accepted"]) and acc.patches_clipped > 0


def test_warnings_name_the_patches_that_added_nothing(reassembly):
    f = load("weighted_c1")
    acc = reassembly.VectorizedWeightedAccumulator((56, 60), "cpu")
    canvas, weights = torch.zeros((56, 60), dtype=torch.complex64), torch.zeros((56, 60))
    positions = torch.tensor([[30.0, 30.0], [200.0, 30.0], [30.0, -40.0]])
    with pytest.warns(UserWarning, match=r"2/3 patch\(es\) added nothing.*wholly beyond the canvas"):
        acc.accumulate_batch(canvas, weights, torch.tensor(f["patches_0"][:3]), positions,
                             torch.tensor(f["probe_mag_sq"]), 12)
    assert (acc.patches_accepted, acc.patches_total) == (1, 3)
    strict = reassembly.VectorizedBarycentricAccumulator((56, 60), "cpu", edge="ptychopinn")
    # Corner column 60 − 12 − 1 = 47 is one pixel short of PtychoPINN's check: dropped.
    with pytest.warns(UserWarning, match="PtychoPINN's bounds check dropped them"):
        strict.accumulate_batch(canvas, weights, torch.tensor(f["patches_0"][:1]), torch.tensor([[47.0 + 6, 30.0]]), 12)


def test_torch_tensors_are_written_in_place_strided_too(reassembly):
    f = load("barycentric_c1")
    expected, expected_w, _ = accumulate(reassembly, f)
    # The canvas as a transposed view of a (W, H) tensor: PtychoPINN's `reshape(-1)` would
    # scatter into a copy and leave it unchanged.
    store = torch.zeros((60, 56), dtype=torch.complex64)
    canvas, weights = store.t(), torch.zeros((56, 60))
    acc = reassembly.VectorizedBarycentricAccumulator((56, 60), "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(2):
            acc.accumulate_batch(canvas, weights, torch.tensor(f[f"patches_{k}"]), torch.tensor(f[f"positions_{k}"]), 12)
    assert same_bits(store.t().contiguous().numpy(), expected) and same_bits(weights.numpy(), expected_w)


def test_splat_on_numpy_reference_and_threads_agree():
    f = load("weighted_c1")
    runs = []
    for kwargs in ({}, {"reference": True}, {"threads": 1}):
        canvas, weights = np.zeros((56, 60), np.complex64), np.zeros((56, 60), np.float32)
        placed = [ps.splat(canvas, weights, f[f"patches_{k}"], f[f"positions_{k}"].astype(np.float64),
                           f["probe_mag_sq"], edge="ptychopinn", **kwargs) for k in range(2)]
        runs.append((canvas, weights, placed))
    for canvas, weights, placed in runs:
        assert same_bits(canvas, f["canvas"]) and same_bits(weights, f["weights"])
        assert sum(p.accepted for p in placed) == int(f["accepted"])
        assert all(isinstance(p, ps.Placed) for p in placed)


def test_bad_arguments_are_precise_errors_and_change_nothing(reassembly):
    f = load("weighted_c1")
    patches, positions = f["patches_0"][:4], f["positions_0"][:4]
    canvas, weights = np.zeros((56, 60), np.complex64), np.zeros((56, 60), np.float32)
    with pytest.raises(TypeError, match="canvas has dtype complex128"):
        ps.splat(canvas.astype(np.complex128), weights, patches, positions)
    with pytest.raises(TypeError, match="patches have dtype complex128"):
        ps.splat(canvas, weights, patches.astype(np.complex128), positions)
    with pytest.raises(ValueError, match="weights.*shape"):
        ps.splat(canvas, weights[:, :59], patches, positions)
    with pytest.raises(ValueError, match='edge="middle"'):
        ps.splat(canvas, weights, patches, positions, edge="middle")
    bad = positions.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"\[2\]` has a non-finite y"):
        ps.splat(canvas, weights, patches, bad)
    with pytest.raises(ValueError, match="share memory"):
        ps.splat(canvas, canvas.view(np.float32)[:, :60], patches, positions)
    with pytest.raises(ValueError, match="read-only"):
        frozen = canvas.copy()
        frozen.flags.writeable = False
        ps.splat(frozen, weights, patches, positions)
    assert not canvas.any() and not weights.any()
    acc = reassembly.VectorizedWeightedAccumulator((56, 61), "cpu")
    with pytest.raises(ValueError, match=r"canvas_shape is \(56, 61\)"):
        acc.accumulate_batch(torch.tensor(canvas), torch.tensor(weights), torch.tensor(patches),
                             torch.tensor(positions), torch.tensor(f["probe_mag_sq"]), 12)
    with pytest.raises(ValueError, match="edge="):
        reassembly.VectorizedWeightedAccumulator((56, 60), "cpu", edge="nearest")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: torch.cuda.is_available() is False")
def test_cuda_tensors_give_the_host_bits(reassembly):
    f = load("weighted_c1")
    canvas = torch.zeros((56, 60), dtype=torch.complex64, device="cuda")
    weights = torch.zeros((56, 60), device="cuda")
    acc = reassembly.VectorizedWeightedAccumulator((56, 60), torch.device("cuda"), edge="ptychopinn")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(2):
            acc.accumulate_batch(canvas, weights, torch.tensor(f[f"patches_{k}"], device="cuda"),
                                 torch.tensor(f[f"positions_{k}"], device="cuda"),
                                 torch.tensor(f["probe_mag_sq"], device="cuda"), 12)
    assert same_bits(canvas.cpu().numpy(), f["canvas"]) and same_bits(weights.cpu().numpy(), f["weights"])


ROOT = os.environ.get("PTYCHOPINN_ROOT")


@pytest.mark.skipif(not ROOT, reason="PTYCHOPINN_ROOT is not set: PtychoPINN (GPL, not a dependency) is not on this machine")
def test_ptychopinns_own_module_after_install():
    script = f"""
import warnings
import numpy as np, torch
import ptycho_torch.reassembly as R
original = R.VectorizedWeightedAccumulator
import ptychostitch.ptychopinn as installer
installer.install("ptycho_torch.reassembly")
assert R.VectorizedWeightedAccumulator is installer.VectorizedWeightedAccumulator
installer.ACCUMULATOR_EDGE = "ptychopinn"
f = dict(np.load({str(DATA / 'weighted_c1.npz')!r}))
canvas, weights = torch.zeros((56, 60), dtype=torch.complex64), torch.zeros((56, 60))
acc = R.VectorizedWeightedAccumulator((56, 60), torch.device("cpu"))
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for k in range(2):
        acc.accumulate_batch(canvas, weights, torch.tensor(f[f"patches_{{k}}"]), torch.tensor(f[f"positions_{{k}}"]),
                             torch.tensor(f["probe_mag_sq"]), 12)
assert canvas.numpy().tobytes() == f["canvas"].tobytes() and weights.numpy().tobytes() == f["weights"].tobytes()
installer.uninstall()
assert R.VectorizedWeightedAccumulator is original
print("ok")
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0 and "ok" in run.stdout, run.stdout[-2000:] + run.stderr[-3000:]
