"""Makes ``tests/data/torch_reassembly``: PtychoPINN's own torch inference stitching,
``ptycho_torch.reassembly.reassemble_single_channel`` and ``reassemble_multi_channel`` (run
once, kept; never regenerate them over the stored files).

Run in a scratch environment with PtychoPINN (commit 712c23f) importable and torch::

    PYTHONPATH=/path/to/PtychoPINN python scripts/make_torch_reassembly_goldens.py tests/data/torch_reassembly
"""

import sys
from pathlib import Path

import numpy as np


def main(out: Path) -> None:
    import torch
    import ptycho_torch.helper as hh
    import ptycho_torch.reassembly as R
    from ptycho_torch.config_params import DataConfig, ModelConfig

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(712)

    def cplx(shape):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)

    # reassemble_single_channel: (n, C, N, N) patches at global coordinates (n, C, 1, 2).
    for name, n, c, N, middle, spread in [("single_n6", 6, 1, 32, 10, 40.0), ("single_n300", 300, 1, 32, 12, 120.0),
                                          ("single_c4_n5", 5, 4, 32, 12, 30.0)]:
        dc = DataConfig()
        dc.N, dc.C = N, c
        im = cplx((n, c, N, N))
        coords = rng.uniform(0, spread, (n, c, 1, 2)).astype(np.float32)
        com = coords.reshape(-1, 2).mean(axis=0).astype(np.float32)
        max_offset = np.float32(np.abs(coords.reshape(-1, 2) - com).max())
        image, counts = R.reassemble_single_channel(torch.tensor(im), torch.tensor(com), torch.tensor(max_offset),
                                                    torch.tensor(coords), dc, middle=middle)
        np.savez(out / f"{name}.npz", im=im, com=com, max_offset=max_offset, coords=coords, N=N, C=c, middle=middle,
                 image=image.numpy(), counts=counts.numpy())
        print(name, tuple(image.shape), image.dtype, tuple(counts.shape), counts.dtype)

    # reassemble_multi_channel: solution regions (its helper's reassemble_patches_position_real,
    # stored as stage 1), then the regions' centres stitched.
    dc = DataConfig()
    dc.N, dc.C, dc.grid_size = 32, 4, (2, 2)
    mc = ModelConfig()
    B = 6
    im = cplx((B, 4, 32, 32))
    rel = rng.uniform(-4, 4, (B, 4, 1, 2)).astype(np.float32)
    centers = rng.uniform(0, 50, (B, 1, 1, 2)).astype(np.float32)
    com = centers.reshape(B, 2).mean(axis=0).astype(np.float32)
    max_offset = np.float32(np.abs(centers.reshape(B, 2) - com).max())
    regions, mask, size = hh.reassemble_patches_position_real(torch.tensor(im), torch.tensor(rel), dc, mc, agg=True)
    image, counts = R.reassemble_multi_channel(torch.tensor(im), torch.tensor(com), torch.tensor(max_offset),
                                               torch.tensor(rel), torch.tensor(centers), dc, mc, middle=10)
    np.savez(out / "multi_b6.npz", im=im, rel=rel, centers=centers, com=com, max_offset=max_offset, N=32, C=4,
             middle=10, stage1_regions=regions.numpy(), stage1_mask=mask.numpy(), stage1_size=int(size),
             image=image.numpy(), counts=counts.numpy())
    print("multi_b6", tuple(image.shape), image.dtype, tuple(counts.shape), counts.dtype)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
