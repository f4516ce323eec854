"""The Python code that chooses the GPU kernels, tested without a GPU (issue 25).

A stand-in makes torch CPU tensors look like CUDA tensors to the package (``torch_ops.on_cuda``, the
DLPack device type) and stands in for the native device entries (``_arrays.device_call``): it
records each call -- entry, shapes, dtypes, contiguity, stream -- and fills the caller's outputs
with the host kernels' values. What is checked is the Python side of the device paths: which
entry each operation takes forward and backward, the outputs allocated by the framework in the
right shapes and dtypes, torch's stream handed down, the offsets' cotangent's layout and dtype,
the results reshaped and cast back; and that the values equal the host path's. The kernels
themselves are checked bit for bit by the emulator (``crates/ptychostitch-kernel-emu``); on a
GPU, ``python/tests/test_gpu.py`` runs the real entries.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import ptychostitch as ps  # noqa: E402
from ptychostitch import _arrays, _kernels, _native  # noqa: E402
from ptychostitch import _frameworks  # noqa: E402
from ptychostitch._frameworks import base, torch_adapter, torch_ops  # noqa: E402

STREAM = 0x5EED


def _is_capsule(a) -> bool:
    return type(a).__name__ == "PyCapsule"


def _host(a):
    """A stand-in device array's values: torch, NumPy, JAX, or a TensorFlow DLPack capsule."""
    if isinstance(a, torch.Tensor):
        return a.numpy()
    if _is_capsule(a):
        import tensorflow as tf

        return tf.experimental.dlpack.from_dlpack(a).numpy()
    return np.asarray(a)


def _contiguous(a) -> bool:
    if isinstance(a, torch.Tensor):
        return a.is_contiguous()
    return bool(np.asarray(a).flags.c_contiguous)


def _put(out, values) -> None:
    """Writes a stand-in device output: a torch tensor the framework allocated, or the NumPy
    array standing in for ``_native.device_empty``'s."""
    values = np.ascontiguousarray(values)
    if isinstance(out, torch.Tensor):
        out.copy_(torch.from_numpy(values).reshape(out.shape))
    else:
        np.copyto(out, values.reshape(out.shape))


class StandIn:
    """Records the device calls and computes them on the host."""

    def __init__(self) -> None:
        self.calls: list = []
        self.plans: list = []
        self.positions: list = []  # what each call that can plan on the device was given
        self.scopes = 0  # device scopes entered and not left
        self.stream = STREAM  # what the framework's backend must hand down (None: JAX, TF)

    @contextlib.contextmanager
    def scope(self, like):
        self.scopes += 1
        try:
            yield
        finally:
            self.scopes -= 1

    def __call__(self, plan, method, *args):
        assert self.scopes > 0, f"{method} was called outside the tensor's device scope"
        # As _arrays.device_call: a TensorFlow tensor goes as its DLPack capsule.
        args = tuple(a.dlpack_capsule() if hasattr(a, "dlpack_capsule") else a for a in args)
        args = tuple(_host(a) if _is_capsule(a) else a for a in args)
        described = [
            (tuple(a.shape), str(a.dtype), _contiguous(a)) if hasattr(a, "shape") else a for a in args
        ]
        self.calls.append((type(plan).__name__, method, described))
        self.plans.append(plan)
        kind = type(plan).__name__
        # Where each entry takes the stream, and the positions the device plans from (None:
        # planned on the host), by position.
        stream_at, positions_at = {
            ("Plan", "run_cuda"): (2, None), ("Plan", "vjp_cuda"): (6, None),
            ("Extraction", "extract_cuda"): (2, 3), ("Extraction", "vjp_cuda"): (5, 6),
            ("Region", "reassemble_cuda"): (3, 4), ("Region", "vjp_cuda"): (6, 7),
            ("Region", "support_cuda"): (3, 4),
        }[(kind, method)]
        stream = args[stream_at]
        if positions_at is not None:
            self.positions.append(described[positions_at])
        assert stream == self.stream, f"{method} was given stream {stream}, not the framework's {self.stream}"
        for a in args:
            if hasattr(a, "shape"):
                assert _contiguous(a), f"{method}: a non-contiguous array reached the native layer"
        host = lambda t: None if t is None else _host(t)  # noqa: E731
        put = _put
        if isinstance(plan, _native.Plan) and method == "run_cuda":
            obj, op, _, out = args
            put(out, plan.run(host(obj), op))
        elif isinstance(plan, _native.Plan) and method == "vjp_cuda":
            patches, cot, op, output, dx, doff, _ = args
            side = plan.canvas_side
            out = None if output is None else host(output).reshape(side, side)
            gx, goff = plan.vjp(host(patches), host(cot).reshape(side, side), op, out, dx is not None, doff is not None)
            if dx is not None:
                put(dx, gx)
            if doff is not None:
                assert "float64" in str(doff.dtype)
                put(doff, goff)
        elif isinstance(plan, _native.Extraction) and method == "extract_cuda":
            images, out, _ = args[:3]
            put(out, plan.extract(host(images)))
        elif isinstance(plan, _native.Extraction) and method == "vjp_cuda":
            images, cot, dimg, doff, channel_layout, _ = args[:6]
            n = plan.output_shape[1]
            gi, gflat = plan.vjp(host(images), host(cot).reshape(-1, n, n), dimg is not None, doff is not None)
            if dimg is not None:
                put(dimg, gi)
            if doff is not None:
                assert "float64" in str(doff.dtype)
                if channel_layout:  # (B·C, 2) rows as PtychoPINN's (B, 1, 2, C)
                    b, c = doff.shape[0], doff.shape[-1]
                    gflat = gflat.reshape(b, c, 2).transpose(0, 2, 1)
                put(doff, gflat)
        elif isinstance(plan, _native.Region) and method == "reassemble_cuda":
            patches, weights, out, _ = args[:4]
            assert "float32" in str(weights.dtype)
            put(out, plan.reassemble(host(patches), host(weights)))
        elif isinstance(plan, _native.Region) and method == "support_cuda":
            patches, weights, out, _ = args[:4]
            assert "float32" in str(weights.dtype) and "bool" in str(out.dtype)
            kind, value = plan.support_option
            put(out, plan.support(host(weights), kind, value))
        elif isinstance(plan, _native.Region) and method == "vjp_cuda":
            patches, weights, cot, dx, dpos, channel_layout, _ = args[:7]
            b, _, p = plan.shape
            gx, gpos, _ = plan.vjp(host(patches), host(weights), host(cot).reshape(b, p, p), dx is not None, dpos is not None)
            if dx is not None:
                put(dx, gx)
            if dpos is not None:
                assert "float64" in str(dpos.dtype)
                if channel_layout:
                    c = dpos.shape[-1]
                    gpos = gpos.reshape(b, c, 2).transpose(0, 2, 1)
                put(dpos, gpos)
        else:
            raise AssertionError(f"unexpected device call {method} on {type(plan).__name__}")

    def methods(self):
        return [(kind, method) for kind, method, _ in self.calls]


@pytest.fixture
def device(monkeypatch):
    stand_in = StandIn()
    monkeypatch.setattr(torch_ops, "on_cuda", lambda t: True)
    monkeypatch.setattr(torch_adapter.TorchBackend, "device_stream", lambda self, like: STREAM)
    monkeypatch.setattr(torch_adapter.TorchBackend, "device_scope", stand_in.scope)
    monkeypatch.setattr(base.Backend, "device_scope", stand_in.scope)
    real = base.dlpack_device
    monkeypatch.setattr(
        base, "dlpack_device", lambda v: base.CUDA if isinstance(v, torch.Tensor) else real(v)
    )
    monkeypatch.setattr(_arrays, "device_call", stand_in)
    real_positions = _frameworks.positions_for_device

    def positions_for_device(positions):
        # The device paths plan from the positions where they are (the native plan gets zeros
        # of their shape): the stand-in, which computes on the host, plans from their values.
        planned, on_device = real_positions(positions)
        if on_device is None:  # host positions (a TensorFlow or JAX stand-in's): planned there
            return planned, None
        assert not planned.any() and planned.shape == tuple(positions.shape)
        return _frameworks.host_values(positions), on_device

    monkeypatch.setattr(_frameworks, "positions_for_device", positions_for_device)
    return stand_in


def _scan(seed, n=12, size=16, dtype=np.complex64):
    r = np.random.default_rng(seed)
    patches = (r.normal(size=(n, size, size, 1)) + 1j * r.normal(size=(n, size, size, 1))).astype(dtype)
    offsets = r.uniform(-9, 9, size=(n, 1, 1, 2))
    return patches, offsets


def _grads(fn, *inputs):
    leaves = [torch.tensor(v, requires_grad=True) for v in inputs]
    out = fn(*leaves)
    weights = torch.linspace(-1, 1, out.numel(), dtype=torch.float32).reshape(out.shape)
    loss = (out.real * weights).sum() if out.is_complex() else (out * weights).sum()
    loss.backward()
    return out.detach(), [leaf.grad for leaf in leaves]


def _same(a, b, what):
    assert a.dtype == b.dtype and a.shape == b.shape, f"{what}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
    assert np.array_equal(a.numpy().view(np.uint8), b.numpy().view(np.uint8)), f"{what}: bits differ"


@pytest.mark.parametrize("op", ["shift_and_sum", "reassemble_position"])
def test_the_reassembly_runs_forward_and_backward_on_the_device(device, op, monkeypatch):
    patches, offsets = _scan(1)
    fn = lambda x, o: getattr(ps, op)(x, o, M=10)  # noqa: E731
    out, grads = _grads(fn, patches, offsets)
    assert device.methods() == [("Plan", "run_cuda"), ("Plan", "vjp_cuda")]
    patches_arg, cot, _, output, dx, doff, _ = device.calls[1][2]
    assert patches_arg == ((12, 16, 16, 1), "torch.complex64", True) and cot[0] == tuple(out.shape)
    assert output is not None  # the forward's canvas, saved for the quotient rule
    assert dx == ((12, 16, 16, 1), "torch.complex64", True) and doff == ((12, 2), "torch.float64", True)
    # Issue 34, item 8: the backward reuses the forward's native plan (and with it the GPU
    # tables it uploaded), as does the next step with the same offsets.
    assert device.plans[0] is device.plans[1]
    _grads(fn, patches, offsets)
    assert device.plans[2] is device.plans[0] and device.plans[3] is device.plans[0]
    _grads(fn, patches, offsets + 0.5)
    assert device.plans[4] is not device.plans[0]
    monkeypatch.undo()
    host_out, host_grads = _grads(fn, patches, offsets)
    _same(out, host_out, "canvas")
    _same(grads[0], host_grads[0], "patches' gradient")
    _same(grads[1], host_grads[1], "offsets' gradient")


def test_only_the_wanted_cotangents_are_allocated(device):
    patches, offsets = _scan(2)
    x = torch.tensor(patches, requires_grad=True)
    ps.shift_and_sum(x, torch.tensor(offsets), M=10).abs().sum().backward()
    method, args = device.calls[-1][1], device.calls[-1][2]
    assert method == "vjp_cuda" and args[4] is not None and args[5] is None  # no offsets' cotangent
    assert x.grad.shape == x.shape and x.grad.dtype == x.dtype


def test_the_reference_differentiates_on_the_host(device):
    patches, offsets = _scan(3)
    x = torch.tensor(patches, requires_grad=True)
    ps.shift_and_sum_old(x, torch.tensor(offsets), M=10).abs().sum().backward()
    assert ("Plan", "vjp_cuda") not in device.methods()
    assert x.grad is not None


def test_the_extraction_runs_forward_and_backward_on_the_device(device, monkeypatch):
    r = np.random.default_rng(4)
    b, c, s, n = 2, 4, 40, 16
    imgs = (r.normal(size=(b, s, s, 1)) + 1j * r.normal(size=(b, s, s, 1))).astype(np.complex64)
    offsets = r.uniform(-6, 6, size=(b, 1, 2, c))  # float64, PtychoPINN's layout
    fn = lambda i, o: ps.extract_patches_position(i, o, N=n)  # noqa: E731
    out, grads = _grads(fn, imgs, offsets)
    assert device.methods() == [("Extraction", "extract_cuda"), ("Extraction", "vjp_cuda")]
    images, cot, dimg, doff, channel_layout, _, offsets_arg = device.calls[1][2]
    assert dimg == ((b, s, s, 1), "torch.complex64", True)
    assert doff == ((b, 1, 2, c), "torch.float64", True) and channel_layout is True
    # The offsets stay on the device, which plans from them (float64 kept), forward and backward.
    assert device.positions == [((b, 1, 2, c), "torch.float64", True)] * 2 and offsets_arg == device.positions[1]
    assert device.calls[0][2][4] is True  # the forward's offsets in PtychoPINN's (B, 1, 2, C)
    assert out.shape == (b * c, n, n, 1)
    monkeypatch.undo()
    host_out, host_grads = _grads(fn, imgs, offsets)
    _same(out, host_out, "patches")
    _same(grads[0], host_grads[0], "images' gradient")
    _same(grads[1], host_grads[1], "offsets' gradient")


def test_without_autodiff_the_extraction_takes_the_device_entry(device):
    r = np.random.default_rng(5)
    imgs = torch.tensor(r.normal(size=(1, 24, 24, 1)).astype(np.float32))
    offsets = torch.tensor(r.uniform(-3, 3, size=(1, 1, 2, 2)))
    out = ps.extract_patches_position(imgs, offsets, N=8)
    assert device.methods() == [("Extraction", "extract_cuda")]
    assert out.dtype == torch.float32 and out.shape == (2, 8, 8, 1)


def test_the_torch_layout_extraction_runs_on_the_device(device, monkeypatch):
    r = np.random.default_rng(6)
    b, c, p, n = 2, 4, 36, 16
    regions = r.normal(size=(b, 1, p, p)).astype(np.float32)
    positions = r.uniform(-5, 5, size=(b, c, 1, 2)).astype(np.float32)
    fn = lambda g, q: ps.extract_regions(g, q, n)  # noqa: E731
    out, grads = _grads(fn, regions, positions)
    assert device.methods() == [("Extraction", "extract_cuda"), ("Extraction", "vjp_cuda")]
    assert device.calls[1][2][4] is False  # flat (B·C, 2) rows for torch's positions
    assert device.positions == [((b, c, 1, 2), "torch.float32", True)] * 2  # planned on the device
    monkeypatch.undo()
    host_out, host_grads = _grads(fn, regions, positions)
    _same(out, host_out, "patches")
    _same(grads[0], host_grads[0], "regions' gradient")
    _same(grads[1], host_grads[1], "positions' gradient")


@pytest.mark.parametrize("layout", ["tf", "torch"])
def test_the_region_reassembly_runs_forward_and_backward_on_the_device(device, layout, monkeypatch):
    r = np.random.default_rng(7)
    b, c, n, p = 2, 4, 16, 32
    shape = (b, n, n, c) if layout == "tf" else (b, c, n, n)
    patches = (r.normal(size=shape) + 1j * r.normal(size=shape)).astype(np.complex64)
    positions = r.uniform(-4, 4, size=(b, 1, 2, c) if layout == "tf" else (b, c, 1, 2))
    fn = lambda x, q: ps.reassemble_regions(x, q, p, layout=layout)  # noqa: E731
    to_host = []  # every tensor of the call read on the host (none: the weights stay too)
    real_numpy = torch_ops._numpy
    monkeypatch.setattr(torch_ops, "_numpy", lambda t: to_host.append(tuple(t.shape)) or real_numpy(t))
    out, grads = _grads(fn, patches, positions)
    assert to_host == []
    assert device.methods() == [("Region", "reassemble_cuda"), ("Region", "vjp_cuda")]
    patches_arg = device.calls[0][2][0]
    assert patches_arg == ((b, c, n, n), "torch.complex64", True)  # TF's layout permuted on the device
    _, weights_arg, cot, dx, dpos, channel_layout, _, positions_arg = device.calls[1][2]
    assert device.positions == [(tuple(positions.shape), "torch.float64", True)] * 2
    assert device.calls[0][2][5] == (layout == "tf")  # the forward's positions' layout
    assert weights_arg == ((1, 1, n, n), "torch.float32", True)
    assert dx == ((b, c, n, n), "torch.complex64", True)
    assert dpos == (tuple(positions.shape), "torch.float64", True) and channel_layout == (layout == "tf")
    monkeypatch.undo()
    host_out, host_grads = _grads(fn, patches, positions)
    _same(out, host_out, "regions")
    _same(grads[0], host_grads[0], "patches' gradient")
    _same(grads[1], host_grads[1], "positions' gradient")


@pytest.mark.parametrize("weights", ["center", "probe"])
def test_the_support_mask_runs_on_the_device(device, weights, monkeypatch):
    """PtychoPINN's torch helpers return the support mask beside the regions: on CUDA tensors it
    is the device kernels' too (it went through the host before: the patches, the positions and
    the weights copied down, the mask back up, every step)."""
    r = np.random.default_rng(9)
    b, c, n, p = 2, 4, 16, 32
    patches = torch.tensor((r.normal(size=(b, c, n, n)) + 1j * r.normal(size=(b, c, n, n))).astype(np.complex64))
    positions = torch.tensor(r.uniform(-4, 4, size=(b, c, 1, 2)).astype(np.float32))
    probe = torch.tensor(np.abs(r.normal(size=(n, n))).astype(np.float32))
    w, support = ("center", ("above", 1e-6)) if weights == "center" else (probe, ("above_max_fraction", 0.1))

    def mask():
        return ps._region_support(patches, positions, p, layout="torch", weights=w, numerator="weighted",
                                  support=support)

    to_host = []
    real_numpy = torch_ops._numpy
    monkeypatch.setattr(torch_ops, "_numpy", lambda t: to_host.append(tuple(t.shape)) or real_numpy(t))
    got = mask()
    assert device.methods() == [("Region", "support_cuda")] and to_host == []
    _, weights_arg, out_arg, _, positions_arg, layout_flag = device.calls[0][2]
    assert out_arg == ((b, p, p), "torch.bool", True) and positions_arg == ((b, c, 1, 2), "torch.float32", True)
    assert layout_flag is False
    monkeypatch.undo()
    want = mask()
    assert got.dtype == torch.bool and torch.equal(got, want) and bool(want.any()) and not bool(want.all())


def test_every_framework_with_gpu_arrays_has_device_operations():
    from ptychostitch import _frameworks

    assert all(b.device_ops for b in _frameworks.BACKENDS) and not _frameworks.NUMPY.device_ops


def test_learnt_weights_differentiate_on_the_host(device):
    """A probe being learnt (weights that require grad): the forward runs on the device (the
    weights copied in, as constant weights are); the weights' cotangent has no device kernel,
    so the backward runs on the host."""
    r = np.random.default_rng(8)
    b, c, n, p = 2, 4, 16, 32
    x = torch.tensor(r.normal(size=(b, c, n, n)).astype(np.float32), requires_grad=True)
    probe = torch.tensor(r.normal(size=(n, n)).astype(np.float32), requires_grad=True)
    pos = torch.tensor(r.uniform(-4, 4, size=(b, c, 1, 2)))
    out = ps.reassemble_regions(x, pos, p, layout="torch", weights=probe.abs() ** 2)
    out.sum().backward()
    assert device.methods() == [("Region", "reassemble_cuda")]
    assert probe.grad is not None and x.grad is not None


def _aligned_empty(shape, dtype):
    """A NumPy array at a 256-byte boundary, as a device allocation is: TensorFlow's DLPack
    import aborts the process on memory less aligned than its 64 bytes."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    raw = np.empty(count * dtype.itemsize + 256, np.uint8)
    start = -raw.ctypes.data % 256
    return raw[start : start + count * dtype.itemsize].view(dtype).reshape(shape)


@pytest.fixture
def immutable_device(device, monkeypatch):
    """The stand-in for JAX and TensorFlow arrays: their outputs come from
    ``_native.device_empty`` (NumPy arrays here), no stream is handed down."""
    device.stream = None
    device.freed_after_all_streams = []

    def device_empty(shape, dtype, ordinal, wait_for_all_streams=False):
        device.freed_after_all_streams.append(wait_for_all_streams)
        return _aligned_empty(shape, dtype)

    monkeypatch.setattr(_native, "device_empty", device_empty, raising=False)
    from ptychostitch._frameworks import tensorflow_adapter

    # The stand-in's "GPU" tensors are TensorFlow's CPU tensors, on no CUDA device
    # (test_tensorflow_gpu_index_maps_to_the_cuda_ordinal tests the mapping).
    monkeypatch.setattr(tensorflow_adapter, "_ordinal", lambda value: 0)
    return device


def _eager_tf(tf, value) -> bool:
    """An eager TensorFlow tensor: a GPU tensor to the stand-in (the real test also asks for a
    GPU device)."""
    from ptychostitch._frameworks import tensorflow_adapter

    return tensorflow_adapter._is_tf(tf, value) and not tensorflow_adapter._symbolic(tf, value)


def test_tensorflow_eager_runs_forward_and_backward_on_the_device(immutable_device, monkeypatch):
    tf = pytest.importorskip("tensorflow")
    from ptychostitch._frameworks import tensorflow_adapter

    monkeypatch.setattr(tensorflow_adapter.TensorFlowBackend, "device_scope", immutable_device.scope)
    monkeypatch.setattr(tensorflow_adapter, "on_gpu", lambda v: _eager_tf(tf, v))
    r = np.random.default_rng(9)
    b, c, s, n = 2, 4, 40, 16
    imgs = (r.normal(size=(b, s, s, 1)) + 1j * r.normal(size=(b, s, s, 1))).astype(np.complex64)
    offsets = r.uniform(-6, 6, size=(b, 1, 2, c))

    def run():
        x, o = tf.constant(imgs), tf.constant(offsets)
        with tf.GradientTape() as tape:
            tape.watch([x, o])
            out = ps.extract_patches_position(x, o, N=n)
            loss = tf.reduce_sum(tf.math.real(out) * tf.reshape(tf.linspace(-1.0, 1.0, int(tf.size(out))), out.shape))
        return out, tape.gradient(loss, [x, o])

    out, (dx, doff) = run()
    assert immutable_device.methods() == [("Extraction", "extract_cuda"), ("Extraction", "vjp_cuda")]
    assert immutable_device.calls[1][2][3] == ((b, 1, 2, c), "float64", True)  # the offsets' cotangent
    # Issue 34, item 6: every output handed to TensorFlow is freed only after all its streams.
    assert immutable_device.freed_after_all_streams and all(immutable_device.freed_after_all_streams)
    monkeypatch.undo()
    host_out, (host_dx, host_doff) = run()
    for got, want, what in ((out, host_out, "patches"), (dx, host_dx, "images' gradient"), (doff, host_doff, "offsets' gradient")):
        assert got.dtype == want.dtype and got.shape == want.shape, what
        assert np.array_equal(got.numpy().view(np.uint8), want.numpy().view(np.uint8)), what


def test_tensorflow_eager_without_a_tape_stitches_on_the_device(immutable_device, monkeypatch):
    tf = pytest.importorskip("tensorflow")
    from ptychostitch._frameworks import tensorflow_adapter

    monkeypatch.setattr(tensorflow_adapter.TensorFlowBackend, "device_scope", immutable_device.scope)
    monkeypatch.setattr(tensorflow_adapter, "on_gpu", lambda v: _eager_tf(tf, v))
    stack, offsets = _scan(14)
    canvas = ps.shift_and_sum(tf.constant(stack), offsets, M=10)
    assert immutable_device.methods() == [("Plan", "run_cuda")]
    assert isinstance(canvas, tf.Tensor)
    want = ps.shift_and_sum(stack, offsets, M=10)
    assert np.array_equal(canvas.numpy().view(np.uint8), want.view(np.uint8))


def test_tensorflow_in_a_graph_keeps_the_host_path(immutable_device, monkeypatch):
    tf = pytest.importorskip("tensorflow")
    from ptychostitch._frameworks import tensorflow_adapter

    monkeypatch.setattr(tensorflow_adapter, "on_gpu", lambda v: _eager_tf(tf, v))
    x = tf.constant(np.ones((1, 24, 24, 1), np.float32))
    o = tf.constant(np.zeros((1, 1, 2, 2)))
    tf.function(lambda x, o: ps.extract_patches_position(x, o, N=8))(x, o)
    assert immutable_device.methods() == []


def test_tensorflow_in_a_graph_where_a_gpu_is_seen_runs_the_device_path(immutable_device, monkeypatch):
    """Issue 31, item 4: inside tf.function (what Keras fit runs) with a GPU visible, the node is
    a tf.py_function that hands its (device) tensors to the eager device path, forward and
    backward, never tf.numpy_function; the values equal the host path's."""
    tf = pytest.importorskip("tensorflow")
    from ptychostitch._frameworks import tensorflow_adapter

    monkeypatch.setattr(tensorflow_adapter.TensorFlowBackend, "device_scope", immutable_device.scope)
    monkeypatch.setattr(tensorflow_adapter, "on_gpu", lambda v: _eager_tf(tf, v))
    monkeypatch.setattr(tensorflow_adapter, "gpu_visible", lambda: True)
    r = np.random.default_rng(15)
    b, c, n, p = 2, 4, 16, 28
    x = (r.normal(size=(b, n, n, c)) + 1j * r.normal(size=(b, n, n, c))).astype(np.complex64)
    pos = r.uniform(-4, 4, size=(b, 1, 2, c))

    @tf.function
    def step(x, pos):
        with tf.GradientTape() as tape:
            tape.watch([x, pos])
            regions = ps.reassemble_regions(x, pos, p)
            loss = tf.reduce_sum(tf.math.real(regions) * tf.reshape(tf.linspace(-1.0, 1.0, b * p * p), (b, p, p, 1)))
        return (regions, *tape.gradient(loss, [x, pos]))

    got = step(tf.constant(x), tf.constant(pos))
    graph = step.get_concrete_function(tf.constant(x), tf.constant(pos)).graph
    kinds = {node.op for node in graph.as_graph_def().node}
    for function in graph.as_graph_def().library.function:
        kinds |= {node.op for node in function.node_def}
    assert "EagerPyFunc" in kinds and "PyFunc" not in kinds, sorted(kinds)
    assert immutable_device.methods() == [("Region", "reassemble_cuda"), ("Region", "vjp_cuda")]
    monkeypatch.undo()
    want = step.python_function(tf.constant(x), tf.constant(pos))
    for g, w, what in zip(got, want, ("regions", "patches' gradient", "positions' gradient")):
        assert g.dtype == w.dtype and g.shape == w.shape, what
        assert np.array_equal(g.numpy().view(np.uint8), w.numpy().view(np.uint8)), what


def test_jax_arrays_run_forward_on_the_device(immutable_device, monkeypatch):
    jax = pytest.importorskip("jax")
    real = base.dlpack_device
    monkeypatch.setattr(base, "dlpack_device", lambda v: base.CUDA if isinstance(v, jax.Array) else real(v))
    r = np.random.default_rng(10)
    b, c, n, p = 2, 4, 16, 32
    x = (r.normal(size=(b, n, n, c)) + 1j * r.normal(size=(b, n, n, c))).astype(np.complex64)
    pos = r.uniform(-4, 4, size=(b, 1, 2, c))
    regions = ps.reassemble_regions(jax.numpy.asarray(x), pos, p)
    patches = ps.extract_patches_position(regions, pos, N=n)
    stack, offsets = _scan(13)
    canvas = ps.reassemble_position(jax.numpy.asarray(stack), offsets, M=10)
    assert immutable_device.methods() == [
        ("Region", "reassemble_cuda"), ("Extraction", "extract_cuda"), ("Plan", "run_cuda"),
    ]
    assert isinstance(regions, jax.Array) and isinstance(patches, jax.Array) and isinstance(canvas, jax.Array)
    # JAX orders the free of a buffer it imported after its own uses: no device-wide wait.
    assert immutable_device.freed_after_all_streams and not any(immutable_device.freed_after_all_streams)
    monkeypatch.undo()
    want = ps.extract_patches_position(ps.reassemble_regions(x, pos, p), pos, N=n)
    assert np.array_equal(np.asarray(patches).view(np.uint8), np.asarray(want).view(np.uint8))
    want = ps.reassemble_position(stack, offsets, M=10)
    assert np.array_equal(np.asarray(canvas).view(np.uint8), want.view(np.uint8))


def test_jax_gpu_zero_is_ordinal_zero():
    """Issue 34, item 4: JAX's ``local_hardware_id`` 0 is GPU 0, not "no id" (the global id
    differs under ``jax.distributed``)."""
    from ptychostitch._frameworks import jax_adapter

    class Device:
        def __init__(self, local, id):
            self.local_hardware_id, self.id = local, id

    class Array:
        def __init__(self, device):
            self.device = device

        def devices(self):
            return {self.device}

    assert jax_adapter._ordinal(Array(Device(0, 5))) == 0
    assert jax_adapter._ordinal(Array(Device(3, 7))) == 3
    assert jax_adapter._ordinal(Array(Device(None, 2))) == 2


def test_tensorflow_gpu_index_maps_to_the_cuda_ordinal(monkeypatch):
    """Issue 34, item 4: after ``set_visible_devices`` TensorFlow's GPU:0 is the k-th visible
    physical device, whose name carries the CUDA ordinal; virtual devices are refused."""
    tf = pytest.importorskip("tensorflow")
    from ptychostitch._frameworks import tensorflow_adapter

    class Named:
        def __init__(self, name):
            self.name = name

    class Tensor:
        device = "/job:localhost/replica:0/task:0/device:GPU:0"

    visible = [Named("/physical_device:GPU:1"), Named("/physical_device:GPU:3")]
    monkeypatch.setattr(tf.config, "get_visible_devices", lambda kind=None: visible)
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: [Named("GPU:0"), Named("GPU:1")])
    assert tensorflow_adapter._ordinal(Tensor()) == 1
    Tensor.device = "/job:localhost/replica:0/task:0/device:GPU:1"
    assert tensorflow_adapter._ordinal(Tensor()) == 3
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: [Named(f"GPU:{i}") for i in range(4)])
    with pytest.raises(RuntimeError, match="virtual devices"):
        tensorflow_adapter._ordinal(Tensor())
