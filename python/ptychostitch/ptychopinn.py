"""Swap ptychostitch into an existing PtychoPINN installation, in one line.

::

    import ptychostitch.ptychopinn
    ptychostitch.ptychopinn.install()      # before or after `import ptycho.tf_helper`
    ...                                    # PtychoPINN code now stitches with ptychostitch
    ptychostitch.ptychopinn.uninstall()    # everything back as it was

``install()`` imports ``ptycho.tf_helper`` (or the module you name) and replaces its
``shift_and_sum``, ``reassemble_position``, ``shift_and_sum_old``,
``reassemble_position_old`` and ``extract_patches_position`` with ptychostitch's (all
differentiable under ``tf.GradientTape``, eagerly and in ``tf.function``). The replacements keep PtychoPINN's contract:
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
import sys
from typing import Any, Callable, Dict, List, Tuple

import ptychostitch as _ps

__all__ = ["install", "uninstall", "installed", "FUNCTIONS"]

#: The functions that are replaced.
FUNCTIONS = (
    "shift_and_sum",
    "reassemble_position",
    "shift_and_sum_old",
    "reassemble_position_old",
    "extract_patches_position",
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


_TRAINING = {
    "mk_reassemble_position_batched_real": _reassembler_factory,
    "mk_reassemble_position_real": _reassembler_factory,
    "reassemble_patches": _reassemble_patches,
}

# (module, attribute name, original value), in the order they were replaced.
_replaced: List[Tuple[Any, str, Any]] = []


def _as_tensor(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` returning a ``tf.Tensor`` whatever it is given, as PtychoPINN's functions do."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        tf = sys.modules.get("tensorflow")
        if tf is not None and not isinstance(out, (tf.Tensor, tf.Variable)):
            out = tf.convert_to_tensor(out)
        return out

    wrapper.__ptychostitch__ = True  # type: ignore[attr-defined]
    return wrapper


def installed() -> bool:
    """True while the replacements are in place."""
    return bool(_replaced)


def install(module: str = "ptycho.tf_helper") -> None:
    """Replaces the four reassembly functions of ``module`` (and every loaded alias of them).

    Installing twice is a no-op; ``uninstall()`` undoes it.
    """
    if _replaced:
        return
    target = importlib.import_module(module)
    originals: Dict[str, Any] = {}
    for name in FUNCTIONS + TRAINING_FUNCTIONS:
        if hasattr(target, name):
            originals[name] = getattr(target, name)
    if not originals:
        raise AttributeError(f"{module} has none of {', '.join(FUNCTIONS + TRAINING_FUNCTIONS)}")
    replacements = {
        name: _TRAINING[name](fn) if name in _TRAINING else _as_tensor(getattr(_ps, name))
        for name, fn in originals.items()
    }
    by_identity = {id(fn): name for name, fn in originals.items()}
    for mod in list(sys.modules.values()):
        namespace = getattr(mod, "__dict__", None)
        if not isinstance(namespace, dict) or mod is _ps:
            continue
        for attr, value in list(namespace.items()):
            name = by_identity.get(id(value))
            if name is not None and value is originals[name]:
                _replaced.append((mod, attr, value))
                setattr(mod, attr, replacements[name])


def uninstall() -> None:
    """Puts every replaced function back."""
    while _replaced:
        mod, attr, original = _replaced.pop()
        setattr(mod, attr, original)
