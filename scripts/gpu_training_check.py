"""Issue 25's GPU check: every operation's forward and backward on CUDA tensors, bit for bit
against the same call on CPU tensors, from torch (autograd, device kernels), CuPy (forward) and
JAX/TensorFlow where installed (their documented host route); then a timing table of the
training-path pair and the extraction at B = 16 and 64, gridsize 2, N = 64 against a torch
``grid_sample`` implementation of the same pair (autograd), and the device memory peak.

    python scripts/gpu_training_check.py [--json OUT.json] [--cpu]

Each section (torch, CuPy, JAX, TensorFlow, the timing) runs in a process of its own with its
own time limit and verdict line, JAX without preallocation and TensorFlow with memory growth:
one framework's memory or failure cannot lose the others'. ``--section NAME`` runs one here.
``--cpu`` runs everything on the CPU (the comparisons then compare the CPU with itself): a dry
run of this script's own logic on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

import ptychostitch as ps

failures: list = []


def bits(t) -> np.ndarray:
    a = t.detach().cpu().resolve_conj().numpy()
    return np.ascontiguousarray(a).view(np.uint8)


def same(name: str, a, b) -> None:
    ok = a.shape == b.shape and a.dtype == b.dtype and np.array_equal(bits(a), bits(b))
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {tuple(a.shape)} {a.dtype}")
    if not ok:
        failures.append(name)


def forward_backward(fn, device, *inputs):
    leaves = [torch.tensor(v, device=device, requires_grad=True) for v in inputs]
    out = fn(*leaves)
    w = torch.linspace(-1, 1, out.numel(), device=device).reshape(out.shape)
    (out.real * w if out.is_complex() else out * w).sum().backward()
    return out, [leaf.grad for leaf in leaves]


def compare(name, fn, device, *inputs) -> None:
    out_d, grads_d = forward_backward(fn, device, *inputs)
    out_h, grads_h = forward_backward(fn, "cpu", *inputs)
    same(f"{name} forward", out_d, out_h)
    for k, (gd, gh) in enumerate(zip(grads_d, grads_h)):
        same(f"{name} d/input{k}", gd, gh)


def scan(seed, shape, complex_=True):
    r = np.random.default_rng(seed)
    v = r.standard_normal(shape) + (1j * r.standard_normal(shape) if complex_ else 0)
    return v.astype(np.complex64 if complex_ else np.float32)


def check_torch(device) -> None:
    r = np.random.default_rng(0)
    for n, size in [(1, 16), (200, 32), (5000, 64)]:
        patches = scan(n, (n, size, size, 1))
        offsets = r.uniform(-60, 60, (n, 1, 1, 2))
        for op in ("shift_and_sum", "reassemble_position"):
            compare(f"{op} n={n}", lambda x, o, op=op: getattr(ps, op)(x, o, M=size // 2), device, patches, offsets)
    for b, c, s, n in [(1, 1, 24, 8), (16, 4, 80, 64), (64, 4, 80, 64)]:
        imgs = scan(b, (b, s, s, 1))
        offs = r.uniform(-8, 8, (b, 1, 2, c))
        compare(f"extract_patches_position B={b}", lambda i, o, n=n: ps.extract_patches_position(i, o, N=n), device, imgs, offs)
        regions = scan(b + 1, (b, 1, s, s), complex_=False)
        pos = r.uniform(-8, 8, (b, c, 1, 2)).astype(np.float32)
        compare(f"extract_regions B={b}", lambda g, q, n=n: ps.extract_regions(g, q, n), device, regions, pos)
    for layout in ("tf", "torch"):
        b, c, n, p = 16, 4, 64, 80
        shape = (b, n, n, c) if layout == "tf" else (b, c, n, n)
        x = scan(3, shape)
        pos = r.uniform(-4, 4, (b, 1, 2, c) if layout == "tf" else (b, c, 1, 2))
        compare(f"reassemble_regions {layout}", lambda x, q, layout=layout: ps.reassemble_regions(x, q, p, layout=layout), device, x, pos)


def check_cupy(device) -> None:
    """CuPy arrays in CUDA memory: the forward, bit for bit against NumPy's."""
    r = np.random.default_rng(7)
    try:
        import cupy

        patches = scan(7, (300, 32, 32, 1))
        offsets = r.uniform(-40, 40, (300, 1, 1, 2))
        got = cupy.asnumpy(ps.shift_and_sum(cupy.asarray(patches), offsets, M=16))
        want = ps.shift_and_sum(patches, offsets, M=16)
        same("cupy shift_and_sum", torch.from_numpy(got), torch.from_numpy(want))
        imgs = scan(8, (4, 80, 80, 1))
        offs = r.uniform(-8, 8, (4, 1, 2, 4))
        got = cupy.asnumpy(ps.extract_patches_position(cupy.asarray(imgs), offs, N=64))
        same("cupy extract_patches_position", torch.from_numpy(got), torch.from_numpy(ps.extract_patches_position(imgs, offs, N=64)))
    except ImportError:
        print("skip cupy: not installed")


def check_jax(device) -> None:
    """JAX arrays on the GPU: the forward eagerly (the device kernels), and under jit the XLA
    CUDA custom calls (the device kernels on XLA's stream; the lowered program holds them and no
    callback), forward and jit(grad), bit for bit against the CPU's; then jit(grad) of the
    pair timed with the custom calls and with the callback fallback (PTYCHOSTITCH_JAX_FFI=0)."""
    b, c, n, p, x, pos, want = _pair_case()
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        print("skip jax: not installed")
        return
    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    if not gpus:
        print("skip jax: no GPU device in JAX")
        return
    cpu = jax.devices("cpu")[0]
    pair = lambda x, q: ps.extract_patches_position(ps.reassemble_regions(x, q, p), q, N=n)
    xg = jax.device_put(x, gpus[0])
    same("jax regions+extraction", torch.from_numpy(np.asarray(pair(xg, pos))), torch.from_numpy(want))
    pos32 = pos.astype(np.float32)
    pg = jax.device_put(pos32, gpus[0])
    text = jax.jit(pair).lower(xg, pg).as_text()
    calls = sorted(set(__import__("re").findall(r"custom_call @(\w+)", text)))
    print(f"jit program for the GPU: custom calls {calls}, callback {'callback' in text.lower()}")
    if "ptychostitch_reassemble_regions" not in calls or "callback" in text.lower():
        failures.append("jax jit: not the CUDA custom calls")
    want32 = ps.extract_patches_position(ps.reassemble_regions(x, pos32, p), pos32, N=n)
    same("jax jit regions+extraction", torch.from_numpy(np.asarray(jax.jit(pair)(xg, pg))), torch.from_numpy(want32))
    loss = lambda a, q: jnp.sum(jnp.abs(pair(a, q)) ** 2)
    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    on_gpu = grad(xg, pg)
    on_cpu = grad(jax.device_put(x, cpu), jax.device_put(pos32, cpu))
    for k, (a, h) in enumerate(zip(on_gpu, on_cpu)):
        same(f"jax jit(grad) d/input{k}", torch.from_numpy(np.asarray(a)), torch.from_numpy(np.asarray(h)))

    def clock(fn):
        for _ in range(3):
            jax.block_until_ready(fn(xg, pg))
        times = []
        for _ in range(20):
            t = time.perf_counter()
            jax.block_until_ready(fn(xg, pg))
            times.append(time.perf_counter() - t)
        return float(np.median(times)) * 1e3

    ffi_ms = clock(grad)
    os.environ["PTYCHOSTITCH_JAX_FFI"] = "0"
    callback_ms = clock(jax.jit(jax.grad(lambda a, q: loss(a, q), argnums=(0, 1))))
    os.environ.pop("PTYCHOSTITCH_JAX_FFI")
    print(f"jax jit(grad) pair B={b}: CUDA custom calls {ffi_ms:.3f} ms, pure_callback {callback_ms:.3f} ms (median of 20)")


def _pair_case():
    r = np.random.default_rng(11)
    b, c, n, p = 16, 4, 64, 80
    x = scan(12, (b, n, n, c))
    pos = r.uniform(-4, 4, (b, 1, 2, c))
    want = ps.extract_patches_position(ps.reassemble_regions(x, pos, p), pos, N=n)
    return b, c, n, p, x, pos, want


def check_tensorflow(device) -> None:
    """Eager TensorFlow tensors on the GPU: forward and GradientTape backward, bit for bit
    against the same calls on the CPU."""
    b, c, n, p, x, pos, want = _pair_case()
    try:
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU") or device == "cpu":
            print("skip tensorflow: no GPU device in TensorFlow")
            return

        def run(where):
            with tf.device(where):
                xt, pt = tf.constant(x), tf.constant(pos)
                with tf.GradientTape() as tape:
                    tape.watch([xt, pt])
                    out = ps.extract_patches_position(ps.reassemble_regions(xt, pt, p), pt, N=n)
                    loss = tf.reduce_sum(tf.math.real(out))
                return [out, *tape.gradient(loss, [xt, pt])]

        for k, (a, h) in enumerate(zip(run("/GPU:0"), run("/CPU:0"))):
            same(f"tensorflow eager {['forward', 'd/patches', 'd/positions'][k]}", torch.from_numpy(a.numpy()), torch.from_numpy(h.numpy()))
    except ImportError:
        print("skip tensorflow: not installed")


def grid_sample_pair(x, pos, p):
    """The training pair in plain torch (autograd): every patch zero-padded to P×P, translated by
    bilinear grid_sample, summed per sample and normalised by the translated centre mask; then
    each channel translated back and cropped. Not bit-identical to PtychoPINN (another
    arithmetic): the speed peer."""
    b, c, n, _ = x.shape
    pad = (p - n) // 2
    mask = torch.zeros(1, 1, n, n, device=x.device)
    mask[..., n // 4 : n // 4 + n // 2, n // 4 : n // 4 + n // 2] = 1
    xs = F.pad(torch.view_as_real(x).permute(0, 1, 4, 2, 3).reshape(b * c, 2, n, n), (pad,) * 4)
    ms = F.pad(mask.expand(b * c, 1, n, n), (pad,) * 4)
    theta = torch.zeros(b * c, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, :, 2] = -pos.reshape(b * c, 2) * 2 / p
    grid = F.affine_grid(theta, (b * c, 2, p, p), align_corners=False)
    num = F.grid_sample(xs, grid, align_corners=False).reshape(b, c, 2, p, p).sum(1)
    den = F.grid_sample(ms, grid, align_corners=False).reshape(b, c, 1, p, p).sum(1)
    region = num / (den + 1e-3)
    theta2 = theta.clone()
    theta2[:, :, 2] = -theta[:, :, 2]
    back = F.grid_sample(region.repeat_interleave(c, 0), F.affine_grid(theta2, (b * c, 2, p, p), align_corners=False), align_corners=False)
    return back[..., pad : pad + n, pad : pad + n]


def timed(fn, device, runs=20):
    for _ in range(3):
        fn()
    if device != "cpu":
        torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        if device != "cpu":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), float(np.min(times))


def device_to_host_copies(step) -> dict:
    """The device-to-host copies of one call of ``step`` as torch's profiler records them: how
    many, and their names."""
    from torch.profiler import ProfilerActivity, profile

    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    events = [e for e in prof.events() if "DtoH" in e.name]
    return dict(count=len(events), names=sorted({e.name for e in events}))


def timing(device) -> list:
    rows = []
    n, c, p = 64, 4, 80
    for b in (16, 64):
        r = np.random.default_rng(b)
        x = torch.tensor(scan(b, (b, c, n, n)), device=device, requires_grad=True)
        pos = torch.tensor(r.uniform(-4, 4, (b, c, 1, 2)).astype(np.float32), device=device, requires_grad=True)

        def ours():
            y = ps.extract_regions(ps.reassemble_regions(x, pos, p, layout="torch", weights="center"), pos, n)
            y.abs().sum().backward()

        def peer():
            grid_sample_pair(x, pos, p).square().sum().backward()

        imgs = torch.tensor(scan(b + 2, (b, p, p, 1)), device=device, requires_grad=True)
        offs = torch.tensor(r.uniform(-4, 4, (b, 1, 2, c)), device=device, requires_grad=True)

        def extraction():
            ps.extract_patches_position(imgs, offs, N=n).abs().sum().backward()

        if device != "cpu" and b == 16:
            for label, q in (("positions on the GPU", pos), ("positions on the host", pos.detach().cpu())):
                copies = device_to_host_copies(lambda: ps.extract_regions(
                    ps.reassemble_regions(x, q, p, layout="torch", weights="center"), q, n).abs().sum().backward())
                print(f"torch profiler, one training step, {label}: Memcpy DtoH {copies}")
                rows.append(dict(row=f"Memcpy DtoH per step, {label}", B=b, copies=copies))

        for name, fn in (("ptychostitch pair", ours), ("torch grid_sample pair", peer), ("ptychostitch extraction", extraction)):
            if device != "cpu":
                torch.cuda.reset_peak_memory_stats()
            median, best = timed(fn, device)
            peak = torch.cuda.max_memory_allocated() / 2**20 if device != "cpu" else float("nan")
            rows.append(dict(row=name, B=b, median_ms=median * 1e3, min_ms=best * 1e3, torch_peak_mib=peak))
            print(f"{name:26s} B={b:3d}: median {median * 1e3:8.3f} ms, min {best * 1e3:8.3f} ms, torch peak {peak:8.1f} MiB")
    return rows


#: Each section runs in a process of its own, under its own time limit: JAX preallocates most
#: of the GPU and TensorFlow the rest when they start, which would starve the other sections'
#: allocations, and one section's crash or hang must not lose the others' results.
SECTIONS = {"torch": (check_torch, 40), "cupy": (check_cupy, 10), "jax": (check_jax, 45),
            "tensorflow": (check_tensorflow, 40), "timing": (None, 40)}


def run_section(section: str, device: str, json_path: str | None) -> int:
    if device == "cuda":
        if not torch.cuda.is_available():
            print("no CUDA device for torch")
            return 1
        print(torch.cuda.get_device_name(), "| ptychostitch GPU:", ps.gpu_available())
    check, _ = SECTIONS[section]
    rows: list = []
    if check is not None:
        check(device)
    else:
        free0 = torch.cuda.mem_get_info()[0] if device == "cuda" else 0
        rows = timing(device)
        if device == "cuda":
            print(f"device memory in use beyond the start (all allocators): {(free0 - torch.cuda.mem_get_info()[0]) / 2**20:.1f} MiB")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(dict(failures=failures, rows=rows), f, indent=1)
    print(f"{len(failures)} failures" + (": " + ", ".join(failures) if failures else ""))
    return 1 if failures else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json")
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--section", choices=sorted(SECTIONS), help="run one section here (else each in its own process)")
    args = ap.parse_args()
    device = "cpu" if args.cpu else "cuda"
    if args.section:
        return run_section(args.section, device, args.json)
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", TF_FORCE_GPU_ALLOW_GROWTH="true",
               TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    status, merged = 0, dict(failures=[], rows=[], sections={})
    with tempfile.TemporaryDirectory() as tmp:
        for section, (_, limit) in SECTIONS.items():
            out = os.path.join(tmp, f"{section}.json")
            command = [sys.executable, __file__, "--section", section, "--json", out] + (["--cpu"] if args.cpu else [])
            started = time.perf_counter()
            try:
                done = subprocess.run(command, env=env, timeout=limit, capture_output=True, text=True)
                code, text = done.returncode, done.stdout + done.stderr[-3000:]
            except subprocess.TimeoutExpired as e:
                code, text = "timeout", (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            seconds = time.perf_counter() - started
            print(text.rstrip())
            verdict = "ok" if code == 0 else f"FAILED ({'over its ' + str(limit) + ' s' if code == 'timeout' else 'exit ' + str(code)})"
            print(f"== section {section}: {verdict} in {seconds:.1f} s")
            merged["sections"][section] = dict(status=verdict, seconds=seconds)
            if code != 0:
                status = 1
                merged["failures"].append(f"section {section}: {verdict}")
            if os.path.exists(out):
                with open(out) as f:
                    part = json.load(f)
                merged["failures"] += part["failures"]
                merged["rows"] += part["rows"]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(merged, f, indent=1)
    print(f"{len(merged['failures'])} failures" + (": " + ", ".join(merged["failures"]) if merged["failures"] else ""))
    return status


if __name__ == "__main__":
    sys.exit(main())
