"""pl.PerturbedLinearProgram: the two-corner closed form, data as fields and as args
(mixed), small-σ limit against HiGHS, Fenchel–Young gradient, jit/vmap/grad, errors."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linprog

import perturbed_layers as pl

KEY = jax.random.key(0)
# A bounded polytope in R⁴: x ≥ 0, A x ≤ b with positive A.
A_UB = jax.random.uniform(jax.random.key(1), (3, 4), minval=0.5, maxval=2.0)
B_UB = jnp.array([[4.0, 5.0, 6.0], [2.0, 8.0, 3.0], [6.0, 6.0, 1.0]])
COSTS = -jax.random.uniform(jax.random.key(2), (3, 4), minval=0.5, maxval=2.0)


@eqx.filter_jit
def run(layer, theta, args, key):
    return layer(theta, args, key=key)


@pytest.mark.slow
def test_two_corners_closed_form_forward_and_jacobian():
    # min c·x on the segment {x ≥ 0, x₀ + x₁ = 1}: x₀ = P(c₀ + σZ₀ < c₁ + σZ₁)
    # = Φ((c₁ − c₀)/(σ√2)). M = 10,000: standard errors < 0.005, tolerance 0.02.
    sigma = 0.5
    layer = pl.PerturbedLinearProgram(
        A_eq=jnp.ones((1, 2)),
        b_eq=jnp.ones(1),
        num_samples=10_000,
        sigma=sigma,
        noise=pl.Normal(),
    )

    def p(c):
        return 0.5 * (1 + jax.scipy.special.erf((c[1] - c[0]) / (2 * sigma)))

    c = jnp.array([0.1, 0.5])
    x, vjp = jax.vjp(lambda t: run(layer, t, None, KEY), c)
    np.testing.assert_allclose(x, jnp.array([p(c), 1 - p(c)]), atol=0.02)
    exact = jax.grad(p)(c)  # ±φ(·)/(σ√2) ≈ ±0.5
    assert float(jnp.min(jnp.abs(exact))) > 0.4
    np.testing.assert_allclose(vjp(jnp.array([1.0, 0.0]))[0], exact, atol=0.04)
    assert math.isclose(float(jnp.sum(x)), 1.0, rel_tol=1e-5)


def highs(c, a_ub, b_ub):
    res = linprog(np.asarray(c, np.float64), np.asarray(a_ub), np.asarray(b_ub))
    assert res.status == 0
    return res.fun


@pytest.mark.slow
def test_fields_args_mixed_and_small_sigma_recovers_highs():
    tiny = dict(num_samples=3, sigma=1e-5, noise=pl.Normal())
    shared = pl.PerturbedLinearProgram(A_ub=A_UB, **tiny)  # b_ub per instance
    x = run(shared, COSTS, {"b_ub": B_UB}, KEY)
    all_args = pl.PerturbedLinearProgram(**tiny)
    a = {"A_ub": jnp.broadcast_to(A_UB, (3, 3, 4)), "b_ub": B_UB}
    np.testing.assert_allclose(run(all_args, COSTS, a, KEY), x, atol=1e-5)
    for b in range(3):
        assert float(jnp.min(x[b])) >= -1e-5
        assert float(jnp.max(A_UB @ x[b] - B_UB[b])) <= 1e-4
        np.testing.assert_allclose(
            float(COSTS[b] @ x[b]), highs(COSTS[b], A_UB, B_UB[b]), rtol=1e-4
        )
    # Bounds as args: a box [0, u] with costs of both signs.
    box = pl.PerturbedLinearProgram(**tiny)
    c = jnp.array([[-1.0, 1.0, -2.0], [1.0, -1.0, 0.5]])
    upper = jnp.array([[2.0, 2.0, 1.0], [3.0, 1.0, 4.0]])
    want = jnp.where(c < 0, upper, 0.0)
    np.testing.assert_allclose(run(box, c, {"upper": upper}, KEY), want, atol=1e-5)


@pytest.mark.slow
def test_fenchel_young_gradient_is_x_true_minus_y_eps_under_jit_and_grad():
    layer = pl.PerturbedLinearProgram(
        A_ub=A_UB, num_samples=16, sigma=0.5, noise=pl.Normal()
    )
    args = {"b_ub": B_UB}
    loss = pl.FenchelYoungLoss(layer)
    x_true = run(
        pl.PerturbedLinearProgram(
            A_ub=A_UB, num_samples=1, sigma=1.0, noise=pl.Normal(), inference=True
        ),
        COSTS[::-1],
        args,
        None,
    )

    @jax.jit
    def grad_and_y(c):
        g = jax.grad(lambda u: loss(u, x_true, args, key=KEY).sum())(c)
        return g, layer(c, args, key=KEY)

    grad, y = grad_and_y(COSTS)
    np.testing.assert_allclose(grad, x_true - y, atol=1e-4)
    assert float(jnp.max(jnp.abs(grad))) > 0.1


@pytest.mark.slow
def test_vmap_over_a_leading_axis_with_args():
    layer = pl.PerturbedLinearProgram(
        A_ub=A_UB, num_samples=16, sigma=0.5, noise=pl.Normal()
    )
    keys = jax.random.split(KEY, 3)
    one = jax.jit(lambda c, b, k: layer(c, {"b_ub": b}, key=k))
    mapped = jax.vmap(one)(COSTS, B_UB, keys)
    for b in range(3):
        np.testing.assert_allclose(mapped[b], one(COSTS[b], B_UB[b], keys[b]))


def test_missing_or_ambiguous_data_is_an_error_naming_it():
    kw = dict(num_samples=4, sigma=0.5, noise=pl.Normal())
    with pytest.raises(ValueError, match="'b_ub' is missing"):
        pl.PerturbedLinearProgram(A_ub=A_UB, **kw)(COSTS, key=KEY)
    with pytest.raises(ValueError, match="'A_ub' is given twice"):
        pl.PerturbedLinearProgram(A_ub=A_UB, **kw)(
            COSTS, {"A_ub": jnp.broadcast_to(A_UB, (3, 3, 4)), "b_ub": B_UB}, key=KEY
        )
    with pytest.raises(TypeError, match="unknown args"):
        pl.PerturbedLinearProgram(**kw)(COSTS, {"c": COSTS}, key=KEY)
    with pytest.raises(ValueError, match="max_iterations"):
        pl.PerturbedLinearProgram(max_iterations=0, **kw)
