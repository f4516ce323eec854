"""Every ptychostitch operation as a PyTorch operator: ``torch.ops.ptychostitch.<OP>`` and
``torch.ops.ptychostitch.<OP>_backward``, registered with ``torch.library.custom_op`` from the
kernel's own declaration (``_kernels.Declared``: ``OP``, ``PARAMS``, ``WEIGHTED``) by one
generic function, :func:`operator`.

For each kernel class:

- ``<OP>(Tensor x, Tensor positions, Tensor? weights, str spec) -> Tensor``: the forward.
  ``spec`` carries the kernel's parameters (``Declared.spec``); ``weights`` are the region
  reassembly's (None for the other operations). CPU tensors run the native CPU path on
  NumPy views; CUDA tensors the device kernels on torch's current stream.
- ``<OP>_backward(x, positions, weights, out, cot, spec, want_x, want_positions,
  want_weights) -> (Tensor, Tensor, Tensor)``: the exact VJP (an unwanted cotangent is an empty
  tensor).
- ``register_fake`` gives the output's shape from the kernel's ``out_shape`` (symbolic batch
  sizes stay symbolic), so ``torch.compile(fullgraph=True)`` and ``torch.export`` see through
  the call with no graph break; ``register_autograd`` wires the backward operator; the backward
  operator's own autograd raises (a second derivative is refused, never silently wrong).

The reassembly's canvas side depends on the offsets' values: under compilation it must be
given (``canvas_side=``); eager calls compute it.
"""

import copy
import functools
import sys
import warnings
from typing import Any, Dict, Optional, Tuple

import numpy as np

from .._arrays import ScanWarning

NAMESPACE = "ptychostitch"

SECOND_ORDER = (
    "ptychostitch's gradient is not differentiable again: a second derivative (create_graph=True "
    "then another grad: a Hessian-vector product, a gradient penalty) through it is not supported"
)

FORWARD_SCHEMA = "(Tensor x, Tensor positions, Tensor? weights, str spec) -> Tensor"
BACKWARD_SCHEMA = (
    "(Tensor x, Tensor positions, Tensor? weights, Tensor out, Tensor cot, str spec, bool want_x, "
    "bool want_positions, bool want_weights) -> (Tensor, Tensor, Tensor)"
)

_OPERATORS: Dict[str, Tuple[Any, Any]] = {}


def _torch() -> Any:
    return sys.modules["torch"]


def _numpy(t: Any) -> np.ndarray:
    return t.detach().resolve_conj().resolve_neg().cpu().numpy()


#: The torch backend (``torch_adapter.BACKEND`` sets itself here): its ``device_*`` methods.
BACKEND: Any = None

#: The declared kernel classes (``_kernels.DECLARED``, handed over by ``register_operators``).
KERNELS: list = []


def on_cuda(t: Any) -> bool:
    """A tensor in CUDA memory (the device kernels' input; the device stand-in replaces it)."""
    return bool(t.is_cuda)


def _warn(texts: Any) -> None:
    for text in texts:
        warnings.warn(text, ScanWarning, stacklevel=2)


def _for_call(kernel: Any, weights: Any, on_device: bool = False) -> Any:
    """The kernel for one call (a copy: kernels from a spec are shared): with these weights --
    left where they are for the device kernels (``device_weights``: no copy to the host and
    back), as NumPy for the host's -- and a reassembly's scan warnings raised as
    ``ScanWarning``."""
    reassembly = hasattr(kernel, "warn")
    if weights is None and not reassembly:
        return kernel
    kernel = copy.copy(kernel)
    if weights is not None and on_device:
        kernel.device_weights = weights
    elif weights is not None:
        kernel.weights = _numpy(weights)
    if reassembly:
        kernel.warn = _warn
    return kernel


def _forward(kernel: Any, x: Any, positions: Any, weights: Any) -> Any:
    torch = _torch()
    on_device = on_cuda(x) and kernel.on_device
    kernel = _for_call(kernel, weights, on_device)
    if on_device:
        with BACKEND.device_scope(x):
            out = kernel.forward_device(BACKEND, x, positions)
    else:
        out = torch.from_numpy(np.ascontiguousarray(kernel.forward(_numpy(x), _numpy(positions)))).to(x.device)
    promised = kernel.out_shape(tuple(x.shape), None, exact=True) if fixed_shape(kernel) else None
    if promised is not None and tuple(out.shape) != tuple(promised):
        raise ValueError(
            f"these offsets give a {tuple(out.shape)} result, not the {tuple(promised)} promised by canvas_side"
        )
    return out


def fixed_shape(kernel: Any) -> bool:
    """The output's shape does not depend on the inputs' values (always, but for a reassembly
    whose canvas side was not given)."""
    return getattr(kernel, "canvas_side", 0) is not None


def _backward(
    kernel: Any, x: Any, positions: Any, weights: Any, out: Any, cot: Any, want_x: bool, want_pos: bool, want_w: bool
) -> Tuple[Any, Any, Any]:
    torch = _torch()
    on_device = on_cuda(x) and kernel.on_device and not want_w
    kernel = _for_call(kernel, weights, on_device)
    if on_device:
        # The device kernels, on torch's stream (no device kernel for the weights' cotangent).
        with BACKEND.device_scope(x):
            dx, dpos = kernel.backward_device(BACKEND, x, positions, out, cot, want_x, want_pos)
        dw = None
    else:
        xn, pn, cn = _numpy(x), _numpy(positions), _numpy(cot)
        if kernel.WEIGHTED:
            dx, dpos, dw = kernel.backward_weighted(xn, pn, kernel.weights, cn, want_x, want_pos, want_w, _numpy(out))
        else:
            dx, dpos = kernel.backward(xn, pn, _numpy(out), cn, want_x, want_pos)
            dw = None

        def to(a: Any) -> Any:
            return None if a is None else torch.from_numpy(np.ascontiguousarray(a)).to(x.device)

        dx, dpos, dw = to(dx), to(dpos), to(dw)
    empty = x.new_empty((0,), dtype=torch.float32)
    return (
        empty if dx is None else dx,
        empty.clone() if dpos is None else dpos,
        empty.clone() if dw is None else dw,
    )


def operator(kernel_cls: Any) -> Tuple[Any, Any]:
    """The forward and backward operators of ``kernel_cls`` (registered on first use)."""
    name = kernel_cls.OP
    if name in _OPERATORS:
        return _OPERATORS[name]
    torch = _torch()
    library = torch.library

    def forward_impl(x: Any, positions: Any, weights: Any, spec: str) -> Any:
        return _forward(kernel_cls.from_spec(spec), x, positions, weights)

    def backward_impl(
        x: Any, positions: Any, weights: Any, out: Any, cot: Any, spec: str, want_x: bool, want_positions: bool,
        want_weights: bool,
    ) -> Any:
        return _backward(kernel_cls.from_spec(spec), x, positions, weights, out, cot, want_x, want_positions,
                         want_weights)

    forward = library.custom_op(f"{NAMESPACE}::{name}", forward_impl, mutates_args=(), schema=FORWARD_SCHEMA)
    backward = library.custom_op(
        f"{NAMESPACE}::{name}_backward", backward_impl, mutates_args=(), schema=BACKWARD_SCHEMA
    )

    @forward.register_fake
    def _forward_fake(x: Any, positions: Any, weights: Any, spec: str) -> Any:
        kernel = kernel_cls.from_spec(spec)
        dtype = getattr(torch, kernel.out_dtype(np.dtype(str(x.dtype).rsplit(".", 1)[-1])).name)
        # (A reassembly without canvas_side raises here: its side depends on the offsets' values.)
        return x.new_empty(kernel.out_shape(tuple(x.shape), None, exact=True), dtype=dtype)

    @backward.register_fake
    def _backward_fake(
        x: Any, positions: Any, weights: Any, out: Any, cot: Any, spec: str, want_x: bool, want_positions: bool,
        want_weights: bool,
    ) -> Any:
        empty = x.new_empty((0,), dtype=torch.float32)
        return (
            x.new_empty(x.shape) if want_x else empty,
            positions.new_empty(positions.shape) if want_positions else empty.clone(),
            weights.new_empty(weights.shape) if want_weights and weights is not None else empty.clone(),
        )

    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        x, positions, weights, spec = inputs
        ctx.spec, ctx.weighted = spec, weights is not None
        ctx.save_for_backward(x, positions, weights, output)

    def differentiate(ctx: Any, cot: Any) -> Any:
        x, positions, weights, out = ctx.saved_tensors
        want = ctx.needs_input_grad
        want_w = bool(want[2]) and ctx.weighted
        dx, dpos, dw = backward(x, positions, weights, out, cot, ctx.spec, bool(want[0]), bool(want[1]), want_w)
        return (dx if want[0] else None, dpos if want[1] else None, dw if want_w else None, None)

    forward.register_autograd(differentiate, setup_context=setup_context)

    def refuse(ctx: Any, *grads: Any) -> Any:
        raise RuntimeError(SECOND_ORDER)

    def no_context(ctx: Any, inputs: Any, output: Any) -> None:
        return None

    # The backward's results depend (for autograd) on x, the positions, the weights and the
    # cotangent: a second derivative along any of them reaches `refuse`, whether or not the
    # cotangent requires grad.
    backward.register_autograd(refuse, setup_context=no_context)
    _OPERATORS[name] = (forward, backward)
    return forward, backward


def register_all() -> None:
    """Registers every declared kernel's operators (idempotent; imports no ``torch._dynamo``).
    Done at ``import ptychostitch`` where torch is loaded, and at the first eager call: a
    registration inside a ``torch.compile`` trace would be a graph break."""
    for kernel_cls in KERNELS:
        operator(kernel_cls)


def call(kernel: Any, x: Any, positions: Any, weights: Optional[Any] = None) -> Any:
    """``kernel`` on torch tensors through its operator: differentiable, and seen by
    ``torch.compile`` / ``torch.export`` as one node."""
    forward, _ = operator(type(kernel))
    return forward(x, positions, weights, kernel.spec())


# --- eager calls -------------------------------------------------------------------------------
#
# Outside compilation the same `_forward` and `_backward` run through a plain
# `torch.autograd.Function` instead of the operators: calling a `custom_op` imports
# `torch._dynamo`, which imports triton, whose LLVM aborts a process that has loaded TensorFlow
# ("Option ... registered more than once") -- PtychoPINN's users load both. Compiled and
# exported code has imported `torch._dynamo` already.

@functools.cache
def _refusal() -> Any:
    """Passes gradients' values through and raises when they are differentiated (the class is
    made once torch is loaded)."""
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

    return RefuseSecondOrder


@functools.cache
def _eager_function() -> Any:
    torch = _torch()

    class Eager(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, kernel: Any, x: Any, positions: Any, weights: Any) -> Any:  # type: ignore[override]
            out = _forward(kernel, x, positions, weights)
            ctx.kernel = kernel
            ctx.save_for_backward(x, positions, weights, out)
            return out

        @staticmethod
        def backward(ctx: Any, cot: Any) -> Any:  # type: ignore[override]
            x, positions, weights, out = ctx.saved_tensors
            want = ctx.needs_input_grad[1:4]
            want_w = bool(want[2]) and weights is not None
            grads = _backward(ctx.kernel, x, positions, weights, out, cot, bool(want[0]), bool(want[1]), want_w)
            grads = tuple(g if w else None for g, w in zip(grads, (want[0], want[1], want_w)))
            if torch.is_grad_enabled():
                # create_graph=True: the results behind a node that raises when they are
                # differentiated, connected to the inputs as well as to the cotangent.
                depends = (cot, x, positions) + (() if weights is None else (weights,))
                grads = _refusal().apply(len(depends), *depends, *grads)
            return (None, *grads)

    return Eager


def eager(kernel: Any, x: Any, positions: Any, weights: Optional[Any] = None) -> Any:
    """``kernel`` on torch tensors outside compilation: the operators' own implementation,
    through ``torch.autograd``."""
    return _eager_function().apply(kernel, x, positions, weights)
