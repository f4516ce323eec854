"""Makes ``docs/images/accumulator-edges.png``: the weight canvas of PtychoPINN's torch
accumulator rule (``edge="ptychopinn"``: patches near the edge dropped whole) beside
ptychostitch's clipping (``edge="clip"``), and the weight PtychoPINN's rule loses.

    python scripts/make_accumulator_figure.py docs/images/accumulator-edges.png

Needs matplotlib (not a dependency of ptychostitch)."""

import sys

import numpy as np

import ptychostitch as ps


def main(path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    side, P = 120, 24
    rng = np.random.default_rng(3)
    # A raster scan with jitter whose centres reach the canvas's edge, as a scan cropped to its
    # field of view does.
    grid = np.arange(0, side + 1, 6, dtype=np.float32)
    xy = np.stack(np.meshgrid(grid, grid), -1).reshape(-1, 2) + rng.uniform(-1.5, 1.5, (grid.size ** 2, 2))
    xy = xy.astype(np.float32)
    yy, xx = np.mgrid[:P, :P] - (P - 1) / 2
    probe = np.exp(-(xx ** 2 + yy ** 2) / (2 * (P / 5) ** 2)).astype(np.float32)
    patches = np.ones((len(xy), P, P), np.complex64)
    weights = {}
    for edge in ("ptychopinn", "clip"):
        canvas, w = np.zeros((side, side), np.complex64), np.zeros((side, side), np.float32)
        placed = ps.splat(canvas, w, patches, xy, probe, edge=edge)
        weights[edge] = (w, placed)
    lost = weights["clip"][0] - weights["ptychopinn"][0]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2), constrained_layout=True)
    vmax = float(weights["clip"][0].max())
    for ax, (title, image, cmap, top) in zip(axes, [
        (f"PtychoPINN's rule: {weights['ptychopinn'][1].accepted}/{len(xy)} patches kept",
         weights["ptychopinn"][0], "viridis", vmax),
        (f"ptychostitch (clip): {weights['clip'][1].accepted}/{len(xy)} patches, "
         f"{weights['clip'][1].clipped} clipped", weights["clip"][0], "viridis", vmax),
        ("weight PtychoPINN's rule loses", lost, "magma", vmax),
    ]):
        shown = ax.imshow(image, cmap=cmap, vmin=0, vmax=top)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=axes, shrink=0.8, label="accumulated weight Σ|P|²·w")
    fig.suptitle(f"{len(xy)} patches of {P}×{P} on a {side}×{side} canvas, centres up to its edge", fontsize=11)
    fig.savefig(path, dpi=80)
    print(path, {k: v[1] for k, v in weights.items()})


if __name__ == "__main__":
    main(sys.argv[1])
