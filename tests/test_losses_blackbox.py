"""Blackbox differentiation (DBB) and the negative identity (NID) against closed forms.

DBB's gradient for a linear downstream loss ⟨g, w⟩ is the exact gradient of the
interpolation f_λ(ĉ) = (min⟨ĉ + λg, w⟩ − min⟨ĉ, w⟩)/λ (costs), resp.
(max⟨θ, y⟩ − max⟨θ − λg, y⟩)/λ (scores): piecewise linear, so central differences of
f_λ, written out here on the enumerated solutions, check the sign and the 1/λ."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import PATHS, argmax_layer, path_layer, three_paths

import perturbed_layers as pl


def interpolation_min(costs, g, lambd):
    """f_λ for costs over the three paths, per instance (numpy)."""
    z = np.min((costs + lambd * g) @ PATHS.T, -1) - np.min(costs @ PATHS.T, -1)
    return z / lambd


def interpolation_max(theta, g, lambd):
    """f_λ for scores with the argmax: the feasible set is the one-hots."""
    return (np.max(theta, -1) - np.max(theta - lambd * g, -1)) / lambd


def central_differences(f, x, h=1e-6):
    out = np.zeros_like(x)
    for j in range(x.shape[-1]):
        e = np.zeros_like(x)
        e[..., j] = h
        out[..., j] = (f(x + e) - f(x - e)) / (2 * h)
    return out


def dbb_in_float64(make_layer, lambd, theta, g):
    """DBB around `make_layer()`: its output at θ and its backward pass for the
    cotangent g, in float64."""
    with jax.enable_x64(True):
        dbb = pl.BlackboxDifferentiation(make_layer(), lambd=lambd)
        y, vjp = jax.vjp(dbb, jnp.asarray(theta))
        (grad,) = vjp(jnp.asarray(g))
        return np.asarray(y), np.asarray(grad)


@pytest.mark.parametrize("lambd", [0.5, 4.0])
def test_dbb_costs_gradient_is_the_interpolation_gradient(lambd):
    rng = np.random.default_rng(0)
    costs = rng.uniform(0.5, 3.0, (20, 5))
    g = rng.normal(size=(20, 5))
    y, grad = dbb_in_float64(path_layer, lambd, costs, g)
    np.testing.assert_array_equal(y, PATHS[np.argmin(costs @ PATHS.T, -1)])
    # Written out: (w*(ĉ + λg) − w*(ĉ))/λ.
    moved = PATHS[np.argmin((costs + lambd * g) @ PATHS.T, -1)]
    np.testing.assert_allclose(grad, (moved - y) / lambd, atol=1e-12)
    fd = central_differences(lambda c: interpolation_min(c, g, lambd), costs)
    np.testing.assert_allclose(grad, fd, atol=1e-6)
    # Not vacuous: some instances move, and λ times (or 1/λ²) the gradient is wrong.
    assert np.abs(fd).max() > 0
    assert not np.allclose(grad * lambd, fd, atol=1e-6)


@pytest.mark.parametrize("lambd", [0.5, 4.0])
def test_dbb_scores_gradient_is_the_interpolation_gradient(lambd):
    rng = np.random.default_rng(1)
    theta = rng.normal(size=(20, 4))
    g = rng.normal(size=(20, 4))
    y, grad = dbb_in_float64(argmax_layer, lambd, theta, g)
    # Written out: −(y*(θ − λg) − y*(θ))/λ.
    moved = np.eye(4)[np.argmax(theta - lambd * g, -1)]
    np.testing.assert_allclose(grad, -(moved - y) / lambd, atol=1e-12)
    fd = central_differences(lambda t: interpolation_max(t, g, lambd), theta)
    np.testing.assert_allclose(grad, fd, atol=1e-6)
    assert np.abs(fd).max() > 0
    assert not np.allclose(grad * lambd, fd, atol=1e-6)


def test_dbb_step_reaches_the_target_path():
    # One gradient step through DBB moves the decision to the target (costs).
    costs = jnp.array([1.0, 1.0, 1.5, 1.5, 2.5])  # path 0 (cost 2) is chosen
    target = jnp.asarray(PATHS[1])
    dbb = pl.BlackboxDifferentiation(path_layer(), lambd=2.0)

    def hamming(c):
        return jnp.sum((dbb(c) - target) ** 2)

    grad = jax.grad(hamming)(costs)
    assert float(hamming(costs)) == 4.0
    assert float(hamming(costs - 1.0 * grad)) == 0.0


def test_dbb_batch_args_jit_and_nan():
    def masked_argmax(theta, mask):
        return jax.nn.one_hot(jnp.argmax(jnp.where(mask, theta, -jnp.inf)), 3)

    layer = pl.Perturbed(
        masked_argmax, num_samples=1, sigma=1.0, noise=pl.Normal(), objective="max"
    )
    dbb = pl.BlackboxDifferentiation(layer, lambd=1.0)
    theta = jnp.array([[[2.0, 1.0, 0.0]], [[2.0, 1.0, 0.0]]])  # batch (2, 1)
    mask = jnp.array([[[True, True, True]], [[False, True, True]]])
    y = jax.jit(dbb)(theta, mask)
    np.testing.assert_array_equal(y, [[[1, 0, 0]], [[0, 1, 0]]])
    bad = theta.at[0, 0, 1].set(jnp.nan)
    y = dbb(bad, mask)
    assert np.all(np.isnan(y[0])) and np.all(np.isfinite(y[1]))


def test_dbb_refuses_forward_mode_and_bad_lambda():
    dbb = pl.BlackboxDifferentiation(argmax_layer(), lambd=1.0)
    with pytest.raises(TypeError):
        jax.jvp(dbb, (jnp.ones(3),), (jnp.ones(3),))
    for bad in (0.0, -1.0, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="lambd"):
            pl.BlackboxDifferentiation(argmax_layer(), lambd=bad)
    with pytest.raises(TypeError, match="layer"):
        pl.BlackboxDifferentiation(three_paths, lambd=1.0)  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="objective"):
        pl.BlackboxDifferentiation(
            pl.Perturbed(jnp.sort, num_samples=1, sigma=1.0, noise=pl.Normal()),
            lambd=1.0,
        )


@pytest.mark.parametrize("objective", ["min", "max"])
def test_nid_is_minus_or_plus_identity(objective):
    rng = np.random.default_rng(2)
    theta = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    pick = jnp.argmin if objective == "min" else jnp.argmax
    layer = pl.Perturbed(
        lambda t: jax.nn.one_hot(pick(t), 4),
        num_samples=1,
        sigma=1.0,
        noise=pl.Normal(),
        objective=objective,
    )
    nid = pl.NegativeIdentity(layer)
    y, vjp = jax.vjp(nid, theta)
    np.testing.assert_array_equal(y, jax.nn.one_hot(pick(theta, -1), 4))
    sign = -1.0 if objective == "min" else 1.0
    np.testing.assert_array_equal(vjp(g)[0], sign * g)
    _, tangent = jax.jvp(nid, (theta,), (g,))  # forward mode too
    np.testing.assert_array_equal(tangent, sign * g)
    # Same sign as DBB's gradient for small λ where DBB moves: DBB's (w*(ĉ+λg) −
    # w*(ĉ))/λ is −g-like for costs, +g-like for scores.
    dbb = pl.BlackboxDifferentiation(layer, lambd=10.0)
    (dbb_grad,) = jax.vjp(dbb, theta)[1](g)
    assert float(jnp.sum(dbb_grad * vjp(g)[0])) > 0


def test_nid_nan_and_bad_layer():
    nid = pl.NegativeIdentity(path_layer())
    costs = jnp.ones((2, 5)).at[1, 0].set(jnp.nan)
    y, vjp = jax.vjp(nid, costs)
    assert np.all(np.isnan(y[1])) and np.all(np.isfinite(y[0]))
    assert np.all(np.isnan(vjp(jnp.ones((2, 5)))[0][1]))
    with pytest.raises(TypeError, match="layer"):
        pl.NegativeIdentity(three_paths)  # pyright: ignore[reportArgumentType]
