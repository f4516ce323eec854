"""Swap ptychostitch into an existing PtychoPINN installation, in one line.

::

    import ptychostitch.ptychopinn
    ptychostitch.ptychopinn.install()      # before or after `import ptycho.tf_helper`
    ...                                    # PtychoPINN code now stitches with ptychostitch
    ptychostitch.ptychopinn.uninstall()    # everything back as it was

``install()`` imports ``ptycho.tf_helper`` (or the module you name) and replaces its
``shift_and_sum``, ``reassemble_position``, ``shift_and_sum_old``,
``reassemble_position_old``, ``extract_patches_position`` and ``center_channels`` with ptychostitch's (all
differentiable under ``tf.GradientTape``, eagerly and in ``tf.function``), and the training
path's ``mk_reassemble_position_batched_real``, ``mk_reassemble_position_real`` and
``reassemble_patches`` (what ``ReassemblePatchesLayer`` calls: one region per sample at every
batch size, where PtychoPINN's own sums the whole batch onto one canvas from ``B·C ≥ 64`` on).
``install("ptycho_torch.reassembly")`` replaces its inference stitching,
``reassemble_single_channel`` and ``reassemble_multi_channel`` (same signatures and results, in
``O(S² + n·M²)`` memory where PtychoPINN's is ``O(n·S²)``; torch only, no TensorFlow), and the
classes ``VectorizedWeightedAccumulator`` and ``VectorizedBarycentricAccumulator`` (same
constructors, ``accumulate_batch`` and counters; PtychoPINN's bits, deterministic, patches at
the edge clipped rather than dropped unless ``ACCUMULATOR_EDGE = "ptychopinn"``).
``install("ptycho_torch.helper")`` replaces ``reassemble_patches_position_real``,
``reassemble_patches_position_real_probe`` and ``extract_channels_from_region`` (same signatures
and return values; a probe that requires grad gets its gradient through ``|P|²``). The replacements keep PtychoPINN's contract:
they return a ``tf.Tensor`` whatever they are given (PtychoPINN's callers call ``.numpy()`` on
the result), and inside ``tf.function`` they run as a ``tf.numpy_function`` node, so PtychoPINN
code that traces them keeps working.

What it reaches:

* every call that looks the function up on the module at call time: ``tf_helper.f(...)``,
  ``hh.f(...)``, and calls inside ``tf_helper`` itself (its ``reassemble_position`` calling
  ``shift_and_sum``);
* names already bound by ``from ptycho.tf_helper import f`` in modules imported *before*
  ``install()``: it finds every loaded module attribute that *is* the original function and
  rebinds it (``uninstall()`` restores each one).

What it cannot reach: references held elsewhere than in a module's globals — a local variable,
a closure, a default argument, a ``functools.partial``, a dict of callbacks, a ``tf.function``
that was already traced (retrace it, or install before building the model) — and modules that
import the names *after* ``uninstall()``.
"""

from __future__ import annotations

import functools
import importlib
import math
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

import ptychostitch as _ps

__all__ = ["install", "uninstall", "installed", "FUNCTIONS", "TRAINING_FUNCTIONS", "TORCH_FUNCTIONS",
           "TORCH_REASSEMBLY_FUNCTIONS", "RegionReassembler", "VectorizedWeightedAccumulator",
           "VectorizedBarycentricAccumulator", "ACCUMULATOR_EDGE"]

#: The functions that are replaced.
FUNCTIONS = (
    "shift_and_sum",
    "reassemble_position",
    "shift_and_sum_old",
    "reassemble_position_old",
    "extract_patches_position",
    "center_channels",
)

#: The training path's functions that are replaced: what ``ReassemblePatchesLayer`` calls.
TRAINING_FUNCTIONS = (
    "mk_reassemble_position_batched_real",
    "mk_reassemble_position_real",
    "reassemble_patches",
)


def _tensor(out: Any) -> Any:
    tf = sys.modules.get("tensorflow")
    if tf is not None and not isinstance(out, (tf.Tensor, tf.Variable)):
        out = tf.convert_to_tensor(out)
    return out


def _padded_size() -> int:
    """PtychoPINN's ``params.get_padded_size()`` (its default region size)."""
    return int(importlib.import_module("ptycho.params").get_padded_size())


class RegionReassembler:
    """What ``mk_reassemble_position_batched_real`` (and ``mk_reassemble_position_real``)
    return once installed: PtychoPINN's position reassembler of ``(B, N, N, C)`` patches at
    ``(B, 1, 2, C)`` positions into ``(B, P, P, 1)`` regions, the channels of each sample
    translated by minus their positions (re-centred on the mean of all ``B·C``) and summed,
    **one region per sample at every batch size** (PtychoPINN's own batched function sums the
    whole batch onto one canvas from ``B·C ≥ 64`` on). Differentiable; real or complex."""

    __ptychostitch__ = True

    def __init__(self, positions: Any, padded_size: Any = None, **ignored: Any) -> None:
        self.positions = positions
        self.padded_size = padded_size

    def size(self) -> int:
        return int(self.padded_size) if self.padded_size is not None else _padded_size()

    def __call__(self, imgs: Any, **kwargs: Any) -> Any:
        size = kwargs.get("padded_size") or self.size()
        return _tensor(_ps.reassemble_regions(imgs, self.positions, size, layout="tf", weights="ones", denominator="one"))


def _reassembler_factory(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def make(input_positions: Any, batch_size: int = 64, **outer_kwargs: Any) -> RegionReassembler:
        del batch_size  # one region per sample whatever the batch: nothing is batched together
        return RegionReassembler(input_positions, **outer_kwargs)

    make.__ptychostitch__ = True  # type: ignore[attr-defined]
    return make


def _reassemble_patches(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def reassemble_patches(channels: Any, fn_reassemble_real: Any = None, average: bool = False,
                           batch_size: Any = None, N: Any = None, gridsize: Any = None, **kwargs: Any) -> Any:
        if not isinstance(fn_reassemble_real, RegionReassembler) or average or kwargs:
            if fn_reassemble_real is None:
                return original(channels, average=average, batch_size=batch_size, N=N, gridsize=gridsize, **kwargs)
            return original(channels, fn_reassemble_real, average, batch_size, N, gridsize, **kwargs)
        # One fused call: Σ_c T(x_c) / (Σ_c T(centre mask) + 0.001), real and imaginary parts alike.
        out = _tensor(_ps.reassemble_regions(channels, fn_reassemble_real.positions, fn_reassemble_real.size(),
                                             layout="tf", weights="center", epsilon=1e-3))
        if not out.dtype.is_complex:  # PtychoPINN returns complex64 for real channels too
            out = sys.modules["tensorflow"].cast(out, "complex64")
        return out

    reassemble_patches.__ptychostitch__ = True  # type: ignore[attr-defined]
    return reassemble_patches


def _torch_padded_size(data_config: Any, model_config: Any) -> int:
    # sys.modules, not importlib: torch.compile traces this (the module is loaded: it is installed).
    return int(sys.modules["ptycho_torch.helper"].get_padded_size(data_config, model_config))


def _torch_reassemble(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def reassemble_patches_position_real(inputs: Any, offsets_xy: Any, data_config: Any, model_config: Any,
                                         agg: bool = True, padded_size: Any = None, crop_size: Any = None,
                                         **kwargs: Any) -> Any:
        B, C_in, N, _ = inputs.shape
        if not agg or C_in != model_config.C_forward or not inputs.is_complex():
            return original(inputs, offsets_xy, data_config, model_config, agg=agg, padded_size=padded_size,
                            crop_size=crop_size, **kwargs)
        if crop_size is not None:
            # The crop path: centre crop, positions re-centred, Σ u / (Σ ones + 1e-9); the mask is returned, not applied.
            if crop_size <= 0 or crop_size > N:
                raise ValueError(f"crop_size must be in (0, {N}], got {crop_size}")
            start = N // 2 - crop_size // 2
            patches = inputs[..., start:start + crop_size, start:start + crop_size]
            if padded_size is None:
                flat = offsets_xy.detach().reshape(-1, 2)
                pad = math.ceil(float((flat - flat.mean(dim=0, keepdim=True)).abs().max().item()))
                padded_size = crop_size + 2 * (pad + pad % 2)
            P = int(padded_size)
            options = dict(recentre=True, numerator="sum", epsilon=1e-9)
            out = _ps.reassemble_regions(patches, offsets_xy, P, layout="torch", weights="ones", **options)
            mask = _ps._region_support(patches.detach(), offsets_xy.detach(), P, layout="torch", weights="ones",
                                       support=("above", 1e-6), **options)
            return out, mask, P
        P = int(padded_size) if padded_size is not None else _torch_padded_size(data_config, model_config)
        # The centre-mask path: (Σ u·v)·[Σ v > 1e-6] / (Σ v + 0.001), positions as given.
        support = ("above", 1e-6)
        out = _ps.reassemble_regions(inputs, offsets_xy, P, layout="torch", weights="center", numerator="weighted",
                                     support=support)
        mask = _ps._region_support(inputs.detach(), offsets_xy.detach(), P, layout="torch", weights="center",
                                   numerator="weighted", support=support)
        return out, mask, P

    reassemble_patches_position_real.__ptychostitch__ = True  # type: ignore[attr-defined]
    return reassemble_patches_position_real


def _probe_weights(probe: Any, B: int, C: int, N: int) -> Any:
    """``|P|²`` as a torch tensor of shape ``(N, N)``, ``(B, N, N)`` or ``(B|1, C|1, N, N)``,
    from the helper's probe layouts: ``(N, N)``, ``(B, N, N)`` or modes ``(B|1, C|1, modes, N, N)``
    (summed over the modes). Computed in torch, so a probe being learnt gets its gradient."""
    if probe.ndim == 5:
        if probe.shape[0] not in (1, B) or probe.shape[1] not in (1, C) or tuple(probe.shape[-2:]) != (N, N):
            raise ValueError(
                f"Probe batch/channel axes {tuple(probe.shape[:2])} cannot broadcast to object axes ({B}, {C})"
            )
        return (probe.abs() ** 2).sum(dim=2).float()
    if probe.ndim in (2, 3):
        return (probe.abs() ** 2).float()
    raise ValueError(
        f"Unsupported probe shape {tuple(probe.shape)} for probe-weighted reassembly. Accepted layouts: modes "
        "(B, C, P, N, N) or plain (N, N) / batch-broadcast (B, N, N)."
    )


def _torch_reassemble_probe(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def reassemble_patches_position_real_probe(inputs: Any, offsets_xy: Any, data_config: Any, model_config: Any,
                                               probe: Any = None, use_probe_weights: bool = True, agg: bool = True,
                                               padded_size: Any = None, **kwargs: Any) -> Any:
        B, C_in, N, _ = inputs.shape
        if not agg or C_in != model_config.C_forward or not inputs.is_complex():
            return original(inputs, offsets_xy, data_config, model_config, probe=probe,
                            use_probe_weights=use_probe_weights, agg=agg, padded_size=padded_size, **kwargs)
        P = int(padded_size) if padded_size is not None else _torch_padded_size(data_config, model_config)
        if use_probe_weights:
            if probe is None:
                raise ValueError("Probe must be provided if use_probe_weights is True")
            weights, support = _probe_weights(probe, B, C_in, N), ("above_max_fraction", 1e-6)
        else:
            weights, support = "center", ("above", 1e-6)
        options = dict(numerator="weighted", denominator="clamp", epsilon=1e-12)
        out = _ps.reassemble_regions(inputs, offsets_xy, P, layout="torch", weights=weights, support=support, **options)
        constant = weights if isinstance(weights, str) else weights.detach()
        mask = _ps._region_support(inputs.detach(), offsets_xy.detach(), P, layout="torch", weights=constant,
                                   support=support, **options)
        return out, mask, P

    reassemble_patches_position_real_probe.__ptychostitch__ = True  # type: ignore[attr-defined]
    return reassemble_patches_position_real_probe


def _torch_extract(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def extract_channels_from_region(inputs: Any, offsets_xy: Any, data_config: Any, model_config: Any,
                                     jitter_amt: float = 0.0) -> Any:
        M = _torch_padded_size(data_config, model_config)
        if jitter_amt > 0 or inputs.dim() != 4 or inputs.shape[1] != 1 or inputs.shape[-1] != M \
                or (M - data_config.N) % 2 or not inputs.is_complex():
            return original(inputs, offsets_xy, data_config, model_config, jitter_amt)
        return _ps.extract_regions(inputs, offsets_xy, data_config.N)

    extract_channels_from_region.__ptychostitch__ = True  # type: ignore[attr-defined]
    return extract_channels_from_region


def _translated_sums(tiles: Any, weights: Any, offsets: Any, pad: int) -> Tuple[Any, Any]:
    """PtychoPINN's inference stitching stage (``ptycho_torch.reassembly``): ``tiles``
    ``(K, C, M, M)`` each padded by ``pad`` on every side, translated by ``offsets`` ``(K, C, 2)``
    ``[x, y]`` (its torch ``Translation``) and summed over ``K``, and the same for ``weights`` (the
    counts): ``(C, S, S)`` twice, ``S = M + 2·pad``. One region reassembly per channel with the
    ``K`` tiles as its patches: ``O(C·S² + K·C·M²)`` memory, where PtychoPINN pads every tile to
    the whole canvas first (``K·C·S²``)."""
    k, c, m, _ = tiles.shape
    # The operation's torch layout negates its positions (the helper's convention); this stage
    # translates by +offsets.
    positions = (-offsets).transpose(0, 1).reshape(c, k, 1, 2)
    options = dict(layout="torch", weights="ones", numerator="sum", denominator="one", recentre=False)
    size = m + 2 * int(pad)
    image = _ps.reassemble_regions(tiles.transpose(0, 1), positions, size, **options)
    counts = _ps.reassemble_regions(weights.transpose(0, 1), positions, size, **options)
    return image, counts


def _pad_of(max_offset: Any) -> int:
    """PtychoPINN's ``torch.ceil(max_offset).int()``."""
    import torch

    return int(torch.ceil(torch.as_tensor(max_offset)).item())


def _torch_single_channel(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def reassemble_single_channel(im_tensor: Any, com: Any, max_offset: Any, global_coords: Any, data_config: Any,
                                  middle: int = 10) -> Any:
        import torch

        N, M = int(data_config.N), int(middle)
        tiles = im_tensor[:, :, N // 2 - M // 2:N // 2 + M // 2, N // 2 - M // 2:N // 2 + M // 2]
        b, c = int(tiles.shape[0]), int(tiles.shape[1])
        adjusted = global_coords.float().reshape(b, c, 2) - com.reshape(1, 1, 2)
        # PtychoPINN's counts are translated ``ones_like`` the patches: complex where they are.
        image, counts = _translated_sums(tiles, torch.ones_like(tiles), adjusted, _pad_of(max_offset))
        return (image[0], counts[0]) if c == 1 else (image, counts)

    reassemble_single_channel.__ptychostitch__ = True  # type: ignore[attr-defined]
    return reassemble_single_channel


def _torch_multi_channel(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def reassemble_multi_channel(im_tensor: Any, com: Any, max_offset: Any, relative_coords: Any, coord_centers: Any,
                                 data_config: Any, model_config: Any, middle: int = 10) -> Any:
        # Each solution region first, by the helper as it stands (ptychostitch's where installed).
        helper = importlib.import_module("ptycho_torch.helper")
        regions, mask, size = helper.reassemble_patches_position_real(
            im_tensor, relative_coords, data_config, model_config, agg=True
        )
        M, half = int(middle), int(size) // 2
        window = (slice(None), slice(half - M // 2, half + M // 2), slice(half - M // 2, half + M // 2))
        tiles, counts = regions[window], mask.float()[window]
        b = int(tiles.shape[0])
        adjusted = (coord_centers - com.reshape(1, 1, 2)).reshape(b, 1, 2)
        return _translated_sums(tiles[:, None], counts[:, None], adjusted, _pad_of(max_offset))

    reassemble_multi_channel.__ptychostitch__ = True  # type: ignore[attr-defined]
    return reassemble_multi_channel


#: What the accumulators do with a patch that is partly beyond the canvas: ``"clip"`` (keep
#: what lands on it) or ``"ptychopinn"`` (PtychoPINN's bounds check: drop the whole patch,
#: and one pixel early). Set before constructing an accumulator, or pass ``edge=``.
ACCUMULATOR_EDGE = "clip"


class _Accumulator:
    """What both accumulators share: PtychoPINN's constructor, its patch counters, and the
    splat."""

    def __init__(self, canvas_shape: Tuple[int, int], device: Any, *, edge: Optional[str] = None) -> None:
        self.canvas_shape = canvas_shape
        self.device = device
        self.edge = ACCUMULATOR_EDGE if edge is None else edge
        if self.edge not in ("clip", "ptychopinn"):
            raise ValueError(f"edge={self.edge!r}; expected \"clip\" (keep what lands on the canvas) or "
                             "\"ptychopinn\" (PtychoPINN's bounds check: drop the patch)")
        self.accepted_patches = 0
        self.total_patches = 0
        self.clipped_patches = 0

    @property
    def patches_accepted(self) -> int:
        """Patches that added something to the canvas."""
        return self.accepted_patches

    @property
    def patches_total(self) -> int:
        """Patches given."""
        return self.total_patches

    @property
    def patches_clipped(self) -> int:
        """Accepted patches that lost terms beyond the canvas's edge (``edge="clip"`` only)."""
        return self.clipped_patches

    def _splat(self, canvas: Any, weights: Any, patches: Any, positions_px: Any, patch_weight: Any,
               patch_size: int) -> None:
        import warnings

        shape = tuple(int(d) for d in canvas.shape)
        if shape != tuple(int(d) for d in self.canvas_shape):
            raise ValueError(f"canvas has shape {shape}; this accumulator's canvas_shape is {tuple(self.canvas_shape)}")
        if tuple(patches.shape[-2:]) != (int(patch_size), int(patch_size)):
            raise ValueError(f"patches have shape {tuple(patches.shape)}; expected (N, {patch_size}, {patch_size}) "
                             f"for patch_size={patch_size}")
        n = int(patches.shape[0])
        self.total_patches += n
        placed = _ps.splat(canvas, weights, patches, positions_px, patch_weight, edge=self.edge)
        self.accepted_patches += placed.accepted
        self.clipped_patches += placed.clipped
        if placed.accepted < n:
            warnings.warn(
                f"{type(self).__name__}.accumulate_batch: {n - placed.accepted}/{n} patch(es) added nothing "
                f"(canvas_shape={tuple(self.canvas_shape)}, patch_size={patch_size}, edge={self.edge!r}): "
                + ("wholly beyond the canvas" if self.edge == "clip" else "PtychoPINN's bounds check dropped them"),
                stacklevel=3,
            )


class VectorizedBarycentricAccumulator(_Accumulator):
    """ptychostitch's ``ptycho_torch.reassembly.VectorizedBarycentricAccumulator``: the same
    constructor and ``accumulate_batch``, PtychoPINN's bits (:func:`ptychostitch.splat`),
    deterministic on every device, no index tensors; patches partly beyond the canvas keep
    what lands on it unless ``edge="ptychopinn"``; counters as the weighted one has."""

    def accumulate_batch(self, canvas: Any, canvas_counts: Any, patches: Any, positions_px: Any,
                         patch_size: int) -> None:
        self._splat(canvas, canvas_counts, patches, positions_px, None, patch_size)


class VectorizedWeightedAccumulator(_Accumulator):
    """ptychostitch's ``ptycho_torch.reassembly.VectorizedWeightedAccumulator``: the same
    constructor, ``accumulate_batch`` and counters, PtychoPINN's bits
    (:func:`ptychostitch.splat` with the probe intensity as the patch weight), deterministic
    on every device; patches partly beyond the canvas keep what lands on it unless
    ``edge="ptychopinn"``, and a patch that adds nothing is warned about in both modes."""

    def accumulate_batch(self, canvas: Any, canvas_weights: Any, patches: Any, positions_px: Any,
                         probe_mag_sq: Any, patch_size: int, uniform_weighting: bool = False) -> None:
        import torch

        if uniform_weighting:
            h, w = int(patches.shape[-2]), int(patches.shape[-1])
            probe_mag_sq = torch.ones((h, w), device=getattr(probe_mag_sq, "device", "cpu"))
        self._splat(canvas, canvas_weights, patches, positions_px, probe_mag_sq, patch_size)


def _replacing(cls: type) -> Callable[[Any], Any]:
    def make(original: Any) -> Any:
        return cls

    return make


#: The functions of ``ptycho_torch.reassembly`` that are replaced: its inference stitching.
TORCH_REASSEMBLY_FUNCTIONS = (
    "reassemble_single_channel",
    "reassemble_multi_channel",
    "VectorizedWeightedAccumulator",
    "VectorizedBarycentricAccumulator",
)

#: The functions of ``ptycho_torch.helper`` that are replaced.
TORCH_FUNCTIONS = (
    "reassemble_patches_position_real",
    "reassemble_patches_position_real_probe",
    "extract_channels_from_region",
)

# Each replaceable name and what makes its replacement from the original.
_FACTORIES: Dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]] = {
    **{name: (lambda name: lambda original: _as_tensor(getattr(_ps, name)))(name) for name in FUNCTIONS},
    "mk_reassemble_position_batched_real": _reassembler_factory,
    "mk_reassemble_position_real": _reassembler_factory,
    "reassemble_patches": _reassemble_patches,
    "reassemble_patches_position_real": _torch_reassemble,
    "reassemble_patches_position_real_probe": _torch_reassemble_probe,
    "extract_channels_from_region": _torch_extract,
    "reassemble_single_channel": _torch_single_channel,
    "reassemble_multi_channel": _torch_multi_channel,
    "VectorizedWeightedAccumulator": _replacing(VectorizedWeightedAccumulator),
    "VectorizedBarycentricAccumulator": _replacing(VectorizedBarycentricAccumulator),
}

# The modules installed, in order.
_modules: List[str] = []

# (module, attribute name, original value), in the order they were replaced.
_replaced: List[Tuple[Any, str, Any]] = []


def _as_tensor(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` returning a ``tf.Tensor`` whatever it is given, as PtychoPINN's functions do."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return _tensor(fn(*args, **kwargs))

    wrapper.__ptychostitch__ = True  # type: ignore[attr-defined]
    return wrapper


def installed(module: Any = None) -> bool:
    """True while replacements are in place (in ``module``, when named)."""
    return bool(_replaced) if module is None else module in _modules


def install(module: str = "ptycho.tf_helper") -> None:
    """Replaces ``module``'s reassembly functions (and every loaded alias of them).

    ``"ptycho.tf_helper"`` (the default): the inference functions (``FUNCTIONS``) and the
    training path's (``TRAINING_FUNCTIONS``); ``"ptycho_torch.helper"``: ``TORCH_FUNCTIONS``;
    ``"ptycho_torch.reassembly"``: ``TORCH_REASSEMBLY_FUNCTIONS`` (its inference stitching).
    Installing a module twice is a no-op; ``uninstall()`` undoes every module.
    """
    if module in _modules:
        return
    target = importlib.import_module(module)
    originals: Dict[str, Any] = {name: getattr(target, name) for name in _FACTORIES if hasattr(target, name)}
    if not originals:
        raise AttributeError(f"{module} has none of {', '.join(_FACTORIES)}")
    replacements = {name: _FACTORIES[name](fn) for name, fn in originals.items()}
    by_identity = {id(fn): name for name, fn in originals.items()}
    found = []
    for mod in list(sys.modules.values()):
        try:
            namespace = getattr(mod, "__dict__", None)
            if not isinstance(namespace, dict) or mod is _ps:
                continue
            items = list(namespace.items())
        except Exception:  # a module that will not show its namespace holds no alias we can rebind
            continue
        for attr, value in items:
            name = by_identity.get(id(value))
            if name is not None and value is originals[name]:
                found.append((mod, attr, value, replacements[name]))
    # Every target found first, then all replaced: an error while scanning leaves nothing half-done.
    for mod, attr, value, replacement in found:
        _replaced.append((mod, attr, value))
        setattr(mod, attr, replacement)
    _modules.append(module)


def uninstall() -> None:
    """Puts every replaced function back, in every installed module."""
    while _replaced:
        mod, attr, original = _replaced.pop()
        setattr(mod, attr, original)
    _modules.clear()
