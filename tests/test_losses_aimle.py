"""Adaptive I-MLE: the backward and the β update against hand computations, both
objectives, the state carried through jit-compiled steps, and training."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import PATHS, path_layer

import perturbed_layers as pl


def topk_layer(k=2):
    return pl.PerturbedTopK(k, num_samples=1, sigma=1.0, noise=pl.Gumbel())


def drawn_noise(noise, key, m, shape):
    """The documented draw: sample j from split(key, m)[j], for the flat batch."""
    return np.stack(
        [np.asarray(noise.sample(k, shape)) for k in jax.random.split(key, m)]
    )


def topk(x, k=2):  # the k largest of the last axis, as 0/1
    order = np.argsort(-x, axis=-1)[..., :k]
    out = np.zeros_like(x)
    np.put_along_axis(out, order, 1.0, axis=-1)
    return out


def state_with(beta, norm=1.0, velocity=0.0, stats=(0.0, 0.0)):
    return pl.AdaptiveIMLEState(
        beta=jnp.asarray(beta, jnp.float32),
        norm=jnp.asarray(norm, jnp.float32),
        velocity=jnp.asarray(velocity, jnp.float32),
        stats=jnp.asarray(stats, jnp.float32),
    )


def vjp_with_state(aimle, theta, state, g, key):
    """(y, ∂θ, the measurement) for the incoming gradient g."""
    y, vjp = jax.vjp(lambda t, s: aimle(t, s, key=key), jnp.asarray(theta), state)
    grad, measured = vjp(jnp.asarray(g))
    return y, grad, measured


@pytest.mark.slow
@pytest.mark.parametrize("beta", [0.3, 2.0])
def test_aimle_scores_closed_form(beta):
    noise = pl.SumOfGamma(2, tau=1.0, s=10)
    aimle = pl.AdaptiveIMLE(topk_layer(), noise=noise, num_samples=3)
    rng = np.random.default_rng(0)
    theta = rng.normal(size=(4, 5)).astype(np.float32)
    g = rng.normal(size=(4, 5)).astype(np.float32)
    g[3] = 0.0  # no incoming gradient: no gradient, not measured
    key = jax.random.key(7)
    y, grad, measured = vjp_with_state(aimle, theta, state_with(beta), g, key)
    eps = drawn_noise(noise, key, 3, (4, 5))
    samples = topk(theta + eps)
    np.testing.assert_allclose(y, samples.mean(0), atol=1e-6)
    # Written out: λ_b = β‖θ_b‖/‖g_b‖; (y*(θ + ε) − y*(θ − λg + ε))/λ per sample.
    g_norm = np.linalg.norm(g, axis=1)
    lambd = beta * np.linalg.norm(theta, axis=1) / np.where(g_norm > 0, g_norm, 1)
    lambd = lambd[:, None]
    diffs = samples - topk(theta - lambd * g + eps)
    expected = diffs.mean(0) / lambd
    expected[3] = 0.0
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)
    assert np.abs(expected).max() > 0
    assert not np.allclose(grad, expected * lambd, atol=1e-6)  # λ's scale matters
    nonzeros = (diffs[:, :3] != 0).sum()  # instances 0-2, 3 samples each
    np.testing.assert_array_equal(measured.stats, [nonzeros, 9])
    assert float(measured.beta) == 0.0


@pytest.mark.slow
def test_aimle_costs_closed_form():
    noise = pl.SumOfGamma(1, tau=0.5, s=10)
    aimle = pl.AdaptiveIMLE(path_layer(), noise=noise, num_samples=2)
    rng = np.random.default_rng(1)
    costs = rng.uniform(0.5, 2.0, (6, 5)).astype(np.float32)
    g = rng.normal(size=(6, 5)).astype(np.float32)
    key = jax.random.key(3)
    beta = 0.8
    y, grad, measured = vjp_with_state(aimle, costs, state_with(beta), g, key)
    eps = drawn_noise(noise, key, 2, (6, 5))

    def solve(c):
        return PATHS[np.argmin(c @ PATHS.T, axis=-1)]

    # Costs: perturbed as c − ε, moved to c − ε + λg (the sign flips with the sense).
    samples = solve(costs - eps)
    np.testing.assert_allclose(y, samples.mean(0), atol=1e-6)
    lambd = beta * np.linalg.norm(costs, axis=1) / np.linalg.norm(g, axis=1)
    diffs = solve(costs - eps + lambd[:, None] * g) - samples
    expected = diffs.mean(0) / lambd[:, None]
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)
    assert np.abs(expected).max() > 0
    np.testing.assert_array_equal(measured.stats, [(diffs != 0).sum(), 12])


@pytest.mark.slow
def test_aimle_is_imle_at_the_same_step():
    # One instance, β = λ‖g‖/‖θ‖: the same gradient as pl.IMLE(lambd=λ), same noise.
    noise = pl.SumOfGamma(2)
    theta = jnp.array([[0.4, -0.2, 1.3, 0.9, 0.1]])
    g = jnp.array([[0.5, -1.0, 0.3, 2.0, -0.7]])
    key = jax.random.key(5)
    lambd = 3.0
    beta = lambd * float(jnp.linalg.norm(g) / jnp.linalg.norm(theta))
    aimle = pl.AdaptiveIMLE(topk_layer(), noise=noise, num_samples=4)
    imle = pl.IMLE(topk_layer(), lambd=lambd, noise=noise, num_samples=4)
    _, grad, _ = vjp_with_state(aimle, theta, state_with(beta), g, key)
    _, vjp = jax.vjp(lambda t: imle(t, key=key), theta)
    np.testing.assert_allclose(grad, vjp(g)[0], rtol=1e-5)
    assert np.abs(np.asarray(grad)).max() > 0


def test_update_rule_by_hand():
    aimle = pl.AdaptiveIMLE(
        topk_layer(),
        noise=pl.SumOfGamma(2),
        step=0.01,
        target_norm=2.0,
        decay=0.8,
        momentum=0.5,
    )
    state = state_with(1.0, norm=2.5, velocity=0.004)
    # 6 non-zero entries over 4 sample gradients: n̂ = 1.5; n = 0.8·2.5 + 0.2·1.5 = 2.3
    # ≥ 2: u = −0.01 + 0.5·0.004 = −0.008, β = 0.992.
    new = aimle.update(state, state_with(0.0, 0.0, 0.0, stats=(6.0, 4.0)))
    np.testing.assert_allclose(new.norm, 2.3, rtol=1e-6)
    np.testing.assert_allclose(new.velocity, -0.008, rtol=1e-5)
    np.testing.assert_allclose(new.beta, 0.992, rtol=1e-6)
    np.testing.assert_array_equal(new.stats, [0.0, 0.0])
    # Below target: 0 non-zero entries, n = 0.8·2.3 = 1.84 < 2: u = 0.01 − 0.004.
    newer = aimle.update(new, state_with(0.0, stats=(0.0, 4.0)))
    np.testing.assert_allclose(newer.norm, 1.84, rtol=1e-6)
    np.testing.assert_allclose(newer.beta, 0.992 + 0.006, rtol=1e-6)
    # β stays ≥ 0; a measurement of no sample leaves the state as it is.
    low = aimle.update(state_with(0.005, norm=9.0), state_with(0.0, stats=(9.0, 1.0)))
    assert float(low.beta) == 0.0
    same = aimle.update(state, state_with(0.0, stats=(0.0, 0.0)))
    for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(a, b)
    init = aimle.init()
    assert float(init.beta) == 1.0 and float(init.norm) == 2.0


def _train(aimle, steps, key, jit=True):
    """Linear scores x @ W for a top-2 of 6 items, squared loss to the true top-2."""
    kx, kw = jax.random.split(key)
    x = jax.random.normal(kx, (64, 4))
    w_true = jax.random.normal(kw, (4, 6))
    y_true = jnp.asarray(topk(np.asarray(x @ w_true)))

    def loss_fn(w, state, key):
        y = aimle(x @ w, state, key=key)
        return jnp.mean(jnp.sum((y - y_true) ** 2, axis=-1))

    def step(w, state, key):
        value, (grad, measured) = jax.value_and_grad(loss_fn, argnums=(0, 1))(
            w, state, key
        )
        return w - 0.5 * grad, aimle.update(state, measured), value

    step = jax.jit(step) if jit else step
    # Not from W = 0: λ = β‖θ‖/‖g‖ is 0 at θ = 0, and so is the gradient.
    w, state = (
        0.1 * jax.random.normal(jax.random.fold_in(key, 10**6), (4, 6)),
        aimle.init(),
    )
    values, betas = [], []
    for i in range(steps):
        w, state, value = step(w, state, jax.random.fold_in(key, i))
        values.append(float(value))
        betas.append(float(state.beta))
    return values, betas, state


@pytest.mark.slow
def test_state_carried_through_jit_matches_eager():
    aimle = pl.AdaptiveIMLE(
        topk_layer(), noise=pl.SumOfGamma(2), num_samples=2, step=0.05
    )
    values, betas, state = _train(aimle, 4, jax.random.key(0))
    eager_values, eager_betas, _ = _train(aimle, 4, jax.random.key(0), jit=False)
    np.testing.assert_allclose(values, eager_values, rtol=1e-5)
    np.testing.assert_allclose(betas, eager_betas, rtol=1e-5)
    # β moved by ±step each step (no momentum): the state did flow back.
    np.testing.assert_allclose(np.abs(np.diff([1.0, *betas])), 0.05, rtol=1e-4)
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(state))


@pytest.mark.slow
def test_aimle_trains_a_top_k():
    aimle = pl.AdaptiveIMLE(
        topk_layer(), noise=pl.SumOfGamma(2), num_samples=4, step=0.01
    )
    values, betas, _ = _train(aimle, 60, jax.random.key(1))
    # From a near-random top-2 (loss about 2.7) down to half of it or less.
    assert np.mean(values[-10:]) < 0.5 * np.mean(values[:5])
    assert betas[-1] != 1.0


def test_aimle_errors():
    layer = topk_layer()
    noise = pl.SumOfGamma(2)
    aimle = pl.AdaptiveIMLE(layer, noise=noise)
    theta = jnp.zeros((2, 5))
    with pytest.raises(RuntimeError, match="key"):
        aimle(theta, aimle.init())
    with pytest.raises(TypeError, match="state"):
        aimle(theta, 1.0, key=jax.random.key(0))  # pyright: ignore[reportArgumentType]
    bad = eqx.tree_at(lambda s: s.beta, aimle.init(), jnp.ones(3))
    with pytest.raises(ValueError, match=r"state\.beta"):
        aimle(theta, bad, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"measured\.stats"):
        aimle.update(
            aimle.init(), eqx.tree_at(lambda s: s.stats, aimle.init(), jnp.ones(3))
        )
    for name, value in [
        ("init_beta", 0.0),
        ("init_beta", -1.0),
        ("step", 0.0),
        ("target_norm", float("nan")),
        ("sigma", -1.0),
        ("decay", 1.0),
        ("momentum", -0.1),
    ]:
        with pytest.raises(ValueError, match=name):
            pl.AdaptiveIMLE(layer, noise=noise, **{name: value})
    with pytest.raises(ValueError, match="num_samples"):
        pl.AdaptiveIMLE(layer, noise=noise, num_samples=0)
    with pytest.raises(TypeError, match="layer"):
        pl.AdaptiveIMLE(lambda t: t, noise=noise)  # pyright: ignore[reportArgumentType]
    negative = eqx.tree_at(lambda s: s.beta, aimle.init(), jnp.asarray(-1.0))
    with pytest.raises(Exception, match="beta"):
        jax.jit(lambda t, s: aimle(t, s, key=jax.random.key(0)))(theta, negative)
