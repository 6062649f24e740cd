"""pl.PerturbedAssignment: 2 × 2 closed forms (Normal and Gumbel), small-σ limit,
Fenchel–Young gradient, jit/vmap/grad."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

import perturbed_layers as pl

# Δ = θ00 + θ11 − θ01 − θ10 = 0.9: the identity is the better of the two matchings.
THETA_2X2 = jnp.array([[0.7, 0.1], [-0.3, 0.0]])
DELTA = 0.9
SIGMA = 0.6


def normal_p(theta):
    """P(identity) under Normal noise: Φ(Δ/(2σ)), the noise on Δ being N(0, 4σ²)."""
    delta = theta[0, 0] + theta[1, 1] - theta[0, 1] - theta[1, 0]
    return 0.5 * (1 + jax.scipy.special.erf(delta / (2 * SIGMA) / math.sqrt(2)))


def gumbel_p(theta):
    """P(identity) under Gumbel noise: the noise on Δ/σ is a sum of two independent
    standard logistics (differences of Gumbels), whose CDF is
    F(x) = eˣ(eˣ − 1 − x)/(eˣ − 1)²."""
    x = (theta[0, 0] + theta[1, 1] - theta[0, 1] - theta[1, 0]) / SIGMA
    return jnp.exp(x) * (jnp.exp(x) - 1 - x) / (jnp.exp(x) - 1) ** 2


def as_matrix(p):
    return jnp.array([[p, 1 - p], [1 - p, p]])


@pytest.mark.parametrize(
    "noise, p_of", [(pl.Normal(), normal_p), (pl.Gumbel(), gumbel_p)]
)
@pytest.mark.slow
def test_two_by_two_closed_form_forward_and_jacobian(noise, p_of):
    # M = 10,000: the forward's standard error is √(p(1 − p)/M) < 0.005, so 0.02 is
    # four of them; the gradient of y₀₀ (entries ±0.22 to ±0.27) within 0.03.
    layer = pl.PerturbedAssignment(num_samples=10_000, sigma=SIGMA, noise=noise)
    key = jax.random.key(0)
    y, vjp = jax.vjp(jax.jit(lambda t: layer(t, key=key)), THETA_2X2)
    np.testing.assert_allclose(y, as_matrix(p_of(THETA_2X2)), atol=0.02)
    exact = jax.grad(p_of)(THETA_2X2)
    (estimate,) = vjp(jnp.array([[1.0, 0.0], [0.0, 0.0]]))
    assert float(jnp.min(jnp.abs(exact))) > 0.2
    np.testing.assert_allclose(estimate, exact, atol=0.03)


@pytest.mark.slow
def test_small_sigma_recovers_scipy_and_rows_columns_sum_to_one():
    scores = jax.random.normal(jax.random.key(1), (4, 6, 7))
    layer = pl.PerturbedAssignment(num_samples=3, sigma=1e-5, noise=pl.Gumbel())
    y = jax.jit(lambda s: layer(s, key=jax.random.key(2)))(scores)
    for b in range(4):
        rows, cols = linear_sum_assignment(np.asarray(scores[b]), maximize=True)
        want = np.zeros((6, 7), np.float32)
        want[rows, cols] = 1
        np.testing.assert_allclose(y[b], want, atol=1e-6)
    noisy = pl.PerturbedAssignment(num_samples=50, sigma=1.0, noise=pl.Gumbel())
    y = noisy(scores, key=jax.random.key(3))
    np.testing.assert_allclose(jnp.sum(y, axis=-1), 1.0, atol=1e-5)
    assert float(jnp.max(jnp.sum(y, axis=-2))) <= 1 + 1e-5
    assert 0 < float(jnp.min(jnp.max(y, axis=-1))) < 1  # the noise moves something


@pytest.mark.slow
def test_fenchel_young_gradient_is_y_eps_minus_y_under_jit_and_vmap():
    layer = pl.PerturbedAssignment(num_samples=16, sigma=0.5, noise=pl.Normal())
    scores = jax.random.normal(jax.random.key(4), (3, 4, 4))
    y_true = jnp.broadcast_to(jnp.eye(4), (3, 4, 4))
    key = jax.random.key(5)
    loss = pl.FenchelYoungLoss(layer)

    @jax.jit
    def grad_and_y(s):
        return jax.grad(lambda u: loss(u, y_true, key=key).sum())(s), layer(s, key=key)

    grad, y = grad_and_y(scores)
    np.testing.assert_allclose(grad, y - y_true, atol=1e-5)
    assert float(jnp.max(jnp.abs(grad))) > 0.1
    # vmap over a leading axis: each slice an unbatched call with its own key.
    keys = jax.random.split(key, 3)
    one = jax.jit(lambda s, k: layer(s, key=k))
    mapped = jax.vmap(one)(scores, keys)
    for b in range(3):
        np.testing.assert_allclose(mapped[b], one(scores[b], keys[b]), atol=1e-6)


@pytest.mark.slow
def test_bad_inputs():
    layer = pl.PerturbedAssignment(num_samples=4, sigma=0.5, noise=pl.Normal())
    with pytest.raises(ValueError, match="transpose"):
        layer(jnp.zeros((3, 2)), key=jax.random.key(0))
    with pytest.raises(TypeError, match="takes no args"):
        layer(jnp.zeros((2, 2)), {"mask": jnp.ones((2, 2))}, key=jax.random.key(0))
    # A NaN or an infinity makes its instance NaN (no solver error); the others solve.
    theta = jnp.array([[[1.0, 0.0], [0.0, jnp.nan]], [[1.0, 0.0], [0.0, 1.0]]])
    theta = jnp.concatenate([theta, jnp.full((1, 2, 2), jnp.inf)])
    y = layer(theta, key=jax.random.key(0))
    assert bool(jnp.all(jnp.isnan(y[0]))) and bool(jnp.all(jnp.isnan(y[2])))
    np.testing.assert_allclose(jnp.sum(y[1], -1), 1.0, atol=1e-6)
