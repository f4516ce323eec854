"""The operator inside compiled training (issue 31): what a training step pays for ptychostitch
eager against compiled, measured in one run on this machine's CPU.

    python scripts/bench_compiled.py [--runs 30] [--json out.json]

Rows, each the median wall time of forward + backward of the training pair (region reassembly
then extraction, torch layout, C = 4, N = 64, P = 78, complex64) or of the stitch alone:

- torch eager: the operators' implementation through ``torch.autograd`` (what an uncompiled
  model runs);
- torch compiled: ``torch.compile(fullgraph=True)`` over the model (the pair and its loss),
  with the ``aot_eager`` backend and, where a C++ compiler is on PATH, the default inductor
  (which compiles the torch code around our operators, one node each);
- torch, the loss alone (``|y|²`` of the pair's complex output, eager and compiled): the part
  of the compiled step that is torch's own, not ptychostitch's;
- torch compiled around a graph break: the same with the call wrapped in
  ``torch.compiler.disable`` -- what ``torch.compile`` did with ptychostitch before its
  operators existed;
- JAX: ``jit(grad)`` with the operations as XLA custom calls, against the same program through
  ``pure_callback`` (the fallback, and what ran before) and against ``grad`` eager;
- TensorFlow: ``GradientTape`` eager against ``tf.function`` (``tf.numpy_function`` in the
  graph).

B = 1 is the per-call overhead; B = 16 and 64 a training batch. Frameworks run in processes of
their own (torch's compiler and TensorFlow cannot share one).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import textwrap

COMMON = textwrap.dedent(
    """
    import json, statistics, sys, time
    import numpy as np
    import ptychostitch as ps
    runs = int(sys.argv[1])
    C, N, P = 4, 64, 78
    def timed_together(steps, *args):
        # Median ms of each step, the steps taking turns run by run (the machine's drift falls
        # on all of them alike).
        for step in steps:  # warm up (compiles)
            step(*args)
            step(*args)
        times = [[] for _ in steps]
        for _ in range(runs):
            for i, step in enumerate(steps):
                start = time.perf_counter()
                step(*args)
                times[i].append(time.perf_counter() - start)
        return [statistics.median(t) * 1e3 for t in times]
    def data(b, seed=0):
        rng = np.random.default_rng(seed)
        x = (rng.standard_normal((b, C, N, N)) + 1j * rng.standard_normal((b, C, N, N))).astype(np.complex64)
        return x, rng.uniform(-4, 4, (b, C, 1, 2))
    rows = []
    """
)

TORCH = COMMON + textwrap.dedent(
    """
    import torch
    torch.set_num_threads(max(1, torch.get_num_threads()))
    def pair(x, pos):
        return ps.extract_regions(ps.reassemble_regions(x, pos, P, layout="torch"), pos, N)
    def loss(fn):
        return lambda x, pos: (fn(x, pos).abs() ** 2).sum()
    def make(model):  # the model (forward and loss) compiled or not; backward as training runs it
        return lambda x, pos: torch.autograd.grad(model(x, pos), (x, pos))
    eager = make(loss(pair))
    compiled = make(torch.compile(loss(pair), backend="aot_eager", fullgraph=True, dynamic=False))
    around_break = make(torch.compile(loss(torch.compiler.disable(pair)), backend="aot_eager"))
    import shutil
    inductor = (make(torch.compile(loss(pair), fullgraph=True, dynamic=False))
                if shutil.which("g++") or shutil.which("c++") else None)  # needs a C++ compiler
    for b in (1, 16, 64):
        x, pos = data(b)
        args = (torch.tensor(x, requires_grad=True), torch.tensor(pos, requires_grad=True))
        steps = [eager, compiled, around_break] + ([inductor] if inductor else [])
        modes = ["eager", "compiled, aot_eager (no graph break)", "aot_eager around a graph break (before)",
                 "compiled, inductor (no graph break)"]
        for mode, t in zip(modes, timed_together(steps, *args)):
            rows.append(dict(framework="torch", B=b, mode=mode, ms=t))
        # What the compiled step pays that is not ptychostitch's: torch's own loss (|y|², complex)
        # on the pair's output, eager against compiled (AOTAutograd's decomposition of complex abs).
        y = torch.tensor(np.asarray(pair(x, pos)), requires_grad=True)
        square = lambda y: (y.abs() ** 2).sum()
        compiled_square = torch.compile(square, backend="aot_eager", fullgraph=True, dynamic=False)
        alone = [lambda y: torch.autograd.grad(square(y), (y,)), lambda y: torch.autograd.grad(compiled_square(y), (y,))]
        for mode, t in zip(("the loss alone, eager", "the loss alone, compiled aot_eager"), timed_together(alone, y)):
            rows.append(dict(framework="torch", B=b, mode=mode, ms=t))
    print(json.dumps(rows))
    """
)

JAX = COMMON + textwrap.dedent(
    """
    import os
    import jax, jax.numpy as jnp
    def loss(x, pos):
        out = ps.extract_regions(ps.reassemble_regions(x, pos, P, layout="torch"), pos, N)
        return jnp.sum(jnp.abs(out) ** 2)
    grad = jax.grad(loss, argnums=(0, 1))
    jitted = jax.jit(grad)
    # The same program through jax.pure_callback (what every call was before the custom calls):
    # traced with the fallback switched on, then run as compiled.
    callback = jax.jit(jax.grad(lambda x, pos: loss(x, pos), argnums=(0, 1)))
    for b in (1, 16, 64):
        x, pos = data(b)
        args = (jnp.asarray(x), jnp.asarray(pos.astype(np.float32)))
        os.environ["PTYCHOSTITCH_JAX_FFI"] = "0"
        text = callback.lower(*args).as_text()
        assert "callback" in text, "the fallback was not traced"
        jax.block_until_ready(callback(*args))
        del os.environ["PTYCHOSTITCH_JAX_FFI"]
        assert "ptychostitch_reassemble_regions" in jitted.lower(*args).as_text()
        block = lambda f: (lambda *a: jax.block_until_ready(f(*a)))
        ms = timed_together((block(grad), block(jitted), block(callback)), *args)
        modes = ("grad, eager (custom calls)", "jit(grad), XLA custom calls", "jit(grad), pure_callback (before)")
        for mode, t in zip(modes, ms):
            rows.append(dict(framework="jax", B=b, mode=mode, ms=t))
    print(json.dumps(rows))
    """
)

TENSORFLOW = COMMON + textwrap.dedent(
    """
    import tensorflow as tf
    def step(x, pos):
        with tf.GradientTape() as tape:
            tape.watch([x, pos])
            regions = ps.reassemble_regions(x, pos, P)
            out = ps.extract_patches_position(regions, pos, 0.0, N=N, gridsize=2)
            loss = tf.reduce_sum(tf.abs(out) ** 2)
        return tape.gradient(loss, [x, pos])
    graph = tf.function(step)
    for b in (1, 16, 64):
        x, pos = data(b)
        x = tf.constant(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))  # (B, N, N, C)
        pos = tf.constant(np.ascontiguousarray(pos.reshape(b, C, 2).transpose(0, 2, 1)).reshape(b, 1, 2, C))
        ms = timed_together((step, graph), x, pos)
        for mode, t in zip(("GradientTape, eager", "tf.function (numpy_function)"), ms):
            rows.append(dict(framework="tensorflow", B=b, mode=mode, ms=t))
    print(json.dumps(rows))
    """
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--json")
    args = parser.parse_args()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    rows = []
    for name, script in (("torch", TORCH), ("jax", JAX), ("tensorflow", TENSORFLOW)):
        done = subprocess.run([sys.executable, "-c", script, str(args.runs)], capture_output=True, text=True, env=env)
        if done.returncode != 0:
            print(f"{name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        rows += json.loads(done.stdout.strip().splitlines()[-1])
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    print(f"CPU: {cpu}, {os.cpu_count()} cores; training pair C = 4, N = 64, P = 78, forward + backward, median of {args.runs}")
    print(f"{'framework':<11} {'B':>3}  {'mode':<42} {'ms':>9}")
    for r in rows:
        print(f"{r['framework']:<11} {r['B']:>3}  {r['mode']:<42} {r['ms']:>9.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(cpu=cpu, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
