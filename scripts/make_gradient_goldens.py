"""Makes tests/data/gradients/*.npz: TensorFlow's GradientTape through PtychoPINN's own functions.

Provenance script, kept for the record; it is not part of the build or the tests. Run it in a
scratch environment that has PtychoPINN's ``ptycho`` package (commit 712c23f) on ``sys.path``
and TensorFlow (with tensorflow-probability and tf-keras, which ``ptycho.tf_helper`` imports):

    python scripts/make_gradient_goldens.py /path/to/PtychoPINN tests/data/gradients

Only the outputs are kept in the repository. One change to PtychoPINN is made at run time,
as for tests/data/golden: ``shift_and_sum_old`` hands ``translate`` a ``(2,)`` offset where
``(1, 2)`` is required; the offset is reshaped to ``(1, 2)`` and nothing else changes.

Each file holds the inputs, the cotangent ``W`` and, per function ``f``, ``f`` (its output),
``f_dobj`` / ``f_dimgs`` and ``f_doffsets``: the gradients of ``L = sum(Re(conj(W) * f(...)))``
with respect to the complex patches (images) and the float64 offsets, as TensorFlow reports
them (``dL/dRe + i dL/dIm``).
"""

import os
import sys

import numpy as np

root, out_dir = sys.argv[1], sys.argv[2]
sys.path.insert(0, root)
os.makedirs(out_dir, exist_ok=True)

import tensorflow as tf  # noqa: E402
from ptycho import params  # noqa: E402
from ptycho import tf_helper as hh  # noqa: E402

_translate = hh.translate


def _translate_fixed(imgs, offsets, **kwargs):
    if offsets.shape.rank == 1:
        offsets = tf.reshape(offsets, (1, 2))
    return _translate(imgs, offsets, **kwargs)


hh.translate = _translate_fixed  # the one reshape shift_and_sum_old needs (see above)


def grads(fn, inputs, w):
    variables = [tf.Variable(v) for v in inputs]
    with tf.GradientTape() as tape:
        y = fn(*variables)
        loss = tf.reduce_sum(tf.math.real(tf.math.conj(tf.constant(w)) * tf.cast(y, tf.complex64)))
    g = tape.gradient(loss, variables)
    return y.numpy(), [None if v is None else v.numpy() for v in g]


def complex_normal(rng, shape):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def reassembly_case(name, n, N, M, offsets, seed, batched=True):
    rng = np.random.default_rng(seed)
    params.set("N", N)
    obj = complex_normal(rng, (n, N, N, 1))
    offsets = np.asarray(offsets, np.float64).reshape(n, 1, 1, 2)
    out = {"obj": obj, "offsets": offsets, "M": np.int64(M)}
    functions = {"shift_and_sum_old": hh.shift_and_sum_old, "reassemble_position_old": hh.reassemble_position_old}
    if batched:
        functions["shift_and_sum"] = hh.shift_and_sum
        functions["reassemble_position"] = hh.reassemble_position
    w = None
    for fname, fn in functions.items():
        y0 = fn(obj, offsets, M=M)
        if w is None:
            w = complex_normal(rng, y0.shape)
            out["W"] = w
        y, (dobj, doff) = grads(lambda o, f: fn(o, f, M=M), [obj, offsets], w)
        out[fname] = y
        out[f"{fname}_dobj"] = dobj
        out[f"{fname}_doffsets"] = doff
    np.savez(os.path.join(out_dir, f"{name}.npz"), **out)
    print(name, {k: v.shape for k, v in out.items()})


def extraction_case(name, B, gridsize, S, N, offsets, seed):
    rng = np.random.default_rng(seed)
    params.set("N", N)
    params.set("gridsize", gridsize)
    C = gridsize * gridsize
    imgs = complex_normal(rng, (B, S, S, 1))
    offsets_xy = np.asarray(offsets, np.float64).reshape(B, 1, 2, C)
    fn = lambda i, o: hh.extract_patches_position(i, o, 0.0, N=N, gridsize=gridsize)  # noqa: E731
    w = complex_normal(rng, fn(tf.constant(imgs), tf.constant(offsets_xy)).shape)
    y, (dimgs, doff) = grads(fn, [imgs, offsets_xy], w)
    np.savez(
        os.path.join(out_dir, f"{name}.npz"),
        imgs=imgs, offsets_xy=offsets_xy, N=np.int64(N), gridsize=np.int64(gridsize), W=w,
        extract_patches_position=y, extract_patches_position_dimgs=dimgs,
        extract_patches_position_doffsets=doff,
    )
    print(name, y.shape)


rng = np.random.default_rng(2026)
reassembly_case("random", 30, 32, 16, rng.uniform(-12, 12, (30, 2)), 1)
grid = [[(k % 6) * 3.0 - 7.0, (k // 6) * 2.0 - 3.0] for k in range(24)]
reassembly_case("integer", 24, 24, 12, grid, 2)
half = [[(k % 5) * 2.5 + 0.5, (k // 5) * 1.5] for k in range(20)]
reassembly_case("half", 20, 24, 12, half, 3)
reassembly_case("oddM", 16, 24, 11, rng.uniform(-6, 6, (16, 2)), 4, batched=False)
reassembly_case("MeqN", 12, 16, 16, rng.uniform(-5, 5, (12, 2)), 5)
wide = [[((k * 37) % 40) * 4.1 - 80.0, ((k * 11) % 40) * -3.3] for k in range(40)]
reassembly_case("wide", 40, 16, 8, wide, 6)
extraction_case("extract_g2", 3, 2, 48, 32, np.random.default_rng(72).uniform(-6, 6, (3, 1, 2, 4)), 7)
extraction_case("extract_g1_half", 4, 1, 40, 32, [[0.5, -1.5], [2.0, 3.0], [-3.25, 0.75], [1.5, 1.5]], 8)
extraction_case("extract_g3", 2, 3, 64, 32, np.random.default_rng(93).uniform(-10, 10, (2, 1, 2, 9)), 9)
