"""Array types through DLPack: a JAX (CPU) array in gives a JAX array out, read and returned
without a copy, with the golden bits; an array on an accelerator is refused with a clear
TypeError. (torch CPU tensors take the same path; torch is not in the test environment.)"""

import numpy as np
import pytest

import ptychostitch as ps

jax = pytest.importorskip("jax", reason="JAX is not installed (scripts/test.sh installs jax[cpu])")
jnp = jax.numpy


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_jax_arrays_in_give_jax_arrays_out(golden):
    obj, off, M = golden["obj"], golden["offsets"], int(golden["M"])
    for name in ["shift_and_sum", "reassemble_position", "shift_and_sum_old", "reassemble_position_old"]:
        expected = golden[name if name.endswith("_old") else f"{name}_old"]
        out = getattr(ps, name)(jnp.asarray(obj), jnp.asarray(off), M)
        assert isinstance(out, jax.Array), name
        assert same_bits(out, expected), f"{golden['name']}: {name}"
    plan = ps.Plan(jnp.asarray(off), obj.shape[1], M)
    assert isinstance(plan.reassemble_position(jnp.asarray(obj)), jax.Array)


class OnAGpu:
    """What a CUDA tensor tells a DLPack consumer about where it lives."""

    def __dlpack_device__(self):
        return (2, 0)

    def __dlpack__(self, **kwargs):
        raise AssertionError("must not be read")


def test_accelerator_arrays_are_refused_clearly():
    off = np.zeros((3, 2))
    with pytest.raises(TypeError, match="lives on an accelerator .*--device cuda"):
        ps.reassemble_position(OnAGpu(), off, 8)


def test_gpu_available_says_what_it_found():
    info = ps.gpu_available()
    assert isinstance(info, ps.GpuInfo)
    if info:
        assert info.device and info.reason is None
    else:
        assert info.device is None and info.reason, info
