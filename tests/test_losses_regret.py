"""The regret loss: through a perturbed layer against closed forms, and through DBB,
NID and I-MLE against their written-out backward passes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import PATHS, path_layer, rel_error, softmax_jacobian, three_paths

import perturbed_layers as pl


@pytest.mark.slow
def test_regret_scores_gumbel_closed_form():
    sigma = 0.5
    theta_hat = jnp.array([[-0.6, 1.9, -0.2, 1.1, -1.0], [0.5, 0.0, -0.5, 0.3, 0.2]])
    theta = jnp.array([[0.2, -0.4, 1.0, 0.6, 0.0], [-0.3, 0.8, 0.1, 0.0, 0.4]])
    layer = pl.PerturbedArgmax(num_samples=5000, sigma=sigma, noise=pl.Gumbel())
    loss = pl.RegretLoss(layer)
    key = jax.random.key(0)
    value = loss(theta_hat, theta, key=key)
    soft = jax.nn.softmax(theta_hat / sigma)
    # Written out: z*(θ) − ⟨θ, softmax(θ̂/σ)⟩. Per sample ⟨θ, y⟩ has s.d. <= 0.7:
    # s.e. 0.01.
    exact = jnp.max(theta, -1) - jnp.sum(theta * soft, -1)
    np.testing.assert_allclose(value, exact, atol=0.04)
    grad = jax.grad(lambda t: loss(t, theta, key=key).sum())(theta_hat)
    # −J θ with J the softmax Jacobian (symmetric); the Jacobian estimate at
    # M = 10,000 has a relative error of about 0.03 (test_closed_forms), ~0.045 here.
    expected = -jnp.einsum("bij,bj->bi", softmax_jacobian(theta_hat, sigma), theta)
    assert rel_error(grad, expected) < 0.1
    # And exactly the layer's own vector–Jacobian product with the same key.
    _, vjp = jax.vjp(lambda t: layer(t, key=key), theta_hat)
    np.testing.assert_allclose(grad, -vjp(theta)[0], rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_regret_costs_two_items_normal_closed_form():
    # Two items, costs perturbed by σZ, Z standard normal: item 0 is chosen with
    # probability p = Φ((ĉ₁ − ĉ₀)/(σ√2)); R = c₀p + c₁(1 − p) − min(c), and
    # dR/dĉ₀ = −(c₀ − c₁) φ(d)/(σ√2), dR/dĉ₁ = +(c₀ − c₁) φ(d)/(σ√2).
    sigma = 0.4
    pred = np.array([[0.3, 0.5], [1.0, 0.2]])
    costs = np.array([[1.0, 2.0], [0.5, 1.5]])
    layer = pl.Perturbed(
        lambda c: jax.nn.one_hot(jnp.argmin(c), 2),
        num_samples=20_000,
        sigma=sigma,
        noise=pl.Normal(),
        objective="min",
    )
    loss = pl.RegretLoss(layer)
    key = jax.random.key(1)
    value = loss(jnp.asarray(pred), jnp.asarray(costs), key=key)
    grad = jax.grad(lambda p: loss(p, jnp.asarray(costs), key=key).sum())(
        jnp.asarray(pred)
    )
    scale = sigma * math.sqrt(2)
    for b in range(2):
        d = (pred[b, 1] - pred[b, 0]) / scale
        p = 0.5 * (1 + math.erf(d / math.sqrt(2)))
        exact = costs[b, 0] * p + costs[b, 1] * (1 - p) - costs[b].min()
        # per-sample s.d. <= |c₀ − c₁|/2 = 0.5: s.e. 0.0035
        assert abs(float(value[b]) - exact) < 0.015
        slope = (costs[b, 0] - costs[b, 1]) * math.exp(-(d**2) / 2)
        slope /= math.sqrt(2 * math.pi) * scale
        np.testing.assert_allclose(grad[b], [-slope, slope], atol=0.04)
        assert abs(slope) > 0.2  # the gradient is not ~0, so its sign is tested


@pytest.mark.slow
def test_regret_is_nonnegative_per_sample():
    # Every perturbed decision costs at least z*(c): the estimate is a mean of
    # non-negative numbers.
    rng = np.random.default_rng(2)
    pred = jnp.asarray(rng.uniform(0.5, 2.0, (30, 5)), jnp.float32)
    costs = jnp.asarray(rng.uniform(0.5, 2.0, (30, 5)), jnp.float32)
    loss = pl.RegretLoss(path_layer(num_samples=20, sigma=0.5))
    assert float(jnp.min(loss(pred, costs, key=jax.random.key(0)))) >= -1e-6


@pytest.mark.parametrize("lambd", [0.5, 3.0])
@pytest.mark.slow
def test_regret_through_dbb_nid_and_imle(lambd):
    rng = np.random.default_rng(3)
    # The one-arc path costs about as much as the two-arc ones: decisions differ.
    high = np.array([2.0, 2.0, 2.0, 2.0, 4.0])
    pred = rng.uniform(0.5, high, (32, 5)).astype(np.float32)
    costs = rng.uniform(0.5, high, (32, 5)).astype(np.float32)

    def solve(c):
        return PATHS[np.argmin(c @ PATHS.T, axis=-1)]

    regret = np.sum(costs * solve(pred), -1) - np.min(costs @ PATHS.T, -1)
    assert regret.max() > 0
    # DBB: the downstream gradient is g = c, so ∇ = (w*(ĉ + λc) − w*(ĉ))/λ.
    dbb = pl.RegretLoss(pl.BlackboxDifferentiation(path_layer(), lambd=lambd))
    value, grad = jax.value_and_grad(lambda p: dbb(p, jnp.asarray(costs)).sum())(
        jnp.asarray(pred)
    )
    np.testing.assert_allclose(value, regret.sum(), rtol=1e-5)
    expected = (solve(pred + lambd * costs) - solve(pred)) / lambd
    np.testing.assert_allclose(grad, expected, atol=1e-6)
    assert np.abs(expected).max() > 0
    # NID: ∇ = −c.
    nid = pl.RegretLoss(pl.NegativeIdentity(path_layer()))
    np.testing.assert_allclose(
        nid(jnp.asarray(pred), jnp.asarray(costs)), regret, rtol=1e-5
    )
    grad = jax.grad(lambda p: nid(p, jnp.asarray(costs)).sum())(jnp.asarray(pred))
    np.testing.assert_allclose(grad, -costs)
    # I-MLE with a tiny noise scale is DBB (the perturbed costs are ĉ − σε ≈ ĉ).
    imle = pl.IMLE(path_layer(), lambd=lambd, noise=pl.SumOfGamma(1), sigma=1e-6)
    key = jax.random.key(0)
    grad = jax.grad(
        lambda p: pl.RegretLoss(imle)(p, jnp.asarray(costs), key=key).sum()
    )(jnp.asarray(pred))
    np.testing.assert_allclose(grad, expected, atol=1e-6)


def test_regret_jit_and_graph_infinities():
    inf = jnp.inf
    weights = jnp.array(
        [
            [[inf, 1.0, 4.0], [inf, inf, 1.0], [inf, inf, inf]],
            [[inf, 3.0, 1.0], [inf, inf, 1.0], [inf, inf, inf]],
        ]
    )
    pred = weights.at[:, 0, 1].add(1.5)
    layer = pl.PerturbedGraphShortestPath(
        0, 2, num_samples=50, sigma=0.3, noise=pl.Normal()
    )
    loss = pl.RegretLoss(layer)
    key = jax.random.key(4)
    value, grad = jax.jit(
        jax.value_and_grad(lambda p: loss(p, weights, key=key).sum())
    )(pred)
    assert np.isfinite(float(value)) and value >= 0
    assert np.all(np.isfinite(np.asarray(grad)))


@pytest.mark.slow
def test_regret_nan_instance_and_bad_input():
    loss = pl.RegretLoss(path_layer(num_samples=10, sigma=0.1))
    key = jax.random.key(0)
    costs = jnp.ones((3, 5)).at[1, 0].set(jnp.nan)
    value = loss(jnp.ones((3, 5)), costs, key=key)
    assert np.isnan(value[1]) and np.all(np.isfinite(value[jnp.array([0, 2])]))
    # y_true, when given, stands for w*(costs_true).
    costs = jnp.arange(15.0).reshape(3, 5) % 4 + 1
    y_true = jax.vmap(three_paths)(costs)
    np.testing.assert_allclose(
        loss(costs, costs, y_true=y_true, key=key), loss(costs, costs, key=key)
    )
    assert not np.allclose(
        loss(costs, costs, y_true=y_true[::-1], key=key), loss(costs, costs, key=key)
    )
    with pytest.raises(ValueError, match="costs_true"):
        loss(jnp.ones((3, 5)), jnp.ones((3, 4)), key=key)
    with pytest.raises(ValueError, match="y_true"):
        loss(jnp.ones((3, 5)), jnp.ones((3, 5)), y_true=jnp.ones(5), key=key)
    with pytest.raises(RuntimeError, match="key"):
        loss(jnp.ones((3, 5)), jnp.ones((3, 5)))
    with pytest.raises(TypeError, match="layer"):
        pl.RegretLoss(three_paths)
    with pytest.raises(ValueError, match="objective"):
        pl.RegretLoss(
            pl.Perturbed(jnp.sort, num_samples=1, sigma=1.0, noise=pl.Normal())
        )
