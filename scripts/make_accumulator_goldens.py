"""Makes ``tests/data/accumulators``: PtychoPINN's own torch inference accumulators,
``ptycho_torch.reassembly.VectorizedWeightedAccumulator`` and
``VectorizedBarycentricAccumulator`` (run once, kept; never regenerate them over the stored
files).

Each case accumulates one or more batches onto a zeroed canvas, with patches inside, at and
beyond the edges (PtychoPINN drops those), and again onto a canvas ``margin`` pixels larger on
every side with the positions moved by ``margin`` (where nothing is dropped: its centre is what
clipping at the small canvas's edge must give, bit for bit). Positions are multiples of 1/1024,
so that moving them is exact in float32.

Run in a scratch environment with PtychoPINN (commit 712c23f) importable and torch::

    PYTHONPATH=/path/to/PtychoPINN python scripts/make_accumulator_goldens.py tests/data/accumulators
"""

import sys
import warnings
from pathlib import Path

import numpy as np


def main(out: Path) -> None:
    import torch
    import ptycho_torch.reassembly as R

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(8070)

    def cplx(shape):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)

    def run(kind, shape, batches, probe, uniform, margin=0):
        H, W = shape[0] + 2 * margin, shape[1] + 2 * margin
        canvas = torch.zeros((H, W), dtype=torch.complex64)
        weights = torch.zeros((H, W), dtype=torch.float32)
        acc = (R.VectorizedWeightedAccumulator if kind == "weighted" else R.VectorizedBarycentricAccumulator)((H, W), "cpu")
        for patches, positions in batches:
            p = torch.tensor(patches)
            x = torch.tensor(positions + np.float32(margin))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if kind == "weighted":
                    acc.accumulate_batch(canvas, weights, p, x, torch.tensor(probe), patches.shape[-1],
                                         uniform_weighting=uniform)
                else:
                    acc.accumulate_batch(canvas, weights, p, x, patches.shape[-1])
        counters = (acc.patches_accepted, acc.patches_total) if kind == "weighted" else (-1, -1)
        return canvas.numpy(), weights.numpy(), counters

    def quantised(xy):
        # Multiples of 1/1024: moving them by `margin` is exact in float32, so the large
        # canvas's fractions are the small one's.
        return (np.round(xy * 1024) / 1024).astype(np.float32)

    def positions(n, shape, P, beyond):
        # Centres from `beyond` pixels outside each edge to `beyond` outside the far one; a
        # quarter on whole or half pixels.
        x = rng.uniform(-beyond, shape[1] + beyond, n).astype(np.float32)
        y = rng.uniform(-beyond, shape[0] + beyond, n).astype(np.float32)
        snap = rng.integers(0, 8, n)
        x = np.where(snap == 0, np.round(x), np.where(snap == 1, np.round(x) + 0.5, x)).astype(np.float32)
        y = np.where(snap == 2, np.round(y), np.where(snap == 3, np.round(y) + 0.5, y)).astype(np.float32)
        return quantised(np.stack([x, y], axis=1))

    cases = []
    shape, P = (56, 60), 12
    probe = rng.uniform(0, 3, (P, P)).astype(np.float32)
    two = [(cplx((40, P, P)), positions(40, shape, P, 4.0)) for _ in range(2)]
    cases.append(("weighted_c1", "weighted", shape, two, probe, False))
    cases.append(("weighted_uniform", "weighted", shape, two[:1], probe, True))
    cases.append(("barycentric_c1", "barycentric", shape, two, None, False))
    # C = 4: B = 10 solution regions' centres, each with four patches close around it, flattened
    # B·C as the driver's `O_tilde.view(B*C, …)` does.
    B, C = 10, 4
    centres = rng.uniform(8, 52, (B, 1, 2)).astype(np.float32)
    rel = rng.uniform(-3, 3, (B, C, 2)).astype(np.float32)
    cases.append(("weighted_c4", "weighted", shape, [(cplx((B * C, P, P)), quantised((centres + rel).reshape(B * C, 2)))], probe,
                  False))
    # NaN and infinite patch values: torch's complex products spread them to the other part.
    bad = cplx((12, P, P))
    for k, v in enumerate([np.inf, -np.inf, np.nan, np.inf * 1j, np.nan * 1j]):
        bad[k, 3 + k, 4] = v
    cases.append(("weighted_nonfinite", "weighted", (40, 40), [(bad, quantised(rng.uniform(8, 32, (12, 2))))],
                  probe, False))

    margin = 16
    for name, kind, shape, batches, probe_, uniform in cases:
        canvas, weights, (accepted, total) = run(kind, shape, batches, probe_, uniform)
        big_canvas, big_weights, _ = run(kind, shape, batches, probe_, uniform, margin=margin)
        arrays = {f"patches_{k}": p for k, (p, _) in enumerate(batches)}
        arrays.update({f"positions_{k}": x for k, (_, x) in enumerate(batches)})
        if probe_ is not None:
            arrays["probe_mag_sq"] = probe_
        np.savez(out / f"{name}.npz", kind=kind, uniform=uniform, batches=len(batches), canvas_shape=np.array(shape),
                 canvas=canvas, weights=weights, accepted=accepted, total=total, margin=margin,
                 big_canvas=big_canvas, big_weights=big_weights, **arrays)
        print(name, kind, shape, len(batches), "accepted", accepted, "of", total)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
