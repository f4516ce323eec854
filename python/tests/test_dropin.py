"""ptychostitch as a drop-in for PtychoPINN's reassembly functions."""

import threading

import numpy as np
import pytest

import ptychostitch as ps


def bits(a):
    a = np.ascontiguousarray(a)
    return a.view(np.uint32)


def assert_identical(got, expected, what=""):
    assert got.shape == expected.shape, what
    assert got.dtype == expected.dtype, what
    assert np.array_equal(bits(got), bits(expected)), f"{what}: max diff {np.max(np.abs(got - expected))}"


# --- golden parity -------------------------------------------------------------------------

def test_golden_old_functions_are_exact(golden):
    obj, off, M = golden["obj"], golden["offsets"], int(golden["M"])
    for name in ["shift_and_sum", "reassemble_position"]:
        expected = golden[f"{name}_old"]
        for fn in [getattr(ps, name), getattr(ps, f"{name}_old")]:
            got = fn(obj, off, M)
            assert got.shape == expected.shape and got.dtype == np.complex64
            assert_identical(got, expected, f"{golden['name']} {fn.__name__}")


def test_golden_new_functions_within_tolerance(golden):
    obj, off, M = golden["obj"], golden["offsets"], int(golden["M"])
    for name in ["shift_and_sum", "reassemble_position"]:
        if name not in golden:
            assert f"error_{name}" in golden  # PtychoPINN's batched function fails for odd M
            continue
        tf = golden[name]
        got = getattr(ps, name)(obj, off, M, chunk_size=7)
        assert got.shape == tf.shape and got.dtype == tf.dtype
        # Finite lanes to rounding (TF's batched sums are ordered differently); NaN lanes at the
        # same places (the nonfinite case).
        lanes = lambda a: a.view(np.float32)  # noqa: E731
        finite = np.isfinite(lanes(tf)) & np.isfinite(lanes(got))
        tol = 1e-5 * np.max(np.abs(lanes(tf)[finite])) + 1e-6
        assert np.max(np.abs(lanes(got)[finite] - lanes(tf)[finite])) <= tol
        assert np.array_equal(np.isnan(lanes(got)), np.isnan(lanes(tf)))


# --- PtychoPINN's own unit-test properties of reassemble_position ------------------------------

def test_two_identical_patches_at_one_offset_average_to_the_patch():
    patch = (np.random.default_rng(0).standard_normal((1, 20, 20, 1)) * (1 + 1j)).astype(np.complex64)
    obj = np.concatenate([patch, patch])
    off = np.zeros((2, 1, 1, 2))
    out = ps.reassemble_position(obj, off, M=10)
    kept = patch[0, 5:15, 5:15, 0]
    np.testing.assert_allclose(out[:, :, 0], kept, rtol=1e-6, atol=1e-6)


def test_one_patch_equals_two_identical_patches():
    patch = np.full((1, 16, 16, 1), 2.0 - 3.0j, dtype=np.complex64)
    one = ps.reassemble_position(patch, np.zeros((1, 1, 1, 2)), M=8)
    two = ps.reassemble_position(np.concatenate([patch, patch]), np.zeros((2, 1, 1, 2)), M=8)
    np.testing.assert_allclose(one, two, rtol=1e-6)


def test_four_constant_patches_on_a_square_are_finite_complex64():
    obj = np.ones((4, 32, 32, 1), dtype=np.complex64)
    off = np.array([[0, 0], [20, 0], [0, 20], [20, 20]], dtype=np.float64).reshape(4, 1, 1, 2)
    out = ps.reassemble_position(obj, off, M=20)
    assert out.dtype == np.complex64 and out.ndim == 3 and out.shape[0] == out.shape[1] and out.shape[2] == 1
    assert np.all(np.isfinite(out))
    assert np.max(np.abs(out)) > 0.99


def test_patches_of_1_and_5_at_one_offset_average_to_3():
    obj = np.stack([np.full((16, 16, 1), 1.0), np.full((16, 16, 1), 5.0)]).astype(np.complex64)
    out = ps.reassemble_position(obj, np.zeros((2, 1, 1, 2)), M=8)
    np.testing.assert_allclose(out, 3.0, rtol=1e-6)


# --- Plan, threads, dtypes and shapes ------------------------------------------------------

def scan(n=40, size=32, seed=1):
    rng = np.random.default_rng(seed)
    obj = (rng.standard_normal((n, size, size, 1)) + 1j * rng.standard_normal((n, size, size, 1))).astype(np.complex64)
    off = rng.uniform(-8, 8, size=(n, 1, 1, 2))
    return obj, off


def test_plan_gives_the_free_functions_arrays():
    obj, off = scan()
    plan = ps.Plan(off, 32, M=16)
    rp = ps.reassemble_position(obj, off, M=16)
    assert plan.canvas_shape == rp.shape
    assert len(plan) == 40 and plan.patch_size == 32 and plan.pad % 2 == 0
    assert_identical(plan.reassemble_position(obj), rp)
    assert_identical(plan.reassemble_position(obj), rp, "cached weights")
    assert_identical(plan.shift_and_sum(obj), ps.shift_and_sum(obj, off, M=16))
    w = plan.weights
    assert w.shape == rp.shape and w.dtype == np.float32
    ones = ps.shift_and_sum(np.ones_like(obj), off, M=16)
    assert_identical(w, ones.real.astype(np.float32))
    cx, cy = plan.center
    np.testing.assert_allclose([cx, cy], off.reshape(-1, 2).mean(axis=0), rtol=1e-5)
    other, _ = scan(seed=2)
    assert_identical(plan.reassemble_position(other), ps.reassemble_position(other, off, M=16))


def test_concurrent_python_threads_match_a_single_call():
    obj, off = scan(n=300, size=32)
    expected = ps.reassemble_position(obj, off, M=20, threads=1)
    plan = ps.Plan(off, 32, M=20)
    results, errors = [None] * 8, []

    def work(i):
        try:
            results[i] = ps.reassemble_position(obj, off, M=20) if i % 2 else plan.reassemble_position(obj)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for r in results:
        assert_identical(r, expected)


@pytest.mark.parametrize("threads", [1, 2, 7])
def test_thread_counts_do_not_change_bits(threads):
    # Enough footprint pixels (3000·13²) that a thread count above one starts several workers
    # (fewer than 128·1024 pixels a worker would keep it on one thread, whatever was asked).
    obj, off = scan(n=3000)
    before = ps._native.parallel_runs()
    fast = ps.reassemble_position(obj, off, M=12, threads=threads)
    assert (ps._native.parallel_runs() > before) == (threads > 1), "the thread count did not take effect"
    assert_identical(fast, ps.reassemble_position_old(obj, off, M=12))


def test_shape_variants_are_equivalent():
    obj, off = scan()
    ref = ps.reassemble_position(obj, off, M=16)
    assert_identical(ps.reassemble_position(obj[..., 0], off, M=16), ref, "(n, N, N)")
    assert_identical(ps.reassemble_position(obj, off.reshape(-1, 2), M=16), ref, "(n, 2)")
    assert_identical(ps.reassemble_position(obj, off.tolist(), M=16), ref, "nested lists")


def test_dtype_and_layout_conversions():
    obj, off = scan()
    ref = ps.reassemble_position(obj, off, M=16)
    # complex128 converts once to complex64: same bits.
    assert_identical(ps.reassemble_position(obj.astype(np.complex128), off, M=16), ref)
    # non-contiguous views are read in place.
    big = np.zeros((80, 32, 32, 1), dtype=np.complex64)
    big[::2] = obj
    assert_identical(ps.reassemble_position(big[::2], off, M=16), ref, "strided view")
    rev_obj, rev_off = obj[::-1, :, ::-1], off[::-1]
    assert_identical(
        ps.reassemble_position(rev_obj, rev_off, M=16),
        ps.reassemble_position(np.ascontiguousarray(rev_obj), np.ascontiguousarray(rev_off), M=16),
        "negative strides",
    )
    fortran = np.asfortranarray(obj)
    assert_identical(ps.reassemble_position(fortran, off, M=16), ref, "Fortran order")
    # read-only input works (no write access needed).
    ro = obj.copy()
    ro.flags.writeable = False
    assert_identical(ps.reassemble_position(ro, off, M=16), ref, "read-only")
    # float32 offsets and integer offsets convert.
    assert ps.reassemble_position(obj, np.round(off).astype(np.int32), M=16).shape[2] == 1
    # real patches compute in float32 and equal the real part of the complex result.
    real = obj.real.astype(np.float64)
    out = ps.reassemble_position(real, off, M=16)
    assert out.dtype == np.float32
    assert_identical(out, ps.reassemble_position(real.astype(np.complex64), off, M=16).real.copy())


def test_array_like_objects_convert():
    class Tensor:  # what a TensorFlow eager tensor offers numpy
        def __init__(self, a):
            self._a = a

        def __array__(self, dtype=None, copy=None):
            return self._a if dtype is None else self._a.astype(dtype)

    obj, off = scan()
    assert_identical(ps.reassemble_position(Tensor(obj), Tensor(off), M=16), ps.reassemble_position(obj, off, M=16))


def test_output_is_writable_and_owned():
    obj, off = scan()
    out = ps.shift_and_sum(obj, off, M=16)
    out[0, 0, 0] = 1 + 1j
    assert out.flags.writeable


# --- errors --------------------------------------------------------------------------------

def test_type_errors_name_the_dtype():
    obj, off = scan()
    with pytest.raises(TypeError, match="object"):
        ps.reassemble_position(np.ones((2, 8, 8), dtype=object), off[:2], M=4)
    with pytest.raises(TypeError, match="<U"):
        ps.shift_and_sum(np.array([["a"]]), off, M=4)
    with pytest.raises(TypeError, match="complex128"):
        ps.shift_and_sum(obj, off.astype(np.complex128), M=16)
    with pytest.raises(TypeError, match="M must be an integer"):
        ps.shift_and_sum(obj, off, M=16.5)


def test_integer_arguments_are_alike_everywhere():
    """NumPy integers pass wherever Python's do; a float (even a whole one) or a bool is a
    TypeError naming the argument, never silently truncated."""
    obj, off = scan()
    n = obj.shape[1]
    want = ps.Plan(off, n, 16, threads=2).reassemble_position(obj)
    plan = ps.Plan(off, np.int64(n), np.int32(16), threads=np.int64(2))
    assert np.array_equal(plan.reassemble_position(obj), want)
    for kwargs, name in [
        (dict(patch_size=n + 0.7), "patch_size"),
        (dict(patch_size=float(n)), "patch_size"),
        (dict(M=16.0), "M"),
        (dict(M=True), "M"),
        (dict(threads=2.0), "threads"),
        (dict(patch_size=np.float32(n)), "patch_size"),
    ]:
        args = dict(global_offsets=off, patch_size=n, M=16)
        args.update(kwargs)
        with pytest.raises(TypeError, match=f"^{name} must be"):
            ps.Plan(**args)
    assert ps.extract_patches_position(np.zeros((1, 48, 48, 1)), np.zeros((1, 1, 2, 1)), 0.0, N=np.int64(24)).shape == (1, 24, 24, 1)
    with pytest.raises(TypeError, match="^N must be an integer"):
        ps.extract_patches_position(np.zeros((1, 48, 48, 1)), np.zeros((1, 1, 2, 1)), 0.0, N=24.0)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda o, f: (o[:3], f), "3 patches but `offsets` has 40"),
        (lambda o, f: (o, f.reshape(-1, 2)[:, :1]), "\\(n, 2\\), \\(n, 1, 1, 2\\), \\(n, 1, 2, 1\\)"),
        (lambda o, f: (o[:, :, :30], f), "square"),
        (lambda o, f: (o[:0], f[:0]), "no patches"),
        (lambda o, f: (o, np.where(np.arange(80).reshape(40, 1, 1, 2) == 5, np.nan, f)), "offsets\\[2\\]` has a non-finite y = NaN"),
        (lambda o, f: (o, f * 1e15), "pixel canvas needs"),
    ],
)
def test_value_errors_carry_the_library_message(make, message):
    obj, off = scan()
    o, f = make(obj, off)
    with pytest.raises(ValueError, match=message):
        ps.reassemble_position(o, f, M=16)


def test_crop_out_of_range():
    obj, off = scan()
    for M in (1, 33, -2):
        with pytest.raises(ValueError, match=f"`M` = {M}"):
            ps.shift_and_sum(obj, off, M=M)
    with pytest.raises(ValueError, match="16×16 but the plan was built for 32×32"):
        ps.Plan(off, 32, M=16).reassemble_position(obj[:, :16, :16])
    with pytest.raises(ValueError, match="threads"):
        ps.shift_and_sum(obj, off, M=16, threads=-1)
