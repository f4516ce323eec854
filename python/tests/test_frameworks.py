"""Array types through DLPack: a JAX (CPU) array in gives a JAX array out, read and returned
without a copy, with the golden bits. (torch CPU tensors take the same path; torch is not in
the test environment. GPU arrays: test_gpu.py.)"""

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
