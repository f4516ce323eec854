"""Framework-neutral operations with their vector-Jacobian products, on NumPy arrays.

Each kernel declares one operation, once, for every framework and device
(``ptychostitch._call`` runs it; the backends in ``ptychostitch._frameworks`` make it
differentiable): ``forward(x, offsets)``; ``backward(x, offsets, out, cot, want_x,
want_offsets)`` returning the cotangents of ``x`` and of the offsets in their own shapes and
dtypes; ``out_dtype(x_dtype)``; ``out_shape(x_shape, offsets, exact=False)`` (``offsets`` NumPy
or None where traced; unknown sizes None unless ``exact``, where a shape that cannot be known
raises ``ValueError``). Region kernels are in ``ptychostitch._region``. Cotangents follow
TensorFlow's and PyTorch's convention for complex values (``dL/dRe + i dL/dIm``); the JAX
backend conjugates around them.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import sys
import threading
from typing import Any, Optional, Tuple

import numpy as np

from . import _arrays, _frameworks, _native
from ._arrays import as_compute, as_offsets, compute_dtype, compute_name, is_bfloat16
from ._frameworks import host_values


#: Every declared kernel class, in definition order: the operators the frameworks register.
DECLARED: list = []

#: The native reassembly plans the device paths keep (each with its GPU tables), most recent
#: last: a forward and its backward, and the steps of a training loop over the same offsets.
DEVICE_PLANS_KEPT = 8
_DEVICE_PLANS: "collections.OrderedDict[tuple, Any]" = collections.OrderedDict()
_DEVICE_PLANS_LOCK = threading.Lock()


class Declared:
    """What makes a kernel class a framework operator, declared once: ``OP`` (the operator's
    name, ``torch.ops.ptychostitch.<OP>`` and its ``<OP>_backward``), ``PARAMS`` (the
    constructor's arguments that define the operation, every one a plain number, string,
    bool or None) and ``WEIGHTED`` (a third, optional input: the region reassembly's weights).
    :meth:`spec` and :meth:`from_spec` carry those arguments through a graph as one string, so
    one generic registration serves every kernel (``_frameworks.torch_ops``)."""

    OP: str = ""
    PARAMS: Tuple[str, ...] = ()
    WEIGHTED = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.OP:
            DECLARED.append(cls)

    def spec(self) -> str:
        """``name=repr(value)`` pairs, ``;``-separated (plain string formatting: a compiler
        that traces the call, ``torch.compile``'s, folds it to a constant)."""
        return ";".join([f"{name}={getattr(self, name)!r}" for name in self.PARAMS])

    @classmethod
    def from_spec(cls, spec: str) -> Any:
        return _from_spec(cls, spec)


@functools.lru_cache(maxsize=256)
def _from_spec(cls: Any, spec: str) -> Any:
    """The kernel a :meth:`Declared.spec` describes (cached: a training step asks every time)."""
    import ast

    params = {}
    for item in spec.split(";") if spec else ():
        name, _, value = item.partition("=")
        params[name] = ast.literal_eval(value)
    return cls(**params)


def _like_input(grad: Optional[np.ndarray], like: np.ndarray) -> Optional[np.ndarray]:
    """A cotangent in the shape and dtype of the input it belongs to."""
    if grad is None:
        return None
    grad = grad.reshape(like.shape)
    if (like.dtype.kind in "fc" or is_bfloat16(like.dtype)) and grad.dtype != like.dtype:
        grad = grad.astype(like.dtype)
    return grad


class Reassembly(Declared):
    """``shift_and_sum`` or ``reassemble_position`` (``op``) with crop ``M``. ``fixed``: a
    native plan whose offsets are the call's (a :class:`ptychostitch.Plan`'s), used instead of
    planning from the offsets on every forward and backward; the canvas side is then its own."""

    OP = "reassemble"
    PARAMS = ("op", "crop", "threads", "reference", "canvas_side")

    def __init__(
        self, op: str, crop: int, threads: int, reference: bool = False, warn: Any = None,
        canvas_side: Optional[int] = None, fixed: Any = None,
    ) -> None:
        self.op, self.crop, self.threads, self.reference = op, crop, threads, reference
        self.warn, self.fixed = warn, fixed
        self.canvas_side = fixed.canvas_side if fixed is not None else canvas_side

    def plan(self, x: Any, offsets: np.ndarray) -> Any:
        if self.fixed is not None:
            return self.fixed
        shape = x if isinstance(x, tuple) else np.shape(x)
        side = int(shape[1]) if len(shape) >= 2 and shape[1] is not None else 1
        return _native.Plan(as_offsets(offsets), side, self.crop, self.threads)

    def device_plan(self, x: Any, offsets: np.ndarray) -> Any:
        """:meth:`plan` for the device paths, from a small cache keyed by the offsets' values:
        the backward reuses its forward's plan, and a training step with the same offsets the
        last step's, with the GPU tables the plan uploaded once (no re-upload, no wait)."""
        if self.fixed is not None:
            return self.fixed
        shape = tuple(x if isinstance(x, tuple) else np.shape(x))
        values = as_offsets(offsets)
        key = (shape[1:], self.crop, self.threads, values.shape, hashlib.blake2b(values.tobytes()).digest())
        with _DEVICE_PLANS_LOCK:
            plan = _DEVICE_PLANS.pop(key, None)
        if plan is None:
            plan = self.plan(shape, values)
        with _DEVICE_PLANS_LOCK:
            _DEVICE_PLANS[key] = plan
            while len(_DEVICE_PLANS) > DEVICE_PLANS_KEPT:
                _DEVICE_PLANS.popitem(last=False)
        return plan

    def out_shape(self, x_shape: Tuple[Any, ...], offsets: Optional[np.ndarray], exact: bool = False) -> Tuple[Any, ...]:
        """``(S, S, 1)``: ``S`` from ``canvas_side`` or the offsets' values."""
        if not exact:
            return (None, None, 1)
        if self.canvas_side is not None:
            return (self.canvas_side, self.canvas_side, 1)
        if offsets is None:
            raise ValueError(
                "the canvas side depends on the offsets' values, which are being traced here (JAX's jit, grad "
                "or vmap over the offsets; torch.compile or torch.export): pass canvas_side=, e.g. "
                "Plan(offsets0, N, M).canvas_shape[0]"
            )
        side = self.plan(x_shape, offsets).canvas_side
        return (side, side, 1)

    def out_dtype(self, x_dtype: Any) -> np.dtype:
        return compute_dtype(x_dtype)

    def forward(self, x: Any, offsets: Any) -> np.ndarray:
        if self.fixed is not None:
            return self.fixed.run(as_compute(x), self.op, self.reference)[:, :, np.newaxis]
        x, offsets = as_compute(x), as_offsets(offsets)
        out, texts = _native.stitch(x, offsets, self.crop, self.op, self.reference, self.threads)
        if self.warn is not None:
            self.warn(texts)
        return out[:, :, np.newaxis]

    def backward(
        self, x: Any, offsets: Any, out: Any, cot: Any, want_x: bool = True, want_offsets: bool = True
    ) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        x_in, off_in = np.asarray(x), np.asarray(offsets)
        xc = as_compute(x_in)
        cot = np.asarray(cot).astype(xc.dtype, copy=False)
        out = None if out is None else np.asarray(out).astype(xc.dtype, copy=False)
        plan = self.plan(xc, off_in)
        dx, doff = plan.vjp(xc, cot, self.op, out, want_x, want_offsets, self.reference)
        return _like_input(dx, x_in), _like_input(doff, off_in)


    @property
    def on_device(self) -> bool:
        """Whether the device kernels serve this call (the reference runs on the CPU only)."""
        return not self.reference

    def forward_device(self, backend: Any, x: Any, offsets: Any) -> Any:
        """:meth:`forward` for patches on a GPU: the ``(S, S, 1)`` canvas there, by the device
        kernel on the framework's stream (a fixed plan keeps its GPU tables between calls)."""
        plan = self.device_plan(tuple(x.shape), host_values(offsets))
        if self.warn is not None:
            self.warn(plan.warnings)
        return backend.run_on_device(plan, x, self.op)

    def backward_device(
        self, backend: Any, x: Any, offsets: Any, out: Any, cot: Any, want_x: bool, want_offsets: bool
    ) -> Tuple[Any, Any]:
        """:meth:`backward` for arrays on a GPU, by the device kernels on the framework's stream:
        the cotangents allocated there, in the inputs' shapes and dtypes."""
        name = compute_name(x.dtype)
        plan = self.device_plan(tuple(x.shape), host_values(offsets))
        xc = backend.device_prepare(x, name)
        cotc = backend.device_prepare(cot, name)
        outc = None if out is None else backend.device_prepare(out, name)
        dx = backend.device_empty(tuple(x.shape), name, x) if want_x else None
        doff = backend.device_empty((int(x.shape[0]), 2), "float64", x) if want_offsets else None
        _arrays.device_call(plan, "vjp_cuda", xc, cotc, self.op, outc, dx, doff, backend.device_stream(x))
        return (
            None if dx is None else backend.device_finish(dx, x),
            None if doff is None else backend.device_finish(doff, offsets),
        )


class Extract(Declared):
    """PtychoPINN's ``extract_patches_position``: ``(B, S, S, 1)`` images, ``(B, 1, 2, C)``
    offsets ``[x, y]`` -> ``(B*C, N, N, 1)`` patches, row ``b*C + c``."""

    OP = "extract_patches"
    PARAMS = ("patch_size", "per_image", "threads")
    #: Each image's patches depend on that image alone: a mapped axis folds into the batch.
    batchable = True

    def __init__(self, patch_size: int, per_image: int, threads: int) -> None:
        self.patch_size, self.per_image, self.threads = patch_size, per_image, threads

    @staticmethod
    def flat_offsets(offsets_xy: np.ndarray) -> np.ndarray:
        b, c = offsets_xy.shape[0], offsets_xy.shape[-1]
        return np.ascontiguousarray(offsets_xy.reshape(b, 2, c).transpose(0, 2, 1).reshape(b * c, 2))

    @staticmethod
    def channel_format(rows: np.ndarray, like: np.ndarray) -> np.ndarray:
        """``(B·C, 2)`` rows back in ``like``'s channel format ``(B, 1, 2, C)`` (the inverse of
        :meth:`flat_offsets`)."""
        b, c = like.shape[0], like.shape[-1]
        return rows.reshape(b, c, 2).transpose(0, 2, 1).reshape(like.shape)

    def plan(self, imgs: Any, offsets_xy: np.ndarray) -> Any:
        shape = imgs if isinstance(imgs, tuple) else np.shape(imgs)
        return _native.Extraction(
            self.flat_offsets(as_offsets(offsets_xy, "offsets_xy")), self.per_image, int(shape[1]),
            self.patch_size, self.threads,
        )

    def out_shape(self, imgs_shape: Tuple[Any, ...], offsets: Any = None, exact: bool = False) -> Tuple[Any, ...]:
        b = imgs_shape[0]  # None, an int, or a symbolic size (torch.compile)
        return (None if b is None else b * self.per_image, self.patch_size, self.patch_size, 1)

    def out_dtype(self, x_dtype: Any) -> np.dtype:
        return compute_dtype(x_dtype, "imgs")

    def forward(self, imgs: Any, offsets_xy: Any) -> np.ndarray:
        imgs = as_compute(imgs, "imgs")
        return self.plan(imgs, offsets_xy).extract(imgs)[..., np.newaxis]

    def backward(
        self, imgs: Any, offsets_xy: Any, out: Any, cot: Any, want_x: bool = True, want_offsets: bool = True
    ) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        del out
        x_in, off_in = np.asarray(imgs), np.asarray(offsets_xy)
        xc = as_compute(x_in, "imgs")
        cot = np.asarray(cot).astype(xc.dtype, copy=False)
        dimgs, dflat = self.plan(xc, off_in).vjp(xc, cot, want_x, want_offsets)
        doff = None if dflat is None else self.channel_format(dflat, off_in)
        return _like_input(dimgs, x_in), _like_input(doff, off_in)


    on_device = True

    def forward_device(self, backend: Any, imgs: Any, offsets_xy: Any) -> Any:
        """:meth:`forward` for images on a GPU: ``(B·C, N, N, 1)`` there."""
        name = compute_name(imgs.dtype)
        planned, on_device = _frameworks.positions_for_device(offsets_xy)
        plan = self.plan(tuple(imgs.shape), planned)
        ic = backend.device_prepare(imgs, name)
        count, n, _ = plan.output_shape
        out = backend.device_empty((count, n, n, 1), name, imgs)
        _arrays.device_call(plan, "extract_cuda", ic, out, backend.device_stream(imgs), on_device, True)
        return backend.device_result(out, (count, n, n, 1))

    def backward_device(
        self, backend: Any, imgs: Any, offsets_xy: Any, out: Any, cot: Any, want_x: bool, want_offsets: bool
    ) -> Tuple[Any, Any]:
        """:meth:`backward` for arrays on a GPU: the offsets' cotangent in PtychoPINN's
        ``(B, 1, 2, C)`` written by the device fold."""
        del out
        name = compute_name(imgs.dtype)
        planned, on_device = _frameworks.positions_for_device(offsets_xy)
        plan = self.plan(tuple(imgs.shape), planned)
        ic = backend.device_prepare(imgs, name)
        cotc = backend.device_prepare(cot, name)
        dimg = backend.device_empty(tuple(imgs.shape), name, imgs) if want_x else None
        doff = backend.device_empty(tuple(offsets_xy.shape), "float64", imgs) if want_offsets else None
        _arrays.device_call(plan, "vjp_cuda", ic, cotc, dimg, doff, True, backend.device_stream(imgs), on_device)
        return (
            None if dimg is None else backend.device_finish(dimg, imgs),
            None if doff is None else backend.device_finish(doff, offsets_xy),
        )


class CenterChannels(Declared):
    """PtychoPINN's ``center_channels``: each channel of ``(B, N, N, C)`` translated by minus its
    offset ``(B, 1, 2, C)`` ``[x, y]``, keeping its ``N×N`` frame (zeros shifted in): the
    extraction with ``S = N``, one channel an image, the offsets negated."""

    OP = "center_channels"
    PARAMS = ("threads",)
    #: Each channel moves alone: a mapped axis folds into the batch.
    batchable = True

    def __init__(self, threads: int) -> None:
        self.threads = threads

    @staticmethod
    def dims(shape: Tuple[Any, ...]) -> Tuple[int, int, int]:
        if len(shape) != 4 or shape[1] != shape[2]:
            raise ValueError(f"channels have shape {tuple(shape)}; expected (B, N, N, C)")
        return int(shape[0]), int(shape[1]), int(shape[3])

    def plan(self, shape: Tuple[Any, ...], offsets_xy: Any) -> Any:
        b, n, c = self.dims(shape)
        off = as_offsets(offsets_xy, "offsets_xy")
        if off.shape != (b, 1, 2, c):
            raise ValueError(f"offsets_xy has shape {off.shape}; expected ({b}, 1, 2, {c}) [x, y] in channel format")
        return _native.Extraction(Extract.flat_offsets(-off), 1, n, n, self.threads, "tf", same_frame=True)

    def out_shape(self, x_shape: Tuple[Any, ...], offsets: Any = None, exact: bool = False) -> Tuple[Any, ...]:
        return tuple(x_shape)

    def out_dtype(self, x_dtype: Any) -> np.dtype:
        return compute_dtype(x_dtype, "channels")

    @staticmethod
    def flat(x: np.ndarray) -> np.ndarray:
        """``(B, N, N, C)`` as the images ``(B·C, N, N)``, row ``b·C + c``."""
        b, n, _, c = x.shape
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(b * c, n, n)

    @staticmethod
    def channels(flat: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
        b, n, _, c = shape
        return np.ascontiguousarray(flat.reshape(b, c, n, n).transpose(0, 2, 3, 1))

    def forward(self, x: Any, offsets_xy: Any) -> np.ndarray:
        xc = as_compute(x, "channels")
        return self.channels(self.plan(xc.shape, offsets_xy).extract(self.flat(xc)), xc.shape)

    def backward(
        self, x: Any, offsets_xy: Any, out: Any, cot: Any, want_x: bool = True, want_offsets: bool = True
    ) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        del out
        x_in, off_in = np.asarray(x), np.asarray(offsets_xy)
        xc = as_compute(x_in, "channels")
        cot = np.asarray(cot).astype(xc.dtype, copy=False).reshape(xc.shape)
        dflat, doff = self.plan(xc.shape, off_in).vjp(self.flat(xc), self.flat(cot), want_x, want_offsets)
        dx = None if dflat is None else self.channels(dflat, xc.shape)
        if doff is not None:  # the extraction's offsets are the negated ones
            doff = -Extract.channel_format(doff, off_in)
        return _like_input(dx, x_in), _like_input(doff, off_in)


def ptychopinn_param(name: str) -> Optional[int]:
    """PtychoPINN's global parameter ``name`` when ``ptycho.params`` is loaded (its functions
    default ``N`` and ``gridsize`` from there)."""
    params = sys.modules.get("ptycho.params")
    if params is None:
        return None
    try:
        value = params.get(name)
    except Exception:
        return None
    return None if value is None else int(value)
