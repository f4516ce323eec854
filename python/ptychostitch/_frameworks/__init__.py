"""One small adapter per framework that makes a kernel (``ptychostitch._kernels``)
differentiable in that framework's autodiff.

Every adapter module has ``wants(*values) -> bool`` (is this call for me?) and
``apply(kernel, x, offsets, **options)`` (run the kernel, return the framework's array with a
gradient attached). :func:`adapter_for` picks the first that wants a call.
"""

from __future__ import annotations

from typing import Any, Optional

from . import jax_adapter, tensorflow_adapter, torch_adapter

ADAPTERS = (tensorflow_adapter, torch_adapter, jax_adapter)


def adapter_for(*values: Any) -> Optional[Any]:
    """The adapter whose framework must differentiate a call on ``values``, or None."""
    for adapter in ADAPTERS:
        if adapter.wants(*values):
            return adapter
    return None
