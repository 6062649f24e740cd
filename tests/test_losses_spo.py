"""SPO+ against its definition, written out on a 3-path shortest path and an argmax."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import PATHS, argmax_layer, argmin_layer, path_layer, three_paths

import perturbed_layers as pl


def spo_paths_oracle(pred, costs):
    """The definition, per instance: max_w <c - 2ĉ, w> + 2<ĉ, w*(c)> - z*(c) over
    the three paths, and the gradient 2(w*(c) - w*(2ĉ - c))."""
    w_c = PATHS[np.argmin(PATHS @ costs)]
    value = np.max(PATHS @ (costs - 2 * pred)) + 2 * pred @ w_c - costs @ w_c
    w_z = PATHS[np.argmin(PATHS @ (2 * pred - costs))]
    return value, 2 * (w_c - w_z), w_c, w_z


def random_instances(seed, shape):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 3.0, shape), rng.uniform(0.5, 3.0, shape)


@pytest.mark.slow
def test_spo_plus_three_paths_closed_form():
    with jax.enable_x64(True):
        pred, costs = random_instances(0, (2, 3, 5))
        loss = pl.SPOPlusLoss(path_layer())
        value = loss(jnp.asarray(pred), jnp.asarray(costs))
        grad = jax.grad(lambda p: loss(p, jnp.asarray(costs)).sum())(jnp.asarray(pred))
        assert value.shape == (2, 3)
        moved = 0
        for i, j in itertools.product(range(2), range(3)):
            v, g, w_c, w_z = spo_paths_oracle(pred[i, j], costs[i, j])
            np.testing.assert_allclose(value[i, j], v, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(grad[i, j], g, atol=1e-12)
            if np.any(w_c != w_z):
                moved += 1
                # The factor 2 matters here: half the gradient does not match.
                assert not np.allclose(grad[i, j], g / 2)
        assert moved >= 2  # the check above was not vacuous


def test_spo_plus_gradient_is_finite_differences():
    # SPO+ is piecewise linear: central differences away from kinks are exact, so the
    # scale of the gradient (the 2 of 2(w*(c) - w*(2ĉ - c))) is checked independently.
    with jax.enable_x64(True):
        pred, costs = random_instances(1, (6, 5))
        pred, costs = jnp.asarray(pred), jnp.asarray(costs)
        loss = pl.SPOPlusLoss(path_layer())
        grad = jax.grad(lambda p: loss(p, costs).sum())(pred)
        h = 1e-6
        fd = np.zeros(pred.shape)
        for j in range(5):
            e = jnp.zeros_like(pred).at[:, j].set(h)
            fd[:, j] = (loss(pred + e, costs) - loss(pred - e, costs)) / (2 * h)
        np.testing.assert_allclose(grad, fd, atol=1e-6)
        assert np.abs(fd).max() >= 2 - 1e-6  # some entry moves at slope 2


@pytest.mark.slow
def test_spo_plus_maximisation_mirrors_minimisation():
    rng = np.random.default_rng(2)
    theta_hat = jnp.asarray(rng.normal(size=(8, 4)), jnp.float32)
    theta = jnp.asarray(rng.normal(size=(8, 4)), jnp.float32)
    loss = pl.SPOPlusLoss(argmax_layer())
    value = loss(theta_hat, theta)
    grad = jax.grad(lambda t: loss(t, theta).sum())(theta_hat)
    # Written out: for scores, max_y <2θ̂ - θ, y> - <2θ̂ - θ, y*(θ)>, gradient
    # 2(y*(2θ̂ - θ) - y*(θ)).
    z = 2 * theta_hat - theta
    best = jnp.argmax(theta, axis=-1)
    exact = jnp.max(z, axis=-1) - jnp.take_along_axis(z, best[:, None], -1)[:, 0]
    np.testing.assert_allclose(value, exact, rtol=1e-6, atol=1e-6)
    expected = 2 * (jax.nn.one_hot(jnp.argmax(z, -1), 4) - jax.nn.one_hot(best, 4))
    np.testing.assert_allclose(grad, expected)
    assert float(jnp.abs(expected).sum()) > 0
    # The same loss as for the costs -θ̂, -θ with the argmin solver.
    argmin = argmin_layer()
    mirrored = pl.SPOPlusLoss(argmin)
    np.testing.assert_allclose(mirrored(-theta_hat, -theta), value, rtol=1e-6)
    grad_min = jax.grad(lambda c: mirrored(c, -theta).sum())(-theta_hat)
    np.testing.assert_allclose(grad_min, -grad)


def test_spo_plus_zero_at_truth_and_nonnegative():
    pred, costs = random_instances(3, (50, 5))
    loss = pl.SPOPlusLoss(path_layer())
    costs = jnp.asarray(costs, jnp.float32)
    np.testing.assert_array_equal(loss(costs, costs), 0.0)
    assert float(jnp.min(loss(jnp.asarray(pred, jnp.float32), costs))) >= 0.0


def test_spo_plus_upper_bounds_the_regret():
    pred, costs = random_instances(4, (50, 5))
    loss = pl.SPOPlusLoss(path_layer())
    value = loss(jnp.asarray(pred), jnp.asarray(costs))
    w_hat = PATHS[np.argmin(pred @ PATHS.T, axis=-1)]
    regret = np.sum(costs * w_hat, -1) - np.min(costs @ PATHS.T, axis=-1)
    assert np.all(np.asarray(value) >= regret - 1e-5)
    assert np.any(regret > 0)


def test_spo_plus_with_y_true_and_solutions():
    pred, costs = random_instances(5, (4, 5))
    pred, costs = jnp.asarray(pred, jnp.float32), jnp.asarray(costs, jnp.float32)
    loss = pl.SPOPlusLoss(path_layer())
    value, (w_c, w_z) = loss.value_and_solutions(pred, costs)
    for b in range(4):
        _, _, oracle_c, oracle_z = spo_paths_oracle(np.asarray(pred[b]), costs[b])
        np.testing.assert_array_equal(w_c[b], oracle_c)
        np.testing.assert_array_equal(w_z[b], oracle_z)
    np.testing.assert_allclose(loss(pred, costs, y_true=w_c), value)
    # A y_true that is not optimal for costs_true is taken at its word.
    other = jnp.roll(w_c, 1, axis=0)
    assert not np.allclose(loss(pred, costs, y_true=other), value)


@pytest.mark.slow
def test_spo_plus_jit_forward_mode_and_grid_solver():
    layer = pl.PerturbedShortestPath(
        num_samples=1, sigma=1.0, noise=pl.Normal(), connectivity=4
    )
    rng = np.random.default_rng(6)
    pred = jnp.asarray(rng.uniform(1.5, 2.5, (3, 4, 4)), jnp.float32)
    costs = jnp.asarray(rng.uniform(1.0, 2.0, (3, 4, 4)), jnp.float32)
    loss = pl.SPOPlusLoss(layer)
    value, grad = jax.jit(jax.value_and_grad(lambda p: loss(p, costs).sum()))(pred)
    w_c = pl.solvers.grid_shortest_path(costs, 4)
    w_z = pl.solvers.grid_shortest_path(2 * pred - costs, 4)
    np.testing.assert_allclose(grad, 2 * (w_c - w_z))
    exact = jnp.sum((2 * pred - costs) * (w_c - w_z), axis=(1, 2))
    np.testing.assert_allclose(value, exact.sum(), rtol=1e-5)
    tangent = jnp.ones_like(pred)
    _, out = jax.jvp(lambda p: loss(p, costs), (pred,), (tangent,))
    np.testing.assert_allclose(out, jnp.sum(2 * (w_c - w_z), axis=(1, 2)))


def test_spo_plus_args_reach_the_solver():
    # A solver with problem data: items where mask is 0 are unavailable.
    def masked_argmin(costs, mask):
        return jax.nn.one_hot(jnp.argmin(jnp.where(mask, costs, jnp.inf)), 3)

    layer = path_layer(masked_argmin)
    costs = jnp.array([[0.1, 1.0, 2.0], [0.1, 1.0, 2.0]])
    pred = jnp.array([[0.0, 3.0, 1.0], [0.0, 3.0, 1.0]])
    mask = jnp.array([[True, True, True], [False, True, True]])
    value, (w_c, _) = pl.SPOPlusLoss(layer).value_and_solutions(pred, costs, mask)
    np.testing.assert_array_equal(w_c, [[1, 0, 0], [0, 1, 0]])
    assert float(value[0]) != float(value[1])


def test_spo_plus_nan_instance_only():
    pred, costs = random_instances(7, (3, 5))
    pred = jnp.asarray(pred, jnp.float32).at[1, 2].set(jnp.nan)
    value = pl.SPOPlusLoss(path_layer())(pred, jnp.asarray(costs, jnp.float32))
    assert np.isnan(value[1]) and np.all(np.isfinite(value[jnp.array([0, 2])]))


def test_spo_plus_bad_input():
    loss = pl.SPOPlusLoss(path_layer())
    with pytest.raises(ValueError, match="costs_true"):
        loss(jnp.ones((2, 5)), jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="y_true"):
        loss(jnp.ones((2, 5)), jnp.ones((2, 5)), y_true=jnp.ones((5,)))
    with pytest.raises(TypeError, match="pred"):
        loss(jnp.ones((2, 5), jnp.int32), jnp.ones((2, 5)))
    with pytest.raises(ValueError, match="objective"):
        pl.SPOPlusLoss(
            pl.Perturbed(jnp.sort, num_samples=1, sigma=1.0, noise=pl.Normal())
        )
    with pytest.raises(TypeError, match="layer"):
        pl.SPOPlusLoss(three_paths)  # pyright: ignore[reportArgumentType]
