"""Perturbed shortest-path layers: FY gradient identity, small-sigma limit, paths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import perturbed_layers as pl

TERRAIN = jnp.array([0.8, 1.2, 5.3, 7.7, 9.2])


def terrain(key, shape):
    return jax.random.choice(key, TERRAIN, shape)


@pytest.mark.parametrize("perturbation", ["additive", "multiplicative"])
@pytest.mark.slow
def test_fenchel_young_gradient_identity(perturbation):
    layer = pl.PerturbedShortestPath(
        num_samples=8, sigma=0.1, noise=pl.Normal(), perturbation=perturbation
    )
    costs = terrain(jax.random.key(0), (3, 6, 6))
    y_true = pl.solvers.grid_shortest_path(terrain(jax.random.key(1), (3, 6, 6)))
    key = jax.random.key(2)
    loss = pl.FenchelYoungLoss(layer)
    grad = jax.grad(lambda c: loss(c, y_true, key=key).sum())(costs)
    if perturbation == "additive":
        expected = y_true - layer(costs, key=key)
    else:
        # Errata: d/dc E[min <y, c~>] = E[y*(c~) * exp(sZ - s^2/2)], not y_eps(c).
        keys = jax.random.split(key, 8)
        z = jax.vmap(lambda k: jax.random.normal(k, costs.shape))(keys)
        scale = jnp.exp(0.1 * z - 0.1**2 / 2)
        ys = pl.solvers.grid_shortest_path(costs * scale)
        expected = y_true - jnp.mean(ys * scale, axis=0)
    np.testing.assert_allclose(grad, expected, atol=1e-5)


@pytest.mark.slow
def test_small_sigma_recovers_the_solver_and_ends_are_on_the_path():
    costs = terrain(jax.random.key(3), (4, 12, 12))
    layer = pl.PerturbedShortestPath(
        num_samples=5, sigma=1e-4, noise=pl.Normal(), perturbation="multiplicative"
    )
    y = layer(costs, key=jax.random.key(4))
    exact = pl.solvers.grid_shortest_path(costs)
    # Tiny noise can only flip exact ties; the path cost is the optimum.
    np.testing.assert_allclose(
        jnp.sum(y * costs, (1, 2)), jnp.sum(exact * costs, (1, 2)), rtol=1e-5
    )
    np.testing.assert_allclose(y[:, 0, 0], 1.0)
    np.testing.assert_allclose(y[:, -1, -1], 1.0)


@pytest.mark.slow
def test_jit_and_vmap_agree():
    layer = pl.PerturbedShortestPath(
        num_samples=4, sigma=0.3, noise=pl.Normal(), connectivity=4
    )
    costs = terrain(jax.random.key(5), (3, 5, 7)) + 1.0  # additive noise stays positive
    keys = jax.random.split(jax.random.key(6), 3)
    rows = jnp.stack([layer(costs[i], key=keys[i]) for i in range(3)])
    mapped = jax.jit(jax.vmap(lambda c, k: layer(c, key=k)))(costs, keys)
    np.testing.assert_allclose(mapped, rows, atol=1e-6)


@pytest.mark.slow
def test_graph_shortest_path_layer():
    inf = jnp.inf
    weights = jnp.array([[inf, 1.0, 4.0], [inf, inf, 1.0], [inf, inf, inf]])
    layer = pl.PerturbedGraphShortestPath(
        0, 2, num_samples=200, sigma=0.5, noise=pl.Normal()
    )
    y = layer(weights, key=jax.random.key(7))
    # The direct arc wins when its noise beats the two-arc path by 2: P small but > 0.
    assert 0.0 < float(y[0, 2]) < 0.05
    np.testing.assert_allclose(y[0, 1], y[1, 2], atol=1e-6)
    np.testing.assert_allclose(y[0, 1] + y[0, 2], 1.0, atol=1e-6)
    loss = pl.FenchelYoungLoss(layer)
    y_true = pl.solvers.shortest_path(weights, 0, 2)
    # +inf for missing arcs: the loss is finite (no 0 * inf).
    value = loss(weights, y_true, key=jax.random.key(7))
    assert bool(jnp.isfinite(value)) and float(value) > -0.1
    g = jax.grad(lambda w: loss(w, y_true, key=jax.random.key(7)))(weights)
    np.testing.assert_allclose(g, y_true - y, atol=1e-6)


def test_negative_perturbed_grid_costs_are_an_error():
    layer = pl.PerturbedShortestPath(num_samples=4, sigma=5.0, noise=pl.Normal())
    with pytest.raises(Exception, match="positive"):
        jax.block_until_ready(layer(jnp.full((5, 5), 0.1), key=jax.random.key(8)))
    with pytest.raises(ValueError, match="connectivity"):
        pl.PerturbedShortestPath(
            num_samples=4, sigma=0.1, noise=pl.Normal(), connectivity=6
        )
