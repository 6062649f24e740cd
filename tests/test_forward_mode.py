"""Forward mode: jax.jvp, jax.jacfwd and jax.linearize through every layer and loss
give the same estimate as reverse mode (same samples, same variance reduction)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import core_layers

import perturbed_layers as pl

KEY = jax.random.key(3)


def _layers():
    grid = pl.PerturbedShortestPath(
        num_samples=16, sigma=0.2, noise=pl.Normal(), perturbation="multiplicative"
    )
    graph = pl.PerturbedGraphShortestPath(
        0, 3, num_samples=16, sigma=0.2, noise=pl.Normal()
    )
    free = pl.Perturbed(
        lambda t: jnp.stack([jnp.max(t), jnp.min(t)]),
        num_samples=64,
        sigma=0.5,
        noise=pl.Normal(),
    )
    chunked = [
        pytest.param(m, marks=pytest.mark.slow)
        for m in core_layers(num_samples=64, chunk_size=10)
    ]
    slow = pytest.mark.slow
    return [
        *core_layers(num_samples=64),
        *chunked,
        pytest.param(grid, marks=slow),
        pytest.param(graph, marks=slow),
        free,
    ]


def _theta(layer):
    if isinstance(layer, pl.PerturbedShortestPath):
        return jax.random.uniform(jax.random.key(0), (2, 4, 4), minval=1, maxval=3)
    if isinstance(layer, pl.PerturbedGraphShortestPath):
        w = jax.random.uniform(jax.random.key(0), (2, 4, 4), minval=1, maxval=3)
        return jnp.where(jnp.eye(4, dtype=bool), jnp.inf, w)
    return jax.random.normal(jax.random.key(0), (2, 5))


def _name(m):
    return type(getattr(m, "values", [m])[0]).__name__


@pytest.mark.parametrize("layer", _layers(), ids=_name)
def test_jacfwd_equals_jacrev(layer):
    theta = _theta(layer)
    f = lambda t: layer(t, key=KEY)  # noqa: E731
    rev = jax.jacrev(f)(theta)
    fwd = jax.jacfwd(f)(theta)
    finite = jnp.isfinite(theta)
    np.testing.assert_allclose(
        jnp.where(finite, fwd, 0), jnp.where(finite, rev, 0), rtol=1e-5, atol=1e-5
    )
    assert float(jnp.max(jnp.abs(jnp.where(finite, rev, 0)))) > 0  # not trivially 0
    # jvp and linearize give the same tangent as jacfwd's columns.
    v = jnp.where(finite, jax.random.normal(jax.random.key(1), theta.shape), 0)
    out, tangent = jax.jvp(f, (theta,), (v,))
    out2, lin = jax.linearize(f, theta)
    np.testing.assert_allclose(out2, out, atol=1e-6)
    np.testing.assert_allclose(lin(v), tangent, rtol=1e-5, atol=1e-5)
    axes = tuple(range(theta.ndim))
    want = jnp.tensordot(
        jnp.where(finite, fwd, 0),
        v,
        axes=(tuple(range(out.ndim, out.ndim + theta.ndim)), axes),
    )
    np.testing.assert_allclose(tangent, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "layer",
    [*core_layers(num_samples=64), _layers()[-3]],
    ids=lambda m: type(m).__name__,
)
def test_loss_forward_mode_equals_reverse(layer):
    theta = _theta(layer)
    y_true = jax.vmap(layer.solve)(theta.reshape(-1, *theta.shape[-layer.event_ndim :]))
    y_true = y_true.reshape(theta.shape)
    loss = pl.FenchelYoungLoss(layer)
    f = lambda t: loss(t, y_true, key=KEY)  # noqa: E731
    np.testing.assert_allclose(
        jax.jacfwd(f)(theta), jax.jacrev(f)(theta), rtol=1e-5, atol=1e-6
    )


def test_second_derivatives_in_any_mode_are_refused():
    layer = pl.PerturbedArgmax(num_samples=20, sigma=0.5, noise=pl.Gumbel())
    theta = jnp.array([0.3, -1.0, 2.0, 0.5])
    f = lambda t: jnp.sum(layer(t, key=KEY) ** 2)  # noqa: E731
    for second in (
        lambda: jax.jacfwd(jax.jacfwd(f))(theta),
        lambda: jax.jacrev(jax.jacfwd(f))(theta),
        lambda: jax.jacfwd(jax.grad(f))(theta),
    ):
        with pytest.raises(NotImplementedError, match="second derivative"):
            second()
