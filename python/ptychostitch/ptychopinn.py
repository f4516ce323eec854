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
    for name in FUNCTIONS:
        if hasattr(target, name):
            originals[name] = getattr(target, name)
    if not originals:
        raise AttributeError(f"{module} has none of {', '.join(FUNCTIONS)}")
    replacements = {name: _as_tensor(getattr(_ps, name)) for name in originals}
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
