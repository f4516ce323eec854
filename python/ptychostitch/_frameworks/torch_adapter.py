"""PyTorch: a ``torch.autograd.Function``, for CPU and CUDA tensors that require grad.

The call is excluded from ``torch.compile`` graphs (``torch._dynamo.disable``): compiled code
runs around it with a clean graph break. Dynamo is only used when it is already loaded (a
``torch.compile`` is in play): importing it loads triton, whose LLVM aborts the process where
TensorFlow is loaded too ("Option ... registered more than once"). CUDA tensors: the forward runs on the GPU path when
one is given (``gpu``); the backward runs the device kernels (``kernel.backward_device``) on
torch's current stream, the tensors never leaving the GPU; a region reassembly whose weights
require grad (no device kernel for their cotangent) copies to the host and back.

The backward is not differentiable again. Where it runs with ``create_graph=True`` its results
carry a node that raises ``RuntimeError`` the moment a second derivative reaches it (a
Hessian-vector product, a gradient penalty, a mixed derivative through a loss linear in the
output), instead of silently dropping this operation's term. The node depends on the
cotangent *and* on the operation's inputs: a loss linear in the output gives a cotangent that
does not require grad, and a node hung on it alone would be a constant to autograd. (torch's
own ``once_differentiable`` does not raise there: in torch 2.15 the second derivative silently
lacks the term, measured.)
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional, Tuple

import numpy as np

from .base import Backend


def _torch() -> Any:
    return sys.modules.get("torch")


def _wants(*values: Any) -> bool:
    torch = _torch()
    if torch is None or not torch.is_grad_enabled():
        return False
    return any(isinstance(v, torch.Tensor) and v.requires_grad for v in values)


def _on_cuda(t: Any) -> bool:
    """A tensor in CUDA memory (the device kernels' input)."""
    return bool(t.is_cuda)


def _numpy(t: Any) -> np.ndarray:
    return t.detach().resolve_conj().resolve_neg().cpu().numpy()


_FUNCTION: Optional[Any] = None
_REFUSAL: Optional[Any] = None

SECOND_ORDER = (
    "ptychostitch's gradient is not differentiable again: a second derivative (create_graph=True "
    "then another grad: a Hessian-vector product, a gradient penalty) through it is not supported"
)


def _refusal() -> Any:
    """Passes gradients' values through and raises when they are differentiated."""
    global _REFUSAL
    if _REFUSAL is None:
        torch = _torch()

        class RefuseSecondOrder(torch.autograd.Function):
            @staticmethod
            def forward(ctx: Any, depends: int, *tensors: Any) -> Any:  # type: ignore[override]
                # The first `depends` tensors (the cotangent and the operation's inputs) only
                # connect the results to everything a second derivative could flow to.
                del ctx
                return tuple(None if v is None else v.clone() for v in tensors[depends:])

            @staticmethod
            def backward(ctx: Any, *grads: Any) -> Any:  # type: ignore[override]
                raise RuntimeError(SECOND_ORDER)

        _REFUSAL = RefuseSecondOrder
    return _REFUSAL


def refuse_second_order(grads: Tuple[Any, ...], depends: Tuple[Any, ...]) -> Tuple[Any, ...]:
    """A backward's ``grads`` as it returns them: where autograd records the backward
    (``create_graph=True``), behind a node that raises when differentiated, connected to
    ``depends`` (the cotangent and the forward's inputs) so that it is on every path a second
    derivative takes, whether or not the cotangent requires grad."""
    if not _torch().is_grad_enabled():
        return grads
    return _refusal().apply(len(depends), *depends, *grads)


def _function() -> Any:
    global _FUNCTION
    if _FUNCTION is None:
        torch = _torch()

        class Stitch(torch.autograd.Function):
            @staticmethod
            def forward(ctx: Any, kernel: Any, gpu: Any, x: Any, offsets: Any) -> Any:  # type: ignore[override]
                if gpu is not None and _on_cuda(x):
                    out = gpu(x.detach())
                else:
                    out = torch.from_numpy(kernel.forward(_numpy(x), _numpy(offsets))).to(x.device)
                ctx.kernel = kernel
                ctx.save_for_backward(x, offsets, out)
                return out

            @staticmethod
            def backward(ctx: Any, cot: Any) -> Any:  # type: ignore[override]
                x, offsets, out = ctx.saved_tensors
                want_x, want_off = ctx.needs_input_grad[2], ctx.needs_input_grad[3]
                if _on_cuda(x) and getattr(ctx.kernel, "on_device", False) and hasattr(ctx.kernel, "backward_device"):
                    # The device kernels: the tensors stay on the GPU, on torch's current stream.
                    with BACKEND.device_scope(x):
                        dx, doff = ctx.kernel.backward_device(BACKEND, x, offsets, out, cot, want_x, want_off)
                else:
                    dx, doff = ctx.kernel.backward(_numpy(x), _numpy(offsets), _numpy(out), _numpy(cot), want_x, want_off)
                    to = lambda a, like: None if a is None else torch.from_numpy(np.ascontiguousarray(a)).to(like.device)  # noqa: E731
                    dx, doff = to(dx, x), to(doff, offsets)
                dx, doff = refuse_second_order((dx, doff), (cot, x, offsets))
                return None, None, dx, doff

        _FUNCTION = Stitch
    return _FUNCTION


_WEIGHTED: Optional[Any] = None


def _weighted_function() -> Any:
    """A region reassembly whose weights are a third differentiable input (a probe being learnt:
    ``w = |P|²`` computed in torch, its gradient through the weights' cotangent)."""
    global _WEIGHTED
    if _WEIGHTED is None:
        torch = _torch()

        class WeightedStitch(torch.autograd.Function):
            @staticmethod
            def forward(ctx: Any, kernel: Any, x: Any, offsets: Any, weights: Any) -> Any:  # type: ignore[override]
                out = torch.from_numpy(kernel.forward_weighted(_numpy(x), _numpy(offsets), _numpy(weights)))
                ctx.kernel = kernel
                ctx.save_for_backward(x, offsets, weights)
                return out.to(x.device)

            @staticmethod
            def backward(ctx: Any, cot: Any) -> Any:  # type: ignore[override]
                x, offsets, weights = ctx.saved_tensors
                want = ctx.needs_input_grad[1:4]
                grads = ctx.kernel.backward_weighted(
                    _numpy(x), _numpy(offsets), _numpy(weights), _numpy(cot), *want
                )
                grads = tuple(
                    None if g is None else torch.from_numpy(np.ascontiguousarray(g)).to(like.device)
                    for g, like in zip(grads, (x, offsets, weights))
                )
                grads = refuse_second_order(grads, (cot, x, offsets, weights))
                return (None, *grads)

        _WEIGHTED = WeightedStitch
    return _WEIGHTED


def _apply_weighted(kernel: Any, x: Any, offsets: Any, weights: Any) -> Any:
    """Like :func:`_apply`, with the weights a differentiable torch tensor."""
    run, x, offsets = _prepared(_weighted_function(), x, offsets)
    if weights.dtype not in (_torch().float32, _torch().float64):
        weights = weights.to(_torch().float32)
    return run(kernel, x, offsets, weights)


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


def _apply(kernel: Any, x: Any, offsets: Any, gpu: Optional[Callable[[Any], Any]] = None) -> Any:
    run, x, offsets = _prepared(_function(), x, offsets)
    return run(kernel, gpu, x, offsets)


def _prepared(function: Any, x: Any, offsets: Any) -> Any:
    """``function.apply`` (outside any ``torch.compile`` graph) and the two inputs as tensors it
    takes: torch.func transforms refused, NumPy inputs wrapped, dtypes NumPy cannot read widened
    exactly (the gradient flows back through the cast in the input's own dtype)."""
    torch = _torch()
    _refuse_functorch(x, offsets)
    run = function.apply
    dynamo = sys.modules.get("torch._dynamo")
    if dynamo is not None:
        run = dynamo.disable(run)
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if not isinstance(offsets, torch.Tensor):
        offsets = torch.as_tensor(np.asarray(offsets, dtype=np.float64))
    if x.dtype not in (torch.complex64, torch.float32, torch.complex128, torch.float64):
        x = x.to(torch.complex64 if x.is_complex() else torch.float32)
    if offsets.dtype not in (torch.float32, torch.float64):
        # bfloat16 and float16 widen exactly (NumPy reads no bfloat16).
        offsets = offsets.to(torch.float64)
    return run, x, offsets


class TorchBackend(Backend):
    """torch tensors: autograd, DLPack, the caller's CUDA stream and allocator."""

    name = "torch"

    def owns(self, value: Any) -> bool:
        return type(value).__module__.split(".")[0] == "torch" and _torch() is not None

    def wants(self, *values: Any) -> bool:
        return _wants(*values)

    def apply(self, kernel: Any, x: Any, offsets: Any, gpu: Optional[Callable[[Any], Any]] = None) -> Any:
        return _apply(kernel, x, offsets, gpu)

    def learnt(self, value: Any) -> bool:
        return _wants(value)

    def apply_weighted(self, kernel: Any, x: Any, offsets: Any, weights: Any) -> Any:  # type: ignore[override]
        """A region reassembly differentiable with respect to its weights too."""
        return _apply_weighted(kernel, x, offsets, weights)

    def readable(self, value: Any) -> Any:
        # Detached (no autodiff wanted here); a lazy conjugate or negation (x.conj(), -x views)
        # is not exportable through DLPack; NumPy reads no bfloat16 (float32 holds it exactly).
        _refuse_functorch(value)
        value = value.detach().resolve_conj().resolve_neg()
        return value.float() if value.dtype == _torch().bfloat16 else value

    def to_host(self, value: Any) -> Any:
        return value.detach().cpu().numpy()

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

    return _torch().cuda.device(t.device) if _on_cuda(t) and t.device.type == "cuda" else contextlib.nullcontext()


BACKEND = TorchBackend()
