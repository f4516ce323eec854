"""Array types through DLPack: a JAX (CPU) array in gives a JAX array out, read and returned
without a copy, with the golden bits. (torch CPU tensors take the same path; torch is not in
the test environment. GPU arrays: test_gpu.py.)"""

import numpy as np
import pytest

import ptychostitch as ps

jax = pytest.importorskip("jax", reason="JAX is not installed (scripts/test.sh installs jax[cpu])")
jnp = jax.numpy


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_jax_arrays_in_give_jax_arrays_out(golden):
    obj, off, M = golden["obj"], golden["offsets"], int(golden["M"])
    for name in ["shift_and_sum", "reassemble_position", "shift_and_sum_old", "reassemble_position_old"]:
        expected = golden[name if name.endswith("_old") else f"{name}_old"]
        out = getattr(ps, name)(jnp.asarray(obj), jnp.asarray(off), M)
        assert isinstance(out, jax.Array), name
        assert same_bits(out, expected), f"{golden['name']}: {name}"
    plan = ps.Plan(jnp.asarray(off), obj.shape[1], M)
    assert isinstance(plan.reassemble_position(jnp.asarray(obj)), jax.Array)


def test_no_framework_is_named_outside_its_backend():
    """Issue 22: the package reaches a framework's module only in that framework's backend
    (ptychostitch/_frameworks/): nothing else looks one up in sys.modules or imports it. (Except
    ptychopinn.py, whose replacements of PtychoPINN's own TF and torch functions return those
    frameworks' types by definition.)"""
    import re
    from pathlib import Path

    package = Path(ps.__file__).parent
    reach = re.compile(r"""sys\.modules(\.get\(|\[)\s*["'](torch|tensorflow|jax|cupy)|^\s*(import|from)\s+(torch|tensorflow|jax|cupy)\b""", re.M)
    for path in package.glob("*.py"):
        if path.name == "ptychopinn.py":
            continue
        found = reach.findall(path.read_text())
        assert not found, f"{path.name} reaches {found}"


def test_every_framework_has_the_same_backend_methods():
    from ptychostitch import _frameworks as fw

    methods = {name for name in vars(fw.Backend) if not name.startswith("_")}
    assert {"owns", "wants", "apply", "learnt", "readable", "to_host", "from_host", "device_cast", "run_on_device", "memory_hint", "run"} <= methods
    assert {b.name for b in fw.BACKENDS} == {"tensorflow", "torch", "jax", "cupy"}
    for backend in fw.BACKENDS:
        assert isinstance(backend, fw.Backend)
        assert fw.backend_of(np.zeros(2)) is fw.NUMPY and not backend.owns(np.zeros(2))


def test_eager_tensorflow_gpu_patches_are_differentiated_under_a_tape(monkeypatch):
    """Issue 22: an eager TF tensor on a GPU used to take the device path without a gradient,
    under a GradientTape too (a silently missing gradient). Now the device path is taken only
    where nothing records; under a tape the call goes through tf.custom_gradient. Without a GPU,
    the tensor's placement is stood in for."""
    tf = pytest.importorskip("tensorflow")
    from ptychostitch._frameworks import tensorflow_adapter

    rng = np.random.default_rng(2)
    patches = tf.Variable((rng.standard_normal((6, 16, 16, 1)) + 1j).astype(np.complex64))
    offsets = rng.uniform(-5, 5, (6, 1, 1, 2))
    device_calls = []
    monkeypatch.setattr(tensorflow_adapter, "on_gpu", lambda value: value is patches)
    monkeypatch.setattr(ps, "_run_on_gpu", lambda plan, obj, op: device_calls.append(op) or tf.zeros((1, 1, 1), tf.complex64))
    ps.reassemble_position(patches, offsets, 8)
    assert device_calls == ["reassemble_position"]  # nothing records: the device path
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.abs(ps.reassemble_position(patches, offsets, 8)) ** 2)
    grad = tape.gradient(loss, patches)
    assert device_calls == ["reassemble_position"], "under a tape the device path (no gradient) must not run"
    assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0


def test_device_arrays_without_a_device_kernel_go_through_the_host_and_back(monkeypatch):
    """Issue 25: an operation with no device kernel (extraction, regions) on CUDA arrays runs on
    the host and returns on the caller's device (a stand-in CUDA producer and backend here); one
    with a device kernel (reassembly) goes to it without reading the array on the host."""
    from ptychostitch import _frameworks as fw

    class CudaStandIn:
        def __init__(self, array):
            self.array, self.shape, self.dtype = array, array.shape, array.dtype

        def __dlpack_device__(self):
            return (fw.CUDA, 0)

    class StandInBackend(fw.Backend):
        name = "standin"

        def owns(self, value):
            return isinstance(value, CudaStandIn)

        def to_host(self, value):
            return value.array

        def from_host(self, result, like):
            return CudaStandIn(result)

    monkeypatch.setattr(fw, "BACKENDS", fw.BACKENDS + (StandInBackend(),))
    rng = np.random.default_rng(4)
    imgs = rng.standard_normal((2, 40, 40, 1)).astype(np.complex64)
    offsets = rng.uniform(-3, 3, (2, 1, 2, 4)).astype(np.float32)
    out = ps.extract_patches_position(CudaStandIn(imgs), offsets, 0.0, N=16, gridsize=2)
    assert isinstance(out, CudaStandIn)
    assert np.array_equal(out.array, ps.extract_patches_position(imgs, offsets, 0.0, N=16, gridsize=2))
    chosen = []
    monkeypatch.setattr(ps, "_run_on_gpu", lambda plan, obj, op: chosen.append((type(obj), op, plan.canvas_side)) or "device")
    patches = rng.standard_normal((5, 16, 16, 1)).astype(np.complex64)
    assert ps.reassemble_position(CudaStandIn(patches), rng.uniform(-4, 4, (5, 2)), 8) == "device"
    assert chosen and chosen[0][:2] == (CudaStandIn, "reassemble_position")
