"""One backend per framework (``base.Backend`` and its subclasses): everything that names a
framework lives in its backend, and ``ptychostitch._call`` runs every operation through them.

- :func:`autodiff_for` picks the backend whose autodiff must differentiate a call (a TF tensor,
  a torch tensor that requires grad, a JAX tracer);
- :func:`host_for` picks the backend that runs a call without autodiff (TensorFlow where any
  input is a TF tensor, else the patches' framework, else NumPy's).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from . import base, cupy_backend, jax_adapter, tensorflow_adapter, torch_adapter
from .base import CUDA, HOST_DEVICES, Backend, dlpack_device

NUMPY = Backend()
BACKENDS = (tensorflow_adapter.BACKEND, torch_adapter.BACKEND, jax_adapter.BACKEND, cupy_backend.BACKEND)
TENSORFLOW, TORCH, JAX, CUPY = BACKENDS

__all__ = [
    "BACKENDS", "CUDA", "HOST_DEVICES", "NUMPY", "Backend", "autodiff_for", "backend_of", "dlpack_device", "host",
    "host_for", "host_values", "positions_for_device", "register_operators", "tracing",
]


def host(value: Any) -> Any:
    """``value`` readable by NumPy: device arrays (offsets on a GPU) are copied to the host."""
    device = dlpack_device(value)
    if device is None or device in HOST_DEVICES:
        return value
    return backend_of(value).to_host(value)


def host_values(value: Any) -> np.ndarray:
    """Positions or offsets as NumPy (copied from a GPU: the plans are built on the host)."""
    value = host(value)
    return np.asarray(backend_of(value).readable(value))


def positions_for_device(positions: Any) -> Tuple[np.ndarray, Optional[Any]]:
    """What a device path plans from: ``(for the native plan, for the device)``. Positions in
    CUDA memory stay there -- the device kernels plan from them (``positions=`` of the native
    device entries: none read on the host, no wait) and the native plan gets zeros of their
    shape (its sizes and checks only); their dtype is kept when float64, else made float32
    (exactly what the host path rounds them to). Host positions: ``(their values, None)``, the
    plan made on the host as before."""
    if base.dlpack_device(positions) != CUDA:
        return host_values(positions), None
    owner = backend_of(positions)
    dtype = "float64" if "float64" in str(getattr(positions, "dtype", "")) else "float32"
    return np.zeros(tuple(int(d) for d in positions.shape)), owner.device_prepare(positions, dtype)


def backend_of(value: Any) -> Backend:
    """The backend of ``value``'s framework (NumPy's for anything else)."""
    for backend in BACKENDS:
        if backend.owns(value):
            return backend
    return NUMPY


def autodiff_for(*values: Any) -> Optional[Backend]:
    """The backend whose autodiff must differentiate a call on ``values``, or None."""
    for backend in BACKENDS:
        if backend.wants(*values):
            return backend
    return None


def register_operators(kernels: Any) -> None:
    """Every framework's operators for the declared kernel classes ``kernels`` (``import
    ptychostitch`` calls it once every kernel is declared)."""
    for backend in BACKENDS:
        backend.register_operators(kernels)


def tracing() -> bool:
    """A framework is tracing the call into a graph of its own (``torch.compile``,
    ``torch.export``), where only traceable Python may run: no native call, no NumPy on its
    tensors."""
    return any(backend.tracing() for backend in BACKENDS)


def host_for(*values: Any) -> Backend:
    """The backend that runs a call on ``values`` without autodiff."""
    if any(TENSORFLOW.owns(v) for v in values):
        return TENSORFLOW
    return backend_of(values[0])
