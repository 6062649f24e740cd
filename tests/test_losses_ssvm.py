"""The structured SVM loss against its definition, enumerated over the feasible set
with the Hamming distance Σ|y − ȳ| itself (not its linear form)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import PATHS, path_layer, three_paths

import perturbed_layers as pl


def enumerated(feasible, theta, y_true, margin, sign):
    """max_y [α Σ|y − ȳ| + s⟨θ, y⟩] − s⟨θ, ȳ⟩ and its gradient s(ŷ − ȳ), by
    enumeration (s = 1 for scores, −1 for costs)."""
    scores = margin * np.abs(feasible - y_true).sum(-1) + sign * feasible @ theta
    best = feasible[np.argmax(scores)]
    return scores.max() - sign * theta @ y_true, sign * (best - y_true)


@pytest.mark.parametrize("margin", [1.0, 0.3])
@pytest.mark.slow
def test_ssvm_top_k_scores(margin):
    n, k = 5, 2
    feasible = np.array(
        [
            np.isin(np.arange(n), c).astype(float)
            for c in itertools.combinations(range(n), k)
        ]
    )
    rng = np.random.default_rng(0)
    theta = rng.normal(size=(12, n))
    y_true = feasible[rng.integers(len(feasible), size=12)]
    loss = pl.StructuredSVMLoss(
        pl.PerturbedTopK(k, num_samples=1, sigma=1.0, noise=pl.Gumbel()), margin=margin
    )
    with jax.enable_x64(True):
        value = np.asarray(loss(jnp.asarray(theta), jnp.asarray(y_true)))
        grad = np.asarray(
            jax.grad(lambda t: loss(t, jnp.asarray(y_true)).sum())(jnp.asarray(theta))
        )
    for b in range(12):
        v, g = enumerated(feasible, theta[b], y_true[b], margin, 1)
        np.testing.assert_allclose(value[b], v, atol=1e-12)
        np.testing.assert_allclose(grad[b], g, atol=1e-12)
    assert np.all(value >= 0) and np.any(value > 0)
    # The margin's scale matters: with α = 1 and 0.3 the values differ somewhere.
    other = pl.StructuredSVMLoss(loss.layer, margin=2 * margin)
    assert not np.allclose(other(jnp.asarray(theta, jnp.float32), y_true), value)


@pytest.mark.parametrize("margin", [1.0, 0.4])
@pytest.mark.slow
def test_ssvm_three_paths_costs(margin):
    rng = np.random.default_rng(1)
    costs = rng.uniform(0.5, 2.0, (12, 5))
    y_true = PATHS[rng.integers(3, size=12)]
    loss = pl.StructuredSVMLoss(path_layer(), margin=margin)
    with jax.enable_x64(True):
        value = np.asarray(loss(jnp.asarray(costs), jnp.asarray(y_true)))
        grad = np.asarray(
            jax.grad(lambda c: loss(c, jnp.asarray(y_true)).sum())(jnp.asarray(costs))
        )
    for b in range(12):
        v, g = enumerated(PATHS, costs[b], y_true[b], margin, -1)
        np.testing.assert_allclose(value[b], v, atol=1e-12)
        np.testing.assert_allclose(grad[b], g, atol=1e-12)
    assert np.all(value >= 0) and np.any(value > 0) and np.any(grad != 0)


def test_ssvm_argmax_hinge_and_finite_differences():
    # For one-hots Δ = 2 off the target: L = max(0, max_{j≠ȳ} θ_j + 2α − θ_ȳ).
    rng = np.random.default_rng(2)
    theta = rng.normal(size=(10, 4))
    labels = rng.integers(4, size=10)
    y_true = np.eye(4)[labels]
    loss = pl.StructuredSVMLoss(
        pl.PerturbedArgmax(num_samples=1, sigma=1.0, noise=pl.Gumbel()), margin=0.5
    )
    with jax.enable_x64(True):
        value = np.asarray(loss(jnp.asarray(theta), jnp.asarray(y_true)))
        grad = np.asarray(
            jax.grad(lambda t: loss(t, jnp.asarray(y_true)).sum())(jnp.asarray(theta))
        )
        h = 1e-6
        fd = np.zeros_like(theta)
        for j in range(4):
            e = np.zeros_like(theta)
            e[:, j] = h
            up = loss(jnp.asarray(theta + e), jnp.asarray(y_true))
            down = loss(jnp.asarray(theta - e), jnp.asarray(y_true))
            fd[:, j] = (np.asarray(up) - np.asarray(down)) / (2 * h)
    other = np.where(y_true == 1, -np.inf, theta).max(-1)
    hinge = np.maximum(0, other + 2 * 0.5 - theta[np.arange(10), labels])
    np.testing.assert_allclose(value, hinge, atol=1e-12)
    np.testing.assert_allclose(grad, fd, atol=1e-6)


@pytest.mark.slow
def test_ssvm_batch_jit_nan_and_errors():
    loss = pl.StructuredSVMLoss(path_layer())
    costs = jnp.ones((2, 3, 5))
    y_true = jnp.broadcast_to(jnp.asarray(PATHS[0], jnp.float32), (2, 3, 5))
    assert jax.jit(loss)(costs, y_true).shape == (2, 3)
    value = loss(costs.at[1, 2, 0].set(jnp.nan), y_true)
    assert np.isnan(value[1, 2]) and np.isfinite(value[0]).all()
    with pytest.raises(Exception, match="0/1"):
        jax.block_until_ready(jax.jit(loss)(costs, y_true * 0.5))
    with pytest.raises(ValueError, match="y_true"):
        loss(costs, jnp.ones((2, 3, 4)))
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="margin"):
            pl.StructuredSVMLoss(path_layer(), margin=bad)
    with pytest.raises(TypeError, match="layer"):
        pl.StructuredSVMLoss(three_paths)  # pyright: ignore[reportArgumentType]
