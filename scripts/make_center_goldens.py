"""Makes ``tests/data/center``: PtychoPINN's own ``tf_helper.center_channels`` outputs (run once,
kept; never regenerate them over the stored files).

Run in a scratch environment with PtychoPINN (commit 712c23f) importable from ``ROOT`` and
TensorFlow 2.21 with tf-keras and tensorflow-probability (which ``ptycho`` imports)::

    PYTHONPATH=/path/to/PtychoPINN python scripts/make_center_goldens.py tests/data/center

``center_channels(channels (B, N, N, C), offsets (B, 1, 2, C))`` translates each channel by
minus its offset (PtychoPINN's ``Translation``, XLA's form by default) and keeps its size.
PtychoPINN reads ``N`` and ``gridsize`` from ``params.cfg`` to reshape; the script sets them.
"""

import sys
from pathlib import Path

import numpy as np


def cases():
    #      name,                B, gridsize, N,  complex, spread, far
    return [("center_g2_complex", 5, 2, 32, True, 6.0, True),
            ("center_g1_real", 6, 1, 24, False, 9.0, False),
            ("center_g3_real", 2, 3, 16, False, 4.5, True)]


def main(out: Path) -> None:
    import tensorflow as tf
    from ptycho import params
    from ptycho import tf_helper as hh

    out.mkdir(parents=True, exist_ok=True)
    for name, b, gridsize, n, is_complex, spread, far in cases():
        params.cfg["N"] = n
        params.cfg["gridsize"] = gridsize
        c = gridsize * gridsize
        rng = np.random.default_rng(len(name) * 1000 + b)
        channels = rng.standard_normal((b, n, n, c)).astype(np.float32)
        if is_complex:
            channels = (channels + 1j * rng.standard_normal((b, n, n, c))).astype(np.complex64)
        offsets = rng.uniform(-spread, spread, (b, 1, 2, c))
        if far:  # a channel moved wholly out of its frame, and one by exactly N
            offsets[0, 0, 0, 0] = 1.5 * n
            offsets[-1, 0, 1, -1] = -float(n)
        expected = hh.center_channels(tf.constant(channels), tf.constant(offsets)).numpy()
        np.savez(out / f"{name}.npz", channels=channels, offsets=offsets, N=n, gridsize=gridsize, expected=expected)
        print(name, channels.shape, channels.dtype, offsets.dtype, "->", expected.shape, expected.dtype)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
