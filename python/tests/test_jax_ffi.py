"""Issue 31, item 3: every operation an XLA custom call under ``jax.jit`` (the native handler,
registered from the wheel through a capsule), not a ``pure_callback``: the lowered program holds
the custom call and no callback; outputs and gradients are the eager bits; ``vmap`` of an
operation whose samples are independent is one custom call over the folded batch (no loop);
the callback remains as a fallback that says so once."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import ptychostitch as ps

jax = pytest.importorskip("jax")
jnp = jax.numpy
from ptychostitch._frameworks import jax_adapter  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TORCH_CENTER = dict(weights="center", numerator="weighted", support=("above", 1e-6))


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def cplx(rng, shape):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def targets(text):
    """The custom-call targets a lowered program holds."""
    return set(re.findall(r'custom_call @(\w+)', text)) | set(re.findall(r'call_target_name = "(\w+)"', text))


def has_callback(text):
    return "callback" in text.lower()


def cases():
    """(name, function of (x, positions), x, positions): every operation, in each layout."""
    rng = np.random.default_rng(31)
    n, N, M = 9, 16, 8
    off = rng.uniform(-5, 5, (n, 1, 1, 2)).astype(np.float32)
    side = ps.Plan(off, N, M).canvas_shape[0]
    x = cplx(rng, (n, N, N, 1))
    B, C, S = 3, 4, 24
    imgs = cplx(rng, (B, S, S, 1))
    off_xy = rng.uniform(-3, 3, (B, 1, 2, C)).astype(np.float32)
    P = 20
    xt = cplx(rng, (B, N, N, C))
    xr = cplx(rng, (B, C, N, N))
    pos = rng.uniform(-3, 3, (B, C, 1, 2)).astype(np.float32)
    regions = cplx(rng, (B, 1, P, P))
    return [
        ("shift_and_sum", lambda a, o: ps.shift_and_sum(a, o, M=M, canvas_side=side), x, off),
        ("reassemble_position", lambda a, o: ps.reassemble_position(a, o, M=M, canvas_side=side), x, off),
        ("extract_patches", lambda a, o: ps.extract_patches_position(a, o, N=N, gridsize=2), imgs, off_xy),
        ("regions_tf", lambda a, o: ps.reassemble_regions(a, o, P), xt, off_xy),
        ("regions_torch", lambda a, o: ps.reassemble_regions(a, o, P, layout="torch", **TORCH_CENTER), xr, pos),
        ("regions_torch_real", lambda a, o: ps.reassemble_regions(a, o, P, layout="torch", **TORCH_CENTER),
         xr.real.copy(), pos),
        ("extract_regions", lambda a, o: ps.extract_regions(a, o, N), regions, pos),
        ("center_channels", lambda a, o: ps.center_channels(a, o), xt, off_xy),
    ]


CASES = {name: (f, x, o) for name, f, x, o in cases()}
OPS = {
    "shift_and_sum": "reassemble", "reassemble_position": "reassemble", "extract_patches": "extract_patches",
    "regions_tf": "reassemble_regions", "regions_torch": "reassemble_regions",
    "regions_torch_real": "reassemble_regions", "extract_regions": "extract_regions",
    "center_channels": "center_channels",
}


def loss_of(f):
    return lambda a, o: jnp.sum(jnp.abs(f(a, o)) ** 2)


@pytest.mark.parametrize("name", list(CASES))
def test_jit_lowers_to_the_custom_call_with_the_eager_bits(name):
    f, x, o = CASES[name]
    jx, jo = jnp.asarray(x), jnp.asarray(o)
    text = jax.jit(f).lower(jx, jo).as_text()
    assert f"ptychostitch_{OPS[name]}" in targets(text), text[:2000]
    assert not has_callback(text)
    eager = f(x, o)  # NumPy in, NumPy out: the library's own path
    assert same_bits(jax.jit(f)(jx, jo), eager)
    # The gradient program holds the backward's custom call and no callback either.
    grad = jax.jit(jax.grad(loss_of(f), argnums=(0, 1)))
    gtext = grad.lower(jx, jo).as_text()
    assert f"ptychostitch_{OPS[name]}_backward" in targets(gtext)
    assert not has_callback(gtext)


@pytest.mark.parametrize("name", list(CASES))
def test_gradients_equal_the_callback_path_bit_for_bit(name, monkeypatch):
    """The custom calls and the fallback run the same library calls on the same values: the
    same bits, eager and under jit."""
    f, x, o = CASES[name]
    jx, jo = jnp.asarray(x), jnp.asarray(o)
    grad = jax.grad(loss_of(f), argnums=(0, 1))
    ffi = [jax.jit(grad)(jx, jo), grad(jx, jo)]
    monkeypatch.setenv(jax_adapter.FFI_VARIABLE, "0")
    # New functions: JAX caches a traced function's program, which holds the custom calls.
    assert has_callback(jax.jit(lambda a, b: f(a, b)).lower(jx, jo).as_text())
    callback = jax.jit(jax.grad(loss_of(lambda a, b: f(a, b)), argnums=(0, 1)))(jx, jo)
    for got in ffi:
        assert same_bits(got[0], callback[0]) and same_bits(got[1], callback[1])


def test_region_support_is_a_custom_call_with_the_eager_mask():
    rng = np.random.default_rng(5)
    B, C, N, P = 2, 4, 12, 20
    x = cplx(rng, (B, C, N, N))
    pos = rng.uniform(-3, 3, (B, C, 1, 2)).astype(np.float32)

    def mask(a, p):
        return ps._region_support(a, p, P, layout="torch", weights="center", support=("above", 0.5))

    text = jax.jit(mask).lower(jnp.asarray(x), jnp.asarray(pos)).as_text()
    assert "ptychostitch_region_support" in targets(text) and not has_callback(text)
    got = jax.jit(mask)(jnp.asarray(x), jnp.asarray(pos))
    want = mask(x, pos)
    assert got.dtype == np.bool_ and np.array_equal(np.asarray(got), want) and want.any() and not want.all()


@pytest.mark.parametrize("name", ["extract_patches", "regions_torch", "extract_regions", "center_channels"])
def test_vmap_is_one_custom_call_over_the_folded_batch(name):
    """A batchable operation under vmap: the custom call receives the mapped axis in front of
    every operand (no while loop in the program) and the per-element bits come out, forward and
    per-example gradients."""
    f, x, o = CASES[name]
    V = 3
    rng = np.random.default_rng(7)
    xs = np.stack([x] + [(x * (1 + 0.1 * v)).astype(x.dtype) for v in range(1, V)])
    os_ = np.stack([o + rng.uniform(-1, 1, o.shape).astype(o.dtype) for _ in range(V)])
    mapped = jax.jit(jax.vmap(f))
    text = mapped.lower(jnp.asarray(xs), jnp.asarray(os_)).as_text()
    assert f"ptychostitch_{OPS[name]}" in targets(text) and "while" not in text and not has_callback(text)
    out = mapped(jnp.asarray(xs), jnp.asarray(os_))
    for v in range(V):
        assert same_bits(out[v], f(xs[v], os_[v]))
    grad = jax.grad(loss_of(f), argnums=(0, 1))
    gtext = jax.jit(jax.vmap(grad)).lower(jnp.asarray(xs), jnp.asarray(os_)).as_text()
    assert "while" not in gtext and not has_callback(gtext)
    dx, do = jax.jit(jax.vmap(grad))(jnp.asarray(xs), jnp.asarray(os_))
    for v in range(V):
        want = jax.jit(grad)(jnp.asarray(xs[v]), jnp.asarray(os_[v]))
        assert same_bits(dx[v], want[0]) and same_bits(do[v], want[1])
    # One operand unmapped (the positions shared): broadcast to every element, same bits.
    shared = jax.jit(jax.vmap(f, in_axes=(0, None)))(jnp.asarray(xs), jnp.asarray(o))
    for v in range(V):
        assert same_bits(shared[v], f(xs[v], o))


def test_coupled_operations_loop_under_vmap():
    """A reassembly (a canvas per scan) or a region reassembly re-centred over the batch: the
    samples are coupled, so the custom call runs once per mapped element, with its bits."""
    f, x, o = CASES["regions_tf"]
    xs = np.stack([x, (x * 2).astype(x.dtype)])
    out = jax.jit(jax.vmap(f, in_axes=(0, None)))(jnp.asarray(xs), jnp.asarray(o))
    for v in range(2):
        assert same_bits(out[v], f(xs[v], o))


def test_wrong_canvas_side_is_a_clear_error_under_jit():
    f, x, o = CASES["reassemble_position"]
    wrong = jax.jit(lambda a, b: ps.reassemble_position(a, b, M=8, canvas_side=7))
    with pytest.raises(Exception, match="promised by canvas_side"):
        np.asarray(wrong(jnp.asarray(x), jnp.asarray(o)))


def test_fallback_warns_once_and_gives_the_same_bits(monkeypatch):
    """Where the native target cannot be registered (an old JAX, an XLA refusing the API
    version), the callback serves, with one RuntimeWarning saying so."""
    f, x, o = CASES["extract_patches"]
    want = np.asarray(jax.jit(f)(jnp.asarray(x), jnp.asarray(o)))

    def refuse():
        raise RuntimeError("no handler here")

    monkeypatch.setattr(jax_adapter._native, "xla_handlers", refuse)
    monkeypatch.setattr(jax_adapter, "_registered", {})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = [np.asarray(jax.jit(lambda a, b: f(a, b))(jnp.asarray(x), jnp.asarray(o))) for _ in range(3)]
    said = [w for w in caught if "JAX's FFI is unavailable" in str(w.message)]
    assert len(said) == 1 and "pure_callback" in str(said[0].message)
    assert all(same_bits(g, want) for g in got)
    assert has_callback(jax.jit(lambda a, b: f(a, b)).lower(jnp.asarray(x), jnp.asarray(o)).as_text())


def test_scan_warnings_still_reach_the_caller_outside_jit():
    """Python does not run inside a compiled custom call: a reassembly's scan warnings are
    given when the offsets are known while tracing (grad without jit), as on the callback path."""
    rng = np.random.default_rng(2)
    off = rng.uniform(-5, 5, (8, 1, 1, 2)).astype(np.float32)
    off[0] = 400.0  # an outlier that inflates the canvas
    x = cplx(rng, (8, 16, 16, 1))
    with pytest.warns(ps.ScanWarning):
        jax.grad(lambda a: jnp.sum(jnp.abs(ps.reassemble_position(a, off, M=8)) ** 2))(jnp.asarray(x))


def test_vendored_header_matches_the_installed_jaxlib():
    """The vendored XLA FFI C API header is the one JAX ships (its version), so the handler is
    built against the ABI that registration checks."""
    vendored = (REPO / "crates/ptychostitch-py/vendor/xla/ffi/api/c_api.h").read_text()
    installed = Path(jax.ffi.include_dir()) / "xla/ffi/api/c_api.h"
    if not installed.exists():
        pytest.skip("this jaxlib ships no FFI headers")

    def version(text):
        return tuple(int(re.search(rf"#define XLA_FFI_API_{k} (\d+)", text).group(1)) for k in ("MAJOR", "MINOR"))

    assert version(vendored) == version(installed.read_text())


def test_a_bad_call_is_an_error_naming_it_not_a_crash():
    """The handler checks what XLA hands it: an unknown operator, a spec that does not parse or
    lacks a parameter, a dtype it does not take, a missing attribute -- each an exception with
    the reason, and the process goes on."""
    rng = np.random.default_rng(4)
    x = jnp.asarray(cplx(rng, (3, 8, 8, 1)))
    o = jnp.asarray(rng.uniform(-1, 1, (3, 1, 1, 2)).astype(np.float32))
    jax_adapter.ffi_unavailable("reassemble")  # registers the targets
    out = jax.ShapeDtypeStruct((8, 8, 1), np.complex64)
    call = jax.ffi.ffi_call("ptychostitch_reassemble", out)
    good = "op='shift_and_sum';crop=4;threads=0;reference=False;canvas_side=None"
    cases = [
        (dict(op="no_such_operator", spec=good, rank=np.int64(4)), "no operator named"),
        (dict(op="reassemble", spec="op='shift_and_sum';crop=", rank=np.int64(4)), "spec value"),
        (dict(op="reassemble", spec="op='shift_and_sum';threads=0;reference=False", rank=np.int64(4)), "lacks crop"),
        (dict(op="reassemble", spec=good, rank=np.int64(7)), "rank"),
        (dict(op="reassemble", spec=good), "lacks its op, spec or rank"),
    ]
    for attrs, message in cases:
        with pytest.raises(Exception, match=message):
            np.asarray(jax.jit(lambda a, b: call(a, b, **attrs))(x, o))
    with pytest.raises(Exception, match="an operand of dtype float16; expected float32, float64 or complex64"):
        half = lambda a, b: call(jnp.real(a).astype(jnp.float16), b, op="reassemble", spec=good, rank=np.int64(4))  # noqa: E731
        np.asarray(jax.jit(half)(x, o))
    # And the next good call works.
    side = ps.Plan(np.asarray(o), 8, 4).canvas_shape[0]
    f = lambda a, b: ps.shift_and_sum(a, b, M=4, canvas_side=side)  # noqa: E731
    assert same_bits(jax.jit(f)(x, o), f(np.asarray(x), np.asarray(o)))


# --- the GPU's lowering, checked without a GPU -------------------------------------------------
#
# A program compiled for a GPU takes the `cuda` branch of `lax.platform_dependent`: CUDA custom
# calls (the device kernels on XLA's stream) for every operation with device kernels, the
# callback for the others. JAX lowers for a platform it does not have (`lowering_platforms`),
# so the program a GPU would run is inspected here; and the same branch is run on the CPU (its
# custom calls then served by the host handler) to check that what it hands the handler --
# TensorFlow's region layout put into the torch layout the device kernels read -- gives the
# bits. The device operators themselves are checked against the host operators through the
# kernel emulator (`crates/ptychostitch-ops/tests/device.rs`), and on a GPU by test_gpu.py.

ON_DEVICE = [name for name in CASES if name != "center_channels"]


def support_case():
    rng = np.random.default_rng(5)
    B, C, N, P = 2, 4, 12, 20
    x = cplx(rng, (B, C, N, N))
    pos = rng.uniform(-3, 3, (B, C, 1, 2)).astype(np.float32)

    def mask(a, p):
        return ps._region_support(a, p, P, layout="torch", weights="center", support=("above", 0.5))

    return mask, x, pos

needs_cuda_handler = pytest.mark.skipif(
    "cuda" not in ps._native.xla_handlers(), reason="this build of the native library has no CUDA handler"
)


@needs_cuda_handler
@pytest.mark.parametrize("name", ON_DEVICE)
def test_the_gpu_lowering_holds_cuda_custom_calls_and_no_callback(name):
    f, x, o = CASES[name]
    jx, jo = jnp.asarray(x), jnp.asarray(o)
    for program, op in [
        (jax.jit(f), OPS[name]),
        (jax.jit(jax.grad(loss_of(f), argnums=(0, 1))), f"{OPS[name]}_backward"),
    ]:
        text = program.trace(jx, jo).lower(lowering_platforms=("cuda",)).as_text()
        assert f"ptychostitch_{op}" in targets(text) and not has_callback(text), text[:2000]
    if name == "regions_tf":  # the device kernels read the torch layout: transposed in the program
        text = jax.jit(f).trace(jx, jo).lower(lowering_platforms=("cuda",)).as_text()
        assert "layout=\\27torch\\27" in text or "layout='torch'" in text or "layout=\\'torch\\'" in text, text[:3000]
        assert "transpose" in text


@needs_cuda_handler
@pytest.mark.parametrize("name", ON_DEVICE)
def test_the_gpu_branch_gives_the_bits_of_the_host_branch(name, monkeypatch):
    """The program a GPU runs, with its custom calls served by the host handler: the same bits
    as the CPU's program, forward and gradients (the twin's transposes and spec included)."""
    f, x, o = CASES[name]
    jx, jo = jnp.asarray(x), jnp.asarray(o)
    grad = jax.grad(loss_of(f), argnums=(0, 1))
    want = jax.jit(f)(jx, jo), jax.jit(grad)(jx, jo)
    monkeypatch.setattr(jax_adapter, "_per_platform", lambda cpu, cuda, default: cuda)
    g = lambda a, b: f(a, b)  # noqa: E731  (a new function: JAX caches traced programs)
    text = jax.jit(g).lower(jx, jo).as_text()
    assert f"ptychostitch_{OPS[name]}" in targets(text) and not has_callback(text)
    got = jax.jit(g)(jx, jo), jax.jit(jax.grad(loss_of(g), argnums=(0, 1)))(jx, jo)
    assert same_bits(got[0], want[0])
    assert same_bits(got[1][0], want[1][0]) and same_bits(got[1][1], want[1][1])
    if name in ("extract_patches", "regions_torch", "extract_regions"):  # vmap folds on this branch too
        xs = jnp.stack([jx, jx * 2])
        mapped = jax.jit(jax.vmap(g, in_axes=(0, None)))(xs, jo)
        assert same_bits(mapped[1], jax.jit(f)(xs[1], jo))


@needs_cuda_handler
def test_the_support_mask_is_a_cuda_custom_call_with_the_host_mask(monkeypatch):
    mask, x, pos = support_case()
    jx, jp = jnp.asarray(x), jnp.asarray(pos)
    text = jax.jit(mask).trace(jx, jp).lower(lowering_platforms=("cuda",)).as_text()
    assert "ptychostitch_region_support" in targets(text) and not has_callback(text)
    want = jax.jit(mask)(jx, jp)
    monkeypatch.setattr(jax_adapter, "_per_platform", lambda cpu, cuda, default: cuda)
    got = jax.jit(lambda a, b: mask(a, b))(jx, jp)
    assert got.dtype == np.bool_ and np.array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("kernel", ["center_channels", "reference"])
def test_without_device_kernels_the_gpu_branch_is_the_callback(kernel, monkeypatch):
    """``center_channels`` and the reference have no device kernels: a program compiled for a
    GPU calls back to the host for them (JAX cannot lower a callback for a platform it lacks,
    so the branch is taken on the CPU here), with the same bits."""
    rng = np.random.default_rng(8)
    B, C, N, P = 2, 4, 12, 20
    xt = cplx(rng, (B, N, N, C))
    off_xy = rng.uniform(-3, 3, (B, 1, 2, C)).astype(np.float32)
    f, x, o = {
        "center_channels": (lambda a, b: ps.center_channels(a, b), xt, off_xy),
        "reference": (lambda a, b: ps.reassemble_regions(a, b, P, reference=True), xt, off_xy),
    }[kernel]
    jx, jo = jnp.asarray(x), jnp.asarray(o)
    want = jax.jit(f)(jx, jo)
    monkeypatch.setattr(jax_adapter, "_per_platform", lambda cpu, cuda, default: cuda)
    g = lambda a, b: f(a, b)  # noqa: E731
    text = jax.jit(g).lower(jx, jo).as_text()
    assert has_callback(text) and "ptychostitch_" not in text
    assert same_bits(jax.jit(g)(jx, jo), want)


@needs_cuda_handler
def test_a_gpu_the_device_kernels_cannot_use_gets_the_callbacks_said_once(monkeypatch):
    """JAX with a GPU where the device kernels cannot load (no NVRTC, say): the program
    compiled for that GPU calls back to the host instead of failing at run time, and one
    RuntimeWarning says why. Where JAX has no GPU (a program lowered here for one elsewhere),
    the CUDA custom calls stay."""
    f, x, o = CASES["extract_regions"]
    jx, jo = jnp.asarray(x), jnp.asarray(o)
    kernel = ps._region.ExtractKernel(8, 4, "torch", 0)
    assert jax_adapter.device_custom_calls(kernel)  # no GPU in this JAX: the custom calls
    real_devices = jax.devices
    monkeypatch.setattr(jax, "devices", lambda kind=None: ["gpu0"] if kind == "gpu" else real_devices(kind))
    monkeypatch.setattr(jax_adapter._native, "gpu_available", lambda: (False, None, "no NVRTC here"))
    monkeypatch.setattr(jax_adapter, "_UNUSABLE_GPU_SAID", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not jax_adapter.device_custom_calls(kernel)
        assert not jax_adapter.device_custom_calls(kernel)
        monkeypatch.setattr(jax_adapter, "_per_platform", lambda cpu, cuda, default: cuda)
        g = lambda a, b: f(a, b)  # noqa: E731
        text = jax.jit(g).lower(jx, jo).as_text()
    said = [w for w in caught if "device kernels cannot run here" in str(w.message)]
    assert len(said) == 1 and "no NVRTC here" in str(said[0].message)
    assert has_callback(text) and "ptychostitch_" not in text
    monkeypatch.setattr(jax_adapter._native, "gpu_available", lambda: (True, "a GPU", None))
    assert jax_adapter.device_custom_calls(kernel)
