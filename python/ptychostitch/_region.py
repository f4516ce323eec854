"""The training-path operator as a framework-neutral kernel: batched region reassembly (one
canvas per sample) in PtychoPINN's two layouts, with its vector-Jacobian product.

``RegionKernel`` is an operation as ``ptychostitch._call`` runs it (see ``_kernels``):
``forward(patches, positions)``, ``backward(patches, positions, out, cot, want_x, want_pos)``
returning the cotangents in the inputs' shapes and dtypes, ``out_dtype`` and ``out_shape``.
The weights (a centre mask, ones, ``|probe|²``, a user array) are constants of the kernel.

Layouts:

* ``"tf"``: patches ``(B, N, N, C)``, positions ``(B, 1, 2, C)`` ``[x, y]``, regions
  ``(B, P, P, 1)`` (PtychoPINN's ``ReassemblePatchesLayer``);
* ``"torch"``: patches ``(B, C, N, N)``, positions ``(B, C, 1, 2)`` (or ``(B, C, 2)``),
  regions ``(B, P, P)`` (``ptycho_torch.helper``).
"""

from __future__ import annotations

import copy
import numbers
from typing import Any, Optional, Tuple

import numpy as np

from . import _arrays, _frameworks, _kernels, _native
from ._arrays import as_compute, as_offsets, compute_dtype, compute_name
from ._kernels import _like_input

LAYOUTS = ("tf", "torch")


def center_mask(n: int) -> np.ndarray:
    """PtychoPINN's centre mask: ones on the central ``N/2 × N/2`` (from ``N/4``), ``(1, 1, N, N)``."""
    mask = np.zeros((1, 1, n, n), np.float32)
    mask[..., n // 4 : n // 4 + n // 2, n // 4 : n // 4 + n // 2] = 1.0
    return mask


def weights_array(weights: Any, n: int) -> np.ndarray:
    """``"center"``, ``"ones"`` or an array: ``(N, N)``, ``(B, N, N)`` (per sample) or
    ``(1|B, 1|C, N, N)``, as float32 ``(1|B, 1|C, N, N)``."""
    if isinstance(weights, str):
        if weights == "center":
            return center_mask(n)
        if weights == "ones":
            return np.ones((1, 1, n, n), np.float32)
        raise ValueError(f"weights must be 'center', 'ones' or an array, not {weights!r}")
    w = np.asarray(weights)
    if w.dtype.kind not in "fiub":
        raise TypeError(f"weights have dtype {w.dtype}; expected real weights (e.g. abs(probe)**2)")
    w = w.astype(np.float32, copy=False)
    if w.ndim == 2:
        w = w[np.newaxis, np.newaxis]
    elif w.ndim == 3:
        w = w[:, np.newaxis]
    if w.ndim != 4 or w.shape[-2:] != (n, n):
        raise ValueError(
            f"weights have shape {np.shape(weights)}; expected ({n}, {n}), (B, {n}, {n}) or (1|B, 1|C, {n}, {n})"
        )
    return np.ascontiguousarray(w)


def row_pairs(p: np.ndarray, b: int, c: int) -> np.ndarray:
    """Positions ``(B, C, 1, 2)`` or ``(B, C, 2)`` ``[x, y]`` (the torch layout's) as ``(B·C, 2)``
    rows, sample-major."""
    if p.size != b * c * 2 or p.shape[:2] != (b, c) or p.shape[-1] != 2:
        raise ValueError(f"positions have shape {p.shape}; expected ({b}, {c}, 1, 2) or ({b}, {c}, 2) [x, y]")
    return np.ascontiguousarray(p.reshape(b * c, 2))


NUMERATORS = ("sum", "weighted")
DENOMINATORS = ("add", "clamp", "one", "affine", "regularised")
SUPPORTS = ("above", "above_max_fraction")


def _real_number(name: str, value: Any) -> float:
    """A real-number option: Python's and NumPy's reals (not bool); a TypeError naming it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, not {type(value).__name__} ({value!r})")
    return float(value)


def _choice(name: str, value: Any, allowed: Tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {', '.join(map(repr, allowed))}, not {type(value).__name__} ({value!r})")
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, not {value!r}")
    return value


def options(
    layout: str, *, convention: Optional[str], recentre: Any, numerator: Any, denominator: Any, epsilon: Any,
    support: Any, scale: Any,
) -> dict:
    """The normalisation options of :func:`ptychostitch.reassemble_regions`, checked up front
    (before any data is read, so a graph-mode call fails when it is built): each a ``TypeError``
    or ``ValueError`` naming the parameter and what it may be. Returns ``RegionKernel``'s
    keyword arguments (less ``threads`` and ``reference``)."""
    convention = layout if convention is None else _choice("convention", convention, ("tf", "torch"))
    if recentre is None:
        recentre = layout == "tf"
    elif not isinstance(recentre, (bool, np.bool_)):
        raise TypeError(f"recentre must be True, False or None (the layout's default), not {recentre!r}")
    numerator = _choice("numerator", numerator, NUMERATORS)
    denominator = _choice("denominator", denominator, DENOMINATORS)
    epsilon = _real_number("epsilon", epsilon)
    if scale is None:
        scale = 1.0 - epsilon if denominator == "regularised" else 1.0
    elif denominator not in ("affine", "regularised"):
        raise ValueError(
            f"scale is used only by denominator='affine' or 'regularised', not {denominator!r} (it would be ignored)"
        )
    else:
        scale = _real_number("scale", scale)
    if support is not None:
        form = "support must be None, ('above', t) or ('above_max_fraction', f)"
        if not isinstance(support, (tuple, list)) or len(support) != 2:
            raise TypeError(f"{form}, not {support!r}")
        kind = _choice("support[0]", support[0], SUPPORTS)
        support = (kind, _real_number("support[1]", support[1]))
    checked = dict(
        convention=convention, recentre=bool(recentre), numerator=numerator, denominator=denominator,
        epsilon=epsilon, support=support, scale=scale,
    )
    if not _frameworks.tracing():  # traced code calls no native function here; the plan checks the same
        _native.check_region_options(
            convention, bool(recentre), numerator, denominator, epsilon,
            None if support is None else support[0], 0.0 if support is None else support[1], scale,
        )
    return checked



class RegionKernel(_kernels.Declared):
    """One region reassembly: layout, region side ``P``, weights and the normalisation."""

    OP = "reassemble_regions"
    PARAMS = ("layout", "side", "convention", "recentre", "numerator", "denominator", "epsilon", "support",
              "threads", "reference", "scale")
    WEIGHTED = True

    def __init__(
        self,
        layout: str,
        side: int,
        weights: Any = "ones",
        *,
        convention: str,
        recentre: bool,
        numerator: str,
        denominator: str,
        epsilon: float,
        support: Optional[Tuple[str, float]],
        threads: int,
        reference: bool = False,
        scale: float = 1.0,
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be 'tf' or 'torch', not {layout!r}")
        self.layout, self.side, self.weights = layout, side, weights
        self.convention, self.recentre, self.numerator, self.denominator = convention, recentre, numerator, denominator
        self.epsilon, self.scale, self.threads = float(epsilon), float(scale), threads
        self.support = None if support is None else [str(support[0]), float(support[1])]
        self.reference = reference

    @property
    def options(self) -> dict:
        """The normalisation options as the native plan takes them."""
        return dict(
            convention=self.convention, recentre=self.recentre, numerator=self.numerator,
            denominator=self.denominator, epsilon=self.epsilon,
            support=None if self.support is None else self.support[0],
            threshold_value=0.0 if self.support is None else self.support[1], threads=self.threads,
            scale=self.scale,
        )

    # --- layouts ------------------------------------------------------------------------------

    @property
    def batchable(self) -> bool:
        """Each sample's region depends on that sample alone (no re-centring over the batch, no
        normalisation by the whole batch's maximum): a mapped axis folds into the batch."""
        return (not self.recentre and self.denominator != "regularised"
                and (self.support is None or self.support[0] == "above"))

    def dims(self, patches_shape: Tuple[Any, ...]) -> Tuple[Any, Any, Any]:
        """``(B, C, N)`` of a patches shape in this layout."""
        if len(patches_shape) != 4:
            expected = "(B, N, N, C)" if self.layout == "tf" else "(B, C, N, N)"
            raise ValueError(f"patches have shape {tuple(patches_shape)}; expected {expected}")
        if self.layout == "tf":
            b, n, m, c = patches_shape
        else:
            b, c, n, m = patches_shape
        if n is not None and m is not None and int(n) != int(m):
            raise ValueError(f"patches have shape {tuple(patches_shape)}: the patches must be square")
        return b, c, n

    def bcnn(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if self.layout == "tf" else x)

    def from_bcnn(self, dx: np.ndarray) -> np.ndarray:
        return dx.transpose(0, 2, 3, 1) if self.layout == "tf" else dx

    def pairs(self, positions: np.ndarray, b: int, c: int) -> np.ndarray:
        """``(B·C, 2)`` ``[x, y]`` in sample-major order."""
        p = as_offsets(positions, "positions")
        if self.layout == "tf":
            if p.shape != (b, 1, 2, c):
                raise ValueError(f"positions have shape {p.shape}; expected ({b}, 1, 2, {c}) [x, y] in channel format")
            return _kernels.Extract.flat_offsets(p)
        return row_pairs(p, b, c)

    def from_pairs(self, d: np.ndarray, like: np.ndarray) -> np.ndarray:
        return _kernels.Extract.channel_format(d, like) if self.layout == "tf" else d.reshape(like.shape)

    # --- the kernel ---------------------------------------------------------------------------

    def plan(self, shape: Tuple[int, ...], positions: Any) -> Any:
        """The native plan for patches of ``shape`` (this layout) at ``positions``."""
        b, c, n = (int(v) for v in self.dims(shape))
        return _native.Region(self.pairs(np.asarray(positions), b, c), b, n, self.side, **self.options)

    def weight_array(self, n: int) -> np.ndarray:
        return weights_array(self.weights, n)

    #: The weights as a tensor already on the device (the torch operators set it for a call on
    #: CUDA tensors), read there as they are; None: ``weights``, copied in from the host.
    device_weights: Any = None

    def device_weight_array(self, backend: Any, like: Any, n: int) -> Any:
        """The weights on ``like``'s GPU as the device kernels read them: float32 ``(1|B, 1|C,
        N, N)``, C-contiguous (:func:`weights_array`'s shapes, laid out on the device)."""
        w = self.device_weights
        if w is None:
            return backend.device_from_host(self.weight_array(n), like)
        shape = tuple(int(d) for d in w.shape)
        shape = {2: (1, 1) + shape, 3: shape[:1] + (1,) + shape[1:]}.get(len(shape), shape)
        if len(shape) != 4 or shape[-2:] != (n, n):
            raise ValueError(
                f"weights have shape {tuple(w.shape)}; expected ({n}, {n}), (B, {n}, {n}) or (1|B, 1|C, {n}, {n})"
            )
        return backend.device_prepare(w, "float32", shape=shape)

    def out_shape(self, patches_shape: Tuple[Any, ...], positions: Any = None, exact: bool = False) -> Tuple[Any, ...]:
        b = self.dims(patches_shape)[0]  # as given: None, an int, or a symbolic size (torch.compile)
        return (b, self.side, self.side, 1) if self.layout == "tf" else (b, self.side, self.side)

    def out_dtype(self, x_dtype: Any) -> np.dtype:
        return compute_dtype(x_dtype, "patches")

    def forward(self, x: Any, positions: Any) -> np.ndarray:
        return self.forward_weighted(x, positions, self.weights)

    def forward_weighted(self, x: Any, positions: Any, weights: Any) -> np.ndarray:
        """The regions with these ``weights`` (the kernel's own are ignored)."""
        x = np.asarray(x)
        xc = self.bcnn(as_compute(x, "patches"))
        out = self.plan(x.shape, positions).reassemble(xc, weights_array(weights, xc.shape[-1]), self.reference)
        return out[..., np.newaxis] if self.layout == "tf" else out

    @property
    def on_device(self) -> bool:
        """Whether the device kernels serve this call (the reference runs on the CPU only)."""
        return not self.reference

    def device_twin(self) -> Optional["TorchLayoutTwin"]:
        """How a compiled program runs this kernel on the device kernels, which read the torch
        layout: None where they take it as it is, else its torch-layout twin with the
        transposes around it (JAX's custom calls compiled for a GPU, ``_frameworks.jax_adapter``)."""
        return TorchLayoutTwin(self) if self.layout == "tf" else None

    def device_inputs(self, backend: Any, x: Any, positions: Any) -> Tuple[Any, Any, Any, Any, bool]:
        """What the device entries take: the native plan (from the positions' values on the
        host, or their shape where the device plans from them), the patches ``(B, C, N, N)``
        and the weights on the GPU, the positions for the device (or None), and whether they
        are in TensorFlow's layout."""
        planned, on_device = _frameworks.positions_for_device(positions)
        plan = self.plan(tuple(x.shape), planned)
        n = int(self.dims(tuple(x.shape))[2])
        tf = self.layout == "tf"
        xc = backend.device_prepare(x, compute_name(x.dtype), (0, 3, 1, 2) if tf else None)
        return plan, xc, self.device_weight_array(backend, x, n), on_device, tf

    def forward_device(self, backend: Any, x: Any, positions: Any) -> Any:
        """:meth:`forward` for patches on a GPU, the regions there."""
        plan, xc, w, on_device, tf = self.device_inputs(backend, x, positions)
        b = int(self.dims(tuple(x.shape))[0])
        out = backend.device_empty((b, self.side, self.side), compute_name(x.dtype), x)
        _arrays.device_call(plan, "reassemble_cuda", xc, w, out, backend.device_stream(x), on_device, tf)
        return backend.device_result(out, self.out_shape(tuple(x.shape), exact=True))

    def backward_device(
        self, backend: Any, x: Any, positions: Any, out: Any, cot: Any, want_x: bool, want_pos: bool
    ) -> Tuple[Any, Any]:
        """:meth:`backward` for arrays on a GPU, by the device kernels: the positions' cotangent
        in their own layout (PtychoPINN's ``(B, 1, 2, C)`` for TF's, rows for torch's)."""
        del out
        name = compute_name(x.dtype)
        plan, xc, w, on_device, tf = self.device_inputs(backend, x, positions)
        b, c, n = (int(v) for v in self.dims(tuple(x.shape)))
        cotc = backend.device_prepare(cot, name)
        dx = backend.device_empty((b, c, n, n), name, x) if want_x else None
        dpos = backend.device_empty(tuple(positions.shape), "float64", x) if want_pos else None
        _arrays.device_call(plan, "vjp_cuda", xc, w, cotc, dx, dpos, tf, backend.device_stream(x), on_device)
        return (
            None if dx is None else backend.device_finish(dx, x, (0, 2, 3, 1) if tf else None),
            None if dpos is None else backend.device_finish(dpos, positions),
        )

    def support_mask(self, x: Any, positions: Any, kind: str, value: float) -> np.ndarray:
        """The boolean support mask ``Σ w > threshold``, ``(B, P, P)``."""
        n = int(self.dims(np.shape(x))[2])
        return self.plan(np.shape(x), positions).support(self.weight_array(n), kind, float(value))

    def backward(
        self, x: Any, positions: Any, out: Any, cot: Any, want_x: bool = True, want_pos: bool = True
    ) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        dx, dpos, _ = self.backward_weighted(x, positions, self.weights, cot, want_x, want_pos, False, out)
        return dx, dpos

    def backward_weighted(
        self, x: Any, positions: Any, weights: Any, cot: Any, want_x: bool, want_pos: bool, want_w: bool,
        out: Any = None,
    ) -> Tuple[Optional[np.ndarray], Optional[np.ndarray], Optional[np.ndarray]]:
        """The cotangents of the patches, the positions and (``want_w``) the weights, each in its
        input's shape and dtype. ``out``: the forward's regions for these inputs (what autodiff
        keeps), which spare the native backward summing the numerators again."""
        x_in, p_in = np.asarray(x), np.asarray(positions)
        xc = self.bcnn(as_compute(x_in, "patches"))
        cot = np.asarray(cot).astype(xc.dtype, copy=False)
        b, p = xc.shape[0], self.side
        cot = cot.reshape(b, p, p)
        output = None if out is None else np.ascontiguousarray(np.asarray(out).astype(xc.dtype, copy=False).reshape(b, p, p))
        plan = self.plan(x_in.shape, p_in)
        w = weights_array(weights, xc.shape[-1])
        dx, dpos, dw = plan.vjp(xc, w, np.ascontiguousarray(cot), want_x, want_pos, want_w, self.reference, output)
        dx = None if dx is None else self.from_bcnn(dx)
        dpos = None if dpos is None else self.from_pairs(dpos, p_in)
        if dw is not None and not isinstance(weights, str):
            w_in = np.asarray(weights)
            dw = dw.reshape(w_in.shape).astype(w_in.dtype if w_in.dtype.kind == "f" else np.float32, copy=False)
        return _like_input(dx, x_in), _like_input(dpos, p_in), dw


class TorchLayoutTwin:
    """A TensorFlow-layout :class:`RegionKernel` as the device kernels run it: the same
    operation declared in the torch layout (the convention, re-centring and normalisation
    unchanged, so the same bits), with the transposes around it written in the framework's
    array namespace ``xp`` (inside a compiled program they are the compiler's own ops, on the
    device)."""

    def __init__(self, kernel: RegionKernel) -> None:
        twin = copy.copy(kernel)
        twin.layout = "torch"
        self.kernel = twin

    @staticmethod
    def inputs(xp: Any, x: Any, positions: Any) -> Tuple[Any, Any]:
        """Patches ``(B, N, N, C)`` -> ``(B, C, N, N)``; positions ``(B, 1, 2, C)`` -> ``(B, C, 2)``."""
        return xp.transpose(x, (0, 3, 1, 2)), xp.transpose(positions[:, 0], (0, 2, 1))

    @staticmethod
    def result_shape(shape: Tuple[Any, ...]) -> Tuple[Any, ...]:
        """The regions ``(B, P, P, 1)`` as the twin makes them, ``(B, P, P)``."""
        return tuple(shape[:3])

    @staticmethod
    def grads(xp: Any, dx: Any, dpos: Any) -> Tuple[Any, Any]:
        """The twin's cotangents back in the kernel's layouts (the inverse of :meth:`inputs`)."""
        return xp.transpose(dx, (0, 2, 3, 1)), xp.transpose(dpos, (0, 2, 1))[:, None]


class RegionSupport(RegionKernel):
    """The support mask ``Σ w > threshold`` of a region reassembly (the ``support`` option),
    ``(B, P, P)`` bool: what ``ptycho_torch.helper``'s functions return beside the regions. It
    depends on the positions and the weights only, and has no gradient."""

    OP = "region_support"

    def out_shape(self, patches_shape: Tuple[Any, ...], positions: Any = None, exact: bool = False) -> Tuple[Any, ...]:
        return (self.dims(patches_shape)[0], self.side, self.side)

    def out_dtype(self, x_dtype: Any) -> np.dtype:
        return np.dtype(bool)

    def forward(self, x: Any, positions: Any) -> np.ndarray:
        kind, value = self.support
        return self.support_mask(x, positions, kind, value)

    def forward_device(self, backend: Any, x: Any, positions: Any) -> Any:
        """:meth:`forward` for patches on a GPU: the mask there, from the weights' sums on the
        device (no array of the call read on the host)."""
        plan, xc, w, on_device, tf = self.device_inputs(backend, x, positions)
        b = int(self.dims(tuple(x.shape))[0])
        out = backend.device_empty((b, self.side, self.side), "bool", x)
        _arrays.device_call(plan, "support_cuda", xc, w, out, backend.device_stream(x), on_device, tf)
        return backend.device_result(out, self.out_shape(tuple(x.shape), exact=True))

    def backward_device(
        self, backend: Any, x: Any, positions: Any, out: Any, cot: Any, want_x: bool, want_pos: bool
    ) -> Tuple[Any, Any]:
        return None, None  # no gradient

    def backward_weighted(
        self, x: Any, positions: Any, weights: Any, cot: Any, want_x: bool, want_pos: bool, want_w: bool,
        out: Any = None,
    ) -> Tuple[Optional[np.ndarray], Optional[np.ndarray], Optional[np.ndarray]]:
        return None, None, None


class ExtractKernel(_kernels.Declared):
    """The inverse of a torch-layout region reassembly: each sample's region ``(B, 1, P, P)``
    (or ``(B, P, P)``) translated by each of its ``C`` positions ``(B, C, 1, 2)`` ``[x, y]`` (not
    negated, not re-centred) and cropped to its centre ``N×N``: ``(B, C, N, N)``
    (``ptycho_torch.helper.extract_channels_from_region``)."""

    OP = "extract_regions"
    PARAMS = ("patch_size", "channels", "convention", "threads")
    #: Each sample's patches come from its own region: a mapped axis folds into the batch.
    batchable = True

    def __init__(self, patch_size: int, channels: int, convention: str, threads: int) -> None:
        self.patch_size, self.channels, self.convention, self.threads = patch_size, channels, convention, threads

    def _images(self, regions: np.ndarray) -> np.ndarray:
        if regions.ndim == 4 and regions.shape[1] == 1:
            regions = regions[:, 0]
        if regions.ndim != 3 or regions.shape[1] != regions.shape[2]:
            raise ValueError(f"regions have shape {regions.shape}; expected (B, 1, P, P) or (B, P, P)")
        return regions

    def plan(self, images: np.ndarray, positions: Any) -> Any:
        return self.plan_for(images.shape, positions)

    def plan_for(self, images_shape: Tuple[int, ...], positions: Any) -> Any:
        """The native extraction for images ``(B, P, P)`` of ``images_shape``."""
        b, c = images_shape[0], self.channels
        return _native.Extraction(
            row_pairs(as_offsets(positions, "positions"), b, c), c, images_shape[-1], self.patch_size, self.threads,
            self.convention,
        )

    def out_shape(self, regions_shape: Tuple[Any, ...], positions: Any = None, exact: bool = False) -> Tuple[Any, ...]:
        return (regions_shape[0], self.channels, self.patch_size, self.patch_size)

    def out_dtype(self, x_dtype: Any) -> np.dtype:
        return compute_dtype(x_dtype, "regions")

    on_device = True

    def forward_device(self, backend: Any, regions: Any, positions: Any) -> Any:
        """:meth:`forward` for regions on a GPU: ``(B, C, N, N)`` there."""
        name = compute_name(regions.dtype)
        shape = tuple(regions.shape)
        b, p = shape[0], shape[-1]
        planned, on_device = _frameworks.positions_for_device(positions)
        plan = self.plan_for((b, p, p), planned)
        images = backend.device_prepare(regions, name, shape=(b, p, p))
        out_shape = (b, self.channels, self.patch_size, self.patch_size)
        out = backend.device_empty(out_shape, name, regions)
        _arrays.device_call(plan, "extract_cuda", images, out, backend.device_stream(regions), on_device, False)
        return backend.device_result(out, out_shape)

    def backward_device(
        self, backend: Any, regions: Any, positions: Any, out: Any, cot: Any, want_x: bool, want_pos: bool
    ) -> Tuple[Any, Any]:
        """:meth:`backward` for arrays on a GPU, by the device kernels."""
        del out
        name = compute_name(regions.dtype)
        shape = tuple(regions.shape)
        b, p = shape[0], shape[-1]
        planned, on_device = _frameworks.positions_for_device(positions)
        plan = self.plan_for((b, p, p), planned)
        images = backend.device_prepare(regions, name, shape=(b, p, p))
        cotc = backend.device_prepare(cot, name)
        dimg = backend.device_empty((b, p, p), name, regions) if want_x else None
        dpos = backend.device_empty((b * self.channels, 2), "float64", regions) if want_pos else None
        _arrays.device_call(
            plan, "vjp_cuda", images, cotc, dimg, dpos, False, backend.device_stream(regions), on_device
        )
        return (
            None if dimg is None else backend.device_finish(dimg, regions),
            None if dpos is None else backend.device_finish(dpos, positions),
        )

    def forward(self, regions: Any, positions: Any) -> np.ndarray:
        images = self._images(as_compute(regions, "regions"))
        out = self.plan(images, positions).extract(images)
        return out.reshape(images.shape[0], self.channels, self.patch_size, self.patch_size)

    def backward(
        self, regions: Any, positions: Any, out: Any, cot: Any, want_x: bool = True, want_pos: bool = True
    ) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        del out
        r_in, p_in = np.asarray(regions), np.asarray(positions)
        images = self._images(as_compute(r_in, "regions"))
        n = self.patch_size
        cot = np.ascontiguousarray(np.asarray(cot).astype(images.dtype, copy=False).reshape(-1, n, n))
        dimg, dflat = self.plan(images, p_in).vjp(images, cot, want_x, want_pos)
        dimg = None if dimg is None else dimg.reshape(r_in.shape)
        dflat = None if dflat is None else dflat.reshape(p_in.shape)
        return _like_input(dimg, r_in), _like_input(dflat, p_in)
