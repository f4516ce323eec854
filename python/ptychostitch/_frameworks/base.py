"""What every framework backend does, and what a plain array (NumPy, or any DLPack producer
this package has no backend for) gets.

A backend answers, for arrays of its framework: is this value mine (``owns``), must a call on
these values be differentiated (``wants``), how NumPy reads it (``readable``, ``to_host``), how
a NumPy result goes back (``from_host``), how it runs on its GPU (``device_cast``,
``run_on_device``, the ``device_*`` methods, ``memory_hint``), and how an operation becomes
differentiable (``apply``).
Everything that names a framework lives in its backend; ``ptychostitch._call`` is the one place
that runs an operation, through these methods.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple

import numpy as np

from .. import _arrays

# DLPack device types whose memory the CPU can read: kDLCPU, kDLCUDAHost, kDLCUDAManaged.
HOST_DEVICES = (1, 3, 13)
# kDLCUDA: memory the GPU path reads in place.
CUDA = 2


def dlpack_device(value: Any) -> Optional[int]:
    """The DLPack device type of a non-NumPy array that speaks DLPack (torch, JAX, CuPy, …)."""
    if isinstance(value, np.ndarray) or not hasattr(value, "__dlpack_device__"):
        return None
    try:
        return int(value.__dlpack_device__()[0])
    except Exception:  # a broken producer: treat it as array-like
        return None


def out_of_memory_hint(error: BaseException, advice: str) -> Optional[str]:
    """``error``'s text with ``advice`` added, when it says the GPU is out of memory."""
    text = str(error)
    if not (isinstance(error, MemoryError) or "OUT_OF_MEMORY" in text):
        return None
    return f"{text}; {advice}"


class Backend:
    """NumPy and other array-likes; the defaults every framework backend starts from."""

    name = "numpy"

    def owns(self, value: Any) -> bool:
        """``value`` is one of this framework's arrays."""
        return False

    def wants(self, *values: Any) -> bool:
        """A call on ``values`` must go through this framework's autodiff (``apply``)."""
        return False

    def apply(self, kernel: Any, x: Any, offsets: Any, gpu: Optional[Callable[[Any], Any]] = None) -> Any:
        """``kernel`` on ``(x, offsets)`` as a differentiable operation of this framework."""
        raise NotImplementedError(f"{self.name} has no autodiff")

    def learnt(self, value: Any) -> bool:
        """``value`` is being differentiated (a parameter whose gradient is wanted)."""
        return False

    def tracing(self) -> bool:
        """This framework is tracing the call into a compiled graph (values unknown)."""
        return False

    def register_operators(self, kernels: Any) -> None:
        """Registers every declared kernel class (``kernels``) as this framework's operator,
        where the framework has operators (torch; now if it is loaded, else at its first call)."""

    #: ``apply_weighted(kernel, x, positions, weights)``: a region reassembly differentiable with
    #: respect to its weights too, where the framework has it (torch), else None.
    apply_weighted: Optional[Callable[..., Any]] = None

    def readable(self, value: Any) -> Any:
        """``value`` as NumPy can import it through DLPack (no autodiff wanted here)."""
        return value

    def to_host(self, value: Any) -> Any:
        """``value`` (in device memory) copied to a NumPy array."""
        return np.asarray(value)

    def writable(self, value: Any) -> Tuple[np.ndarray, Callable[[], None]]:
        """``value`` as a NumPy array that an in-place operation writes, and what makes the
        writes land in ``value`` afterwards: nothing where the array is ``value``'s own memory,
        a copy back where it is a host copy of device memory."""
        if not isinstance(value, np.ndarray):
            raise TypeError(f"expected a NumPy array or a torch tensor (written in place), not {type(value).__name__}")
        return value, lambda: None

    def from_host(self, result: np.ndarray, like: Any) -> Any:
        """A NumPy ``result`` as ``like``'s array type, on ``like``'s device."""
        return result

    def device_cast(self, obj: Any) -> Any:
        """Patches in GPU memory as complex64 or float32 (the native layer checks the dtype)."""
        return obj

    def run_on_device(self, plan: Any, obj: Any, op: str) -> Any:
        """The ``(S, S, 1)`` canvas of ``obj`` (in GPU memory) by the native ``plan``, as this
        framework's array on ``obj``'s device (written by the device kernel into the output
        ``device_empty`` gives, on ``device_stream``); for a producer without a backend, a
        ``DeviceArray``, which any framework imports with ``from_dlpack``."""
        if not self.device_ops:
            return plan.run_cuda(self.device_cast(obj), op)
        side = plan.canvas_side
        with self.device_scope(obj):
            out = self.device_empty((side, side, 1), _arrays.compute_name(obj.dtype), obj)
            _arrays.device_call(plan, "run_cuda", self.device_cast(obj), op, self.device_stream(obj), out)
            return self.device_result(out, (side, side, 1))

    #: Whether this framework can allocate, cast and lay out arrays on its GPU for the device
    #: kernels (``device_*`` below: every framework backend). Elsewhere (another DLPack
    #: producer) an operation without a device path runs on the host and returns to the device.
    device_ops = False

    def device_scope(self, like: Any) -> Any:
        """A context in which ``like``'s GPU is the framework's current device (its arrays are
        exported, and its work queued, there)."""
        import contextlib

        return contextlib.nullcontext()

    def device_stream(self, like: Any) -> Optional[int]:
        """The raw CUDA stream the framework queues ``like``'s work on (None: the legacy default
        stream, and the native call waits)."""
        return None

    def device_empty(self, shape: Tuple[int, ...], dtype: str, like: Any) -> Any:
        """An uninitialised C-contiguous array of ``dtype`` (a NumPy name) on ``like``'s GPU."""
        raise NotImplementedError(f"{self.name} has no device arrays")

    def device_prepare(
        self, value: Any, dtype: str, perm: Optional[Tuple[int, ...]] = None, shape: Optional[Tuple[int, ...]] = None
    ) -> Any:
        """``value`` on its GPU as a C-contiguous ``dtype`` array (axes permuted by ``perm``,
        then reshaped to ``shape``), in a form the native device entries import."""
        raise NotImplementedError(f"{self.name} has no device arrays")

    def device_from_host(self, array: np.ndarray, like: Any) -> Any:
        """A NumPy ``array`` copied to ``like``'s GPU."""
        raise NotImplementedError(f"{self.name} has no device arrays")

    def device_result(self, value: Any, shape: Tuple[int, ...]) -> Any:
        """A device output (``device_empty``'s, written) as this framework's array of ``shape``."""
        raise NotImplementedError(f"{self.name} has no device arrays")

    def device_finish(self, value: Any, like: Any, perm: Optional[Tuple[int, ...]] = None) -> Any:
        """A device result (axes permuted by ``perm`` first) in ``like``'s shape, dtype (when
        ``like`` is a real or complex float array) and device."""
        raise NotImplementedError(f"{self.name} has no device arrays")

    def memory_hint(self, error: BaseException) -> Optional[str]:
        """What to add to an out-of-GPU-memory error this framework is the likely cause of."""
        return None

    def run(self, compute: Callable[..., np.ndarray], inputs: Sequence[Any], gpu: Optional[Callable[[Any], Any]]) -> Any:
        """``compute`` on NumPy views of ``inputs`` (the first one the patches), the result in
        the patches' array type; patches in CUDA memory go to ``gpu`` where the operation has a
        device path, else through the host and back to their device."""
        from . import backend_of

        owners = [backend_of(v) for v in inputs]
        inputs = tuple(b.readable(v) for b, v in zip(owners, inputs))
        devices = [dlpack_device(v) for v in inputs]
        obj = inputs[0]
        if all(d is None for d in devices):
            return compute(*inputs)
        if devices[0] == CUDA and gpu is not None:
            return gpu(obj)
        if devices[0] is not None and devices[0] not in HOST_DEVICES and devices[0] != CUDA:
            raise TypeError(
                f"{type(obj).__module__}.{type(obj).__name__} lives on an accelerator the GPU path does not "
                f"read (DLPack device type {devices[0]}; CUDA is 2): pass a CPU copy"
            )
        host = tuple(np.from_dlpack(v) if d in HOST_DEVICES else b.to_host(v) for b, v, d in zip(owners, inputs, devices))
        result = compute(*host)
        return owners[0].from_host(result, obj) if devices[0] is not None else result
