"""Sum-of-Gamma noise and I-MLE against closed forms."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import PATHS, path_layer

import perturbed_layers as pl


def topk_layer(k=2):
    return pl.PerturbedTopK(k, num_samples=1, sigma=1.0, noise=pl.Gumbel())


# ---------------------------------------------------------------- Sum-of-Gamma


@pytest.mark.slow
def test_sum_of_gamma_moments():
    k, tau, s = 3, 2.0, 10
    z = pl.SumOfGamma(k, tau=tau, s=s).sample(jax.random.key(0), (100_000,))
    harmonic = sum(1 / i for i in range(1, s + 1))
    mean = tau / k * (harmonic - math.log(s))
    var = tau**2 / k * sum(1 / i**2 for i in range(1, s + 1))
    # s.e. of the mean sqrt(var / N) = 0.0045; of the variance about 1.5%.
    assert abs(float(jnp.mean(z)) - mean) < 0.02
    assert abs(float(jnp.var(z)) / var - 1) < 0.05


@pytest.mark.slow
def test_sum_of_k_sum_of_gamma_is_the_max_of_exponentials():
    # Σ over k independent SoG(k, τ, s) = τ(Σ_i E_i/i − log s), E_i ~ Exp(1), which is
    # τ(max of s Exp(1) − log s) (Rényi): CDF (1 − e^{−x/τ}/s)^s exactly, a Gumbel
    # as s → ∞. Kolmogorov–Smirnov at N = 100,000: 1.63/sqrt(N) = 0.0052 is the 1%
    # critical value; a wrong scale (τ, k/i, 1/k) or shift (log s) is far beyond.
    k, tau, s, n = 4, 0.5, 20, 100_000
    z = pl.SumOfGamma(k, tau=tau, s=s).sample(jax.random.key(1), (k, n))
    total = np.sort(np.asarray(jnp.sum(z, axis=0), np.float64))
    cdf = np.clip(1 - np.exp(-total / tau) / s, 0, None) ** s
    ks = np.max(np.abs(cdf - np.arange(1, n + 1) / n))
    assert ks < 0.0052
    # One SoG alone is not that distribution (the check can fail).
    alone = np.sort(np.asarray(z[0], np.float64))
    cdf1 = np.clip(1 - np.exp(-alone / tau) / s, 0, None) ** s
    assert np.max(np.abs(cdf1 - np.arange(1, n + 1) / n)) > 0.1


@pytest.mark.slow
def test_sum_of_gamma_has_no_density_and_bad_arguments():
    noise = pl.SumOfGamma(2)
    assert noise.sample(jax.random.key(0), (3,)).dtype == jnp.float32
    with pytest.raises(NotImplementedError, match="closed-form"):
        noise.log_prob(jnp.zeros(3))
    with pytest.raises(NotImplementedError, match="IMLE"):
        noise.score(jnp.zeros(3))
    layer = pl.PerturbedArgmax(num_samples=10, sigma=1.0, noise=noise)
    with pytest.raises(NotImplementedError, match="score"):
        layer(jnp.zeros(3), key=jax.random.key(0))
    for name, kwargs in [
        ("k", {"k": 0}),
        ("k", {"k": -1.0}),
        ("tau", {"k": 1, "tau": 0.0}),
        ("tau", {"k": 1, "tau": float("inf")}),
        ("s", {"k": 1, "s": 0}),
    ]:
        with pytest.raises(ValueError, match=name):
            pl.SumOfGamma(**kwargs)
    with pytest.raises(TypeError, match="s must"):
        pl.SumOfGamma(1, s=2.5)  # pyright: ignore[reportArgumentType]


# ------------------------------------------------------------------------ I-MLE


def drawn_noise(noise, key, m, shape):
    """The documented draw: sample j from split(key, m)[j], for the flat batch."""
    return np.stack(
        [np.asarray(noise.sample(k, shape)) for k in jax.random.split(key, m)]
    )


@pytest.mark.parametrize("lambd", [0.5, 5.0])
@pytest.mark.slow
def test_imle_scores_closed_form(lambd):
    noise = pl.SumOfGamma(2, tau=1.0, s=10)
    imle = pl.IMLE(topk_layer(), lambd=lambd, noise=noise, num_samples=3)
    rng = np.random.default_rng(0)
    theta = rng.normal(size=(4, 5)).astype(np.float32)
    g = rng.normal(size=(4, 5)).astype(np.float32)
    key = jax.random.key(7)
    y, vjp = jax.vjp(lambda t: imle(t, key=key), jnp.asarray(theta))
    (grad,) = vjp(jnp.asarray(g))
    eps = drawn_noise(noise, key, 3, (4, 5))

    def topk(x):  # the two largest of the last axis, as 0/1
        order = np.argsort(-x, axis=-1)[..., :2]
        out = np.zeros_like(x)
        np.put_along_axis(out, order, 1.0, axis=-1)
        return out

    samples = topk(theta + eps)
    np.testing.assert_allclose(y, samples.mean(0), atol=1e-6)
    # Written out: (y*(θ + ε) − y*(θ − λg + ε))/λ, averaged over the samples.
    expected = (samples - topk(theta - lambd * g + eps)).mean(0) / lambd
    np.testing.assert_allclose(grad, expected, atol=1e-6)
    assert np.abs(expected).max() > 0
    assert not np.allclose(grad, expected * lambd, atol=1e-6)  # λ matters


@pytest.mark.parametrize("lambd", [0.5, 5.0])
@pytest.mark.slow
def test_imle_costs_closed_form(lambd):
    noise = pl.SumOfGamma(1, tau=0.5, s=10)
    imle = pl.IMLE(path_layer(), lambd=lambd, noise=noise, num_samples=2)
    rng = np.random.default_rng(1)
    costs = rng.uniform(0.5, 2.0, (6, 5)).astype(np.float32)
    g = rng.normal(size=(6, 5)).astype(np.float32)
    key = jax.random.key(3)
    y, vjp = jax.vjp(lambda c: imle(c, key=key), jnp.asarray(costs))
    (grad,) = vjp(jnp.asarray(g))
    eps = drawn_noise(noise, key, 2, (6, 5))

    def solve(c):
        return PATHS[np.argmin(c @ PATHS.T, axis=-1)]

    # Costs: the perturbed costs are c − ε (perturb-and-MAP of exp(−⟨c, w⟩)).
    samples = solve(costs - eps)
    np.testing.assert_allclose(y, samples.mean(0), atol=1e-6)
    expected = (solve(costs - eps + lambd * g) - samples).mean(0) / lambd
    np.testing.assert_allclose(grad, expected, atol=1e-6)
    assert np.abs(expected).max() > 0
    assert not np.allclose(grad, expected * lambd, atol=1e-6)


# About 9 s per case on a loaded 2-core CPU (5000 x 200 Gamma draws per entry;
# 40 s before the flat Marsaglia–Tsang sampler).
@pytest.mark.slow
@pytest.mark.parametrize("objective", ["max", "min"])
def test_imle_forward_is_a_gumbel_softmax_sample(objective):
    # SoG(1, τ, s) → τ·Gumbel as s grows, so perturb-and-MAP of an argmax samples
    # softmax(θ/τ) (scores) or softmax(−c/τ) (costs, perturbed as c − ε): a test of
    # the perturbation's sign, since the noise is not symmetric. M = 5000: s.e.
    # <= 0.007; at s = 200 the law differs from a Gumbel's by O(1/s).
    pick = jnp.argmax if objective == "max" else jnp.argmin
    layer = pl.Perturbed(
        lambda t: jax.nn.one_hot(pick(t), t.shape[-1]),
        num_samples=1,
        sigma=1.0,
        noise=pl.Normal(),
        objective=objective,
    )
    tau = 0.5
    imle = pl.IMLE(
        layer, lambd=1.0, noise=pl.SumOfGamma(1, tau=tau, s=200), num_samples=5000
    )
    theta = jnp.array([[-0.6, 1.9, -0.2, 1.1, -1.0], [0.5, 0.0, -0.5, 0.3, 0.2]])
    y = imle(theta, key=jax.random.key(2))
    sign = 1 if objective == "max" else -1
    np.testing.assert_allclose(y, jax.nn.softmax(sign * theta / tau), atol=0.03)


@pytest.mark.slow
def test_imle_jit_args_nan_and_errors():
    noise = pl.SumOfGamma(1)

    def masked_argmax(theta, mask):
        return jax.nn.one_hot(jnp.argmax(jnp.where(mask, theta, -jnp.inf)), 3)

    layer = pl.Perturbed(
        masked_argmax, num_samples=1, sigma=1.0, noise=pl.Normal(), objective="max"
    )
    imle = pl.IMLE(layer, lambd=1.0, noise=noise, sigma=1e-3)
    theta = jnp.array([[2.0, 1.0, 0.0], [2.0, 1.0, 0.0]])
    mask = jnp.array([[True, True, True], [False, True, True]])
    key = jax.random.key(0)
    y = jax.jit(lambda t, m: imle(t, m, key=key))(theta, mask)
    np.testing.assert_array_equal(y, [[1, 0, 0], [0, 1, 0]])
    y = imle(theta.at[0, 1].set(jnp.nan), mask, key=key)
    assert np.all(np.isnan(y[0])) and np.all(np.isfinite(y[1]))
    with pytest.raises(RuntimeError, match="key"):
        imle(theta, mask)
    with pytest.raises(TypeError):  # a custom VJP: no forward mode
        jax.jvp(lambda t: imle(t, mask, key=key), (theta,), (theta,))
    for bad in (0.0, -2.0, float("nan")):
        with pytest.raises(ValueError, match="lambd"):
            pl.IMLE(layer, lambd=bad, noise=noise)
    with pytest.raises(ValueError, match="num_samples"):
        pl.IMLE(layer, lambd=1.0, noise=noise, num_samples=0)
    with pytest.raises(ValueError, match="sigma"):
        pl.IMLE(layer, lambd=1.0, noise=noise, sigma=-1.0)
    with pytest.raises(TypeError, match="noise"):
        pl.IMLE(layer, lambd=1.0, noise=pl.SumOfGamma)  # pyright: ignore[reportArgumentType]
