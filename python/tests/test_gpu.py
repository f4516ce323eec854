"""The GPU path from Python.

Without a GPU (CI): patches in CUDA memory -- here a stand-in that only says where it lives --
raise ``ptychostitch.GpuUnavailable`` with the reason ``gpu_available()`` gives, before the
producer is asked for its data; other accelerators and the CPU-only reference functions raise
TypeError. With a GPU (scripts/gpu_check.sh): torch, CuPy and JAX arrays in CUDA memory are
stitched in place and come back as the same framework's arrays on the same device, bit for bit
the golden (PtychoPINN) arrays -- NaN by position, a GPU's NaN payloads are its own -- on the
default stream and on a side stream, strided, cast, through a Plan, with offsets on the GPU.
Every GPU test that cannot run says why (pytest -rs)."""

import gc
from pathlib import Path

import re

import numpy as np
import pytest

import ptychostitch as ps

GPU = ps.gpu_available()
needs_gpu = pytest.mark.skipif(not GPU, reason=f"no GPU here: {GPU.reason}")


class OnDevice:
    """What an array tells a DLPack consumer about where it lives, and nothing more."""

    def __init__(self, device_type, shape=(3, 16, 16, 1)):
        self.device_type, self.shape, self.read = device_type, shape, False

    def __dlpack_device__(self):
        return (self.device_type, 0)

    def __dlpack__(self, **kwargs):
        self.read = True
        raise AssertionError("must not be read")


@pytest.mark.skipif(bool(GPU), reason="a GPU is here: the stand-in would be read")
def test_without_a_gpu_cuda_arrays_raise_gpu_unavailable_before_being_read():
    off = np.zeros((3, 2))
    for run in [
        lambda x: ps.reassemble_position(x, off, 8),
        lambda x: ps.shift_and_sum(x, off, 8),
        lambda x: ps.Plan(off, 16, 8).reassemble_position(x),
    ]:
        x = OnDevice(2)
        with pytest.raises(ps.GpuUnavailable) as raised:
            run(x)
        assert not x.read
        assert isinstance(raised.value, RuntimeError)
        # The type names the error; the message is the reason, once (not "GpuUnavailable: ...").
        assert str(raised.value) == GPU.reason


def test_gpu_unavailable_is_a_public_runtime_error():
    assert issubclass(ps.GpuUnavailable, RuntimeError)
    assert "GpuUnavailable" in ps.__all__ and ps.GpuUnavailable.__module__ == "ptychostitch"


def test_other_accelerators_are_refused_with_a_type_error():
    x = OnDevice(10)  # ROCm
    with pytest.raises(TypeError, match="DLPack device type 10; CUDA is 2"):
        ps.reassemble_position(x, np.zeros((3, 2)), 8)
    assert not x.read


def test_the_reference_functions_refuse_gpu_arrays():
    x = OnDevice(2)
    for f in (ps.reassemble_position_old, ps.shift_and_sum_old):
        with pytest.raises(TypeError, match="reference .* run on the CPU only"):
            f(x, np.zeros((3, 2)), 8)
    assert not x.read


def test_the_native_gpu_entry_reads_dlpack_and_refuses_host_memory():
    """The DLPack import (dlpark) runs without a GPU: host arrays and host capsules are read far
    enough to learn their device, then refused with a TypeError naming it."""
    plan = ps.Plan(np.zeros((3, 2)), 16, 8)._plan
    host = np.ones((3, 16, 16), np.complex64)
    with pytest.raises(TypeError, match="reads CUDA device memory .* device type 1"):
        plan.run_cuda(host, "reassemble_position")
    with pytest.raises(TypeError, match="reads CUDA device memory .* device type 1"):
        plan.run_cuda(host.__dlpack__(), "shift_and_sum")
    with pytest.raises(ValueError, match="op must be"):
        plan.run_cuda(host, "stitch")


# --- What the review of the GPU path (issue 17) asked, checked without a GPU -----------------


class LegacyProducer:
    """A DLPack producer from before DLPack 1.0's keywords (torch <= 2.8, older CuPy):
    ``__dlpack__`` takes ``stream`` only, so ``max_version=`` is a TypeError."""

    def __init__(self, array):
        self.array, self.calls = array, []

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()

    def __dlpack__(self, stream=None):
        self.calls.append(stream)
        return self.array.__dlpack__()


def probe():
    if not hasattr(ps._native, "dlpack_probe"):
        pytest.skip("built without the cuda feature")
    return ps._native.dlpack_probe


def test_dlpack_producers_without_max_version_are_asked_again():
    """dlpark asks every producer for a versioned capsule (max_version=); one that refuses the
    keyword is asked again without it, and read from its legacy capsule."""
    a = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)[:, ::2]
    legacy = LegacyProducer(a)
    device_type, device_id, shape, strides = probe()(legacy)
    assert (device_type, device_id, shape) == (1, 0, [3, 2, 5])
    assert strides in (None, [20, 10, 1])
    assert legacy.calls == [None]  # the second call, without max_version
    # A modern producer (NumPy) is read at the first call.
    assert probe()(a)[2] == [3, 2, 5]


def test_a_producer_that_fails_otherwise_keeps_its_first_error():
    class Broken(LegacyProducer):
        def __dlpack__(self, stream=None, **kwargs):
            raise TypeError("cannot export this tensor")

    with pytest.raises(TypeError, match="cannot export this tensor"):
        probe()(Broken(np.zeros(3, np.float32)))


def test_torch_conjugate_and_negative_views_are_resolved():
    """torch's lazy conj() and negation views refuse __dlpack__; they are resolved first (the
    GPU path does the same on the device)."""
    torch = pytest.importorskip("torch", reason="torch is not installed")
    rng = np.random.default_rng(11)
    obj = (rng.standard_normal((6, 16, 16)) + 1j * rng.standard_normal((6, 16, 16))).astype(np.complex64)
    off = rng.uniform(-3, 3, (6, 2))
    t = torch.from_numpy(obj)
    assert t.conj().is_conj()
    out = ps.reassemble_position(t.conj(), off, 8)
    assert np.array_equal(out.numpy(), ps.reassemble_position(obj.conj(), off, 8))
    neg = torch._neg_view(t) if hasattr(torch, "_neg_view") else -t
    assert np.array_equal(ps.shift_and_sum(neg, off, 8).numpy(), ps.shift_and_sum(-obj, off, 8))


def test_nvrtc_is_looked_for_in_this_environments_nvidia_folders(tmp_path, monkeypatch):
    """pip's NVRTC (nvidia/cuda_nvrtc/lib, nvidia/cu13/lib) is off the loader's path: the
    package hands those folders to the GPU backend (searched first, found when it starts)."""
    for package in ["cuda_nvrtc", "cu13", "cublas"]:
        (tmp_path / "nvidia" / package / "lib").mkdir(parents=True)
    (tmp_path / "nvidia" / "no_lib").mkdir()
    monkeypatch.setattr(ps.sys, "path", [str(tmp_path), str(tmp_path / "missing")])
    found = ps._nvidia_library_dirs()
    assert found == [str(tmp_path / "nvidia" / p / "lib") for p in ["cu13", "cublas", "cuda_nvrtc"]]


def test_out_of_gpu_memory_names_the_framework_setting():
    error = MemoryError("out of memory: could not allocate 1.0 GiB for the canvas on NVIDIA H200")
    from ptychostitch import _frameworks as fw

    assert "set_memory_growth" in fw.TENSORFLOW.memory_hint(error)
    assert "XLA_PYTHON_CLIENT_PREALLOCATE=false" in fw.JAX.memory_hint(RuntimeError("CUDA_ERROR_OUT_OF_MEMORY"))
    assert fw.TORCH.memory_hint(error) is None
    assert fw.JAX.memory_hint(RuntimeError("CUDA_ERROR_ILLEGAL_ADDRESS")) is None


# --- With a GPU -------------------------------------------------------------------------------


def same_bits_nan_by_position(got, expected, what):
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape and got.dtype == expected.dtype, what
    g = got.view(np.float32 if got.dtype == np.complex64 else got.dtype).ravel()
    e = expected.view(np.float32 if expected.dtype == np.complex64 else expected.dtype).ravel()
    nan = np.isnan(e)
    assert np.array_equal(np.isnan(g), nan), f"{what}: NaN positions differ"
    assert np.array_equal(g[~nan].view(np.uint32), e[~nan].view(np.uint32)), f"{what}: bits differ"


def torch_cuda():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    if not GPU or not torch.cuda.is_available():
        pytest.skip(f"no GPU for torch here: {GPU.reason or 'torch.cuda.is_available() is False'}")
    return torch


@needs_gpu
def test_torch_cuda_tensors_in_give_torch_cuda_tensors_out(golden):
    torch = torch_cuda()
    obj, off, M = golden["obj"], golden["offsets"], int(golden["M"])
    x = torch.from_numpy(obj).cuda()
    for name in ["shift_and_sum", "reassemble_position"]:
        out = getattr(ps, name)(x, off, M)
        assert isinstance(out, torch.Tensor) and out.device == x.device, name
        same_bits_nan_by_position(out.cpu().numpy(), golden[f"{name}_old"], f"{golden['name']}: {name}")
    # Offsets on the GPU too, and a plan reused.
    plan = ps.Plan(torch.from_numpy(off).cuda(), obj.shape[1], M)
    first = plan.reassemble_position(x)
    again = plan.reassemble_position(x)
    same_bits_nan_by_position(first.cpu().numpy(), again.cpu().numpy(), "plan repeated")
    same_bits_nan_by_position(again.cpu().numpy(), golden["reassemble_position_old"], "plan")


def test_torch_tensors_that_require_grad_give_results_with_gradients():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    rng = np.random.default_rng(3)
    obj = rng.standard_normal((5, 16, 16, 1)).astype(np.complex64)
    off = rng.uniform(-3, 3, (5, 2))
    expected = ps.reassemble_position(obj, off, 8)
    devices = ["cpu"] + (["cuda"] if GPU and torch.cuda.is_available() else [])
    for device in devices:
        x = torch.from_numpy(obj).to(device).requires_grad_(True)
        out = ps.reassemble_position(x, off, 8)
        assert isinstance(out, torch.Tensor) and out.device.type == device and out.requires_grad
        same_bits_nan_by_position(out.detach().cpu().numpy(), expected, device)
        with torch.no_grad():
            assert not ps.reassemble_position(x, off, 8).requires_grad


@needs_gpu
def test_torch_on_a_side_stream_strided_and_cast():
    torch = torch_cuda()
    rng = np.random.default_rng(7)
    n, N, M = 300, 32, 20
    off = rng.uniform(-40, 40, (n, 1, 1, 2))
    obj = (rng.standard_normal((n, N, N, 1)) + 1j * rng.standard_normal((n, N, N, 1))).astype(np.complex64)
    expected = ps.reassemble_position(obj, off, M)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        x = torch.from_numpy(obj).cuda()
        out = ps.reassemble_position(x, off, M)
    side.synchronize()
    same_bits_nan_by_position(out.cpu().numpy(), expected, "side stream")
    # A transposed view is read through its strides.
    t = torch.from_numpy(np.ascontiguousarray(obj.transpose(0, 2, 1, 3))).cuda().transpose(1, 2)
    same_bits_nan_by_position(ps.reassemble_position(t, off, M).cpu().numpy(), expected, "strided")
    # complex128 is converted on the device; real patches stay real.
    same_bits_nan_by_position(
        ps.reassemble_position(torch.from_numpy(obj.astype(np.complex128)).cuda(), off, M).cpu().numpy(),
        expected,
        "complex128",
    )
    real = obj.real.copy()
    got = ps.shift_and_sum(torch.from_numpy(real).cuda(), off, M)
    assert got.dtype == torch.float32
    same_bits_nan_by_position(got.cpu().numpy(), ps.shift_and_sum(real, off, M), "float32")


@needs_gpu
def test_a_call_captured_in_a_cuda_graph_replays_with_new_patches():
    """Issue 34, item 2: a stitch captured by ``torch.cuda.graph`` (a Plan whose tables it
    reads, offsets given as NumPy) does not invalidate the capture -- no wait on the legacy
    stream from inside it -- and every replay reads the tables, kept for the graph, and the
    static input's current values: the CPU's bits each time."""
    torch = torch_cuda()
    rng = np.random.default_rng(34)
    n, N, M = 500, 32, 16
    off = rng.uniform(-40, 40, (n, 2))
    plan = ps.Plan(off, N, M)
    static = torch.zeros((n, N, N, 1), dtype=torch.complex64, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        plan.reassemble_position(static)  # warm-up outside the capture (compiles, caches the GPU plan)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = plan.reassemble_position(static)
    for seed in (1, 2):
        obj = np.random.default_rng(seed).standard_normal((n, N, N, 1)).astype(np.complex64)
        static.copy_(torch.from_numpy(obj).cuda())
        graph.replay()
        torch.cuda.synchronize()
        same_bits_nan_by_position(out.cpu().numpy(), ps.reassemble_position(obj, off, M), f"replay {seed}")


@needs_gpu
def test_a_side_stream_call_does_not_hold_back_the_default_stream():
    """Issue 34, item 2: a kernel on a side stream no longer makes the legacy default stream
    (torch's default) wait for it: work queued on the default stream after the call is not
    ordered behind it (the plan's own stream waits only when the plan is dropped)."""
    torch = torch_cuda()
    rng = np.random.default_rng(8)
    n, N, M = 60000, 64, 32  # a kernel of milliseconds: still running when the mark is reached
    off = rng.uniform(-500, 500, (n, 2))
    plan = ps.Plan(off, N, M)
    x = torch.from_numpy(rng.standard_normal((n, N, N, 1)).astype(np.complex64)).cuda()
    plan.reassemble_position(x)  # warm-up
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    mark = torch.cuda.Event()
    with torch.cuda.stream(side):
        out = plan.reassemble_position(x)
    mark.record(torch.cuda.current_stream())  # queued on the default stream after the call
    mark.synchronize()
    assert not side.query(), "the default stream waited for the side stream's kernel"
    side.synchronize()
    same_bits_nan_by_position(out.cpu().numpy(), ps.reassemble_position(x.cpu().numpy(), off, M), "side stream")


@needs_gpu
def test_a_gpu_other_than_the_current_one():
    """The tensor's device is made current while it is exported (torch >= 2.9 refuses
    __dlpack__ otherwise) and the caller's current device is the same afterwards."""
    torch = torch_cuda()
    if torch.cuda.device_count() < 2:
        pytest.skip("one GPU here: the multi-GPU case needs two")
    rng = np.random.default_rng(5)
    obj = rng.standard_normal((4, 16, 16, 1)).astype(np.complex64)
    off = rng.uniform(-3, 3, (4, 2))
    torch.cuda.set_device(0)
    out = ps.reassemble_position(torch.from_numpy(obj).to("cuda:1"), off, 8)
    assert out.device == torch.device("cuda:1") and torch.cuda.current_device() == 0
    same_bits_nan_by_position(out.cpu().numpy(), ps.reassemble_position(obj, off, 8), "cuda:1")


@needs_gpu
def test_a_device_array_exports_to_torch_and_frees_its_memory():
    torch = torch_cuda()
    off = np.array([[0.0, 0.0], [3.0, 1.0]])
    obj = np.ones((2, 16, 16), np.complex64)
    plan = ps.Plan(off, 16, 8)
    canvas = plan._plan.run_cuda(torch.from_numpy(obj).cuda(), "reassemble_position")
    assert canvas.__dlpack_device__() == (2, 0) and canvas.dtype == "complex64"
    t = torch.from_dlpack(canvas)
    assert tuple(t.shape) == canvas.shape == plan.canvas_shape
    same_bits_nan_by_position(t.cpu().numpy(), plan.reassemble_position(obj), "DeviceArray")
    del t, canvas
    gc.collect()


@needs_gpu
def test_cupy_arrays_in_give_cupy_arrays_out(golden):
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
    obj, off, M = golden["obj"], golden["offsets"], int(golden["M"])
    out = ps.reassemble_position(cupy.asarray(obj), off, M)
    assert isinstance(out, cupy.ndarray)
    same_bits_nan_by_position(out.get(), golden["reassemble_position_old"], golden["name"])


@needs_gpu
def test_jax_gpu_arrays_in_give_jax_arrays_out(golden):
    jax = pytest.importorskip("jax", reason="JAX is not installed")
    try:
        device = jax.devices("gpu")[0]
    except RuntimeError as e:
        pytest.skip(f"JAX sees no GPU: {e}")
    obj, off, M = golden["obj"], golden["offsets"], int(golden["M"])
    out = ps.shift_and_sum(jax.device_put(obj, device), off, M)
    assert isinstance(out, jax.Array) and device in out.devices()
    same_bits_nan_by_position(np.asarray(out), golden["shift_and_sum_old"], golden["name"])


@needs_gpu
def test_jax_jit_runs_the_cuda_custom_calls_with_the_cpu_bits():
    """Under jit on a GPU every operation with device kernels is an XLA CUDA custom call (the
    device kernels on XLA's stream, no callback in the program): forward and jit(grad) give the
    bits of the same program on the CPU -- the reassembly with float32 offsets (their cotangent
    rounded on the device), both region layouts (TensorFlow's transposed in the program), the
    extractions. NaN by position (a GPU's NaN payloads are its own)."""
    jax = pytest.importorskip("jax", reason="JAX is not installed")
    jnp = jax.numpy
    try:
        gpu = jax.devices("gpu")[0]
    except RuntimeError as e:
        pytest.skip(f"JAX sees no GPU: {e}")
    cpu = jax.devices("cpu")[0]
    rng = np.random.default_rng(31)

    def cplx(shape):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)

    n, N, M, B, C, P, S = 40, 16, 8, 3, 4, 24, 32
    off = rng.uniform(-9, 9, (n, 1, 1, 2)).astype(np.float32)
    side = ps.Plan(off, N, M).canvas_shape[0]
    off_xy = rng.uniform(-3, 3, (B, 1, 2, C)).astype(np.float32)
    pos = rng.uniform(-3, 3, (B, C, 1, 2)).astype(np.float32)
    cases = {
        "reassemble": (lambda a, o: ps.reassemble_position(a, o, M=M, canvas_side=side), cplx((n, N, N, 1)), off),
        "extract_patches": (lambda a, o: ps.extract_patches_position(a, o, N=N, gridsize=2), cplx((B, S, S, 1)), off_xy),
        "reassemble_regions": (lambda a, o: ps.reassemble_regions(a, o, P), cplx((B, N, N, C)), off_xy),
        "reassemble_regions_torch": (lambda a, o: ps.reassemble_regions(a, o, P, layout="torch", weights="center",
                                                                       numerator="weighted"), cplx((B, C, N, N)), pos),
        "extract_regions": (lambda a, o: ps.extract_regions(a, o, N), cplx((B, 1, P, P)), pos),
    }
    for name, (f, x, o) in cases.items():
        op = name.replace("_torch", "")
        grad = jax.grad(lambda a, b: jnp.sum(jnp.abs(f(a, b)) ** 2), argnums=(0, 1))
        xg, og = jax.device_put(x, gpu), jax.device_put(o, gpu)
        for program, target in [(jax.jit(f), op), (jax.jit(grad), f"{op}_backward")]:
            text = program.lower(xg, og).as_text()
            assert f"@ptychostitch_{target}" in text and "callback" not in text.lower(), name
        got = [jax.jit(f)(xg, og), *jax.jit(grad)(xg, og)]
        xc, oc = jax.device_put(x, cpu), jax.device_put(o, cpu)
        want = [jax.jit(f)(xc, oc), *jax.jit(grad)(xc, oc)]
        for g, w in zip(got, want):
            same_bits_nan_by_position(np.asarray(g), np.asarray(w), name)


@needs_gpu
def test_the_support_mask_on_the_gpu_is_the_cpus():
    """The support mask PtychoPINN's torch helpers return beside the regions, from torch CUDA
    tensors (the device kernels) and under JAX's jit on the GPU (the CUDA custom call): the CPU's
    mask, for a fixed threshold and one relative to the maximum."""
    r = np.random.default_rng(12)
    b, c, n, p = 3, 4, 16, 32
    x = (r.normal(size=(b, c, n, n)) + 1j * r.normal(size=(b, c, n, n))).astype(np.complex64)
    pos = r.uniform(-4, 4, size=(b, c, 1, 2)).astype(np.float32)
    probe = np.abs(r.normal(size=(n, n))).astype(np.float32)
    cases = [("center", ("above", 1e-6)), (probe, ("above_max_fraction", 0.1))]
    torch = pytest.importorskip("torch", reason="torch is not installed")
    for weights, support in cases:
        def mask(a, q):
            return ps._region_support(a, q, p, layout="torch", weights=weights, numerator="weighted", support=support)

        want = mask(x, pos)
        assert want.any() and not want.all()
        if torch.cuda.is_available():
            got = mask(torch.tensor(x, device="cuda"), torch.tensor(pos, device="cuda"))
            assert got.is_cuda and np.array_equal(got.cpu().numpy(), want), support
        jax = pytest.importorskip("jax", reason="JAX is not installed")
        try:
            gpu = jax.devices("gpu")[0]
        except RuntimeError as e:
            pytest.skip(f"JAX sees no GPU: {e}")
        xg, pg = jax.device_put(x, gpu), jax.device_put(pos, gpu)
        assert "@ptychostitch_region_support" in jax.jit(mask).lower(xg, pg).as_text()
        assert np.array_equal(np.asarray(jax.jit(mask)(xg, pg)), want), support


@needs_gpu
def test_torch_cuda_autograd_matches_the_cpu():
    """torch CUDA tensors that require grad: the forward runs on the GPU path, the backward on
    the host; gradients equal the CPU tensors' bit for bit, on the tensors' device."""
    torch = pytest.importorskip("torch", reason="torch is not installed")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    rng = np.random.default_rng(8)
    obj = (rng.standard_normal((40, 32, 32, 1)) + 1j * rng.standard_normal((40, 32, 32, 1))).astype(np.complex64)
    off = rng.uniform(-10, 10, (40, 1, 1, 2))
    grads = []
    for device in ("cpu", "cuda"):
        o = torch.tensor(obj, device=device, requires_grad=True)
        f = torch.tensor(off, device=device, requires_grad=True)
        out = ps.reassemble_position(o, f, 16)
        assert out.device.type == device
        (out.real * 2 + out.imag).sum().backward()
        assert o.grad.device.type == device and f.grad.device.type == device
        grads.append((o.grad.cpu().numpy(), f.grad.cpu().numpy()))
    assert np.array_equal(grads[0][0].view(np.uint32), grads[1][0].view(np.uint32))
    assert np.array_equal(grads[0][1], grads[1][1])


def test_the_kernel_source_compiles_with_this_environments_nvrtc():
    """Without a GPU: NVRTC needs no device, so the CUDA source (crates/ptychostitch/src/gpu/
    kernel.cu) is compiled here with the driver's own options (gpu::cuda::build_module) by the
    NVRTC that pip installed with torch, and every entry point the driver loads (and the
    training path's kernels) must be in the PTX. A CUDA
    compile error would otherwise first show on a lent GPU."""
    import ctypes
    import glob
    import os

    libraries = sorted(
        path for folder in ps._nvidia_library_dirs() for path in glob.glob(os.path.join(folder, "libnvrtc.so.*"))
        if "builtins" not in path and "alt" not in path
    )
    assert "--fmad=false" in ps._native.NVRTC_OPTIONS and "--ftz=false" in ps._native.NVRTC_OPTIONS
    if not libraries:
        pytest.skip("no NVRTC in this environment (torch from PyPI installs one with its CUDA libraries)")
    source = (Path(__file__).resolve().parents[2] / "crates/ptychostitch/src/gpu/kernel.cu").read_bytes()
    for library in libraries:
        nvrtc = ctypes.CDLL(library)
        program = ctypes.c_void_p()
        assert nvrtc.nvrtcCreateProgram(ctypes.byref(program), source, b"ptychostitch.cu", 0, None, None) == 0
        # The driver's own list (gpu::NVRTC_OPTIONS, read from the module), not a copy of it.
        options = [o.encode() for o in ps._native.NVRTC_OPTIONS] + [b"--gpu-architecture=compute_90"]
        status = nvrtc.nvrtcCompileProgram(program, len(options), (ctypes.c_char_p * len(options))(*options))
        size = ctypes.c_size_t()
        nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        nvrtc.nvrtcGetProgramLog(program, log)
        assert status == 0, f"{library}: {log.value.decode(errors='replace')}"
        nvrtc.nvrtcGetPTXSize(program, ctypes.byref(size))
        ptx = ctypes.create_string_buffer(size.value)
        nvrtc.nvrtcGetPTX(program, ptx)
        text = ptx.value.decode()
        # Every entry point of the source (the Rust test compose::tests checks that the driver
        # loads exactly these).
        names = re.findall(r'extern "C" __global__ void (\w+)', source.decode())
        assert len(names) == 15 and {"ptychostitch_offsets_fold", "ptychostitch_shifts", "ptychostitch_region_mask"} <= set(names), names
        for name in names:
            assert f".entry {name}" in text, f"{library}: no {name} in the PTX"
        nvrtc.nvrtcDestroyProgram(ctypes.byref(program))
