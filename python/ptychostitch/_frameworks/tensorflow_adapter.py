"""TensorFlow: ``tf.custom_gradient`` around ``tf.numpy_function``, eager and in ``tf.function``.

The offsets' gradient comes back in the offsets' dtype (float64 for PtychoPINN's), the
patches' in theirs. ``tf.function(jit_compile=True)`` cannot run host code: it is refused with
a clear ``TypeError`` instead of XLA's error about an unsupported ``PyFunc``.
"""

from __future__ import annotations

import sys
from typing import Any



SECOND_ORDER = (
    "ptychostitch's gradient is not differentiable again: a second derivative (nested "
    "GradientTape, Hessian-vector product, gradient penalty) through it is not supported"
)


def _tf() -> Any:
    return sys.modules.get("tensorflow")


def wants(*values: Any) -> bool:
    tf = _tf()
    if tf is None:
        return False
    return any(isinstance(v, (tf.Tensor, tf.Variable)) for v in values) and not any(
        isinstance(v, (tf.Tensor, tf.Variable)) and not tf.is_symbolic_tensor(v) and "GPU" in (v.device or "")
        for v in values[:1]
    )


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


def apply(kernel: Any, x: Any, offsets: Any, static_shape: Any = None) -> Any:
    tf = _tf()
    _refuse_xla(tf)
    x = tf.convert_to_tensor(x)
    offsets = tf.convert_to_tensor(offsets)
    if not offsets.dtype.is_floating:
        offsets = tf.cast(offsets, tf.float64)
    out_dtype = tf.as_dtype(kernel.out_dtype(x.dtype.as_numpy_dtype))

    @tf.custom_gradient
    def op(x: Any, offsets: Any) -> Any:
        out = tf.numpy_function(kernel.forward, [x, offsets], out_dtype, stateful=False, name="ptychostitch")
        out.set_shape(static_shape if static_shape is not None else [None, None, 1])

        @tf.custom_gradient
        def backward(cot: Any) -> Any:
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
            return backward(cot)

        return out, grad

    return op(x, offsets)
