"""Every operation a PyTorch operator (``torch.ops.ptychostitch.*``, issue 31): registered from
the kernels' one declaration, checked by ``torch.library.opcheck`` (schema, fake tensors,
autograd registration, AOT dispatch with dynamic shapes), compiled whole by
``torch.compile(fullgraph=True)`` with no graph break and the eager bits, exported by
``torch.export`` into a program that runs.

Compilation imports ``torch._dynamo`` and so triton, whose LLVM aborts a process that has
loaded TensorFlow (as this test session has): the compiled checks run in processes of their
own. Their backend is ``aot_eager`` (AOTAutograd's tracing with fake tensors, which is what the
operators must survive); inductor would also need a C++ compiler, which the test environment
deliberately lacks.
"""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ptychostitch as ps

torch = pytest.importorskip("torch", reason="torch is not installed (scripts/test.sh installs it)")

OPERATORS = ["reassemble", "extract_patches", "reassemble_regions", "extract_regions", "center_channels"]

SETUP = textwrap.dedent(
    """
    import numpy as np, torch, ptychostitch as ps
    from ptychostitch import _kernels, _region
    from ptychostitch._frameworks import torch_ops
    rng = np.random.default_rng(0)
    def cplx(*shape):
        return torch.tensor((rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64))
    B, C, N, P, S = 3, 4, 16, 24, 28
    """
)


def run(script: str) -> str:
    done = subprocess.run([sys.executable, "-c", SETUP + textwrap.dedent(script)], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def test_every_operation_is_an_operator_of_the_namespace():
    """Registered at import where torch is loaded (else at the first call); eager calls give the
    NumPy path's bits."""
    registered = run(
        """
        print(sorted(n for n in dir(torch.ops.ptychostitch) if not n.startswith("_")))
        """
    )
    for name in OPERATORS:
        assert f"'{name}'" in registered and f"'{name}_backward'" in registered, registered
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((6, 12, 12)) + 1j * rng.standard_normal((6, 12, 12))).astype(np.complex64)
    o = rng.uniform(-3, 3, (6, 2))
    want = ps.reassemble_position(x, o, M=8)
    got = ps.reassemble_position(torch.tensor(x), torch.tensor(o), M=8)
    assert isinstance(got, torch.Tensor) and np.array_equal(got.numpy().view(np.uint32), want.view(np.uint32))
    # The operator itself, called directly with the kernel's spec (in a process of its own:
    # calling an operator imports torch._dynamo, and so triton, which aborts beside TensorFlow).
    run(
        """
        x, o = cplx(6, 12, 12), torch.tensor(rng.uniform(-3, 3, (6, 2)))
        want = ps.reassemble_position(x.numpy(), o.numpy(), M=8)
        side = ps.Plan(o.numpy(), 12, 8).canvas_shape[0]
        kernel = _kernels.Reassembly("reassemble_position", 8, 0, canvas_side=side)
        direct = torch.ops.ptychostitch.reassemble(x, o, None, kernel.spec())
        assert np.array_equal(direct.numpy().view(np.uint32), want.view(np.uint32))
        # A canvas_side the offsets do not give is refused, not a wrongly shaped result.
        wrong = _kernels.Reassembly("reassemble_position", 8, 0, canvas_side=side + 2)
        try:
            torch.ops.ptychostitch.reassemble(x, o, None, wrong.spec())
        except ValueError as error:
            assert "promised by canvas_side" in str(error), error
        else:
            raise AssertionError("a wrong canvas_side was accepted")
        """
    )


def test_opcheck_passes_for_every_operator():
    out = run(
        """
        cases = []
        offsets = torch.tensor(rng.uniform(-4, 4, (6, 2)), requires_grad=True)
        side = ps.Plan(offsets.detach().numpy(), N, 10).canvas_shape[0]
        for op in ("shift_and_sum", "reassemble_position"):
            k = _kernels.Reassembly(op, 10, 0, canvas_side=side)
            cases.append((k, (cplx(6, N, N, 1).requires_grad_(), offsets, None)))
        k = _kernels.Extract(N, C, 0)
        cases.append((k, (cplx(B, S, S, 1).requires_grad_(), torch.tensor(rng.uniform(-2, 2, (B, 1, 2, C)), requires_grad=True), None)))
        for layout, shape, pshape in (("tf", (B, N, N, C), (B, 1, 2, C)), ("torch", (B, C, N, N), (B, C, 1, 2))):
            options = _region.options(layout, convention=None, recentre=None, numerator="weighted", denominator="add",
                                      epsilon=1e-3, support=("above", 1e-6), scale=None)
            k = _region.RegionKernel(layout, P, threads=0, **options)
            w = torch.from_numpy(_region.center_mask(N)).requires_grad_()
            cases.append((k, (cplx(*shape).requires_grad_(), torch.tensor(rng.uniform(-3, 3, pshape), requires_grad=True), w)))
        k = _region.ExtractKernel(N, C, "torch", 0)
        cases.append((k, (cplx(B, P, P).requires_grad_(), torch.tensor(rng.uniform(-3, 3, (B, C, 1, 2)), requires_grad=True), None)))
        k = _kernels.CenterChannels(0)
        cases.append((k, (cplx(B, N, N, C).requires_grad_(), torch.tensor(rng.uniform(-3, 3, (B, 1, 2, C)), requires_grad=True), None)))
        for k, (x, pos, w) in cases:
            forward, backward = torch_ops.operator(type(k))
            result = torch.library.opcheck(forward, (x, pos, w, k.spec()))
            assert all(v == "SUCCESS" for v in result.values()), (type(k).__name__, result)
            print(type(k).OP, "ok")
        """
    )
    assert out.count(" ok") == 7, out


def test_a_compiled_training_step_has_no_graph_break_and_gives_the_eager_bits():
    run(
        """
        offsets0 = rng.uniform(-4, 4, (6, 2))
        side = ps.Plan(offsets0, N, 10).canvas_shape[0]
        def step(x, pos, obj, off):
            b = x.shape[0]
            regions = ps.reassemble_regions(x, pos, P, layout="torch")
            back = ps.extract_regions(regions, pos, N)
            canvas = ps.reassemble_position(obj, off, 10, canvas_side=side)
            images = regions.reshape(b, 1, P, P).permute(0, 2, 3, 1)
            imgs = ps.extract_patches_position(images, pos.reshape(b, C, 2).permute(0, 2, 1).reshape(b, 1, 2, C), 0.0,
                                               N=N, gridsize=2)
            return (back.abs() ** 2).sum() + (canvas.abs() ** 2).sum() + imgs.abs().sum()
        def leaves(b):
            return (cplx(b, C, N, N).requires_grad_(), torch.tensor(rng.uniform(-3, 3, (b, C, 1, 2)), requires_grad=True),
                    cplx(6, N, N, 1).requires_grad_(), torch.tensor(offsets0, requires_grad=True))
        explained = torch._dynamo.explain(step)(*leaves(B))
        assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons
        compiled = torch.compile(step, backend="aot_eager", fullgraph=True, dynamic=True)
        for b in (B, 5):  # a symbolic batch size: one graph for both
            args = leaves(b)
            eager = step(*args)
            grads = torch.autograd.grad(eager, args)
            got = compiled(*args)
            got_grads = torch.autograd.grad(got, args)
            assert torch.equal(got, eager), (got, eager)
            assert all(torch.equal(g, e) for g, e in zip(got_grads, grads))
        print("ok")
        """
    )


def test_torch_export_gives_a_program_that_runs():
    run(
        """
        class Model(torch.nn.Module):
            def forward(self, x, pos):
                return ps.extract_regions(ps.reassemble_regions(x, pos, P, layout="torch"), pos, N)
        x, pos = cplx(B, C, N, N), torch.tensor(rng.uniform(-3, 3, (B, C, 1, 2)))
        program = torch.export.export(Model(), (x, pos))
        code = program.graph_module.code
        assert "torch.ops.ptychostitch.reassemble_regions" in code and "torch.ops.ptychostitch.extract_regions" in code, code
        assert torch.equal(program.module()(x, pos), Model()(x, pos))
        print("ok")
        """
    )


def test_without_canvas_side_compiled_code_gets_one_clear_error():
    run(
        """
        x, off = cplx(6, N, N, 1), torch.tensor(rng.uniform(-4, 4, (6, 2)))
        try:
            torch.compile(lambda a, b: ps.reassemble_position(a, b, 10), backend="aot_eager", fullgraph=True)(x, off)
        except Exception as error:
            assert "canvas_side" in str(error), error
        else:
            raise AssertionError("compiled without canvas_side")
        print("ok")
        """
    )
