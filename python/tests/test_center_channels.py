"""Issue 33, item 2: PtychoPINN's ``tf_helper.center_channels`` (each channel translated by minus
its offset in its own frame) bit for bit against PtychoPINN's own outputs
(``tests/data/center``, made by ``scripts/make_center_goldens.py`` from PtychoPINN 712c23f),
differentiable in every framework, and replaced by ``ptychostitch.ptychopinn.install()`` so that
PtychoPINN's ``Translation`` no longer runs in it."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import ptychostitch as ps
import ptychostitch.ptychopinn as installer

CENTER = Path(__file__).resolve().parents[2] / "tests" / "data" / "center"
CASES = sorted(p.stem for p in CENTER.glob("*.npz"))


def load(name):
    return dict(np.load(CENTER / f"{name}.npz"))


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_the_goldens_are_there():
    assert CASES == ["center_g1_real", "center_g2_complex", "center_g3_real"]


@pytest.mark.parametrize("name", CASES)
def test_ptychopinns_outputs_bit_for_bit(name):
    f = load(name)
    got = ps.center_channels(f["channels"], f["offsets"])
    assert same_bits(got, f["expected"])
    # A channel moved out of its frame is zeros; the kernel is a translation, not a crop.
    if name != "center_g1_real":
        assert not np.any(got[0, :, :, 0])


@pytest.mark.parametrize("name", CASES)
def test_tensorflow_eager_and_in_a_graph(name):
    tf = pytest.importorskip("tensorflow")
    f = load(name)
    x, o = tf.constant(f["channels"]), tf.constant(f["offsets"])
    assert same_bits(ps.center_channels(x, o).numpy(), f["expected"])
    assert same_bits(tf.function(ps.center_channels)(x, o).numpy(), f["expected"])


def test_gradients_are_the_adjoint_and_agree_across_frameworks():
    """Linear in the channels: <cot, f(x)> = <f*(cot), x>; the offsets' gradient by finite
    differences; torch, TensorFlow and JAX give the NumPy kernel's bits."""
    from ptychostitch import _kernels

    f = load("center_g2_complex")
    x, o = f["channels"], f["offsets"]
    rng = np.random.default_rng(3)
    cot = (rng.standard_normal(x.shape) + 1j * rng.standard_normal(x.shape)).astype(np.complex64)
    kernel = _kernels.CenterChannels(0)
    dx, do = kernel.backward(x, o, None, cot)
    lhs = np.vdot(cot.astype(np.complex128), ps.center_channels(x, o).astype(np.complex128))
    rhs = np.vdot(dx.astype(np.complex128), x.astype(np.complex128))
    assert abs(lhs - rhs) <= 1e-4 * abs(lhs)

    def loss(offsets):
        return float(np.real(np.vdot(cot, ps.center_channels(x, offsets).astype(np.complex128))))

    for (b, k, c) in [(1, 0, 2), (3, 1, 1)]:
        e = 1e-3
        plus, minus = o.copy(), o.copy()
        plus[b, 0, k, c] += e
        minus[b, 0, k, c] -= e
        assert abs((loss(plus) - loss(minus)) / (2 * e) - do[b, 0, k, c]) <= 1e-2 * np.abs(do).max()
    torch = pytest.importorskip("torch")
    xt, ot = torch.tensor(x, requires_grad=True), torch.tensor(o, requires_grad=True)
    (ps.center_channels(xt, ot) * torch.tensor(cot).conj()).real.sum().backward()
    assert same_bits(xt.grad.numpy(), dx) and same_bits(ot.grad.numpy(), do)
    tf = pytest.importorskip("tensorflow")
    xv, ov = tf.Variable(x), tf.Variable(o)
    with tf.GradientTape() as tape:
        loss_tf = tf.reduce_sum(tf.math.real(ps.center_channels(xv, ov) * tf.math.conj(tf.constant(cot))))
    gx, go = tape.gradient(loss_tf, [xv, ov])
    assert same_bits(gx.numpy(), dx) and same_bits(go.numpy(), do)


def test_install_replaces_center_channels_and_translation_no_longer_runs(monkeypatch):
    """On a stand-in of ``ptycho.tf_helper`` whose ``center_channels`` is PtychoPINN's own
    (here: one that says when it runs), ``install()`` replaces it; the replacement returns a
    ``tf.Tensor`` with PtychoPINN's bits, and ``uninstall()`` puts the original back."""
    tf = pytest.importorskip("tensorflow")
    calls = []

    def center_channels(channels, offsets_xy):
        calls.append("Translation")
        raise AssertionError("PtychoPINN's Translation ran")

    helper = types.ModuleType("ptycho_standin_center.tf_helper")
    helper.center_channels = center_channels
    monkeypatch.setitem(sys.modules, helper.__name__, helper)
    installer.install(helper.__name__)
    try:
        f = load("center_g3_real")
        got = helper.center_channels(tf.constant(f["channels"]), tf.constant(f["offsets"]))
        assert isinstance(got, tf.Tensor) and same_bits(got.numpy(), f["expected"]) and not calls
    finally:
        installer.uninstall()
    assert helper.center_channels is center_channels


ROOT = os.environ.get("PTYCHOPINN_ROOT")


@pytest.mark.skipif(not ROOT, reason="PTYCHOPINN_ROOT is not set: PtychoPINN (GPL, not a dependency) is not on this machine")
def test_ptychopinns_own_center_channels_after_install_never_translates():
    script = f"""
import numpy as np, tensorflow as tf
from ptycho import params, tf_helper as hh
import ptychostitch.ptychopinn as installer
f = dict(np.load({str(CENTER / 'center_g2_complex.npz')!r}))
params.cfg["N"], params.cfg["gridsize"] = int(f["N"]), int(f["gridsize"])
installer.install()
def refuse(*a, **k):
    raise AssertionError("PtychoPINN's Translation ran")
hh.Translation = refuse
got = hh.center_channels(tf.constant(f["channels"]), tf.constant(f["offsets"])).numpy()
assert got.tobytes() == f["expected"].tobytes()
print("ok")
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0 and "ok" in run.stdout, run.stdout[-2000:] + run.stderr[-3000:]
