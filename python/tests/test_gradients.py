"""Gradients in every front end: TensorFlow (GradientTape, eager and tf.function), PyTorch
(autograd, torch.compile) and JAX (grad, jit, vmap), against TensorFlow's GradientTape through
PtychoPINN's own functions (tests/data/gradients, see its PROVENANCE.md)."""

from pathlib import Path

import numpy as np
import pytest

import ptychostitch as ps

DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "gradients"
REASSEMBLY = ["random", "integer", "half", "oddM", "MeqN", "wide"]
EXTRACTION = ["extract_g2", "extract_g1_half", "extract_g3"]


def load(name):
    with np.load(DATA / f"{name}.npz") as f:
        return {k: f[k] for k in f.files}


def close(ours, tf_value, rel):
    ours, tf_value = np.asarray(ours), np.asarray(tf_value)
    assert ours.shape == tf_value.shape, (ours.shape, tf_value.shape)
    scale = np.max(np.abs(tf_value))
    err = np.max(np.abs(ours - tf_value))
    assert err <= rel * scale, f"max|ours - TF| = {err:.3e}, {err / scale:.2e} of max|TF|"


def functions(case):
    # TF's batched functions cannot run an odd M; the files hold the _old ones only there.
    return [f for f in ("shift_and_sum", "reassemble_position") if f"{f}_dobj" in case] or [
        "shift_and_sum",
        "reassemble_position",
    ]


def expected(case, fname):
    key = fname if f"{fname}_dobj" in case else f"{fname}_old"
    return case[f"{key}_dobj"], case[f"{key}_doffsets"]


# --- TensorFlow --------------------------------------------------------------------------------


tf = None


def _tf():
    global tf
    tf = pytest.importorskip("tensorflow", reason="TensorFlow is not installed (scripts/test.sh installs it)")
    return tf


@pytest.mark.parametrize("name", REASSEMBLY)
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
def test_tensorflow_gradient_tape_matches_ptychopinn(name, graph):
    tf = _tf()
    case = load(name)
    M = int(case["M"])
    for fname in functions(case):
        fn = getattr(ps, fname)
        obj, off = tf.Variable(case["obj"]), tf.Variable(case["offsets"])
        w = tf.constant(case["W"])

        def loss():
            return tf.reduce_sum(tf.math.real(tf.math.conj(w) * fn(obj, off, M)))

        if graph:
            @tf.function
            def both():
                with tf.GradientTape() as tape:
                    value = loss()
                return tape.gradient(value, [obj, off])
            dobj, doff = both()
        else:
            with tf.GradientTape() as tape:
                value = loss()
            dobj, doff = tape.gradient(value, [obj, off])
        assert dobj.dtype == tf.complex64 and doff.dtype == tf.float64
        want_obj, want_off = expected(case, fname)
        close(dobj.numpy(), want_obj, 1e-6)
        close(doff.numpy(), want_off, 2e-5)


@pytest.mark.parametrize("name", EXTRACTION)
def test_tensorflow_extraction_matches_ptychopinn(name):
    tf = _tf()
    case = load(name)
    imgs, off = tf.Variable(case["imgs"]), tf.Variable(case["offsets_xy"])
    N, g = int(case["N"]), int(case["gridsize"])
    with tf.GradientTape() as tape:
        out = ps.extract_patches_position(imgs, off, 0.0, N=N, gridsize=g)
        value = tf.reduce_sum(tf.math.real(tf.math.conj(tf.constant(case["W"])) * out))
    assert np.array_equal(out.numpy().view(np.uint32), case["extract_patches_position"].view(np.uint32))
    dimgs, doff = tape.gradient(value, [imgs, off])
    close(dimgs.numpy(), case["extract_patches_position_dimgs"], 1e-6)
    close(doff.numpy(), case["extract_patches_position_doffsets"], 2e-5)


def test_tensorflow_patches_only_and_constant_offsets():
    tf = _tf()
    case = load("random")
    obj = tf.Variable(case["obj"])
    with tf.GradientTape() as tape:
        out = ps.reassemble_position(obj, case["offsets"], int(case["M"]))  # NumPy offsets: constants
        value = tf.reduce_sum(tf.math.real(tf.math.conj(tf.constant(case["W"])) * out))
    close(tape.gradient(value, obj).numpy(), case["reassemble_position_dobj"], 1e-6)


def test_tensorflow_jit_compile_is_refused_clearly():
    tf = _tf()
    case = load("integer")

    @tf.function(jit_compile=True)
    def f(obj):
        return ps.shift_and_sum(obj, case["offsets"], int(case["M"]))

    with pytest.raises(TypeError, match="jit_compile"):
        f(tf.constant(case["obj"]))


def test_keras_can_train_through_reassembly():
    """The training-loop case: a variable behind a reassembly gets a gradient an optimiser uses."""
    tf = _tf()
    case = load("half")
    target = ps.reassemble_position(case["obj"], case["offsets"], int(case["M"]))
    obj = tf.Variable(np.zeros_like(case["obj"]))
    opt = tf.keras.optimizers.SGD(learning_rate=0.5)
    losses = []
    for _ in range(3):
        with tf.GradientTape() as tape:
            diff = ps.reassemble_position(obj, case["offsets"], int(case["M"])) - target
            value = tf.reduce_sum(tf.math.real(diff * tf.math.conj(diff)))
        opt.apply_gradients([(tape.gradient(value, obj), obj)])
        losses.append(float(value))
    assert losses[2] < losses[1] < losses[0]


# --- PyTorch -----------------------------------------------------------------------------------


def _torch():
    return pytest.importorskip("torch", reason="torch is not installed (scripts/test.sh installs the CPU build)")


@pytest.mark.parametrize("name", REASSEMBLY)
def test_torch_autograd_matches_ptychopinn(name):
    torch = _torch()
    case = load(name)
    M = int(case["M"])
    for fname in functions(case):
        obj = torch.tensor(case["obj"], requires_grad=True)
        off = torch.tensor(case["offsets"], requires_grad=True)
        out = getattr(ps, fname)(obj, off, M)
        assert out.requires_grad and out.dtype == torch.complex64
        value = (torch.conj(torch.tensor(case["W"])) * out).real.sum()
        value.backward()
        want_obj, want_off = expected(case, fname)
        assert off.grad.dtype == torch.float64 and off.grad.shape == off.shape
        close(obj.grad.numpy(), want_obj, 1e-6)
        close(off.grad.numpy(), want_off, 2e-5)


@pytest.mark.parametrize("name", EXTRACTION)
def test_torch_extraction_matches_ptychopinn(name):
    torch = _torch()
    case = load(name)
    imgs = torch.tensor(case["imgs"], requires_grad=True)
    off = torch.tensor(case["offsets_xy"], requires_grad=True)
    out = ps.extract_patches_position(imgs, off, 0.0, N=int(case["N"]), gridsize=int(case["gridsize"]))
    (torch.conj(torch.tensor(case["W"])) * out).real.sum().backward()
    close(imgs.grad.numpy(), case["extract_patches_position_dimgs"], 1e-6)
    close(off.grad.numpy(), case["extract_patches_position_doffsets"], 2e-5)


def test_torch_mixed_loss():
    torch = _torch()
    case = load("random")
    M = int(case["M"])
    obj = torch.tensor(case["obj"], requires_grad=True)
    w = torch.tensor(case["W"])
    loss = (torch.conj(w) * ps.reassemble_position(obj, case["offsets"], M)).real.sum() + (obj.abs() ** 2).sum()
    loss.backward()
    close(obj.grad.numpy() - 2 * case["obj"], case["reassemble_position_dobj"], 1e-6)


COMPILE = """
import sys, numpy as np, torch, ptychostitch as ps
case = dict(np.load(sys.argv[1]))
M = int(case["M"])
w = torch.tensor(case["W"])
side = ps.Plan(case["offsets"], case["obj"].shape[1], M).canvas_shape[0]
def loss(o, off):
    return (torch.conj(w) * ps.reassemble_position(o, off, M, canvas_side=side)).real.sum() * 2
obj = torch.tensor(case["obj"], requires_grad=True)
off = torch.tensor(case["offsets"], requires_grad=True)
loss(obj, off).backward()
eager = (obj.grad.clone(), off.grad.clone())
obj.grad = off.grad = None
explained = torch._dynamo.explain(loss)(obj, off)
assert explained.graph_break_count == 0, explained.break_reasons
torch.compile(loss, backend="aot_eager", fullgraph=True)(obj, off).backward()
assert torch.equal(obj.grad, eager[0]) and torch.equal(off.grad, eager[1]), "compiled gradients differ"
# Without canvas_side, compiled code cannot know the canvas: one clear error.
try:
    torch.compile(lambda o, f: ps.reassemble_position(o, f, M), backend="eager", fullgraph=True)(obj, off)
except Exception as error:
    assert "canvas_side" in str(error), error
else:
    raise AssertionError("no error without canvas_side")
print("compiled ok")
"""


def test_torch_compile_has_no_graph_break():
    """In a process of its own: torch.compile loads triton, whose LLVM aborts a process that has
    loaded TensorFlow too (a clash of the two, not of ptychostitch)."""
    _torch()
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", COMPILE, str(DATA / "random.npz")], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0 and "compiled ok" in done.stdout, done.stderr[-3000:]


# --- JAX ---------------------------------------------------------------------------------------


def _jax():
    return pytest.importorskip("jax", reason="JAX is not installed (scripts/test.sh installs jax[cpu])")


@pytest.mark.parametrize("name", ["random", "oddM", "wide"])
def test_jax_grad_and_jit_match_ptychopinn(name):
    jax = _jax()
    jnp = jax.numpy
    case = load(name)
    M = int(case["M"])
    side = case["W"].shape[0]
    w = jnp.asarray(case["W"])
    for fname in functions(case):
        fn = getattr(ps, fname)

        def loss(obj, off):
            return jnp.sum(jnp.real(jnp.conj(w) * fn(obj, off, M, canvas_side=side)))

        obj, off = jnp.asarray(case["obj"]), jnp.asarray(case["offsets"], dtype=jnp.float32)
        for grad in (jax.grad(loss, argnums=(0, 1)), jax.jit(jax.grad(loss, argnums=(0, 1)))):
            dobj, doff = grad(obj, off)
            want_obj, want_off = expected(case, fname)
            # JAX's cotangent of a complex input is the conjugate of TensorFlow's.
            close(np.conj(np.asarray(dobj)), want_obj, 1e-6)
            close(np.asarray(doff), want_off, 2e-5)


def test_jax_vmap_over_scans_and_extraction():
    jax = _jax()
    jnp = jax.numpy
    case = load("half")
    M = int(case["M"])
    obj = jnp.asarray(case["obj"])
    stacked = jnp.stack([obj, 2 * obj])
    out = jax.vmap(lambda o: ps.shift_and_sum(o, case["offsets"], M))(stacked)
    single = ps.shift_and_sum(case["obj"], case["offsets"], M)
    assert np.array_equal(np.asarray(out[0]), single)
    np.testing.assert_allclose(np.asarray(out[1]), 2 * single, rtol=1e-6)

    ext = load("extract_g2")
    N, g = int(ext["N"]), int(ext["gridsize"])
    value = lambda i, o: jnp.sum(jnp.real(jnp.conj(jnp.asarray(ext["W"])) * ps.extract_patches_position(i, o, 0.0, N, g)))  # noqa: E731
    dimgs, doff = jax.jit(jax.grad(value, argnums=(0, 1)))(jnp.asarray(ext["imgs"]), jnp.asarray(ext["offsets_xy"], jnp.float32))
    close(np.conj(np.asarray(dimgs)), ext["extract_patches_position_dimgs"], 1e-6)
    close(np.asarray(doff), ext["extract_patches_position_doffsets"], 2e-5)


def test_jax_traced_offsets_need_the_canvas_side():
    jax = _jax()
    case = load("random")
    f = jax.jit(lambda o, off: ps.reassemble_position(o, off, int(case["M"])))
    with pytest.raises(ValueError, match="canvas_side"):
        f(case["obj"], case["offsets"])
    wrong = jax.jit(lambda o, off: ps.reassemble_position(o, off, int(case["M"]), canvas_side=7))
    with pytest.raises(Exception, match="canvas_side"):
        np.asarray(wrong(case["obj"], case["offsets"]))


# --- The drop-in itself ------------------------------------------------------------------------


def test_extract_patches_position_numpy_and_errors():
    case = load("extract_g1_half")
    N = int(case["N"])
    out = ps.extract_patches_position(case["imgs"], case["offsets_xy"], 0.0, N=N, gridsize=1)
    assert isinstance(out, np.ndarray) and out.shape == (4, N, N, 1)
    assert np.array_equal(out.view(np.uint32), case["extract_patches_position"].view(np.uint32))
    with pytest.raises(ValueError, match="jitter"):
        ps.extract_patches_position(case["imgs"], case["offsets_xy"], 0.5, N=N)
    with pytest.raises(ValueError, match="S - N even"):
        ps.extract_patches_position(case["imgs"], case["offsets_xy"], N=40)
    with pytest.raises(ValueError, match="S - N even"):
        ps.extract_patches_position(case["imgs"], case["offsets_xy"], N=31)
    with pytest.raises(ValueError, match="gridsize"):
        ps.extract_patches_position(case["imgs"], case["offsets_xy"], N=N, gridsize=2)
    with pytest.raises(ValueError, match=r"\(B, 1, 2, C\)"):
        ps.extract_patches_position(case["imgs"], case["offsets_xy"][:, 0], N=N)
    with pytest.raises(TypeError, match="needs N"):
        ps.extract_patches_position(case["imgs"], case["offsets_xy"])


# --- bfloat16, in every front end ----------------------------------------------------------------


def _bf16_case():
    """float32 patches and offsets that bfloat16 holds exactly (the low 16 bits cleared), and the
    float32 result: widening is exact, so bfloat16 input must give these bits."""
    rng = np.random.default_rng(16)
    to_bf16 = lambda a: (a.astype(np.float32).view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)  # noqa: E731
    patches = to_bf16(rng.standard_normal((12, 24, 24, 1)))
    offsets = to_bf16(rng.uniform(-6, 6, (12, 1, 1, 2)))
    return patches, offsets, ps.reassemble_position(patches, offsets.astype(np.float64), M=16)


def test_bfloat16_numpy_widens_exactly():
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes (NumPy's bfloat16) is not installed")
    patches, offsets, want = _bf16_case()
    out = ps.reassemble_position(patches.astype(ml_dtypes.bfloat16), offsets.astype(ml_dtypes.bfloat16), M=16)
    assert out.dtype == np.float32 and np.array_equal(out, want)


def test_bfloat16_tensorflow_forward_and_gradients():
    tf = pytest.importorskip("tensorflow", reason="TensorFlow is not installed")
    patches, offsets, want = _bf16_case()
    x = tf.Variable(tf.cast(patches, tf.bfloat16))
    off = tf.Variable(tf.cast(offsets, tf.bfloat16))
    for run in (lambda a, b: ps.reassemble_position(a, b, M=16), tf.function(lambda a, b: ps.reassemble_position(a, b, M=16))):
        with tf.GradientTape() as tape:
            out = run(x, off)
            loss = tf.reduce_sum(out)
        dx, doff = tape.gradient(loss, [x, off])
        assert out.dtype == tf.float32 and np.array_equal(out.numpy(), want)
        assert dx.dtype == tf.bfloat16 and dx.shape == x.shape
        assert doff.dtype == tf.bfloat16 and doff.shape == off.shape


def test_bfloat16_torch_forward_and_gradients():
    torch = _torch()
    patches, offsets, want = _bf16_case()
    x = torch.tensor(patches).to(torch.bfloat16)
    off = torch.tensor(offsets).to(torch.bfloat16)
    out = ps.reassemble_position(x, off, M=16)
    assert out.dtype == torch.float32 and np.array_equal(out.numpy(), want)
    x.requires_grad_(True)
    off.requires_grad_(True)
    ps.reassemble_position(x, off, M=16).sum().backward()
    assert x.grad.dtype == torch.bfloat16 and off.grad.dtype == torch.bfloat16
    assert bool(torch.isfinite(off.grad.float()).all())
    imgs = torch.zeros((1, 48, 48, 1), dtype=torch.bfloat16)
    assert ps.extract_patches_position(imgs, torch.zeros((1, 1, 2, 1)), 0.0, N=24).dtype == torch.float32


def test_bfloat16_jax_forward_and_gradients():
    jax = pytest.importorskip("jax", reason="JAX is not installed")
    jnp = jax.numpy
    patches, offsets, want = _bf16_case()
    x, off = jnp.asarray(patches, dtype=jnp.bfloat16), jnp.asarray(offsets, dtype=jnp.bfloat16)
    out = ps.reassemble_position(x, off, M=16)
    assert out.dtype == jnp.float32 and np.array_equal(np.asarray(out), want)
    dx = jax.grad(lambda a: ps.reassemble_position(a, off, M=16).sum())(x)
    assert dx.dtype == jnp.bfloat16 and dx.shape == x.shape
