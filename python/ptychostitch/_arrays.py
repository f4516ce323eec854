"""Dtype and device helpers that every layer uses: what values compute in, how offsets are
read, and the one place the kernels reach the GPU (``device_call``). A leaf: it imports no
other module of the package, so the kernels (``_kernels``, ``_region``) and the framework
backends (``_frameworks``) both import it without importing each other's modules back."""

from __future__ import annotations

from typing import Any

import numpy as np


def is_bfloat16(dtype: Any) -> bool:
    """ml_dtypes' ``bfloat16`` (what TensorFlow's and JAX's bfloat16 tensors read as in NumPy):
    a real type NumPy does not know as one (kind ``V``); float32 holds all its values exactly."""
    return np.dtype(dtype).name == "bfloat16"


def _real(dtype: np.dtype) -> bool:
    return dtype.kind in "fiub" or is_bfloat16(dtype)


def compute_dtype(dtype: Any, what: str = "obj_tensor") -> np.dtype:
    """What values of `dtype` compute in: complex64 for complex, float32 for real ones."""
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        return np.dtype(np.complex64)
    if _real(dtype):
        return np.dtype(np.float32)
    raise TypeError(
        f"{what} has dtype {dtype}; expected complex (complex64, complex128) or real "
        "(bfloat16, float16/32/64, integer, bool) patches"
    )


def as_compute(a: Any, what: str = "obj_tensor") -> np.ndarray:
    a = np.asarray(a)
    target = compute_dtype(a.dtype, what)
    return a if a.dtype == target else a.astype(target)


def as_offsets(a: Any, what: str = "global_offsets") -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind not in "fiu" and not is_bfloat16(a.dtype):
        raise TypeError(
            f"{what} has dtype {a.dtype}; expected real [x, y] pixel offsets (float64, float32, float16, bfloat16 or int)"
        )
    return a.astype(np.float64, copy=False)


def device_call(plan: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    """Calls the native ``plan``'s device entry ``method`` (``vjp_cuda``, ``extract_cuda``, …):
    the one place the kernels reach the GPU, so that tests can stand in for it without one. An
    argument with a ``dlpack_capsule()`` (a TensorFlow tensor, which has no ``__dlpack__``) goes
    as its capsule."""
    args = tuple(a.dlpack_capsule() if hasattr(a, "dlpack_capsule") else a for a in args)
    return getattr(plan, method)(*args, **kwargs)


def compute_name(dtype: Any) -> str:
    """The compute dtype's NumPy name for a framework dtype (``complex64`` or ``float32``)."""
    return "complex64" if "complex" in str(dtype) else "float32"


class ScanWarning(UserWarning):
    """A scan that is legal but probably not what was meant (an outlier, positions in metres)."""
