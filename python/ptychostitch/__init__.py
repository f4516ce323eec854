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
* Offsets are cast to float32 first (PtychoPINN does the same), so a common offset changes
  nothing only up to that rounding: positions near 1e5 px keep about 0.01 px of resolution.
* Patches are ``(n, N, N, 1)`` or ``(n, N, N)``. Offsets have ``n`` leading and two values
  ``[x, y]`` after it: ``(n, 1, 1, 2)``, ``(n, 2)``, or ``(n, 1, 2, 1)`` as PtychoPINN's data
  container holds ``global_offsets`` — any ``(n, ...)`` whose trailing axes multiply to 2.
* ``M`` keeps the centre ``2*(M//2)`` pixels of each patch (an odd ``M`` keeps ``M - 1``,
  as PtychoPINN does). ``2 <= M <= N``.
* The output is ``(S, S, 1)`` with ``S = 2*(M//2) + 2*p``, ``p`` the (even) padding that holds
  every patch; no patch is ever dropped.

Input handling
--------------
C-contiguous (or any strided) ``complex64`` arrays are used in place, without a copy.
``complex128`` (and big-endian complex) is converted to ``complex64`` once; real patches
(float16/32/64, integers, bool) are computed as real ``float32`` and return ``float32``.
Anything ``numpy.asarray`` accepts works. Other dtypes raise ``TypeError``; bad shapes and
values raise ``ValueError`` with a message naming the argument. The GIL is released while the
work runs; ``threads=`` bounds the worker threads (``None`` or ``0``: all cores; a non-integer
is a ``TypeError``). Ctrl-C stops the slow ``_old`` functions within a fraction of a second.

Array types
-----------
torch CPU tensors and JAX CPU arrays are read through DLPack without a copy and give the same
type back. A ``tf.Tensor`` (or ``tf.Variable``) of patches gives a ``tf.Tensor`` back, so
PtychoPINN code that calls ``.numpy()`` on the result keeps working; anything else gives NumPy.
TensorFlow is never imported by this package: it is used only when the input already is one of
its tensors. Inside ``tf.function`` (graph mode) the work runs through ``tf.numpy_function``
with the known dtype and rank ``(S, S, 1)``. Gradients flow in TensorFlow, PyTorch and JAX (see
:func:`shift_and_sum`).
``ptychostitch.ptychopinn.install()`` swaps these functions into ``ptycho.tf_helper``.

On the GPU
----------
Patches in CUDA memory -- a torch CUDA tensor, a CuPy array, a JAX GPU array, an eager
TensorFlow GPU tensor -- are stitched on their GPU, read in place through DLPack, and the result
is the same framework's tensor on the same device, bit for bit the CPU result. torch and CuPy
work runs on the caller's current stream and returns without waiting, like their own
operations (the canvas is allocated by the framework); JAX and TensorFlow inputs are read on
the legacy default stream and the call waits for the result. Other dtypes are converted on the
device first (complex -> complex64, real -> float32). Without a usable GPU this raises
:class:`GpuUnavailable`; :func:`gpu_available` says why. The ``_old`` reference functions run on
the CPU only. Free functions build the GPU tables each call; a :class:`Plan` builds them once
per device.

Warnings
--------
A scan where one patch alone inflates the canvas, or whose positions span less than a pixel
(positions in metres), raises a :class:`ScanWarning` (``warnings.warn``); the result is still
computed as asked.
"""

from __future__ import annotations

import sys

# The wheel's console command (``ptychostitch._cli``) imports this package first: a Ctrl-C while
# NumPy and the extension load would print a KeyboardInterrupt traceback. For that command only,
# Ctrl-C during the import ends it with the binary's one line (the handler is put back below).
_console = bool(sys.argv) and str(sys.argv[0]).replace("\\", "/").rsplit("/", 1)[-1] in ("ptychostitch", "ptychostitch.exe")
if _console:
    import signal as _signal

    def _interrupted_while_starting(signum: int, frame: object) -> None:
        sys.stderr.write("error: interrupted; no output was changed that was not complete\n")
        sys.stderr.flush()
        import os as _os

        _os._exit(130)

    _previous_sigint = _signal.signal(_signal.SIGINT, _interrupted_while_starting)

import numbers
import operator
import warnings
from typing import Any, Callable, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from . import _arrays, _frameworks, _kernels, _native, _region

__all__ = [
    "GpuInfo",
    "GpuUnavailable",
    "Plan",
    "ScanWarning",
    "gpu_available",
    "reassemble_position",
    "reassemble_position_old",
    "shift_and_sum",
    "shift_and_sum_old",
    "extract_patches_position",
    "center_channels",
    "reassemble_regions",
    "extract_regions",
    "splat",
    "Placed",
]
__version__: str = _native.__version__

GpuUnavailable = _native.GpuUnavailable
GpuUnavailable.__module__ = __name__
GpuUnavailable.__doc__ = (
    "No GPU can be used here (no NVIDIA driver, no such device, no NVRTC, or a build without CUDA); "
    "a RuntimeError. The message says which."
)


def _nvidia_library_dirs() -> list:
    """The ``nvidia/*/lib`` folders of this environment: where pip puts the NVRTC that torch,
    JAX and CuPy install (``nvidia/cuda_nvrtc/lib`` for CUDA 12, ``nvidia/cu13/lib`` for 13),
    off the loader's path. The GPU backend looks there first (found when it first starts, not
    now: nothing is loaded at import)."""
    import os

    found = []
    for entry in sys.path:
        root = os.path.join(entry or ".", "nvidia")
        try:
            packages = sorted(os.listdir(root))
        except OSError:
            continue
        for package in packages:
            lib = os.path.join(root, package, "lib")
            if os.path.isdir(lib) and lib not in found:
                found.append(lib)
    return found


_native.add_library_dirs(_nvidia_library_dirs())


class GpuInfo(NamedTuple):
    """What :func:`gpu_available` found: a GPU's name, or why none can be used. True when one
    can be used."""

    available: bool
    device: Optional[str]
    reason: Optional[str]

    def __bool__(self) -> bool:
        return self.available


def gpu_available() -> GpuInfo:
    """Whether the CUDA backend can run here: NVIDIA driver, GPU 0 and NVRTC (loaded at run
    time). ``GpuInfo(True, "NVIDIA H200", None)`` or ``GpuInfo(False, None, "no CUDA driver
    (libcuda.so) on this machine")``."""
    return GpuInfo(*_native.gpu_available())


ScanWarning = _arrays.ScanWarning
ScanWarning.__module__ = __name__


# One dtype and offsets rule for every path (in-memory, Dask, autodiff): see _kernels.
_compute_dtype = _arrays.compute_dtype
_patches = _arrays.as_compute
_offsets = _arrays.as_offsets


def _integer(name: str, value: Any, what: str = "an integer") -> int:
    """An integer argument: Python's and NumPy's integers (anything with ``__index__``) pass;
    floats, bools and everything else are a TypeError naming the argument, as for every integer
    argument of this package."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be {what}, not {type(value).__name__}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be {what}, not {type(value).__name__}") from None


# The largest size or count an argument may name: far beyond any memory, inside every native
# integer type, so an out-of-range value is a ValueError naming the argument, never PyO3's
# OverflowError.
_LARGEST = 2**62


def _positive(name: str, value: Any) -> int:
    """A positive integer argument: TypeError for other types, ValueError for zero or less (or
    beyond any size)."""
    value = _integer(name, value, "a positive integer")
    if not 1 <= value <= _LARGEST:
        raise ValueError(f"{name} must be a positive integer (at most 2**62), not {value}")
    return value


def _threads(threads: Any) -> int:
    """``None`` or ``0``: all cores; a positive integer bounds the workers."""
    if threads is None:
        return 0
    threads = _integer("threads", threads, "an integer (0 or None: all cores)")
    if not 0 <= threads <= _LARGEST:
        raise ValueError(f"threads must be 0 (all cores) or a positive integer, not {threads}")
    return threads


def _crop(M: Any) -> int:
    M = _integer("M", M)
    if not -(2**63) <= M < 2**63:
        raise ValueError(f"`M` = {M} is out of range; expected 2 <= M <= N")
    return M


def _warn(texts: Sequence[str], stacklevel: int = 2) -> None:
    """Raises each plan warning as a ScanWarning, ``stacklevel`` frames up (to point at the
    caller of the public function)."""
    for text in texts:
        warnings.warn(text, ScanWarning, stacklevel=stacklevel)


# --- Running an operation: the one way, through the framework backends -----------------------

def _call(kernel: Any, inputs: Tuple[Any, ...], compute: Optional[Callable[..., np.ndarray]] = None,
          gpu: Optional[Callable[[Any], Any]] = None) -> Any:
    """Runs the operation ``kernel`` (``_kernels``, ``_region``) on ``inputs`` (patches first,
    then positions): through the autodiff of the framework that must differentiate it (a TF
    tensor, a torch tensor that requires grad, a JAX tracer), else on NumPy views of the inputs
    with the result in the patches' array type. ``compute`` replaces ``kernel.forward`` there
    (warnings pointed at the caller); ``gpu`` is the operation's device path for patches in
    CUDA memory, by default the kernel's ``forward_device`` (an operation without one goes
    through the host and back to the patches' device)."""
    owner = _frameworks.backend_of(inputs[0])
    if gpu is None and owner.device_ops and getattr(kernel, "on_device", False) and hasattr(kernel, "forward_device"):
        # The operation's device kernels, for patches in CUDA memory (the backends call `gpu`
        # only for those).
        def gpu(obj: Any) -> Any:
            with owner.device_scope(obj):
                return kernel.forward_device(owner, obj, inputs[1])
    backend = _frameworks.autodiff_for(*inputs)
    if backend is not None:
        return backend.apply(kernel, *inputs, gpu=gpu)
    return _frameworks.host_for(*inputs).run(kernel.forward if compute is None else compute, inputs, gpu)


_host = _frameworks.host


def _patch_side(obj: Any) -> int:
    """N of an ``(n, N, N[, 1])`` stack (the native layer checks the whole shape)."""
    shape = tuple(getattr(obj, "shape", ()))
    return int(shape[1]) if len(shape) >= 2 and shape[1] is not None else 1


def _run_on_gpu(plan: Any, obj: Any, op: str) -> Any:
    """Stitches patches held in CUDA memory on their GPU with the native `plan`; returns the
    ``(S, S, 1)`` canvas as the caller's framework tensor on the same device."""
    backend = _frameworks.backend_of(obj)
    try:
        return backend.run_on_device(plan, obj, op)
    except (MemoryError, RuntimeError) as error:
        hint = backend.memory_hint(error)
        if hint is None:
            raise
        raise MemoryError(hint) from error


def _stitch(
    obj_tensor: Any, global_offsets: Any, M: Any, op: str, reference: bool, threads: Any, canvas_side: Any = None
) -> Any:
    crop, workers = _crop(M), _threads(threads)
    side = None if canvas_side is None else _positive("canvas_side", canvas_side)

    def gpu(obj: Any) -> Any:
        if reference:
            raise TypeError(
                "the reference (_old) functions run on the CPU only: pass a host copy of the patches, "
                "or call shift_and_sum / reassemble_position, which give the same bits on the GPU"
            )
        plan = _native.Plan(_offsets(_host(global_offsets)), _patch_side(obj), crop, 0)
        _warn(plan.warnings, stacklevel=7)
        return _run_on_gpu(plan, obj, op)

    def compute(obj: Any, offsets: Any) -> np.ndarray:
        out, texts = _native.stitch(_patches(obj), _offsets(offsets), crop, op, reference, workers)
        _warn(texts, stacklevel=7)  # _warn ← compute ← run ← _call ← _stitch ← public ← caller
        return out[:, :, np.newaxis]

    kernel = _kernels.Reassembly(op, crop, workers, reference, _warn_from_callback, side)
    if reference and _frameworks.autodiff_for(obj_tensor, global_offsets) is not None:
        # The oracle differentiates on the host, CUDA tensors that require grad included (as it
        # did before the backends); without autodiff, `gpu` refuses device arrays.
        return _call(kernel, (obj_tensor, global_offsets), compute)
    return _call(kernel, (obj_tensor, global_offsets), compute, gpu)


def shift_and_sum(
    obj_tensor: Any, global_offsets: Any, M: int = 10, chunk_size: int = 32, *, threads: Optional[int] = None,
    canvas_side: Optional[int] = None,
) -> Any:
    """Sum of the cropped patches translated by their re-centred ``[x, y]`` offsets.

    Drop-in for PtychoPINN's ``shift_and_sum``. Returns ``(S, S, 1)`` complex64 (float32 for
    real patches), summed in patch order, as NumPy or as a ``tf.Tensor`` for TF input.
    ``chunk_size`` is accepted for compatibility and does not change the result.

    Differentiable with respect to the patches and the offsets in TensorFlow, PyTorch and JAX
    (see the README's "Gradients"); ``canvas_side`` is for JAX tracing over the offsets.
    """
    del chunk_size
    return _stitch(obj_tensor, global_offsets, M, "shift_and_sum", False, threads, canvas_side)


def reassemble_position(
    obj_tensor: Any, global_offsets: Any, M: int = 10, chunk_size: int = 32, *, threads: Optional[int] = None,
    canvas_side: Optional[int] = None,
) -> Any:
    """``shift_and_sum(patches) / (1e-9 + shift_and_sum(ones))``: the stitched object image.

    Drop-in for PtychoPINN's ``reassemble_position``; pixels no patch reaches are exactly 0.
    Complex pixels are divided as TensorFlow's complex division does: a NaN or infinite part
    makes the other part NaN. ``chunk_size`` is accepted and does not change the result.
    Differentiable like :func:`shift_and_sum`, through the quotient (the weights move with the
    offsets too).
    """
    del chunk_size
    return _stitch(obj_tensor, global_offsets, M, "reassemble_position", False, threads, canvas_side)


def shift_and_sum_old(obj_tensor: Any, global_offsets: Any, M: int = 10) -> Any:
    """The reference implementation (PtychoPINN's ``shift_and_sum_old``): slow, the oracle."""
    return _stitch(obj_tensor, global_offsets, M, "shift_and_sum", True, 1)


def reassemble_position_old(obj_tensor: Any, global_offsets: Any, M: int = 10) -> Any:
    """The reference implementation (PtychoPINN's ``reassemble_position_old``): slow, the oracle."""
    return _stitch(obj_tensor, global_offsets, M, "reassemble_position", True, 1)


def _warn_from_callback(texts: Sequence[str]) -> None:
    """Scan warnings raised from inside a framework's callback (no caller frame to point at)."""
    for text in texts:
        warnings.warn(text, ScanWarning, stacklevel=2)


def extract_patches_position(
    imgs: Any, offsets_xy: Any, jitter: Any = 0.0, N: Optional[int] = None, gridsize: Optional[int] = None,
    *, threads: Optional[int] = None,
) -> Any:
    """PtychoPINN's ``extract_patches_position``: patches cut from images at sub-pixel offsets.

    ``imgs`` ``(B, S, S, 1)`` (one image per solution region), ``offsets_xy`` ``(B, 1, 2, C)``
    ``[x, y]`` in PtychoPINN's channel format, ``C = gridsize**2``. Image ``b`` is translated by
    each of its offsets (bilinear, zeros outside; the offsets are not re-centred, not negated)
    and its centre ``N x N`` is kept: ``(B*C, N, N, 1)``, row ``b*C + c``, PtychoPINN's result
    bit for bit. ``N`` and ``gridsize`` default to PtychoPINN's global parameters when
    ``ptycho.params`` is loaded. Differentiable with respect to the images and the offsets in
    TensorFlow, PyTorch and JAX. A nonzero ``jitter`` (PtychoPINN's random training
    augmentation) is refused: add your own noise to the offsets. ``S = N`` and an odd
    ``S - N`` (where PtychoPINN returns an empty or wrongly sized array) raise ``ValueError``.
    """
    if isinstance(jitter, numbers.Number):
        if jitter != 0:
            raise ValueError(
                f"jitter={jitter}: PtychoPINN's random offset jitter is not implemented; add noise to offsets_xy "
                "yourself (jitter=0 is exact)"
            )
    elif not (isinstance(jitter, np.ndarray) and jitter.size == 1 and float(jitter) == 0.0):
        raise TypeError("jitter must be the number 0 (random offset jitter is not implemented)")
    if N is None:
        N = _kernels.ptychopinn_param("N")
        if N is None:
            raise TypeError("extract_patches_position needs N (PtychoPINN reads it from ptycho.params)")
    N = _integer("N", N)
    if not 1 <= N <= _LARGEST:
        raise ValueError(f"N must be a positive integer (at most 2**62), not {N}")
    off_shape = tuple(int(d) for d in getattr(offsets_xy, "shape", np.shape(offsets_xy)))
    img_shape = tuple(None if d is None else int(d) for d in getattr(imgs, "shape", np.shape(imgs)))
    if len(off_shape) != 4 or off_shape[1:3] != (1, 2):
        raise ValueError(f"offsets_xy has shape {off_shape}; expected (B, 1, 2, C) [x, y] in channel format")
    if len(img_shape) != 4 or img_shape[3] != 1:
        raise ValueError(f"imgs has shape {img_shape}; expected (B, S, S, 1)")
    per_image = off_shape[3]
    if gridsize is None:
        gridsize = _kernels.ptychopinn_param("gridsize")
    if gridsize is not None and _integer("gridsize", gridsize) ** 2 != per_image:
        raise ValueError(f"offsets_xy holds {per_image} offsets per image; gridsize={gridsize} needs {int(gridsize) ** 2}")
    if img_shape[0] is not None and img_shape[0] != off_shape[0]:
        raise ValueError(f"imgs has {img_shape[0]} images but offsets_xy has {off_shape[0]}")
    return _call(_kernels.Extract(N, per_image, _threads(threads)), (imgs, offsets_xy))


def center_channels(channels: Any, offsets_xy: Any, *, threads: Optional[int] = None) -> Any:
    """PtychoPINN's ``tf_helper.center_channels``: undoes the patches' offsets.

    ``channels`` ``(B, N, N, C)`` (complex or real), ``offsets_xy`` ``(B, 1, 2, C)`` ``[x, y]`` in
    PtychoPINN's channel format: channel ``c`` of sample ``b`` translated by minus its offset
    (bilinear, TensorFlow's arithmetic, zeros shifted in), in its own ``N×N`` frame:
    ``(B, N, N, C)``, PtychoPINN's result bit for bit. PtychoPINN calls it to centre the ground
    truth (``model.py``, ``loader.py``). Differentiable with respect to both inputs in
    TensorFlow, PyTorch and JAX. Complex offsets are read by their real part, as PtychoPINN
    does.
    """
    shape = tuple(None if d is None else int(d) for d in getattr(channels, "shape", np.shape(channels)))
    if len(shape) != 4 or (shape[1] is not None and shape[1] != shape[2]):
        raise ValueError(f"channels have shape {shape}; expected (B, N, N, C)")
    dtype = getattr(offsets_xy, "dtype", None)
    if "complex" in str(np.asarray(offsets_xy).dtype if dtype is None else dtype):
        offsets_xy = np.real(_host(offsets_xy))
    return _call(_kernels.CenterChannels(_threads(threads)), (channels, offsets_xy))


class Placed(NamedTuple):
    """What :func:`splat` did: the patches that added something to the canvas, and of those
    the ones that lost terms beyond its edge."""

    accepted: int
    clipped: int


def splat(
    canvas: Any,
    weights: Any,
    patches: Any,
    positions: Any,
    patch_weight: Any = None,
    *,
    edge: str = "clip",
    threads: Optional[int] = None,
    reference: bool = False,
) -> Placed:
    """PtychoPINN's torch inference accumulation (``ptycho_torch.reassembly``'s
    ``VectorizedWeightedAccumulator`` and ``VectorizedBarycentricAccumulator``), **in place**.

    ``patches`` ``(N, P, P)`` complex64, centred at ``positions`` ``(N, 2)`` ``[x, y]`` canvas
    pixels (x = column; read as float32, as PtychoPINN computes them), are spread bilinearly
    onto ``canvas`` ``(H, W)`` complex64, and their weights onto ``weights`` ``(H, W)``
    float32: the bilinear weight alone (barycentric, ``patch_weight=None``) or times
    ``patch_weight`` ``(P, P)`` (weighted: PtychoPINN's probe intensity ``|P|²``). The
    arithmetic and the order of the sums are PtychoPINN's, so the canvas holds its bits (on a
    GPU, where torch's ``scatter_add_`` order is not defined, PtychoPINN's own result varies by
    float32 rounding; ours does not). Normalise afterwards as PtychoPINN does
    (``canvas / (weights + 1e-12)``).

    ``edge="clip"`` keeps every term that lands on the canvas; ``edge="ptychopinn"`` applies
    PtychoPINN's bounds check, which drops a whole patch unless its top-left corner ``(c, r)``
    has ``c, r ≥ 0``, ``c + P + 1 < W`` and ``r + P + 1 < H`` (one pixel more than the patch
    needs). NaN or infinite positions are a ``ValueError`` either way.

    NumPy arrays are written in place; so are torch tensors (a CUDA canvas is computed on the
    host and copied back: deterministic, one round trip). Returns :class:`Placed`.
    """
    backend = _frameworks.backend_of(canvas)
    if _frameworks.backend_of(weights) is not backend:
        raise TypeError("canvas and weights must be arrays of one kind (both NumPy or both torch tensors)")
    if getattr(canvas, "device", None) != getattr(weights, "device", None):
        raise TypeError("canvas and weights must be on one device")
    (c, commit_c), (w, commit_w) = backend.writable(canvas), backend.writable(weights)
    patches = _frameworks.host_values(patches)
    positions = _frameworks.host_values(positions)
    patch_weight = None if patch_weight is None else _frameworks.host_values(patch_weight)
    placed = _splat_host(c, w, patches, positions, patch_weight, edge, threads, reference)
    commit_c()
    commit_w()
    return placed


def _splat_host(canvas: np.ndarray, weights: np.ndarray, patches: Any, positions: Any, patch_weight: Any,
                edge: str, threads: Optional[int], reference: bool) -> Placed:
    for name, a, dtype in (("canvas", canvas, np.complex64), ("weights", weights, np.float32)):
        if a.dtype != dtype:
            raise TypeError(f"{name} has dtype {a.dtype}; expected {np.dtype(dtype).name} (PtychoPINN's)")
        if not a.flags.writeable:
            raise ValueError(f"{name} is read-only; it is written in place")
    patches = np.asarray(patches)
    if patches.dtype != np.complex64:
        raise TypeError(f"patches have dtype {patches.dtype}; expected complex64, the canvas's")
    positions = _arrays.as_offsets(positions, "positions").astype(np.float32)
    if patch_weight is not None:
        patch_weight = _arrays.as_offsets(patch_weight, "patch_weight").astype(np.float32)
    if np.shares_memory(canvas, weights):
        raise ValueError("canvas and weights share memory; they must be two arrays")
    # (positions and patch_weight are float32 copies by now)
    if np.shares_memory(patches, canvas) or np.shares_memory(patches, weights):
        raise ValueError("patches share memory with the canvas or the weights, which are written in place")
    accepted, clipped = _native.splat(canvas, weights, patches, positions, patch_weight, edge,
                                      _threads(threads), bool(reference))
    return Placed(accepted, clipped)


def reassemble_regions(
    patches: Any,
    positions: Any,
    padded_size: int,
    *,
    layout: str = "tf",
    weights: Any = "center",
    convention: Optional[str] = None,
    recentre: Optional[bool] = None,
    numerator: str = "sum",
    denominator: str = "add",
    epsilon: float = 1e-3,
    support: Optional[Tuple[str, float]] = None,
    threads: Optional[int] = None,
    reference: bool = False,
    scale: Optional[float] = None,
) -> Any:
    """The training-path reassembly: one ``P×P`` region per sample, normalised by a weight.

    For sample ``b`` and region pixel ``p``, with ``u_c = T(x_bc)`` the ``c``-th patch
    zero-padded to ``P×P`` and translated by minus its position, and ``v_c = T(w_bc)`` its weight
    translated the same way::

        num = Σ_c u_c            (numerator="sum", TensorFlow)   or   Σ_c u_c·v_c  ("weighted", torch)
        den = Σ_c v_c
        out = num·[den > t] / g(den),   g = den + ε ("add") | max(den, ε) ("clamp") | 1 ("one")
                                         | s·den + ε ("affine") | s·den + ε·max(den) ("regularised")

    ``layout="tf"``: patches ``(B, N, N, C)``, positions ``(B, 1, 2, C)`` ``[x, y]`` → ``(B, P, P, 1)``
    (PtychoPINN's ``ReassemblePatchesLayer``, its default: re-centred positions, centre-mask
    weights, ``ε = 0.001``). ``layout="torch"``: ``(B, C, N, N)`` and ``(B, C, 1, 2)`` →
    ``(B, P, P)``. ``convention`` (``"tf"`` or ``"torch"``: whose translation arithmetic)
    defaults to the layout; ``recentre`` (subtract the float32 mean of all ``B·C`` positions)
    defaults to ``True`` for TF and ``False`` for torch. ``weights``: ``"center"`` (ones on the
    central ``N/2 × N/2``), ``"ones"``, or a real array ``(N, N)``, ``(B, N, N)`` or
    ``(1|B, 1|C, N, N)`` such as ``abs(probe)**2``. ``support``: ``("above", t)`` or
    ``("above_max_fraction", f)`` multiplies the numerator by the mask ``den > t`` (``f·max den``).
    ``denominator="regularised"`` with ``epsilon=α`` is the iterative codes' ``(1−α)·Σw + α·max Σw``
    (``scale`` defaults to ``1 − α``; ``scale=1, epsilon=δ`` gives PtychoShelves' ``Σw + δ·max``),
    the maximum taken over every sample's region; its gradient reaches the maximum's pixel.

    Differentiable with respect to the patches and the positions in TensorFlow (eager,
    ``tf.function``, Keras), PyTorch and JAX; with respect to the weights too where they are a
    torch tensor that requires grad (``abs(probe)**2`` of a probe being learnt). TensorFlow
    variables and JAX tracers as weights are refused (their gradient is not wired yet); other
    weights are constants. Memory is
    ``O(B·P² + B·C·N²)``; the result does not depend on ``threads``. ``reference=True`` runs the
    slow literal oracle (same bits).
    """
    side = _positive("padded_size", padded_size)
    if layout not in _region.LAYOUTS:
        raise ValueError(f"layout must be 'tf' or 'torch', not {layout!r}")
    checked = _region.options(
        layout, convention=convention, recentre=recentre, numerator=numerator, denominator=denominator,
        epsilon=epsilon, support=support, scale=scale,
    )
    kernel = _region.RegionKernel(layout, side, weights, threads=_threads(threads), reference=bool(reference), **checked)
    return _regions(kernel, patches, positions, weights)


def _regions(kernel: Any, patches: Any, positions: Any, weights: Any) -> Any:
    """A region kernel (the reassembly, its support mask) on these inputs: weights that are a
    framework's tensor go to that framework's weighted operator where it has one (torch: a
    learnt probe's gradient, and no host copy in compiled code), else they are constants."""
    kernel.dims(tuple(getattr(patches, "shape", np.shape(patches))))  # a clear error for a wrong rank
    if not isinstance(weights, str) and not isinstance(weights, np.ndarray):
        owner = _frameworks.backend_of(weights)
        if owner.apply_weighted is not None and (owner.learnt(weights) or owner.owns(patches)):
            return owner.apply_weighted(kernel, patches, positions, weights)
        if owner.learnt(weights):
            raise TypeError(
                f"weights that are being differentiated are supported with torch tensors only (requires_grad); "
                f"pass {owner.name} weights as constants (NumPy), or compute them in torch"
            )
        kernel.weights = _host(owner.readable(weights))
    return _call(kernel, (patches, positions))


def _region_support(
    patches: Any, positions: Any, padded_size: int, *, layout: str, weights: Any, support: Tuple[str, float],
    convention: Optional[str] = None, recentre: Optional[bool] = None, numerator: str = "sum",
    denominator: str = "add", epsilon: float = 1e-3, scale: Optional[float] = None,
) -> Any:
    """The support mask ``Σ w > t`` that ``reassemble_regions`` applies with these options,
    ``(B, P, P)`` bool, in the patches' array type (the torch helpers return it)."""
    checked = _region.options(layout, convention=convention, recentre=recentre, numerator=numerator,
                              denominator=denominator, epsilon=epsilon, support=support, scale=scale)
    kernel = _region.RegionSupport(layout, _positive("padded_size", padded_size), weights, threads=0, **checked)
    return _regions(kernel, patches, positions, weights)


def extract_regions(
    regions: Any, positions: Any, N: int, *, convention: str = "torch", threads: Optional[int] = None
) -> Any:
    """The patches cut back out of each sample's region (torch layout): region ``b``
    (``(B, 1, P, P)`` or ``(B, P, P)``) translated by each of its positions ``(B, C, 1, 2)``
    ``[x, y]`` (not negated, not re-centred; content moves by ``+position``) and cropped to its
    centre ``N×N`` (``(P − N)/2`` trimmed from each side, ``P − N`` even): ``(B, C, N, N)``,
    ``ptycho_torch.helper.extract_channels_from_region``. ``convention="tf"`` uses TensorFlow's
    arithmetic (the same as :func:`extract_patches_position`). Differentiable with respect to the
    regions and the positions in TensorFlow, PyTorch and JAX.
    """
    if convention not in ("tf", "torch"):
        raise ValueError(f"convention must be 'tf' or 'torch', not {convention!r}")
    shape = tuple(getattr(positions, "shape", np.shape(positions)))
    if len(shape) < 3 or shape[-1] != 2:
        raise ValueError(f"positions have shape {shape}; expected (B, C, 1, 2) or (B, C, 2) [x, y]")
    kernel = _region.ExtractKernel(_positive("N", N), int(shape[1]), convention, _threads(threads))
    return _call(kernel, (regions, positions))


class Plan:
    """Positions fixed, patches changing: plan once, stitch every training step.

    ``Plan(global_offsets, patch_size, M=10)`` validates the ``[x, y]`` offsets and computes the
    canvas once (and, on first GPU use, uploads its tables to that GPU); ``shift_and_sum(obj)`` / ``reassemble_position(obj)`` then give exactly the
    free functions' arrays (a ``tf.Tensor`` for TF input). The weight canvas is computed on
    first use and cached. The methods are differentiable with respect to the patches, like the
    free functions; the offsets are constants of the plan (offsets that require a gradient are
    refused: call the free functions for that).
    """

    __slots__ = ("_plan", "_offsets", "_crop", "_threads")

    def __init__(self, global_offsets: Any, patch_size: int, M: int = 10, *, threads: Optional[int] = None) -> None:
        if _frameworks.autodiff_for(global_offsets) not in (None, _frameworks.TENSORFLOW):
            raise TypeError(
                "a Plan fixes its offsets, so it cannot give their gradient: pass them detached (or as NumPy), "
                "or call reassemble_position / shift_and_sum for gradients with respect to the offsets"
            )
        self._offsets = _offsets(_host(global_offsets))
        self._crop, self._threads = _crop(M), _threads(threads)
        self._plan = _native.Plan(self._offsets, _positive("patch_size", patch_size), self._crop, self._threads)
        for text in self._plan.warnings:
            warnings.warn(text, ScanWarning, stacklevel=2)

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
        """Mean offset ``(x, y)`` (float32) subtracted from every offset: the canvas pixel
        ``(p + m/2, p + m/2)`` (row, column) shows object position ``(center_y, center_x)``."""
        return self._plan.center

    @property
    def patch_size(self) -> int:
        """Patch side ``N`` the plan expects."""
        return self._plan.patch_size

    @property
    def weights(self) -> np.ndarray:
        """The ``(S, S, 1)`` float32 weight canvas ``shift_and_sum(ones)``."""
        return self._plan.weights()[:, :, np.newaxis]

    def _run(self, obj: Any, op: str) -> Any:
        kernel = _kernels.Reassembly(op, self._crop, self._threads, fixed=self._plan)
        return _call(kernel, (obj, self._offsets), gpu=lambda o: _run_on_gpu(self._plan, o, op))

    def shift_and_sum(self, obj: Any) -> Any:
        """``shift_and_sum`` of these patches on this plan's canvas."""
        return self._run(obj, "shift_and_sum")

    def reassemble_position(self, obj: Any) -> Any:
        """``reassemble_position`` of these patches on this plan's canvas."""
        return self._run(obj, "reassemble_position")

    def __len__(self) -> int:
        return self._plan.n

    def __repr__(self) -> str:
        side = self._plan.canvas_side
        return f"Plan(n={self._plan.n}, patch_size={self.patch_size}, canvas=({side}, {side}, 1), pad={self.pad})"


# torch already loaded: its operators now, so that a first call inside torch.compile finds them.
_frameworks.register_operators(_kernels.DECLARED)

if _console:
    _signal.signal(_signal.SIGINT, _previous_sigint)
