"""Makes tests/data/training/*.npz: PtychoPINN's own training-path layers and helpers, with
their frameworks' autodiff.

Provenance script, kept for the record; it is not part of the build or the tests. Run it in a
scratch environment that has PtychoPINN (commit 712c23f) importable from ``ROOT`` and
TensorFlow 2.21 (with tf-keras and tensorflow-probability, which ``ptycho`` imports) or torch:

    python scripts/make_training_goldens.py tf ROOT tests/data/training
    python scripts/make_training_goldens.py torch ROOT tests/data/training

Nothing of PtychoPINN is changed. Only the outputs are kept in the repository.

TensorFlow files (``tf_*``): ``ptycho.custom_layers.ReassemblePatchesLayer`` on channel-last
patches ``(B, N, N, C)`` complex64 and positions ``(B, 1, 2, C)`` float32, the loss
``L = Σ Re(conj(W)·y)``, and ``tape.gradient`` with respect to the patches and the positions.
Where ``B·C ≥ 64`` the layer sums the whole batch onto one canvas (PtychoPINN's bug); there the
file holds, as ``expected``, PtychoPINN's own per-sample path with its threshold lifted
(``mk_reassemble_position_batched_real(positions, batch_size=B·C + 1, ...)`` through
``reassemble_patches``), and, as ``collapsed``, what the layer returns.

torch files (``torch_*``): ``ptycho_torch.helper``'s ``reassemble_patches_position_real`` (the
centre-mask path and the ``crop_size`` path), ``reassemble_patches_position_real_probe`` and
``extract_channels_from_region`` on ``(B, C, N, N)`` complex64 patches and ``(B, C, 1, 2)``
float32 positions, with ``torch.autograd.grad`` of the same loss.
"""

import os
import sys

import numpy as np

framework, root, out_dir = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, root)
os.makedirs(out_dir, exist_ok=True)


def complex_normal(rng, shape):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def tf_cases():
    import tensorflow as tf
    from ptycho import params
    from ptycho import tf_helper as hh
    from ptycho.custom_layers import ReassemblePatchesLayer

    def run(name, B, gridsize, N, P, spread, seed):
        C = gridsize**2
        params.cfg["N"] = N
        params.cfg["gridsize"] = gridsize
        rng = np.random.default_rng(seed)
        patches = complex_normal(rng, (B, N, N, C))
        positions = rng.uniform(-spread, spread, (B, 1, 2, C)).astype(np.float32)
        W = complex_normal(rng, (B, P, P, 1))
        x, pos = tf.Variable(patches), tf.Variable(positions)

        def loss_of(y):
            return tf.reduce_sum(tf.math.real(tf.math.conj(tf.constant(W)) * y))

        layer = ReassemblePatchesLayer(padded_size=P, N=N, gridsize=gridsize, dtype=tf.complex64)
        record = dict(patches=patches, positions=positions, W=W, N=N, gridsize=gridsize, P=P)
        if B * C < 64:
            with tf.GradientTape() as tape:
                y = layer([x, pos])
                loss = loss_of(y)
            dx, dpos = tape.gradient(loss, [x, pos])
            record.update(expected=y.numpy(), d_patches=dx.numpy(), d_positions=dpos.numpy())
        else:
            record["collapsed"] = layer([x, pos]).numpy()
            with tf.GradientTape() as tape:
                fn = hh.mk_reassemble_position_batched_real(
                    pos, batch_size=B * C + 1, padded_size=P, N=N, gridsize=gridsize
                )
                y = hh.reassemble_patches(x, fn_reassemble_real=fn, N=N, gridsize=gridsize)
                loss = loss_of(y)
            dx, dpos = tape.gradient(loss, [x, pos])
            record.update(expected=y.numpy(), d_patches=dx.numpy(), d_positions=dpos.numpy())
        np.savez_compressed(os.path.join(out_dir, f"{name}.npz"), **record)
        print(name, {k: np.shape(v) for k, v in record.items()})

    run("tf_g2_b4", B=4, gridsize=2, N=32, P=44, spread=4.0, seed=1)
    run("tf_g1_b6", B=6, gridsize=1, N=32, P=40, spread=3.0, seed=2)
    run("tf_g3_b2", B=2, gridsize=3, N=24, P=40, spread=6.0, seed=3)
    run("tf_g2_b16_collapse", B=16, gridsize=2, N=32, P=44, spread=4.0, seed=4)


def torch_cases():
    import torch
    from ptycho_torch import helper
    from ptycho_torch.config_params import DataConfig, ModelConfig

    def configs(N, gridsize, distance):
        C = gridsize**2
        data = DataConfig(N=N, C=C, grid_size=(gridsize, gridsize), max_neighbor_distance=distance)
        model = ModelConfig(C_model=C, C_forward=C)
        return data, model, helper.get_padded_size(data, model)

    def grads(y, W, inputs):
        loss = torch.sum(torch.real(torch.conj(torch.from_numpy(W)) * y))
        return [g.numpy() for g in torch.autograd.grad(loss, inputs)]

    def run(name, B, gridsize, N, distance, spread, seed):
        C = gridsize**2
        data, model, P = configs(N, gridsize, distance)
        rng = np.random.default_rng(seed)
        patches = complex_normal(rng, (B, C, N, N))
        positions = rng.uniform(-spread, spread, (B, C, 1, 2)).astype(np.float32)
        probe = complex_normal(rng, (N, N)) * np.float32(0.5)
        region = complex_normal(rng, (B, 1, P, P))
        record = dict(patches=patches, positions=positions, probe=probe, region=region, N=N, gridsize=gridsize, P=P)

        def both():
            return (torch.tensor(patches, requires_grad=True), torch.tensor(positions, requires_grad=True))

        x, pos = both()
        y, mask, size = helper.reassemble_patches_position_real(x, pos, data, model, padded_size=P)
        W = complex_normal(rng, tuple(y.shape))
        dx, dpos = grads(y, W, [x, pos])
        record.update(center=y.detach().numpy(), center_mask=mask.numpy(), W_center=W, center_d_patches=dx, center_d_positions=dpos)

        x, pos = both()
        crop = N // 2
        y, mask, size = helper.reassemble_patches_position_real(x, pos, data, model, crop_size=crop)
        W = complex_normal(rng, tuple(y.shape))
        dx, dpos = grads(y, W, [x, pos])
        record.update(crop_size=crop, crop=y.detach().numpy(), crop_mask=mask.numpy(), crop_P=size, W_crop=W, crop_d_patches=dx, crop_d_positions=dpos)

        x, pos = both()
        pr = torch.tensor(probe, requires_grad=True)
        y, mask, size = helper.reassemble_patches_position_real_probe(x, pos, data, model, probe=pr, padded_size=P)
        W = complex_normal(rng, tuple(y.shape))
        dx, dpos, dprobe = grads(y, W, [x, pos, pr])
        record.update(probe_out=y.detach().numpy(), probe_mask=mask.numpy(), W_probe=W, probe_d_patches=dx, probe_d_positions=dpos, probe_d_probe=dprobe)

        r = torch.tensor(region, requires_grad=True)
        pos = torch.tensor(positions, requires_grad=True)
        y = helper.extract_channels_from_region(r, pos, data, model)
        W = complex_normal(rng, tuple(y.shape))
        dr, dpos = grads(y, W, [r, pos])
        record.update(extract=y.detach().numpy(), W_extract=W, extract_d_region=dr, extract_d_positions=dpos)

        np.savez_compressed(os.path.join(out_dir, f"{name}.npz"), **record)
        print(name, {k: np.shape(v) for k, v in record.items()})

    run("torch_g2_b4", B=4, gridsize=2, N=32, distance=6.0, spread=4.0, seed=11)
    run("torch_g1_b3", B=3, gridsize=1, N=24, distance=3.0, spread=2.5, seed=12)
    run("torch_g3_b2", B=2, gridsize=3, N=24, distance=5.0, spread=5.0, seed=13)


{"tf": tf_cases, "torch": torch_cases}[framework]()
