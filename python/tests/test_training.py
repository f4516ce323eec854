"""The training-path operator (``reassemble_regions``, ``extract_regions``) against PtychoPINN's
own TensorFlow layer and torch helpers (``tests/data/training``, made by
``scripts/make_training_goldens.py``), through every framework's autodiff, and the drop-ins at
stand-ins of PtychoPINN's modules. The real PtychoPINN runs where ``PTYCHOPINN_ROOT`` names a
checkout (skipped otherwise, with that reason)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import ptychostitch as ps

TRAINING = Path(__file__).resolve().parents[2] / "tests" / "data" / "training"
TF_CASES = ["tf_g2_b4", "tf_g1_b6", "tf_g3_b2", "tf_g2_b16_collapse"]
TORCH_CASES = ["torch_g2_b4", "torch_g1_b3", "torch_g3_b2"]


def load(name):
    return dict(np.load(TRAINING / f"{name}.npz"))


def rel(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.abs(got - want).max() / np.abs(want).max())


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a.view(np.uint32), b.view(np.uint32))


TORCH_CENTER = dict(layout="torch", weights="center", numerator="weighted", support=("above", 1e-6))
TORCH_CENTER_OPTIONS = {k: v for k, v in TORCH_CENTER.items() if k != "layout"}


def torch_probe(probe):
    return dict(layout="torch", weights=np.abs(probe) ** 2, numerator="weighted", denominator="clamp",
                epsilon=1e-12, support=("above_max_fraction", 1e-6))


# --- values -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TF_CASES)
def test_tensorflow_layer_values(name):
    """PtychoPINN's ReassemblePatchesLayer, bit for bit where its channel sum is sequential
    (C < 8 on CPU; gridsize 3 sums 9 channels in a vectorised order TF picks by CPU): every
    batch size, the B·C ≥ 64 case against its own per-sample path."""
    f = load(name)
    got = ps.reassemble_regions(f["patches"], f["positions"], int(f["P"]))
    assert got.shape == f["expected"].shape and got.dtype == np.complex64
    if f["patches"].shape[-1] < 8:
        assert same_bits(got, f["expected"])
    else:
        assert rel(got, f["expected"]) < 1e-6
    assert same_bits(ps.reassemble_regions(f["patches"], f["positions"], int(f["P"]), reference=True), got)
    if "collapsed" in f:  # what PtychoPINN's layer returns there: one canvas for the whole batch
        assert f["collapsed"].shape[0] == 1


@pytest.mark.parametrize("name", TORCH_CASES)
def test_torch_helper_values(name):
    f = load(name)
    x, pos, P = f["patches"], f["positions"], int(f["P"])
    assert rel(ps.reassemble_regions(x, pos, P, **TORCH_CENTER), f["center"]) < 1e-6
    assert rel(ps.reassemble_regions(x, pos, P, **torch_probe(f["probe"])), f["probe_out"]) < 1e-6
    crop, n = int(f["crop_size"]), x.shape[-1]
    start = n // 2 - crop // 2
    cropped = x[..., start : start + crop, start : start + crop]
    out = ps.reassemble_regions(cropped, pos, int(f["crop_P"]), layout="torch", weights="ones", recentre=True,
                                epsilon=1e-9)
    assert rel(out, f["crop"]) < 1e-5
    # Extraction: torch's affine_grid + grid_sample arithmetic, bit for bit.
    assert same_bits(ps.extract_regions(f["region"], pos, int(f["N"])), f["extract"])


def test_threads_and_reference_give_the_same_bits():
    f = load("torch_g3_b2")
    x, pos, P = f["patches"], f["positions"], int(f["P"])
    want = ps.reassemble_regions(x, pos, P, reference=True, **TORCH_CENTER)
    for threads in (1, 2, 7):
        assert same_bits(ps.reassemble_regions(x, pos, P, threads=threads, **TORCH_CENTER), want)
    # A batch large enough (B·C·(N+1)² ≥ 2·128·1024 footprint pixels) that more than one thread
    # really starts, checked against the reference too.
    rng = np.random.default_rng(3)
    big = (rng.standard_normal((120, 9, 16, 16)) + 1j * rng.standard_normal((120, 9, 16, 16))).astype(np.complex64)
    big_pos = rng.uniform(-3, 3, (120, 9, 1, 2))
    oracle = ps.reassemble_regions(big, big_pos, 24, reference=True, **TORCH_CENTER)
    for threads in (1, 2, 7):
        runs = ps._native.parallel_runs()
        assert same_bits(ps.reassemble_regions(big, big_pos, 24, threads=threads, **TORCH_CENTER), oracle)
        assert (ps._native.parallel_runs() > runs) == (threads > 1), f"{threads} threads ran on one"
    real = ps.reassemble_regions(x.real, pos, P, **TORCH_CENTER)
    assert real.dtype == np.float32
    assert same_bits(real, want.real.copy())


# --- gradients ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TF_CASES)
def test_tensorflow_gradients(name):
    tf = pytest.importorskip("tensorflow")
    f = load(name)
    x, pos = tf.Variable(f["patches"]), tf.Variable(f["positions"])
    with tf.GradientTape() as tape:
        y = ps.reassemble_regions(x, pos, int(f["P"]))
        loss = tf.reduce_sum(tf.math.real(tf.math.conj(tf.constant(f["W"])) * y))
    dx, dpos = tape.gradient(loss, [x, pos])
    # About 3× the measured error (docs/training.md: 1e-7 and 6e-7 against PtychoPINN's layer).
    assert rel(dx.numpy(), f["d_patches"]) < 3e-7
    assert rel(dpos.numpy(), f["d_positions"]) < 2e-6
    assert dpos.dtype == tf.float32


def test_tensorflow_function_and_keras_fit():
    tf = pytest.importorskip("tensorflow")
    f = load("tf_g2_b4")
    P = int(f["P"])

    @tf.function
    def traced(x, pos):
        return ps.reassemble_regions(x, pos, P)

    out = traced(tf.constant(f["patches"]), tf.constant(f["positions"]))
    assert same_bits(out.numpy(), f["expected"])

    class Regions(tf.keras.layers.Layer):
        def build(self, shape):
            self.scale = self.add_weight(shape=(), initializer="ones", name="scale")

        def call(self, inputs):
            x, pos = inputs
            return ps.reassemble_regions(x * tf.cast(self.scale, x.dtype), pos, P, weights="ones", epsilon=1.0)

    x_in = tf.keras.Input(f["patches"].shape[1:], dtype="float32")
    pos_in = tf.keras.Input(f["positions"].shape[1:], dtype="float32")
    model = tf.keras.Model([x_in, pos_in], Regions()([x_in, pos_in]))
    model.compile(optimizer=tf.keras.optimizers.SGD(0.01), loss="mse")
    x = np.abs(f["patches"]).astype(np.float32)
    target = 0.5 * ps.reassemble_regions(x, f["positions"], P, weights="ones", epsilon=1.0)
    # Batches in a fixed order: with the default shuffling the epochs' mean losses depend on the
    # order the batches came in (one run in six measured the last above the first).
    history = model.fit([x, f["positions"]], target, batch_size=2, epochs=3, verbose=0, shuffle=False)
    assert history.history["loss"][-1] < history.history["loss"][0]


@pytest.mark.parametrize("name", TORCH_CASES)
def test_torch_gradients(name):
    torch = pytest.importorskip("torch")
    f = load(name)
    P = int(f["P"])
    for options, prefix in [(TORCH_CENTER, "center"), (torch_probe(f["probe"]), "probe")]:
        x = torch.tensor(f["patches"], requires_grad=True)
        pos = torch.tensor(f["positions"], requires_grad=True)
        y = ps.reassemble_regions(x, pos, P, **options)
        loss = torch.sum(torch.real(torch.conj(torch.from_numpy(f[f"W_{prefix}"])) * y))
        dx, dpos = torch.autograd.grad(loss, [x, pos])
        assert rel(dx.numpy(), f[f"{prefix}_d_patches"]) < 1e-4
        assert rel(dpos.numpy(), f[f"{prefix}_d_positions"]) < 1e-4
    region = torch.tensor(f["region"], requires_grad=True)
    pos = torch.tensor(f["positions"], requires_grad=True)
    y = ps.extract_regions(region, pos, int(f["N"]))
    loss = torch.sum(torch.real(torch.conj(torch.from_numpy(f["W_extract"])) * y))
    dr, dpos = torch.autograd.grad(loss, [region, pos])
    assert rel(dr.numpy(), f["extract_d_region"]) < 1e-4
    assert rel(dpos.numpy(), f["extract_d_positions"]) < 1e-4


def test_the_weights_cotangent_is_the_probe_gradient():
    """The library's weight cotangent, chained through w = |P|² (dL/dP = 2·P·dL/dw), is torch's
    autograd gradient of the probe in PtychoPINN's probe path."""
    from ptychostitch import _native

    f = load("torch_g2_b4")
    x, pos, probe, P = f["patches"], f["positions"], f["probe"], int(f["P"])
    b, c, n, _ = x.shape
    plan = _native.Region(pos.reshape(-1, 2).astype(np.float64), b, n, P, "torch", False, "weighted", "clamp",
                          1e-12, "above_max_fraction", 1e-6)
    w = (np.abs(probe) ** 2).astype(np.float32)[None, None]
    cot = np.ascontiguousarray(f["W_probe"])
    _, _, dw = plan.vjp(x, w, cot, False, False, True)
    assert dw.shape == (1, 1, n, n)
    assert rel(2 * probe * dw[0, 0], f["probe_d_probe"]) < 1e-4


def test_jax_grad_jit_and_vmap():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    f = load("torch_g1_b3")
    x, pos, P = f["patches"], f["positions"], int(f["P"])
    W = f["W_center"]

    def loss(x, pos):
        y = ps.reassemble_regions(x, pos, P, **TORCH_CENTER)
        return jnp.sum(jnp.real(jnp.conj(W) * y))

    dx, dpos = jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(x), jnp.asarray(pos))
    # JAX's complex cotangent is the conjugate of torch's.
    assert rel(np.conj(np.asarray(dx)), f["center_d_patches"]) < 1e-4
    assert rel(np.asarray(dpos), f["center_d_positions"]) < 1e-4
    stacked = jax.vmap(lambda xs: ps.reassemble_regions(xs, pos, P, **TORCH_CENTER))(jnp.stack([x, 2 * x]))
    want = ps.reassemble_regions(x, pos, P, **TORCH_CENTER)
    assert same_bits(np.asarray(stacked[0]), want)
    assert rel(np.asarray(stacked[1]), 2 * want) < 1e-6


def test_second_derivatives_refuse_instead_of_dropping_the_term():
    """A Hessian-vector product through any ptychostitch operation raises; it never returns
    the regulariser's term alone (what it did before)."""
    torch = pytest.importorskip("torch")
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(1)
    obj = (rng.standard_normal((6, 16, 16)) + 1j * rng.standard_normal((6, 16, 16))).astype(np.complex64)
    off = rng.uniform(-4, 4, (6, 2))
    obj = obj.reshape(2, 3, 16, 16)
    off = off.reshape(2, 3, 2)
    calls = [
        lambda x, o: ps.reassemble_position(x[0], o[0], M=8),
        lambda x, o: ps.reassemble_regions(x, o, 24, layout="torch"),
    ]
    for call in calls:
        x = torch.tensor(obj, requires_grad=True)
        loss = (call(x, torch.tensor(off)).abs() ** 2).sum() + (x.abs() ** 2).sum()
        (g,) = torch.autograd.grad(loss, x, create_graph=True)
        # The first derivative is right even so: twice the stitched term's plus 2x.
        (plain,) = torch.autograd.grad((call(x, torch.tensor(off)).abs() ** 2).sum() + (x.abs() ** 2).sum(), x)
        assert torch.allclose(g, plain)
        with pytest.raises(RuntimeError, match="not differentiable again"):
            torch.autograd.grad((g.abs() ** 2).sum(), x)
        xv = tf.Variable(obj)
        with pytest.raises(NotImplementedError, match="not differentiable again"):
            with tf.GradientTape() as outer:
                with tf.GradientTape() as inner:
                    y = call(xv, tf.constant(off))
                    loss = tf.reduce_sum(tf.abs(y) ** 2)
                g = inner.gradient(loss, xv)
                second = tf.reduce_sum(tf.abs(g) ** 2)
            outer.gradient(second, xv)


# --- errors -------------------------------------------------------------------------------------


def test_bad_arguments_say_what_is_wrong():
    f = load("torch_g2_b4")
    x, pos, P = f["patches"], f["positions"], int(f["P"])
    with pytest.raises(ValueError, match=r"expected \(B, C, N, N\)"):
        ps.reassemble_regions(x[0], pos, P, layout="torch")
    with pytest.raises(ValueError, match=r"positions have shape \(4, 3, 1, 2\)"):
        ps.reassemble_regions(x, pos[:, :3], P, layout="torch")
    with pytest.raises(ValueError, match="cannot reassemble 32×32 patches onto 20×20"):
        ps.reassemble_regions(x, pos, 20, layout="torch")
    with pytest.raises(ValueError, match="weights have shape"):
        ps.reassemble_regions(x, pos, P, layout="torch", weights=np.ones((5, 5)))
    with pytest.raises(ValueError, match="layout must be"):
        ps.reassemble_regions(x, pos, P, layout="nchw")
    with pytest.raises(ValueError, match="non-finite"):
        ps.reassemble_regions(x, np.where(pos == pos[1, 2, 0, 1], np.nan, pos), P, layout="torch")
    with pytest.raises(TypeError, match="padded_size must be"):
        ps.reassemble_regions(x, pos, float(P), layout="torch")
    with pytest.raises(ValueError, match="denominator must be"):
        ps.reassemble_regions(x, pos, P, layout="torch", denominator="mean")
    tf = pytest.importorskip("tensorflow")
    with pytest.raises(TypeError, match="torch tensors only"):
        ps.reassemble_regions(x, pos, P, layout="torch", weights=tf.Variable(np.ones((32, 32), np.float32)))


# --- the drop-ins at stand-ins of PtychoPINN's modules ----------------------------------------

STAND_IN = {
    "ptycho/__init__.py": "",
    "ptycho/params.py": """
        def get_padded_size():
            return 44
    """,
    "ptycho/tf_helper.py": """
        def _original(name):
            raise RuntimeError(f"PtychoPINN's original {name} ran")

        def mk_reassemble_position_batched_real(input_positions, batch_size=64, **outer_kwargs):
            _original("mk_reassemble_position_batched_real")

        def mk_reassemble_position_real(input_positions, **outer_kwargs):
            _original("mk_reassemble_position_real")

        def mk_norm(channels, fn_reassemble_real, N=None, gridsize=None):
            import numpy as np
            n = channels.shape[1]
            ones = np.zeros(channels.shape, np.float32)
            ones[:, n // 4:n // 4 + n // 2, n // 4:n // 4 + n // 2, :] = 1
            return fn_reassemble_real(ones, average=False) + 0.001

        def reassemble_patches(channels, fn_reassemble_real=None, average=False, batch_size=None, N=None,
                               gridsize=None, **kwargs):
            # PtychoPINN's arithmetic, on the reassembler it is given (the fused path is bypassed
            # when average=True).
            import tensorflow as tf
            real, imag = tf.math.real(channels), tf.math.imag(channels)
            norm = mk_norm(real, fn_reassemble_real)
            return tf.dtypes.complex(fn_reassemble_real(real) / norm, fn_reassemble_real(imag) / norm)
    """,
    "ptycho_torch/__init__.py": "",
    "ptycho_torch/helper.py": """
        def _original(name):
            raise RuntimeError(f"PtychoPINN's original {name} ran")

        def get_padded_size(data_config, model_config):
            return data_config.P

        def reassemble_patches_position_real(inputs, offsets_xy, data_config, model_config, agg=True,
                                             padded_size=None, crop_size=None, **kwargs):
            _original("reassemble_patches_position_real")

        def reassemble_patches_position_real_probe(inputs, offsets_xy, data_config, model_config, probe=None,
                                                   use_probe_weights=True, agg=True, padded_size=None, **kwargs):
            _original("reassemble_patches_position_real_probe")

        def extract_channels_from_region(inputs, offsets_xy, data_config, model_config, jitter_amt=0.0):
            _original("extract_channels_from_region")
    """,
}


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    for path, text in STAND_IN.items():
        file = tmp_path / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    import ptychostitch.ptychopinn as installer

    installer.uninstall()
    for name in [m for m in sys.modules if m.split(".")[0] in ("ptycho", "ptycho_torch")]:
        del sys.modules[name]


def test_tensorflow_training_dropin(stand_in):
    tf = pytest.importorskip("tensorflow")
    import ptychostitch.ptychopinn as installer
    from ptycho import tf_helper as hh

    installer.install()
    assert installer.installed("ptycho.tf_helper")
    for name in ["tf_g2_b4", "tf_g2_b16_collapse"]:
        f = load(name)
        x, pos = tf.constant(f["patches"]), tf.constant(f["positions"])
        N, gs = int(f["N"]), int(f["gridsize"])
        # ReassemblePatchesLayer's two calls, as PtychoPINN makes them.
        fn = hh.mk_reassemble_position_batched_real(pos, batch_size=64, padded_size=int(f["P"]), N=N, gridsize=gs)
        out = hh.reassemble_patches(x, fn_reassemble_real=fn, N=N, gridsize=gs)
        assert isinstance(out, tf.Tensor) and out.shape == f["expected"].shape
        assert same_bits(out.numpy(), f["expected"]), name  # one region per sample at B·C = 64 too
        # PtychoPINN's own arithmetic on the installed reassembler (the mask reassembled as patches).
        slow = hh.reassemble_patches(x, fn_reassemble_real=fn, average=True)
        assert rel(slow.numpy(), f["expected"]) < 1e-6
    # padded_size from ptycho.params when the layer gives none.
    fn = hh.mk_reassemble_position_real(tf.constant(f["positions"]))
    assert fn.size() == 44


def test_torch_training_dropin(stand_in):
    torch = pytest.importorskip("torch")
    import ptychostitch.ptychopinn as installer

    installer.install()  # the TF module first, then torch's: both end up installed
    installer.install("ptycho_torch.helper")
    from ptycho_torch import helper

    assert installer.installed("ptycho_torch.helper") and installer.installed("ptycho.tf_helper")

    class Config:
        pass

    for name in TORCH_CASES:
        f = load(name)
        x, pos, P = torch.tensor(f["patches"]), torch.tensor(f["positions"]), int(f["P"])
        data, model = Config(), Config()
        data.N, data.P = int(f["N"]), P
        model.C_forward = x.shape[1]
        out, mask, size = helper.reassemble_patches_position_real(x, pos, data, model)
        assert size == P and rel(out.numpy(), f["center"]) < 1e-6
        assert np.array_equal(mask.numpy(), f["center_mask"])
        out, mask, size = helper.reassemble_patches_position_real(x, pos, data, model, crop_size=int(f["crop_size"]))
        assert size == int(f["crop_P"]) and rel(out.numpy(), f["crop"]) < 1e-5
        assert np.array_equal(mask.numpy(), f["crop_mask"])
        out, mask, size = helper.reassemble_patches_position_real_probe(x, pos, data, model, probe=torch.tensor(f["probe"]))
        assert rel(out.numpy(), f["probe_out"]) < 1e-6 and np.array_equal(mask.numpy(), f["probe_mask"])
        region = torch.tensor(f["region"])
        assert same_bits(helper.extract_channels_from_region(region, pos, data, model).numpy(), f["extract"])
    # A probe being learnt: its gradient through |P|², as torch's autograd of PtychoPINN's helper.
    probe = torch.tensor(f["probe"], requires_grad=True)
    xg, pg = torch.tensor(f["patches"], requires_grad=True), torch.tensor(f["positions"], requires_grad=True)
    out, _, _ = helper.reassemble_patches_position_real_probe(xg, pg, data, model, probe=probe)
    loss = torch.sum(torch.real(torch.conj(torch.from_numpy(f["W_probe"])) * out))
    dx, dpos, dprobe = torch.autograd.grad(loss, [xg, pg, probe])
    assert rel(dprobe.numpy(), f["probe_d_probe"]) < 1e-4
    assert rel(dx.numpy(), f["probe_d_patches"]) < 1e-4 and rel(dpos.numpy(), f["probe_d_positions"]) < 1e-4
    installer.uninstall()
    with pytest.raises(RuntimeError, match="original extract_channels_from_region"):
        helper.extract_channels_from_region(region, pos, data, model)


# --- the real PtychoPINN, where a checkout is given ------------------------------------------

ROOT = os.environ.get("PTYCHOPINN_ROOT")
needs_ptychopinn = pytest.mark.skipif(
    not ROOT, reason="PTYCHOPINN_ROOT is not set: PtychoPINN (GPL, not a dependency) is not on this machine"
)


@needs_ptychopinn
def test_ptychopinn_tf_model_trains_at_batch_16_once_installed():
    script = Path(__file__).resolve().parents[2] / "scripts" / "train_ptychopinn.py"
    run = subprocess.run([sys.executable, str(script), ROOT, "--batch", "16", "--steps", "2", "--install"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "step 1: loss" in run.stdout


# --- gradients never silently lost (Plan methods, torch.func) ---------------------------------


def test_plan_methods_carry_the_patches_gradient():
    torch = pytest.importorskip("torch")
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(4)
    obj = (rng.standard_normal((12, 16, 16)) + 1j * rng.standard_normal((12, 16, 16))).astype(np.complex64)
    off = rng.uniform(-5, 5, (12, 2))
    plan = ps.Plan(off, 16, 8)
    for op in ("shift_and_sum", "reassemble_position"):
        x = torch.tensor(obj, requires_grad=True)
        (getattr(plan, op)(x).abs() ** 2).sum().backward()
        y = torch.tensor(obj, requires_grad=True)
        (getattr(ps, op)(y, off, M=8).abs() ** 2).sum().backward()
        assert x.grad is not None and torch.equal(x.grad, y.grad), op
        grads = []
        for call in (getattr(plan, op), lambda v: getattr(ps, op)(v, off, M=8)):
            v = tf.Variable(obj)
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.abs(call(v)) ** 2)
            grads.append(tape.gradient(loss, v))
        assert grads[0] is not None and np.array_equal(grads[0].numpy(), grads[1].numpy()), op
    # Without a gradient wanted, the plan's own path: the same bits as before.
    assert same_bits(plan.reassemble_position(obj), ps.reassemble_position(obj, off, M=8))
    with pytest.raises(TypeError, match="fixes its offsets"):
        ps.Plan(torch.tensor(off, requires_grad=True), 16, 8)


def test_torch_func_transforms_are_refused_in_one_line():
    torch = pytest.importorskip("torch")
    f = load("torch_g1_b3")
    x, pos, P = torch.tensor(f["patches"]), torch.tensor(f["positions"]), int(f["P"])

    def loss(x):
        return ps.reassemble_regions(x, pos, P, layout="torch").abs().sum()

    for transform in (torch.func.grad, torch.func.vmap):
        with pytest.raises(TypeError, match="does not support torch.func transforms"):
            transform(loss)(x.real if transform is torch.func.grad else torch.stack([x, x]))


@needs_ptychopinn
def test_ptychopinn_torch_helpers_at_their_real_call_sites(monkeypatch):
    """PtychoPINN's own ptycho_torch.helper, installed: values, masks and autograd gradients."""
    torch = pytest.importorskip("torch")
    monkeypatch.syspath_prepend(ROOT)
    import ptychostitch.ptychopinn as installer
    from ptycho_torch import helper
    from ptycho_torch.config_params import DataConfig, ModelConfig

    originals = {name: getattr(helper, name) for name in installer.TORCH_FUNCTIONS}
    installer.install("ptycho_torch.helper")
    try:
        for name, distance in [("torch_g2_b4", 6.0), ("torch_g1_b3", 3.0), ("torch_g3_b2", 5.0)]:
            f = load(name)
            gs, N = int(f["gridsize"]), int(f["N"])
            data = DataConfig(N=N, C=gs * gs, grid_size=(gs, gs), max_neighbor_distance=distance)
            model = ModelConfig(C_model=gs * gs, C_forward=gs * gs)
            x = torch.tensor(f["patches"], requires_grad=True)
            pos = torch.tensor(f["positions"], requires_grad=True)
            y, mask, size = helper.reassemble_patches_position_real(x, pos, data, model, padded_size=int(f["P"]))
            loss = torch.sum(torch.real(torch.conj(torch.from_numpy(f["W_center"])) * y))
            dx, dpos = torch.autograd.grad(loss, [x, pos])
            assert rel(y.detach().numpy(), f["center"]) < 1e-5 and np.array_equal(mask.numpy(), f["center_mask"])
            assert rel(dx.numpy(), f["center_d_patches"]) < 1e-4 and rel(dpos.numpy(), f["center_d_positions"]) < 1e-4
            region = torch.tensor(f["region"])
            assert same_bits(helper.extract_channels_from_region(region, pos, data, model).detach().numpy(), f["extract"])
    finally:
        installer.uninstall()
    assert {name: getattr(helper, name) for name in installer.TORCH_FUNCTIONS} == originals


@needs_ptychopinn
def test_ptychopinn_torch_forward_model_trains_the_same_once_installed():
    script = Path(__file__).resolve().parents[2] / "scripts" / "train_ptychopinn_torch.py"
    losses = []
    for flag in ([], ["--install"]):
        run = subprocess.run([sys.executable, str(script), ROOT, "--steps", "3", *flag], capture_output=True,
                             text=True, timeout=600)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        losses.append([line.split()[3] for line in run.stdout.splitlines() if line.startswith("step")])
    assert losses[0] == losses[1]  # to the six digits printed


@needs_ptychopinn
def test_ptychopinn_torch_forward_model_compiles_whole_once_installed():
    """Issue 31: PtychoPINN's ForwardModel compiles into one graph with no break, with the
    drop-ins as without them, and its compiled gradient equals the eager one bit for bit (in a
    process of its own: torch.compile and TensorFlow cannot share one)."""
    script = textwrap.dedent(
        f"""
        import sys, numpy as np, torch
        sys.path.insert(0, {ROOT!r})
        from ptycho_torch.config_params import DataConfig, ModelConfig
        from ptycho_torch.model import ForwardModel
        import ptychostitch.ptychopinn
        ptychostitch.ptychopinn.install("ptycho_torch.helper")
        N, gs, B = 64, 2, 4
        C = gs * gs
        forward = ForwardModel(ModelConfig(C_model=C, C_forward=C, object_big=True),
                               DataConfig(N=N, C=C, grid_size=(gs, gs), max_neighbor_distance=8.0))
        rng = np.random.default_rng(0)
        positions = torch.tensor(rng.uniform(-4, 4, (B, C, 1, 2)).astype(np.float32))
        yy, xx = np.mgrid[:N, :N] - N / 2
        probe = torch.tensor(np.exp(-(xx**2 + yy**2) / (2 * 12.0**2)).astype(np.complex64)[None, None, None])
        scale = torch.ones(B, 1, 1, 1)
        x = torch.nn.Parameter(torch.tensor(np.exp(1j * rng.uniform(-0.5, 0.5, (B, C, N, N))).astype(np.complex64)))
        explained = torch._dynamo.explain(forward)(x, None, positions, probe, scale)
        assert explained.graph_count == 1 and explained.graph_break_count == 0, explained.break_reasons
        (eager,) = torch.autograd.grad(forward(x, None, positions, probe, scale).abs().sum(), x)
        compiled = torch.compile(forward, backend="aot_eager", fullgraph=True)
        (got,) = torch.autograd.grad(compiled(x, None, positions, probe, scale).abs().sum(), x)
        assert torch.equal(got, eager)
        print("compiled whole")
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and "compiled whole" in run.stdout, run.stdout[-2000:] + run.stderr[-3000:]


def test_out_of_range_integers_name_their_argument():
    """Round 4, item 8: never PyO3's OverflowError without the argument's name."""
    off = np.zeros((3, 2))
    obj = np.zeros((3, 8, 8), np.complex64)
    cases = [
        (lambda: ps.Plan(off, -1, 20), "patch_size"),
        (lambda: ps.reassemble_position(obj, off, 4, threads=2**64), "threads"),
        (lambda: ps.reassemble_position(obj, off, M=2**63), "`M`"),
        (lambda: ps.extract_patches_position(np.zeros((1, 16, 16, 1)), np.zeros((1, 1, 2, 1)), 0.0, N=-2), "N"),
        (lambda: ps.reassemble_regions(np.zeros((1, 1, 8, 8)), np.zeros((1, 1, 1, 2)), 2**70, layout="torch"), "padded_size"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=f"^{name}"):
            call()


def test_install_skips_modules_that_refuse_to_be_read_and_installs_module_by_module(stand_in):
    """Round 4, item 11: install("other") then install() installs both; a module whose namespace
    raises while install() scans sys.modules is skipped, not a half-done install."""
    import types

    import ptychostitch.ptychopinn as installer

    class Hostile(types.ModuleType):
        def __getattribute__(self, name):
            if name == "__dict__":
                raise RuntimeError("no namespace for you")
            return super().__getattribute__(name)

    sys.modules["hostile_module"] = Hostile("hostile_module")
    try:
        installer.install("ptycho_torch.helper")
        assert installer.installed("ptycho_torch.helper") and not installer.installed("ptycho.tf_helper")
        installer.install()
        assert installer.installed("ptycho.tf_helper")
        from ptycho import tf_helper

        assert getattr(tf_helper.reassemble_patches, "__ptychostitch__", False)
        installer.uninstall()
        assert not installer.installed()
        assert not getattr(tf_helper.reassemble_patches, "__ptychostitch__", False)
    finally:
        del sys.modules["hostile_module"]


def test_regularised_denominator_matches_its_formula_and_finite_differences():
    """(1−α)·Σw + α·max Σw (tike, PtyLab): the values by the formula from the plain sums, the
    weights' gradient (through the maximum too) by central differences."""
    from ptychostitch import _native

    rng = np.random.default_rng(8)
    b, c, n, P, alpha = 2, 4, 12, 20, 0.2
    x = (rng.standard_normal((b, c, n, n)) + 1j * rng.standard_normal((b, c, n, n))).astype(np.complex64)
    pos = rng.uniform(-3, 3, (b, c, 1, 2)).astype(np.float32)
    w = rng.uniform(0.5, 1.5, (n, n)).astype(np.float32)
    out = ps.reassemble_regions(x, pos, P, layout="torch", weights=w, numerator="weighted",
                                denominator="regularised", epsilon=alpha)
    num = ps.reassemble_regions(x, pos, P, layout="torch", weights=w, numerator="weighted", denominator="one")
    den = ps.reassemble_regions(np.broadcast_to(w, x.shape).astype(np.float32), pos, P, layout="torch",
                                weights=np.ones((n, n)), numerator="sum", denominator="one")
    g = np.float32(1 - alpha) * den + np.float32(alpha) * den.max()
    assert rel(out, num / g) < 1e-6
    plan = _native.Region(pos.reshape(-1, 2).astype(np.float64), b, n, P, "torch", False, "weighted",
                          "regularised", alpha, None, 0.0, 0, 1 - alpha)
    cot = rng.standard_normal((b, P, P)).astype(np.float32)
    xr = x.real.copy()
    _, _, dw = plan.vjp(xr, w[None, None], cot, False, False, True)

    def loss(weights):
        return float(np.sum(plan.reassemble(xr, weights[None, None]).astype(np.float64) * cot))

    for (i, j) in [(5, 5), (2, 9), (7, 1)]:
        e = 1e-2
        plus, minus = w.copy(), w.copy()
        plus[i, j] += e
        minus[i, j] -= e
        fd = (loss(plus) - loss(minus)) / (2 * e)
        assert abs(fd - dw[0, 0, i, j]) <= 2e-2 * np.abs(dw).max(), (i, j, fd, dw[0, 0, i, j])


def test_jax_vmap_folds_into_the_operations_own_batch_on_the_callback_fallback(monkeypatch):
    """Issue 31, item 3, on the ``pure_callback`` fallback (the XLA custom calls' own batching
    is tested in test_jax_ffi.py): under vmap, an operation whose samples are independent runs
    once on the folded batch, not once per mapped element, with the per-element bits; one
    normalised by the whole batch still loops."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    from ptychostitch import _region
    from ptychostitch._frameworks import jax_adapter

    monkeypatch.setenv(jax_adapter.FFI_VARIABLE, "0")

    calls = []
    real = _region.RegionKernel.forward_weighted
    monkeypatch.setattr(_region.RegionKernel, "forward_weighted",
                        lambda self, *a: calls.append(np.shape(a[0])) or real(self, *a))
    rng = np.random.default_rng(21)
    V, B, C, N, P = 3, 2, 4, 12, 20
    x = (rng.standard_normal((V, B, C, N, N)) + 1j * rng.standard_normal((V, B, C, N, N))).astype(np.complex64)
    pos = rng.uniform(-3, 3, (B, C, 1, 2)).astype(np.float32)

    def step(xs, p):
        return ps.extract_regions(ps.reassemble_regions(xs, p, P, layout="torch", **TORCH_CENTER_OPTIONS), p, N)

    mapped = jax.vmap(step, in_axes=(0, None))(jnp.asarray(x), jnp.asarray(pos))
    assert calls == [(V * B, C, N, N)], calls  # one call, the mapped axis folded into B
    for v in range(V):
        assert same_bits(np.asarray(mapped[v]), np.asarray(step(jnp.asarray(x[v]), jnp.asarray(pos))))
    # Per-example gradients through the folded backward equal the loop's.
    grad = jax.grad(lambda xs, p: jnp.sum(jnp.abs(step(xs, p)) ** 2), argnums=(0, 1))
    dx, dpos = jax.vmap(grad, in_axes=(0, None))(jnp.asarray(x), jnp.asarray(pos))
    for v in range(V):
        want_x, want_pos = grad(jnp.asarray(x[v]), jnp.asarray(pos))
        assert same_bits(np.asarray(dx[v]), np.asarray(want_x))
        assert np.array_equal(np.asarray(dpos[v]), np.asarray(want_pos))
    # Re-centred over the batch (TensorFlow's layer): the samples are coupled, so one call each.
    calls.clear()
    xt = np.ascontiguousarray(x.transpose(0, 1, 3, 4, 2))
    post = np.ascontiguousarray(pos.reshape(B, C, 2).transpose(0, 2, 1)).reshape(B, 1, 2, C)
    jax.vmap(lambda xs: ps.reassemble_regions(xs, post, P))(jnp.asarray(xt))
    assert len(calls) == V, calls
