"""ptychostitch: PtychoPINN-exact patch reassembly ("shift-and-sum"), in Rust.

Drop-in replacements for ``ptycho.tf_helper``'s reassembly functions::

    from ptychostitch import reassemble_position      # instead of ptycho.tf_helper
    canvas = reassemble_position(obj_tensor, global_offsets, M=20)

The results equal PtychoPINN's ``shift_and_sum_old`` / ``reassemble_position_old`` bit for bit,
and its batched functions to float32 rounding.

Conventions
-----------
* Offsets are ``[x, y]`` in pixels: **x is the column** (second array axis), **y is the row**
  (first array axis). A positive x offset moves patch content to larger column indices.
* Offsets are re-centred on their mean, so adding a constant to all of them changes nothing.
* Patches are ``(n, N, N, 1)`` or ``(n, N, N)``; offsets ``(n, 1, 1, 2)`` or ``(n, 2)``.
* ``M`` keeps the centre ``2*(M//2)`` pixels of each patch (an odd ``M`` keeps ``M - 1``,
  as PtychoPINN does). ``2 <= M <= N``.
* The output is ``(S, S, 1)`` with ``S = 2*(M//2) + 2*p``, ``p`` the (even) padding that holds
  every patch; no patch is ever dropped.

Input handling
--------------
C-contiguous (or any strided) ``complex64`` arrays are used in place, without a copy.
``complex128`` is converted to ``complex64`` once; ``float32`` / ``float64`` patches are
computed as real ``float32`` and return ``float32``. Anything ``numpy.asarray`` accepts works,
TensorFlow eager tensors included. Other dtypes raise ``TypeError``; bad shapes and values
raise ``ValueError`` with a message naming the argument. The GIL is released while the work
runs; ``threads=`` limits the worker threads (default: all cores).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from . import _native

__all__ = [
    "Plan",
    "reassemble_position",
    "reassemble_position_old",
    "shift_and_sum",
    "shift_and_sum_old",
]
__version__: str = _native.__version__

_COMPLEX = (np.complex64, np.complex128)
_REAL = (np.float32, np.float64)


def _patches(obj_tensor: Any) -> np.ndarray:
    """The patches as complex64 or float32, converting at most once."""
    a = np.asarray(obj_tensor)
    if a.dtype == np.complex64 or a.dtype == np.float32:
        return a
    if a.dtype in _COMPLEX:
        return a.astype(np.complex64)
    if a.dtype in _REAL:
        return a.astype(np.float32)
    raise TypeError(
        f"obj_tensor has dtype {a.dtype}; expected complex64, complex128, float32 or float64 patches"
    )


def _offsets(global_offsets: Any) -> np.ndarray:
    """The offsets as float64 ([x, y] on the last axis)."""
    a = np.asarray(global_offsets)
    if a.dtype.kind not in "fiu":
        raise TypeError(
            f"global_offsets has dtype {a.dtype}; expected real [x, y] pixel offsets (float64, float32 or int)"
        )
    return a.astype(np.float64, copy=False)


def _threads(threads: Optional[int]) -> int:
    if threads is None:
        return 0
    if int(threads) < 1:
        raise ValueError(f"threads must be a positive integer or None (all cores), not {threads!r}")
    return int(threads)


def _crop(M: Any) -> int:
    if isinstance(M, (bool, np.bool_)) or not isinstance(M, (int, np.integer)):
        raise TypeError(f"M must be an integer, not {type(M).__name__}")
    return int(M)


def _stitch(obj_tensor: Any, global_offsets: Any, M: Any, op: str, reference: bool, threads: Optional[int]) -> np.ndarray:
    out = _native.stitch(
        _patches(obj_tensor), _offsets(global_offsets), _crop(M), op, reference, _threads(threads)
    )
    return out[:, :, np.newaxis]


def shift_and_sum(obj_tensor: Any, global_offsets: Any, M: int = 10, chunk_size: int = 32, *, threads: Optional[int] = None) -> np.ndarray:
    """Sum of the cropped patches translated by their re-centred ``[x, y]`` offsets.

    Drop-in for PtychoPINN's ``shift_and_sum``. Returns ``(S, S, 1)`` complex64 (float32 for
    real patches), summed in patch order. ``chunk_size`` is accepted for compatibility and
    does not change the result (PtychoPINN's batching does not apply here).
    """
    del chunk_size
    return _stitch(obj_tensor, global_offsets, M, "shift_and_sum", False, threads)


def reassemble_position(obj_tensor: Any, global_offsets: Any, M: int = 10, chunk_size: int = 32, *, threads: Optional[int] = None) -> np.ndarray:
    """``shift_and_sum(patches) / (1e-9 + shift_and_sum(ones))``: the stitched object image.

    Drop-in for PtychoPINN's ``reassemble_position``; pixels no patch reaches are exactly 0.
    ``chunk_size`` is accepted for compatibility and does not change the result.
    """
    del chunk_size
    return _stitch(obj_tensor, global_offsets, M, "reassemble_position", False, threads)


def shift_and_sum_old(obj_tensor: Any, global_offsets: Any, M: int = 10) -> np.ndarray:
    """The reference implementation (PtychoPINN's ``shift_and_sum_old``): slow, the oracle."""
    return _stitch(obj_tensor, global_offsets, M, "shift_and_sum", True, 1)


def reassemble_position_old(obj_tensor: Any, global_offsets: Any, M: int = 10) -> np.ndarray:
    """The reference implementation (PtychoPINN's ``reassemble_position_old``): slow, the oracle."""
    return _stitch(obj_tensor, global_offsets, M, "reassemble_position", True, 1)


class Plan:
    """Positions fixed, patches changing: plan once, stitch every training step.

    ``Plan(global_offsets, patch_size, M=10)`` validates the ``[x, y]`` offsets and computes the
    canvas once; ``shift_and_sum(obj)`` / ``reassemble_position(obj)`` then give exactly the
    free functions' arrays. The weight canvas is computed on first use and cached.
    """

    __slots__ = ("_plan",)

    def __init__(self, global_offsets: Any, patch_size: int, M: int = 10, *, threads: Optional[int] = None) -> None:
        self._plan = _native.Plan(_offsets(global_offsets), int(patch_size), _crop(M), _threads(threads))

    @property
    def canvas_shape(self) -> Tuple[int, int, int]:
        """Output shape ``(S, S, 1)``."""
        side = self._plan.canvas_side
        return (side, side, 1)

    @property
    def pad(self) -> int:
        """Padding ``p`` on each side of the kept patch centre (always even)."""
        return self._plan.pad

    @property
    def center(self) -> Tuple[float, float]:
        """Mean offset ``(x, y)`` (float32) subtracted from every offset."""
        return self._plan.center

    @property
    def patch_size(self) -> int:
        """Patch side ``N`` the plan expects."""
        return self._plan.patch_size

    @property
    def weights(self) -> np.ndarray:
        """The ``(S, S, 1)`` float32 weight canvas ``shift_and_sum(ones)``."""
        return self._plan.weights()[:, :, np.newaxis]

    def shift_and_sum(self, obj: Any) -> np.ndarray:
        """``shift_and_sum`` of these patches on this plan's canvas."""
        return self._plan.run(_patches(obj), "shift_and_sum")[:, :, np.newaxis]

    def reassemble_position(self, obj: Any) -> np.ndarray:
        """``reassemble_position`` of these patches on this plan's canvas."""
        return self._plan.run(_patches(obj), "reassemble_position")[:, :, np.newaxis]

    def __len__(self) -> int:
        return self._plan.n

    def __repr__(self) -> str:
        side = self._plan.canvas_side
        return f"Plan(n={self._plan.n}, patch_size={self.patch_size}, canvas=({side}, {side}, 1), pad={self.pad})"
