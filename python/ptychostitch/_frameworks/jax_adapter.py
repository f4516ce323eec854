"""JAX: ``jax.custom_vjp`` around XLA custom calls (``jax.ffi``: the native handlers for the
CPU and, in CUDA builds, the GPU), under ``jit``, ``grad`` and ``vmap``; ``jax.pure_callback``
where they cannot serve (no FFI, an operator without device kernels on a GPU).

JAX's cotangents of complex values are the conjugates of TensorFlow's and PyTorch's; the
adapter conjugates on the way in and out. The output's shape must be known when tracing: the
canvas side depends on the offsets' values, so with traced offsets (``jit``/``grad``/``vmap``
over them) pass ``canvas_side`` (e.g. ``Plan(offsets0, N, M).canvas_shape[0]``); a call whose
offsets give another side raises ``ValueError``. Under ``vmap``, an operation whose samples are
independent (extraction, region extraction, a region reassembly normalised per sample) folds
the mapped axis into its own batch: one call; the others call once per element.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any, Dict, Optional, Set, Tuple

import numpy as np

from .._arrays import compute_dtype
from .. import _native
from .base import Backend, out_of_memory_hint


def _jax() -> Any:
    return sys.modules.get("jax")


def _wants(*values: Any) -> bool:
    jax = _jax()
    if jax is None:
        return False
    return any(isinstance(v, jax.core.Tracer) for v in values)


def _ordinal(array: Any) -> int:
    """The CUDA ordinal of the GPU holding a JAX array."""
    device = list(array.devices())[0]
    local = getattr(device, "local_hardware_id", None)  # 0 is GPU 0, not "no id"
    return int(device.id if local is None else local)


def concrete(value: Any) -> Optional[np.ndarray]:
    """``value`` as NumPy when it is not being traced, else None."""
    jax = _jax()
    if jax is not None and isinstance(value, jax.core.Tracer):
        return None
    return np.asarray(value)


#: Set to ``0`` to run every operation through ``jax.pure_callback`` (the fallback) instead of
#: the XLA custom calls -- for comparisons; the results are the same bits.
FFI_VARIABLE = "PTYCHOSTITCH_JAX_FFI"

_registered: Dict[str, Optional[str]] = {}

#: XLA's platform names of the native handlers (``_native.xla_handlers()``'s keys).
_PLATFORMS = {"cpu": "cpu", "cuda": "CUDA"}


def ffi_unavailable(op: str) -> Optional[str]:
    """None when the XLA custom calls of the operator ``op`` (``ptychostitch_<op>`` and
    ``ptychostitch_<op>_backward``, one native handler per platform: ``cpu``, and ``cuda`` in
    CUDA builds) are registered with JAX, else why not (the callback fallback is then used,
    with one warning). A platform JAX has not started yet (a GPU) takes the registration when
    it starts."""
    if os.environ.get(FFI_VARIABLE, "1") == "0":
        return f"{FFI_VARIABLE}=0"
    if op not in _registered:
        try:
            jax = _jax()
            handlers = _native.xla_handlers()
            for name in (f"ptychostitch_{op}", f"ptychostitch_{op}_backward"):
                for platform, handler in handlers.items():
                    jax.ffi.register_ffi_target(name, handler, platform=_PLATFORMS[platform])
            _registered[op] = None
        except Exception as error:  # an old JAX without jax.ffi, or an XLA that refuses the API version
            reason = f"{type(error).__name__}: {error}"
            _registered[op] = reason
            warnings.warn(
                f"ptychostitch: JAX's FFI is unavailable ({reason}); {op} runs through jax.pure_callback "
                "(a host round trip per call)",
                RuntimeWarning,
                stacklevel=4,
            )
    return _registered[op]


def _apply(kernel: Any, x: Any, offsets: Any) -> Any:
    jax = _jax()
    jnp = jax.numpy
    concrete_offsets = concrete(offsets)
    out_shape = tuple(kernel.out_shape(tuple(np.shape(x)), concrete_offsets, exact=True))
    x = jnp.asarray(x)
    offsets = jnp.asarray(offsets)
    if np.dtype(offsets.dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
        offsets = offsets.astype(jnp.float32)  # integers, bfloat16, float16: exactly, as NumPy's path reads them
    out_dtype = kernel.out_dtype(np.dtype(x.dtype))
    if ffi_unavailable(kernel.OP) is None:
        warn = getattr(kernel, "warn", None)
        if warn is not None and concrete_offsets is not None and hasattr(kernel, "plan"):
            warn(kernel.plan(tuple(x.shape), concrete_offsets).warnings)  # no Python runs inside jit
        forward, backward = _custom_calls(kernel, x, out_shape, out_dtype)
        fallback_forward, fallback_backward = _callbacks(kernel, x, offsets, out_shape, out_dtype)
        if device_custom_calls(kernel):
            cuda_forward, cuda_backward = _custom_calls(kernel, x, out_shape, out_dtype, device=True)
        else:
            cuda_forward, cuda_backward = fallback_forward, fallback_backward
        # JAX lowers only the branch of the platform it compiles for: the host's custom calls,
        # CUDA's (the device kernels on XLA's stream), else the callbacks.
        forward = _per_platform(forward, cuda_forward, fallback_forward)
        backward = _per_platform(backward, cuda_backward, fallback_backward)
    else:
        forward, backward = _callbacks(kernel, x, offsets, out_shape, out_dtype)

    @jax.custom_vjp
    def op(x: Any, offsets: Any) -> Any:
        return refusing(forward)(x, offsets)

    def fwd(x: Any, offsets: Any) -> Any:
        out = refusing(forward)(x, offsets)
        return out, (x, offsets, out)

    def bwd(res: Any, cot: Any) -> Any:
        return refusing(backward)(*res, cot)

    op.defvjp(fwd, bwd)
    return op(x, offsets)


def _per_platform(cpu: Any, cuda: Any, default: Any) -> Any:
    lax = _jax().lax

    def chosen(*args: Any) -> Any:
        return lax.platform_dependent(*args, cpu=cpu, cuda=cuda, default=default)

    return chosen


def device_custom_calls(kernel: Any) -> bool:
    """Whether a program compiled for a GPU runs ``kernel`` as a CUDA custom call (the native
    library has the CUDA handler, the kernel device kernels -- not the reference or
    ``center_channels`` -- and they can run here), else through the callback."""
    return (
        "cuda" in _native.xla_handlers()
        and bool(getattr(kernel, "on_device", False))
        and _device_kernels_run_here()
    )


#: The reasons a GPU's device kernels could not run that were already said.
_UNUSABLE_GPU_SAID: Set[str] = set()


def _device_kernels_run_here() -> bool:
    """True where JAX has no GPU (a program lowered here for one runs elsewhere) or where the
    device kernels load (the driver and NVRTC: ``ptychostitch.gpu_available()``). Where JAX has
    a GPU they cannot run on, the callbacks serve there, with one warning saying why (asked
    again at every trace: a library installed later is found)."""
    jax = _jax()
    try:
        gpus = jax.devices("gpu")
    except RuntimeError:  # no GPU backend in this process
        return True
    if not gpus:
        return True
    available, _, reason = _native.gpu_available()
    if available:
        return True
    if str(reason) not in _UNUSABLE_GPU_SAID:
        _UNUSABLE_GPU_SAID.add(str(reason))
        warnings.warn(
            f"ptychostitch: JAX has a GPU but the device kernels cannot run here ({reason}); on the GPU the "
            "operations run through jax.pure_callback (a host round trip per call)",
            RuntimeWarning,
            stacklevel=5,
        )
    return False


def _custom_calls(
    kernel: Any, x: Any, out_shape: Tuple[int, ...], out_dtype: np.dtype, device: bool = False
) -> Tuple[Any, Any]:
    """The forward and the backward as XLA custom calls (``jax.ffi.ffi_call``) of the native
    operator ``kernel.OP``, with the kernel's ``spec()`` as an attribute. Samples go in as the
    compute dtype (float32 or complex64) and cotangents come back in the inputs' dtypes. Under
    ``vmap``, a batchable kernel's custom call receives every operand with the mapped axis in
    front (``broadcast_all``) and folds it into its batch; the others run once per element.
    ``device``: the lowering for a GPU, where a kernel whose layout the device kernels do not
    read runs as its twin (``kernel.device_twin()``: the operands transposed in the program)."""
    jax = _jax()
    jnp = jax.numpy
    compute = compute_dtype(np.dtype(x.dtype))
    complex_values = compute.kind == "c"
    batchable = bool(getattr(kernel, "batchable", False))
    vmap_method = "broadcast_all" if batchable else "sequential"
    twin = kernel.device_twin() if device and hasattr(kernel, "device_twin") else None
    attrs = dict(spec=(kernel if twin is None else twin.kernel).spec(), rank=np.int64(len(x.shape)))
    call_shape = tuple(out_shape) if twin is None else twin.result_shape(out_shape)

    def operands(x: Any, offsets: Any) -> Tuple[Any, Any]:
        return (x, offsets) if twin is None else twin.inputs(jnp, x, offsets)
    weights: Tuple[Any, ...] = ()
    if kernel.WEIGHTED:
        w = kernel.weight_array(int(kernel.dims(tuple(x.shape))[2]))
        if batchable and w.shape[0] == 1:
            # One weight array per sample, so that a folded vmap axis folds the weights with it.
            w = np.ascontiguousarray(np.broadcast_to(w, (int(x.shape[0]),) + w.shape[1:]))
        weights = (w,)
    forward_call = jax.ffi.ffi_call(
        f"ptychostitch_{kernel.OP}", jax.ShapeDtypeStruct(call_shape, out_dtype), vmap_method=vmap_method
    )

    def forward(x: Any, offsets: Any) -> Any:
        xs, offs = operands(x.astype(compute), offsets)
        return forward_call(xs, offs, *weights, op=kernel.OP, **attrs).reshape(out_shape)

    def backward(x: Any, offsets: Any, out: Any, cot: Any) -> Any:
        if np.dtype(out_dtype) == np.dtype(bool):  # the support mask: no gradient
            return jnp.zeros_like(x), jnp.zeros_like(offsets)
        xs, offs = operands(x.astype(compute), offsets)
        call = jax.ffi.ffi_call(
            f"ptychostitch_{kernel.OP}_backward",
            (jax.ShapeDtypeStruct(xs.shape, compute), jax.ShapeDtypeStruct(offs.shape, offs.dtype)),
            vmap_method=vmap_method,
        )
        cot = cot.astype(compute)
        cot = jnp.conj(cot) if complex_values else cot
        out, cot = out.reshape(call_shape), cot.reshape(call_shape)
        dx, doff = call(xs, offs, *weights, out, cot, op=f"{kernel.OP}_backward", **attrs)
        if twin is not None:
            dx, doff = twin.grads(jnp, dx, doff)
        return (jnp.conj(dx) if complex_values else dx).astype(x.dtype), doff

    return forward, backward


def _callbacks(kernel: Any, x: Any, offsets: Any, out_shape: Tuple[int, ...], out_dtype: np.dtype) -> Tuple[Any, Any]:
    """The forward and the backward as ``jax.pure_callback`` on the host (the fallback, and
    the GPU's lowering)."""
    jax = _jax()
    out_spec = jax.ShapeDtypeStruct(out_shape, out_dtype)
    # vmap: a kernel whose samples are independent (``kernel.batchable``) takes the mapped axis
    # as more of its own batch -- one call on (V·B, ...) inputs -- instead of V calls.
    ranks = (len(np.shape(x)), len(np.shape(offsets)), len(out_shape), len(out_shape))
    batchable = bool(getattr(kernel, "batchable", False))
    vmap_method = "expand_dims" if batchable else "sequential"

    def merged(arrays: Any) -> Tuple[Optional[int], Tuple[np.ndarray, ...]]:
        """The mapped size V and the arrays with it folded into their batch axis (None, as
        they are, outside vmap)."""
        arrays = tuple(np.asarray(a) for a in arrays)
        if not batchable or all(a.ndim == r for a, r in zip(arrays, ranks)):
            return None, arrays
        v = max(a.shape[0] for a, r in zip(arrays, ranks) if a.ndim == r + 1)
        folded = []
        for a, r in zip(arrays, ranks):
            a = np.broadcast_to(a, (v,) + a.shape[1:]) if a.ndim == r + 1 else np.broadcast_to(a, (v,) + a.shape)
            folded.append(np.ascontiguousarray(a).reshape((v * a.shape[1],) + a.shape[2:]))
        return v, tuple(folded)

    def split(v: Optional[int], a: np.ndarray) -> np.ndarray:
        return a if v is None else a.reshape((v, a.shape[0] // v) + a.shape[1:])

    def forward_host(xv: Any, ov: Any) -> np.ndarray:
        v, (xv, ov) = merged((xv, ov))
        out = kernel.forward(xv, ov)
        if v is None and out.shape != tuple(out_shape):
            raise ValueError(
                f"these offsets give a {out.shape} result, not the {tuple(out_shape)} promised by canvas_side"
            )
        return split(v, out)

    def backward_host(xv: Any, ov: Any, outv: Any, cv: Any) -> Any:
        v, (xv, ov, outv, cv) = merged((xv, ov, outv, cv))
        dx, doff = kernel.backward(xv, ov, outv, np.conj(cv), True, True)
        return split(v, np.conj(dx).astype(xv.dtype, copy=False)), split(v, doff.astype(ov.dtype, copy=False))

    def forward(x: Any, offsets: Any) -> Any:
        return jax.pure_callback(forward_host, out_spec, x, offsets, vmap_method=vmap_method)

    def backward(x: Any, offsets: Any, out: Any, cot: Any) -> Any:
        specs = (jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct(offsets.shape, offsets.dtype))
        return jax.pure_callback(backward_host, specs, x, offsets, out, cot, vmap_method=vmap_method)

    return forward, backward


SECOND_ORDER = (
    "ptychostitch's gradient is not differentiable again: a second derivative (jax.hessian, "
    "jacfwd over grad, grad of grad, a gradient penalty) through it is not supported"
)


def refusing(function: Any) -> Any:
    """``function`` (the forward's or the backward's callback) with a JVP rule that raises:
    every second derivative differentiates one of them (forward-over-reverse JVPs the forward
    and the backward; reverse-over-reverse linearises the backward), whether or not the
    cotangent depends on the inputs. Without it JAX would say only that a callback has no JVP."""
    jax = _jax()
    wrapped = jax.custom_jvp(function)

    def jvp(primals: Any, tangents: Any) -> Any:
        raise NotImplementedError(SECOND_ORDER)

    wrapped.defjvp(jvp)
    return wrapped


class JaxBackend(Backend):
    """JAX arrays: ``custom_vjp`` for tracers, DLPack for concrete arrays."""

    name = "jax"

    def owns(self, value: Any) -> bool:
        return type(value).__module__.split(".")[0] in ("jax", "jaxlib") and _jax() is not None

    def wants(self, *values: Any) -> bool:
        return _wants(*values)

    def apply(self, kernel: Any, x: Any, offsets: Any, gpu: Optional[Any] = None) -> Any:
        return _apply(kernel, x, offsets)

    def learnt(self, value: Any) -> bool:
        return _wants(value)

    def readable(self, value: Any) -> Any:
        return value.astype("float32") if "bfloat16" in str(getattr(value, "dtype", "")) else value

    def from_host(self, result: np.ndarray, like: Any) -> Any:
        jax = _jax()
        out = jax.numpy.from_dlpack(result)
        devices = list(getattr(like, "devices", lambda: [])())
        if devices and devices[0].platform != "cpu":
            out = jax.device_put(out, devices[0])
        return out

    def device_cast(self, obj: Any) -> Any:
        target = compute_dtype(obj.dtype)
        return obj if obj.dtype == target else obj.astype(target)

    # JAX arrays are immutable: the device kernels write outputs this package allocates
    # (`device_empty`), which JAX then imports zero-copy. No stream: the native call reads on the
    # legacy default stream (JAX is asked to make its arrays ready there) and waits. Only
    # concrete arrays take this path; traced calls (jit, grad) are XLA custom calls, whose CUDA
    # handler queues the same device kernels on XLA's stream.
    device_ops = True

    def device_empty(self, shape: Tuple[int, ...], dtype: str, like: Any) -> Any:
        return _native.device_empty(list(shape), dtype, _ordinal(like))

    def device_prepare(
        self, value: Any, dtype: str, perm: Optional[Tuple[int, ...]] = None, shape: Optional[Tuple[int, ...]] = None
    ) -> Any:
        jnp = _jax().numpy
        value = jnp.asarray(self.readable(value)).astype(dtype)
        if perm is not None:
            value = jnp.transpose(value, perm)
        return value if shape is None else value.reshape(shape)

    def device_from_host(self, array: np.ndarray, like: Any) -> Any:
        return _jax().device_put(np.ascontiguousarray(array), list(like.devices())[0])

    def device_result(self, value: Any, shape: Tuple[int, ...]) -> Any:
        return _jax().dlpack.from_dlpack(value).reshape(shape)

    def device_finish(self, value: Any, like: Any, perm: Optional[Tuple[int, ...]] = None) -> Any:
        out = self.device_result(value, tuple(value.shape))
        if perm is not None:
            out = _jax().numpy.transpose(out, perm)
        out = out.reshape(np.shape(like))
        dtype = np.dtype(getattr(like, "dtype", out.dtype))
        return out.astype(dtype) if dtype.kind in "fc" else out

    def memory_hint(self, error: BaseException) -> Optional[str]:
        return out_of_memory_hint(
            error,
            "JAX preallocates 75% of GPU memory by default: set XLA_PYTHON_CLIENT_PREALLOCATE=false "
            "(or a smaller XLA_PYTHON_CLIENT_MEM_FRACTION) before JAX starts",
        )


BACKEND = JaxBackend()
