"""CuPy arrays: no autodiff; on the GPU path, the caller's current stream and CuPy's allocator."""

from __future__ import annotations

import sys
from typing import Any, Optional, Tuple

import numpy as np

from .._arrays import compute_dtype
from .base import Backend


def _cupy() -> Any:
    return sys.modules.get("cupy")


class CupyBackend(Backend):
    name = "cupy"

    def owns(self, value: Any) -> bool:
        return type(value).__module__.split(".")[0] == "cupy" and _cupy() is not None

    def readable(self, value: Any) -> Any:
        return value.astype("float32") if "bfloat16" in str(getattr(value, "dtype", "")) else value

    def to_host(self, value: Any) -> Any:
        return value.get()

    def from_host(self, result: np.ndarray, like: Any) -> Any:
        with like.device:
            return _cupy().asarray(result)

    def device_cast(self, obj: Any) -> Any:
        target = compute_dtype(obj.dtype)
        return obj if obj.dtype == target else obj.astype(target)

    device_ops = True

    def device_scope(self, like: Any) -> Any:
        return like.device

    def device_stream(self, like: Any) -> Optional[int]:
        with like.device:
            return int(_cupy().cuda.get_current_stream().ptr)

    def device_empty(self, shape: Tuple[int, ...], dtype: str, like: Any) -> Any:
        with like.device:
            return _cupy().empty(shape, dtype=dtype)

    def device_prepare(
        self, value: Any, dtype: str, perm: Optional[Tuple[int, ...]] = None, shape: Optional[Tuple[int, ...]] = None
    ) -> Any:
        cupy = _cupy()
        with value.device:
            value = self.readable(value)
            if perm is not None:
                value = value.transpose(perm)
            value = cupy.ascontiguousarray(value.astype(dtype, copy=False))
            return value if shape is None else value.reshape(shape)

    def device_result(self, value: Any, shape: Tuple[int, ...]) -> Any:
        return value.reshape(shape)

    def device_from_host(self, array: np.ndarray, like: Any) -> Any:
        with like.device:
            return _cupy().asarray(array)

    def device_finish(self, value: Any, like: Any, perm: Optional[Tuple[int, ...]] = None) -> Any:
        if perm is not None:
            value = value.transpose(perm)
        value = value.reshape(like.shape)
        if like.dtype.kind in "fc":
            value = value.astype(like.dtype, copy=False)
        return value


BACKEND = CupyBackend()
