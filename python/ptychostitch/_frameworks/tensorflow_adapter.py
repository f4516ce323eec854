"""TensorFlow: ``tf.custom_gradient`` around ``tf.numpy_function``, eager and in ``tf.function``;
GPU tensors run forward and backward on the device kernels instead: eager ones directly, and in
a graph where TensorFlow sees a GPU through a ``tf.py_function`` node, which receives the device
tensors where TensorFlow placed it (no host copy on a GPU).

The offsets' gradient comes back in the offsets' dtype (float64 for PtychoPINN's), the
patches' in theirs. ``tf.function(jit_compile=True)`` cannot run host code: it is refused with
a clear ``TypeError`` instead of XLA's error about an unsupported ``PyFunc``.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional, Sequence, Tuple

import numpy as np

from .. import _native
from .base import Backend, out_of_memory_hint


SECOND_ORDER = (
    "ptychostitch's gradient is not differentiable again: a second derivative (nested "
    "GradientTape, Hessian-vector product, gradient penalty) through it is not supported"
)


def _tf() -> Any:
    return sys.modules.get("tensorflow")


def _is_tf(tf: Any, value: Any) -> bool:
    return isinstance(value, (tf.Tensor, tf.Variable))


def _symbolic(tf: Any, value: Any) -> bool:
    return isinstance(value, tf.Tensor) and bool(tf.is_symbolic_tensor(value))


def on_gpu(value: Any) -> bool:
    """An eager TensorFlow tensor (or variable) held by a GPU."""
    tf = _tf()
    return _is_tf(tf, value) and not _symbolic(tf, value) and "GPU" in (value.device or "")


def gpu_visible() -> bool:
    """TensorFlow sees a GPU (where a graph's nodes may be placed on one)."""
    try:
        return bool(_tf().config.list_logical_devices("GPU"))
    except Exception:  # a TensorFlow that cannot say: the host path
        return False


def _ordinal(value: Any) -> int:
    """The CUDA ordinal of the GPU holding an eager TensorFlow tensor ("…/device:GPU:k").

    TensorFlow numbers its logical GPUs among the visible ones: after
    ``tf.config.set_visible_devices(gpus[1:], "GPU")`` its GPU:0 is the process's CUDA device 1.
    The k-th logical GPU is the k-th visible physical device, whose name carries the CUDA
    ordinal ("/physical_device:GPU:1"). Virtual devices (one GPU split in several logical ones)
    break that correspondence: refused with a clear error rather than a wrong device."""
    tf = _tf()
    index = int(str(value.device).rsplit(":", 1)[-1])
    visible = tf.config.get_visible_devices("GPU")
    logical = tf.config.list_logical_devices("GPU")
    if len(logical) != len(visible) or index >= len(visible):
        raise RuntimeError(
            f"TensorFlow shows {len(logical)} logical GPUs on {len(visible)} visible devices (virtual devices): "
            f"ptychostitch cannot tell which CUDA device holds this {value.device} tensor; use one logical "
            "device per GPU (no tf.config.set_logical_device_configuration) for the GPU path"
        )
    return int(str(visible[index].name).rsplit(":", 1)[-1])


class _Exported:
    """A TensorFlow tensor as the native device entries import it: a DLPack capsule (made when
    asked for) with its shape."""

    def __init__(self, tensor: Any) -> None:
        self.tensor = tensor
        self.shape = tuple(int(d) for d in tensor.shape)

    def dlpack_capsule(self) -> Any:
        return _tf().experimental.dlpack.to_dlpack(self.tensor)


def recording() -> bool:
    """A ``GradientTape`` or ``ForwardAccumulator`` could record an operation now (True where
    TensorFlow's internals do not say: a gradient is never dropped for speed)."""
    try:
        from tensorflow.python.eager import record
    except ImportError:
        return True
    try:
        return bool(record.could_possibly_record())
    except Exception:
        return True


def _wants(*values: Any) -> bool:
    """Any TF tensor: through ``tf.custom_gradient``, except eager GPU patches when nothing
    records gradients (those run straight on the device path, without a gradient function)."""
    tf = _tf()
    if tf is None or not any(_is_tf(tf, v) for v in values):
        return False
    return not (on_gpu(values[0]) and not recording())


def _refuse_xla(tf: Any) -> None:
    try:
        from tensorflow.python.framework import ops
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # a TensorFlow without these internals: let XLA say it
        return
    if control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph()):
        raise TypeError(
            "ptychostitch runs on the host through tf.numpy_function, which XLA cannot compile: "
            "call it outside tf.function(jit_compile=True) (a plain tf.function works)"
        )


def _apply(kernel: Any, x: Any, offsets: Any, gpu: Optional[Callable[[Any], Any]] = None) -> Any:
    tf = _tf()
    _refuse_xla(tf)
    static_shape = list(kernel.out_shape(tuple(None if d is None else int(d) for d in x.shape), None))
    x = tf.convert_to_tensor(x)
    offsets = tf.convert_to_tensor(offsets)
    if not offsets.dtype.is_floating:
        offsets = tf.cast(offsets, tf.float64)
    out_dtype = tf.as_dtype(kernel.out_dtype(x.dtype.as_numpy_dtype))
    # Eager GPU tensors run forward and backward on the device kernels. In a graph
    # (tf.function, Keras fit) where TensorFlow sees a GPU, the node is a tf.py_function, which
    # TensorFlow places with its inputs: on the GPU it hands the device tensors to the same
    # eager device path, with no copy to the host (on the CPU, the host path). Graphs without a
    # GPU keep tf.numpy_function.
    has_device_path = (
        gpu is not None and getattr(kernel, "on_device", False) and hasattr(kernel, "backward_device")
        and hasattr(kernel, "forward_device")
    )
    device = has_device_path and tf.executing_eagerly() and on_gpu(x)
    in_graph_on_gpu = has_device_path and not tf.executing_eagerly() and gpu_visible()

    def forward_node(xv: Any, ov: Any) -> Any:
        """Inside tf.py_function: eager tensors where TensorFlow placed the node."""
        if on_gpu(xv):
            with BACKEND.device_scope(xv):
                return kernel.forward_device(BACKEND, xv, ov)
        return tf.convert_to_tensor(kernel.forward(xv.numpy(), ov.numpy()))

    def backward_node(xv: Any, ov: Any, outv: Any, cv: Any) -> Any:
        if on_gpu(xv):
            with BACKEND.device_scope(xv):
                return kernel.backward_device(BACKEND, xv, ov, outv, cv, True, True)
        dx, doff = kernel.backward(xv.numpy(), ov.numpy(), outv.numpy(), cv.numpy(), True, True)
        return tf.convert_to_tensor(dx), tf.convert_to_tensor(doff)

    @tf.custom_gradient
    def op(x: Any, offsets: Any) -> Any:
        if device:
            out = gpu(x)
        elif in_graph_on_gpu:
            out = tf.py_function(forward_node, [x, offsets], out_dtype, name="ptychostitch")
            out.set_shape(static_shape)
        else:
            out = tf.numpy_function(kernel.forward, [x, offsets], out_dtype, stateful=False, name="ptychostitch")
            out.set_shape(static_shape)

        # The backward's results depend on the cotangent and on the operation's inputs, so that
        # an outer tape differentiating them always reaches `second` (and raises): with the
        # cotangent alone, a loss linear in the output would make them constants to the outer
        # tape, which would silently drop this operation's term of a second derivative.
        @tf.custom_gradient
        def backward(cot: Any, x: Any, offsets: Any) -> Any:
            if device:
                with BACKEND.device_scope(x):
                    dx, doff = kernel.backward_device(BACKEND, x, offsets, out, cot, True, True)
            elif in_graph_on_gpu:
                dx, doff = tf.py_function(backward_node, [x, offsets, out, cot], [x.dtype, offsets.dtype],
                                          name="ptychostitch_grad")
                dx.set_shape(x.shape)
                doff.set_shape(offsets.shape)
            else:
                dx, doff = tf.numpy_function(
                    kernel.backward, [x, offsets, out, cot], [x.dtype, offsets.dtype], stateful=False,
                    name="ptychostitch_grad",
                )
                dx.set_shape(x.shape)
                doff.set_shape(offsets.shape)

            def second(*unused: Any) -> Any:
                raise NotImplementedError(SECOND_ORDER)

            return (dx, doff), second

        def grad(cot: Any) -> Any:
            return backward(cot, x, offsets)

        return out, grad

    return op(x, offsets)


class TensorFlowBackend(Backend):
    """TensorFlow tensors and variables: ``tf.custom_gradient``, ``tf.numpy_function`` in graphs."""

    name = "tensorflow"

    def owns(self, value: Any) -> bool:
        tf = _tf()
        return tf is not None and _is_tf(tf, value)

    def wants(self, *values: Any) -> bool:
        return _wants(*values)

    def apply(self, kernel: Any, x: Any, offsets: Any, gpu: Optional[Callable[[Any], Any]] = None) -> Any:
        return _apply(kernel, x, offsets, gpu)

    def learnt(self, value: Any) -> bool:
        return isinstance(value, _tf().Variable)

    def run(self, compute: Callable[..., np.ndarray], inputs: Sequence[Any], gpu: Optional[Callable[[Any], Any]]) -> Any:
        """Eager GPU patches on the device path; otherwise computed on the host and returned as a
        ``tf.Tensor`` (a tensor in, a tensor out: PtychoPINN code calls ``.numpy()`` on it)."""
        tf = _tf()
        obj = inputs[0]
        if gpu is not None and on_gpu(obj):
            return gpu(obj)
        result = compute(*[v.numpy() if _is_tf(tf, v) else v for v in inputs])
        return tf.convert_to_tensor(result) if _is_tf(tf, obj) else result

    def device_cast(self, obj: Any) -> Any:
        return self.device_prepare(obj, "complex64" if obj.dtype.is_complex else "float32")

    # TensorFlow tensors are immutable: the device kernels write outputs this package
    # allocates (`device_empty`), which TensorFlow then imports zero-copy. Inputs go to the
    # native layer as DLPack capsules (TensorFlow has no `__dlpack__` with a stream): the device
    # is synchronised before they are read, and the call waits. Eager GPU tensors only; inside
    # a `tf.function` the host path (`tf.numpy_function`) runs.
    device_ops = True

    def device_scope(self, like: Any) -> Any:
        return _tf().device(like.device)

    def device_empty(self, shape: Tuple[int, ...], dtype: str, like: Any) -> Any:
        # TensorFlow reads it on its own non-blocking streams and frees it without ordering the
        # free after them: the free waits for the whole device (issue 34, item 6).
        return _native.device_empty(list(shape), dtype, _ordinal(like), wait_for_all_streams=True)

    def device_prepare(
        self, value: Any, dtype: str, perm: Optional[Tuple[int, ...]] = None, shape: Optional[Tuple[int, ...]] = None
    ) -> Any:
        tf = _tf()
        value = tf.convert_to_tensor(value)
        if value.dtype != tf.as_dtype(dtype):
            value = tf.cast(value, dtype)
        if perm is not None:
            value = tf.transpose(value, perm)
        if shape is not None:
            value = tf.reshape(value, shape)
        return _Exported(value)

    def device_from_host(self, array: np.ndarray, like: Any) -> Any:
        tf = _tf()
        with tf.device(like.device):
            return _Exported(tf.identity(tf.constant(np.ascontiguousarray(array))))

    def device_result(self, value: Any, shape: Tuple[int, ...]) -> Any:
        tf = _tf()
        return tf.reshape(tf.experimental.dlpack.from_dlpack(value.__dlpack__()), shape)

    def device_finish(self, value: Any, like: Any, perm: Optional[Tuple[int, ...]] = None) -> Any:
        tf = _tf()
        out = self.device_result(value, tuple(value.shape))
        if perm is not None:
            out = tf.transpose(out, perm)
        out = tf.reshape(out, tuple(like.shape))
        dtype = tf.as_dtype(like.dtype)
        return tf.cast(out, dtype) if (dtype.is_floating or dtype.is_complex) and out.dtype != dtype else out

    def memory_hint(self, error: BaseException) -> Optional[str]:
        return out_of_memory_hint(
            error,
            "TensorFlow reserves nearly all GPU memory by default: call "
            "tf.config.experimental.set_memory_growth(gpu, True) for each GPU before TensorFlow first uses it",
        )


BACKEND = TensorFlowBackend()
