"""The estimators against closed forms. Each tolerance is several Monte-Carlo standard
errors at the pinned keys: with M samples a Bernoulli mean has standard error
<= 0.5/sqrt(M)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    TF_SOFTMAX,
    TF_THETA,
    gumbel_max_value,
    normal_cdf,
    plackett_luce_topk_marginals,
    rel_error,
    softmax_jacobian,
)

import perturbed_layers as pl


def test_gumbel_argmax_is_softmax_tf_readme():
    layer = pl.PerturbedArgmax(num_samples=20_000, sigma=0.5, noise=pl.Gumbel())
    y = layer(jnp.asarray(TF_THETA, jnp.float32), key=jax.random.key(0))
    # standard error <= 0.5/sqrt(20000) = 0.0035; 0.012 is > 3 of them
    np.testing.assert_allclose(y, TF_SOFTMAX, atol=0.012)
    np.testing.assert_allclose(jnp.sum(y, axis=-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("sigma", [0.5, 2.0])
def test_gumbel_argmax_jacobian_is_softmax_jacobian(sigma):
    # Two values of sigma: a missing or doubled 1/sigma fails one of them.
    theta = jnp.asarray(TF_THETA, jnp.float32) * sigma
    layer = pl.PerturbedArgmax(num_samples=10_000, sigma=sigma, noise=pl.Gumbel())
    key = jax.random.key(1)
    jac = jax.jacrev(lambda t: layer(t, key=key))(theta)  # (2, 5, 2, 5)
    jac = jnp.stack([jac[0, :, 0], jac[1, :, 1]])
    # Measured relative error at M=10,000 is about 0.03 over keys; a wrong scale
    # factor (sigma, 1/M, ...) gives errors >= 0.5.
    assert rel_error(jac, softmax_jacobian(theta, sigma)) < 0.08
    # Rows are independent instances: row 0's output does not move with row 1's theta.
    cross = jax.jacrev(lambda t: layer(t, key=key))(theta)[0, :, 1]
    assert float(jnp.max(jnp.abs(cross))) == 0.0


@pytest.mark.slow
def test_fenchel_young_gumbel_closed_form():
    sigma = 0.5
    theta = jnp.asarray(TF_THETA, jnp.float32)
    y_true = jax.nn.one_hot(jnp.array([3, 1]), 5)
    loss = pl.FenchelYoungLoss(
        pl.PerturbedArgmax(num_samples=20_000, sigma=sigma, noise=pl.Gumbel())
    )
    key = jax.random.key(2)
    value = loss(theta, y_true, key=key)
    assert value.shape == (2,)
    exact = gumbel_max_value(theta, sigma) - jnp.sum(theta * y_true, axis=-1)
    # The max of Gumbels has standard deviation sigma*pi/sqrt(6) = 0.64: s.e. 0.0045.
    np.testing.assert_allclose(value, exact, atol=0.02)
    grad = jax.grad(lambda t: loss(t, y_true, key=key).sum())(theta)
    np.testing.assert_allclose(grad, jax.nn.softmax(theta / sigma) - y_true, atol=0.012)


@pytest.mark.slow
def test_fenchel_young_gradient_is_layer_mean_minus_target():
    # Same key, same samples: the loss gradient is exactly y_eps - y_true.
    layer = pl.PerturbedTopK(2, num_samples=500, sigma=0.3, noise=pl.Gumbel())
    theta = jax.random.normal(jax.random.key(3), (4, 6))
    y_true = pl.solvers.top_k_mask(jax.random.normal(jax.random.key(4), (4, 6)), 2)
    key = jax.random.key(5)
    grad = jax.grad(lambda t: pl.FenchelYoungLoss(layer)(t, y_true, key=key).sum())(
        theta
    )
    np.testing.assert_allclose(grad, layer(theta, key=key) - y_true, atol=1e-6)


@pytest.mark.slow
def test_fenchel_young_minimiser_sign():
    # For costs: gradient = y_true - y_eps(costs).
    def argmin(c):
        return jax.nn.one_hot(jnp.argmin(c), c.shape[-1])

    layer = pl.Perturbed(
        argmin, num_samples=300, sigma=0.2, noise=pl.Normal(), objective="min"
    )
    costs = jax.random.uniform(jax.random.key(6), (3, 4))
    y_true = jax.vmap(argmin)(costs[::-1])
    loss = pl.FenchelYoungLoss(layer)
    key = jax.random.key(7)
    grad = jax.grad(lambda c: loss(c, y_true, key=key).sum())(costs)
    np.testing.assert_allclose(grad, y_true - layer(costs, key=key), atol=1e-6)
    # The loss is >= 0 up to the omitted constant: <c, y> >= E[min <y', c + sZ>]
    # when y is feasible and E[Z] = 0.
    assert bool(jnp.all(loss(costs, y_true, key=key) > -0.05))


@pytest.mark.parametrize("delta", [-0.4, 0.0, 0.7])
def test_normal_two_item_ranking(delta):
    sigma = 0.5
    layer = pl.PerturbedRanking(num_samples=20_000, sigma=sigma, noise=pl.Normal())
    r = layer(jnp.array([delta, 0.0]), key=jax.random.key(8))
    p = normal_cdf(delta / (sigma * math.sqrt(2)))
    np.testing.assert_allclose(r, [p, 1 - p], atol=0.012)


def test_gumbel_topk_is_plackett_luce():
    sigma, k = 0.7, 2
    theta = jnp.array([0.5, -0.3, 1.2, 0.0])
    layer = pl.PerturbedTopK(k, num_samples=20_000, sigma=sigma, noise=pl.Gumbel())
    y = layer(theta, key=jax.random.key(9))
    weights = np.asarray(jax.nn.softmax(theta / sigma), np.float64)
    np.testing.assert_allclose(y, plackett_luce_topk_marginals(weights, k), atol=0.012)
    np.testing.assert_allclose(jnp.sum(y), k, rtol=1e-6)


def test_normal_relu_gradient_is_normal_cdf():
    # y_eps(x) = E[relu(x + sZ)], whose derivative is Phi(x/s); each scalar is an
    # instance (event_ndim=0) and relu is no linear-objective solver.
    sigma = 0.5
    layer = pl.Perturbed(
        jax.nn.relu, num_samples=20_000, sigma=sigma, noise=pl.Normal(), event_ndim=0
    )
    x = jnp.array([-0.8, -0.2, 0.0, 0.3, 1.0])
    grad = jax.grad(lambda u: layer(u, key=jax.random.key(10)).sum())(x)
    expected = np.array([normal_cdf(float(v) / sigma) for v in x])
    # Score-function estimate of a derivative; s.e. about 1/sqrt(M) = 0.007.
    np.testing.assert_allclose(grad, expected, atol=0.03)


@pytest.mark.slow
def test_hessian_of_perturbed_max_via_make_perturbed_fun():
    sigma = 1.0
    theta = jnp.array([0.3, -0.2, 0.5])
    f = pl.make_perturbed_fun(
        jnp.max, num_samples=200_000, sigma=sigma, chunk_size=50_000
    )
    hess = jax.hessian(f, argnums=1)(jax.random.key(11), theta)
    # Second-order score estimates are noisy: 0.05 absolute on entries of size 0.2.
    np.testing.assert_allclose(hess, softmax_jacobian(theta, sigma), atol=0.05)
    grad = jax.grad(f, argnums=1)(jax.random.key(11), theta)
    np.testing.assert_allclose(grad, jax.nn.softmax(theta / sigma), atol=0.02)


def test_multiplicative_shift_keeps_the_mean():
    # E[theta * exp(sZ - s^2/2)] = theta: a missing 1/2 in the shift is off by
    # exp(s^2/2) = 1.13 at s = 0.5.
    theta = jnp.array([0.5, 2.0, 5.0])
    layer = pl.Perturbed(
        lambda t: t,
        num_samples=20_000,
        sigma=0.5,
        noise=pl.Normal(),
        perturbation="multiplicative",
    )
    np.testing.assert_allclose(layer(theta, key=jax.random.key(12)), theta, rtol=0.02)


def test_multiplicative_jacobian_scales_with_one_over_theta():
    # y_eps(theta) = theta for the identity, so J = I; without the 1/theta the
    # estimate would be theta-scaled, without 1/sigma doubled at sigma = 0.5.
    theta = jnp.array([0.5, 2.0, 5.0])
    layer = pl.Perturbed(
        lambda t: t,
        num_samples=20_000,
        sigma=0.5,
        noise=pl.Normal(),
        perturbation="multiplicative",
        event_ndim=0,
    )
    grad = jax.grad(lambda t: layer(t, key=jax.random.key(13)).sum())(theta)
    np.testing.assert_allclose(grad, jnp.ones(3), atol=0.05)


@pytest.mark.parametrize("perturbation", ["additive", "multiplicative"])
@pytest.mark.slow
def test_fenchel_young_gradient_matches_finite_differences(perturbation):
    # With the key fixed the loss is piecewise linear in theta, and its exact
    # derivative is the estimator's: central differences agree to float rounding.
    jax.config.update("jax_enable_x64", True)
    try:
        layer = pl.PerturbedRanking(
            num_samples=50, sigma=0.5, noise=pl.Normal(), perturbation=perturbation
        )
        loss = pl.FenchelYoungLoss(layer)
        theta = jnp.array([1.3, 0.4, 2.2, 0.9], jnp.float64)
        y_true = jnp.array([0.0, 1.0, 3.0, 2.0], jnp.float64)
        key = jax.random.key(14)
        f = lambda t: loss(t, y_true, key=key)  # noqa: E731
        grad = jax.grad(f)(theta)
        eps = 1e-6
        fd = jnp.array(
            [(f(theta + eps * e) - f(theta - eps * e)) / (2 * eps) for e in jnp.eye(4)]
        )
        np.testing.assert_allclose(grad, fd, atol=1e-6)
    finally:
        jax.config.update("jax_enable_x64", False)
