"""PyTorch: every operation a ``torch.library`` operator (``torch_ops``: the forward, the
backward, fake tensors for compilation), for CPU and CUDA tensors, eager, under
``torch.compile(fullgraph=True)`` and in ``torch.export`` programs.

CUDA tensors run forward and backward on the device kernels on torch's current stream, the
tensors never leaving the GPU; a region reassembly whose weights require grad (no device kernel
for their cotangent) copies to the host and back for its backward.

The backward is not differentiable again. Its operator's autograd raises ``RuntimeError`` the
moment a second derivative reaches it (a Hessian-vector product, a gradient penalty, a mixed
derivative through a loss linear in the output), instead of silently dropping this operation's
term: its results depend, for autograd, on the operation's inputs as well as on the cotangent
(a loss linear in the output gives a cotangent that does not require grad, and a refusal hung on
it alone would be a constant to autograd).
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional, Tuple

import numpy as np

from . import torch_ops
from .base import Backend


def _torch() -> Any:
    return sys.modules.get("torch")


def _wants(*values: Any) -> bool:
    torch = _torch()
    if torch is None or not torch.is_grad_enabled():
        return False
    return any(isinstance(v, torch.Tensor) and v.requires_grad for v in values)


def _refuse_functorch(*values: Any) -> None:
    if any(_functorch_wrapped(v) for v in values):
        raise TypeError(
            "ptychostitch runs its kernels on host arrays and does not support torch.func transforms "
            "(vmap, grad, jacrev, functional_call): use torch.autograd (loss.backward(), torch.autograd.grad) "
            "and a Python loop for batches"
        )


def _functorch_wrapped(value: Any) -> bool:
    """A tensor inside a ``torch.func`` transform (``vmap``, ``grad``, ``jacrev``, …)."""
    try:
        from torch._C import _functorch
    except ImportError:  # a torch without functorch: no such tensors
        return False
    return isinstance(value, _torch().Tensor) and bool(_functorch.is_functorch_wrapped_tensor(value))


def _apply(kernel: Any, x: Any, offsets: Any, weights: Any = None) -> Any:
    """``kernel`` through its operator (``torch.ops.ptychostitch.<OP>``): the inputs as tensors
    it takes, torch.func transforms refused, dtypes NumPy cannot read widened exactly (the
    gradient flows back through the cast in the input's own dtype); a region reassembly's
    weights as a tensor (constant ones built here; a probe's ``|P|²`` differentiable)."""
    torch = _torch()
    if not _compiling():  # (functorch's wrapper check is not traceable; compiled code has none)
        _refuse_functorch(x, offsets)
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if not isinstance(offsets, torch.Tensor):
        offsets = torch.as_tensor(np.asarray(offsets, dtype=np.float64))
    if x.dtype not in (torch.complex64, torch.float32, torch.complex128, torch.float64):
        x = x.to(torch.complex64 if x.is_complex() else torch.float32)
    if offsets.dtype not in (torch.float32, torch.float64):
        # bfloat16 and float16 widen exactly (NumPy reads no bfloat16).
        offsets = offsets.to(torch.float64)
    if kernel.WEIGHTED:
        if weights is None:
            n = int(kernel.dims(tuple(x.shape))[2])
            weights = torch.from_numpy(kernel.weight_array(n)).to(x.device)
        elif weights.dtype not in (torch.float32, torch.float64):
            weights = weights.to(torch.float32)
    if _compiling():
        # The operator's output shape is declared before any value is known: the reassembly's
        # canvas side, which depends on the offsets' values, must be given. (Eager calls need
        # none: their shape is the computed result's.)
        if not torch_ops.fixed_shape(kernel):
            raise ValueError(
                "under torch.compile or torch.export the canvas side cannot be read from the offsets' values: "
                "pass canvas_side=, e.g. ptychostitch.Plan(offsets, N, M).canvas_shape[0]"
            )
        return torch_ops.call(kernel, x, offsets, weights)
    torch_ops.register_all()
    return torch_ops.eager(kernel, x, offsets, weights)


def _compiling() -> bool:
    """Inside ``torch.compile`` or ``torch.export`` tracing (values unknown)."""
    torch = _torch()
    compiler = getattr(torch, "compiler", None) if torch is not None else None
    return bool(compiler is not None and compiler.is_compiling())


class TorchBackend(Backend):
    """torch tensors: autograd, DLPack, the caller's CUDA stream and allocator."""

    name = "torch"

    def owns(self, value: Any) -> bool:
        return type(value).__module__.split(".")[0] == "torch" and _torch() is not None

    def wants(self, *values: Any) -> bool:
        """torch patches always run through the operator (eager, compiled or exported, with or
        without a gradient); other patches only when a torch input needs a gradient."""
        torch = _torch()
        return (torch is not None and isinstance(values[0], torch.Tensor)) or _wants(*values)

    def apply(self, kernel: Any, x: Any, offsets: Any, gpu: Optional[Callable[[Any], Any]] = None) -> Any:
        return _apply(kernel, x, offsets)

    def learnt(self, value: Any) -> bool:
        return _wants(value)

    def tracing(self) -> bool:
        return _torch() is not None and _compiling()

    def register_operators(self, kernels: Any) -> None:
        torch_ops.KERNELS[:] = kernels
        if _torch() is not None:
            torch_ops.register_all()

    def apply_weighted(self, kernel: Any, x: Any, offsets: Any, weights: Any) -> Any:  # type: ignore[override]
        """A region reassembly differentiable with respect to its weights too."""
        return _apply(kernel, x, offsets, weights)

    def readable(self, value: Any) -> Any:
        # Detached (no autodiff wanted here); a lazy conjugate or negation (x.conj(), -x views)
        # is not exportable through DLPack; NumPy reads no bfloat16 (float32 holds it exactly).
        _refuse_functorch(value)
        value = value.detach().resolve_conj().resolve_neg()
        return value.float() if value.dtype == _torch().bfloat16 else value

    def to_host(self, value: Any) -> Any:
        return value.detach().cpu().numpy()

    def writable(self, value: Any) -> Tuple[np.ndarray, Callable[[], None]]:
        if value.device.type == "cpu":
            return value.detach().numpy(), lambda: None
        # A device tensor: its host copy, copied back once written (one round trip).
        copy = value.detach().cpu().numpy()

        def commit() -> None:
            with _torch().no_grad():
                value.copy_(_torch().from_numpy(copy))

        return copy, commit

    def from_host(self, result: np.ndarray, like: Any) -> Any:
        out = _torch().from_dlpack(result)
        return out if like.device.type == "cpu" else out.to(like.device)

    def device_cast(self, obj: Any) -> Any:
        torch = _torch()
        target = torch.complex64 if obj.is_complex() else torch.float32
        obj = self.readable(obj)
        return obj if obj.dtype == target else obj.to(target)

    device_ops = True

    def device_scope(self, like: Any) -> Any:
        # torch >= 2.9 exports a CUDA tensor through DLPack only on its own current device.
        return _current_device(like)

    def device_stream(self, like: Any) -> Optional[int]:
        return int(_torch().cuda.current_stream(like.device).cuda_stream)

    def device_empty(self, shape: Tuple[int, ...], dtype: str, like: Any) -> Any:
        torch = _torch()
        return torch.empty(shape, dtype=getattr(torch, dtype), device=like.device)

    def device_prepare(
        self, value: Any, dtype: str, perm: Optional[Tuple[int, ...]] = None, shape: Optional[Tuple[int, ...]] = None
    ) -> Any:
        value = self.readable(value)
        if perm is not None:
            value = value.permute(*perm)
        value = value.to(getattr(_torch(), dtype)).contiguous()
        return value if shape is None else value.reshape(shape)

    def device_result(self, value: Any, shape: Tuple[int, ...]) -> Any:
        return value.reshape(shape)

    def device_from_host(self, array: np.ndarray, like: Any) -> Any:
        return _torch().as_tensor(np.ascontiguousarray(array), device=like.device)

    def device_finish(self, value: Any, like: Any, perm: Optional[Tuple[int, ...]] = None) -> Any:
        if perm is not None:
            value = value.permute(*perm)
        value = value.reshape(like.shape)
        if like.dtype.is_floating_point or like.dtype.is_complex:
            value = value.to(like.dtype)
        return value.to(like.device)


def _current_device(t: Any) -> Any:
    """``t``'s CUDA device made current for the block (nothing for another device)."""
    import contextlib

    return _torch().cuda.device(t.device) if torch_ops.on_cuda(t) and t.device.type == "cuda" else contextlib.nullcontext()


BACKEND = TorchBackend()
torch_ops.BACKEND = BACKEND
