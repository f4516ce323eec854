"""A second derivative through any ptychostitch operation raises; it never returns a value
without this operation's term.

The backward of every operation is exact but not itself differentiable. The failure this file
guards against was silent: with a loss *linear* in the output, the cotangent does not depend on
the inputs, and a refusal hung on the cotangent alone was never reached — a gradient penalty
on positions then returned the regulariser's term only (measured: −0.6397 where finite
differences give about −2.17). Each case here is tried with a linear and a quadratic loss, and
finite differences of first derivatives show that the term that would be dropped is not zero.
"""

import numpy as np
import pytest

import ptychostitch as ps

RNG = np.random.default_rng(7)
B, C, N, P, S = 2, 3, 12, 20, 24


def _complex(shape):
    return (RNG.standard_normal(shape) + 1j * RNG.standard_normal(shape)).astype(np.complex64)


# Each operation: its inputs (patches, positions) and a call taking (x, positions).
CASES = {
    "shift_and_sum": (_complex((6, N, N)), RNG.uniform(-3, 3, (6, 2)), lambda x, o: ps.shift_and_sum(x, o, M=8)),
    "reassemble_position": (
        _complex((6, N, N)), RNG.uniform(-3, 3, (6, 2)), lambda x, o: ps.reassemble_position(x, o, M=8),
    ),
    "extract_patches_position": (
        _complex((B, S, S, 1)), RNG.uniform(-2, 2, (B, 1, 2, C)),
        lambda x, o: ps.extract_patches_position(x, o, 0.0, N=N, gridsize=None),
    ),
    "reassemble_regions_tf": (
        _complex((B, N, N, C)), RNG.uniform(-2, 2, (B, 1, 2, C)), lambda x, o: ps.reassemble_regions(x, o, P),
    ),
    "reassemble_regions_torch": (
        _complex((B, C, N, N)), RNG.uniform(-2, 2, (B, C, 2)),
        lambda x, o: ps.reassemble_regions(x, o, P, layout="torch", weights="ones"),
    ),
    "extract_regions": (
        _complex((B, P, P)), RNG.uniform(-2, 2, (B, C, 1, 2)), lambda x, o: ps.extract_regions(x, o, N),
    ),
}
NAMES = sorted(CASES)
SECOND = "not differentiable again"


def _weights_for(name, shape):
    return np.random.default_rng(len(name)).standard_normal(shape).astype(np.float32)


# --- torch -------------------------------------------------------------------------------------


def _torch():
    return pytest.importorskip("torch", reason="torch is not installed (scripts/test.sh installs it)")


def _torch_loss(torch, name, y, quadratic):
    W = torch.from_numpy(_weights_for(name, tuple(y.shape)))
    linear = (W * (y.real if y.is_complex() else y)).sum()
    # Linear: not even a zero times a quadratic term, which would make the cotangent depend
    # on the output (the case that used to hide the missing term).
    return linear + (y.abs() ** 2).sum() if quadratic else linear


def _torch_penalty(torch, name, x, o, quadratic, create_graph):
    """A gradient penalty on the positions: (∂loss/∂o)[0] + Σ|x|²."""
    call = CASES[name][2]
    (g,) = torch.autograd.grad(_torch_loss(torch, name, call(x, o), quadratic), o, create_graph=create_graph)
    return g.reshape(-1)[0] + (x.abs() ** 2).sum()


@pytest.mark.parametrize("quadratic", [False, True], ids=["linear", "quadratic"])
@pytest.mark.parametrize("name", NAMES)
def test_torch_gradient_penalty_raises(name, quadratic):
    torch = _torch()
    x0, o0, _ = CASES[name]
    x = torch.tensor(x0, requires_grad=True)
    o = torch.tensor(o0, requires_grad=True)
    penalty = _torch_penalty(torch, name, x, o, quadratic, create_graph=True)
    with pytest.raises(RuntimeError, match=SECOND):
        torch.autograd.grad(penalty, x)
    # The positions' own second derivative (a Hessian-vector product) too.
    (g,) = torch.autograd.grad(_torch_loss(torch, name, CASES[name][2](x, o), quadratic), o, create_graph=True)
    with pytest.raises(RuntimeError, match=SECOND):
        torch.autograd.grad((g * torch.ones_like(g)).sum(), o)


@pytest.mark.parametrize("name", ["shift_and_sum", "reassemble_regions_torch", "extract_regions"])
def test_torch_the_refused_term_is_real(name):
    """Finite differences of the first-order penalty: its derivative is not the regulariser's
    2·Re x alone, so returning that (what happened before) was wrong."""
    torch = _torch()
    x0, o0, _ = CASES[name]
    o = torch.tensor(o0, requires_grad=True)
    # The penalty is (∂loss/∂o)[0] + Σ|x|²; the refused term is the derivative of its first
    # part with respect to the patches. Along a random real direction d of the first patch (or
    # sample), by central differences of first derivatives only, it is far from zero.
    d = np.zeros(x0.shape, np.float32)
    d[0] = np.random.default_rng(11).standard_normal(x0.shape[1:])

    def first_part(step):
        xt = torch.tensor((x0 + step * d).astype(np.complex64))
        return float(_torch_penalty(torch, name, xt, o, False, create_graph=False) - (xt.abs() ** 2).sum())

    h = 0.5  # the first part is linear in the patches: any step is exact up to rounding
    dropped = (first_part(h) - first_part(-h)) / (2 * h)
    noise = abs(first_part(0.0)) * 1e-5 / h
    assert abs(dropped) > 0.1 and abs(dropped) > 100 * noise, (dropped, noise)


def test_torch_hessian_and_weighted_regions_raise():
    torch = _torch()
    x0, o0, call = CASES["shift_and_sum"]
    x = torch.tensor(x0)
    with pytest.raises(RuntimeError, match=SECOND):
        torch.autograd.functional.hessian(lambda o: _torch_loss(torch, "shift_and_sum", call(x, o), False),
                                          torch.tensor(o0))
    # A learnt probe's weights: the third differentiable input refuses as the others do.
    x0, o0, _ = CASES["reassemble_regions_torch"]
    x = torch.tensor(x0, requires_grad=True)
    w = torch.rand(N, N, requires_grad=True)
    y = ps.reassemble_regions(x, torch.tensor(o0), P, layout="torch", weights=w)
    (gw,) = torch.autograd.grad((torch.from_numpy(_weights_for("w", tuple(y.shape))) * y.real).sum(), w,
                                create_graph=True)
    with pytest.raises(RuntimeError, match=SECOND):
        torch.autograd.grad(gw.sum() + (x.abs() ** 2).sum(), x)
    # First derivatives with create_graph=True still give the plain values.
    xg = torch.tensor(x0, requires_grad=True)
    y = ps.reassemble_regions(xg, torch.tensor(o0), P, layout="torch", weights=w.detach())
    loss = (torch.from_numpy(_weights_for("w", tuple(y.shape))) * y.real).sum()
    (with_graph,) = torch.autograd.grad(loss, xg, create_graph=True)
    (plain,) = torch.autograd.grad(loss, xg)
    assert torch.equal(with_graph.detach(), plain)


# --- TensorFlow --------------------------------------------------------------------------------


@pytest.mark.parametrize("quadratic", [False, True], ids=["linear", "quadratic"])
@pytest.mark.parametrize("name", NAMES)
def test_tensorflow_nested_tapes_raise(name, quadratic):
    tf = pytest.importorskip("tensorflow", reason="TensorFlow is not installed (scripts/test.sh installs it)")
    x0, o0, call = CASES[name]
    xv, ov = tf.Variable(x0), tf.Variable(o0)
    with pytest.raises(NotImplementedError, match=SECOND):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                y = call(xv, ov)
                W = tf.constant(_weights_for(name, tuple(y.shape)))
                loss = tf.reduce_sum(W * tf.math.real(y))
                if quadratic:
                    loss += tf.reduce_sum(tf.abs(y) ** 2)
            g = inner.gradient(loss, ov)
            penalty = tf.cast(tf.reshape(g, [-1])[0], tf.float32) + tf.reduce_sum(tf.abs(xv) ** 2)
        outer.gradient(penalty, xv)


def test_tensorflow_nested_tapes_raise_in_a_graph():
    tf = pytest.importorskip("tensorflow", reason="TensorFlow is not installed (scripts/test.sh installs it)")
    x0, o0, call = CASES["shift_and_sum"]
    xv, ov = tf.Variable(x0), tf.Variable(o0)

    @tf.function
    def step():
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                y = call(xv, ov)
                # In a graph the canvas side is not known (it depends on the offsets' values).
                W = _weights_for("g", ps.Plan(o0, N, 8).canvas_shape)
                loss = tf.reduce_sum(tf.constant(W) * tf.math.real(y))
            g = inner.gradient(loss, ov)
            penalty = tf.cast(tf.reshape(g, [-1])[0], tf.float32) + tf.reduce_sum(tf.abs(xv) ** 2)
        return outer.gradient(penalty, xv)

    with pytest.raises(NotImplementedError, match=SECOND):
        step()


# --- JAX ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("quadratic", [False, True], ids=["linear", "quadratic"])
@pytest.mark.parametrize("name", NAMES)
def test_jax_second_derivatives_raise(name, quadratic):
    jax = pytest.importorskip("jax", reason="JAX is not installed (scripts/test.sh installs jax[cpu])")
    jnp = jax.numpy
    x0, o0, call = CASES[name]
    if name in ("shift_and_sum", "reassemble_position"):
        side = ps.Plan(o0, N, 8).canvas_shape[0]
        op = "shift_and_sum" if name == "shift_and_sum" else "reassemble_position"
        call = lambda x, o: getattr(ps, op)(x, o, M=8, canvas_side=side)  # noqa: E731
    o0 = o0.astype(np.float32)
    shape = tuple(np.shape(call(x0, o0)))
    W = jnp.asarray(_weights_for(name, shape))

    def loss(x, o):
        y = call(x, o)
        linear = jnp.sum(W * jnp.real(y))
        return linear + jnp.sum(jnp.abs(y) ** 2) if quadratic else linear

    def penalty(x, o):
        return jax.grad(loss, argnums=1)(x, o).reshape(-1)[0] + jnp.sum(jnp.abs(x) ** 2)

    x, o = jnp.asarray(x0), jnp.asarray(o0)
    with pytest.raises(NotImplementedError, match=SECOND):
        jax.grad(penalty)(x, o)
    with pytest.raises(NotImplementedError, match=SECOND):
        jax.hessian(loss, argnums=1)(x, o)
    with pytest.raises(NotImplementedError, match=SECOND):
        jax.jacfwd(jax.grad(loss, argnums=1), argnums=1)(x, o)
    with pytest.raises(NotImplementedError, match=SECOND):
        jax.jit(jax.grad(penalty))(x, o)
