"""The Gamma sampler behind pl.SumOfGamma: exact in distribution (Kolmogorov–Smirnov
against SciPy), including its redraw of rejected proposals, and the Sum-of-Gamma's
closed-form moments.

Kolmogorov–Smirnov tolerances: with N draws the 0.1% critical value of the statistic
is 1.95/√N (0.0138 at N = 20,000). Keys are pinned, one per case (cases sharing a key
share their uniform and normal streams, so their statistics would be correlated), so
each check is deterministic; a sampler a few percent off in scale or shape is beyond it
(checked below)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import perturbed_layers as pl
from perturbed_layers import _noise

stats = pytest.importorskip("scipy.stats")

N = 20_000
KS_CRITICAL = 1.95 / math.sqrt(N)


def ks(draws, cdf):
    """The KS statistic of `draws` against `cdf`. Below float32's smallest normal
    number a draw is 0 (XLA:CPU flushes subnormals; Gamma(0.05) puts 1.3% of its mass
    below 1e-38): the draws there are one atom, compared with the mass below it."""
    tiny = np.finfo(np.float32).tiny
    x = np.sort(np.asarray(draws, np.float64))
    n = len(x)
    f = cdf(np.maximum(x, tiny))
    above, below = np.arange(1, n + 1) / n - f, f - np.arange(0, n) / n
    atom = x < tiny
    return max(
        np.max(above),
        np.max(below[~atom], initial=0.0),
        abs(np.mean(atom) - cdf(tiny)),
    )


def standard_gamma(key, alpha, n=N, dtype=jnp.float32):
    return jax.jit(lambda k: _noise._standard_gamma(k, alpha, n, dtype))(key)


SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "alpha, seed",
    [
        (0.2, 10),
        pytest.param(1.0, 11, marks=SLOW),
        pytest.param(0.05, 12, marks=SLOW),
        pytest.param(0.5, 13, marks=SLOW),
        pytest.param(1.7, 14, marks=SLOW),
        pytest.param(4.0, 15, marks=SLOW),
    ],
)
def test_standard_gamma_matches_scipy(alpha, seed):
    # alpha < 1 takes the boost Gamma(alpha + 1)·U^{1/alpha}; alpha ≥ 1 goes direct.
    g = standard_gamma(jax.random.key(seed), alpha)
    assert g.shape == (N,) and g.dtype == jnp.float32
    assert bool(jnp.all(g >= 0)) and bool(jnp.all(jnp.isfinite(g)))
    assert ks(g, stats.gamma(alpha).cdf) < KS_CRITICAL
    # The check has power. A scale off by c moves the CDF by about (c − 1)·max x·f(x)
    # (f the density): c − 1 = 3 critical values over that peak (3% at alpha = 4, 36%
    # at alpha = 0.05) fails it; so does a shape 5% off.
    peak = float(
        np.max(
            np.linspace(1e-3, 20, 20_000)
            * stats.gamma(alpha).pdf(np.linspace(1e-3, 20, 20_000))
        )
    )
    assert ks((1 + 3 * KS_CRITICAL / peak) * g, stats.gamma(alpha).cdf) > KS_CRITICAL
    assert ks(g, stats.gamma(1.05 * alpha).cdf) > KS_CRITICAL


@pytest.mark.parametrize("alpha, seed", [(0.2, 20), pytest.param(1.01, 21, marks=SLOW)])
def test_redraw_of_rejected_proposals_is_exact(alpha, seed, monkeypatch):
    # One proposal per element and 2 blocks per redraw: about 4-5% of the elements
    # (a ≈ 1.2 or 1.01) go through the while loop, over many iterations. Were the
    # redraw biased (say, towards values accepted on the first try), KS would see it.
    monkeypatch.setattr(_noise, "_PROPOSALS", 1)
    monkeypatch.setattr(_noise, "_BLOCKS_PER_REDRAW", 2)
    g = standard_gamma(jax.random.key(seed), alpha)
    assert ks(g, stats.gamma(alpha).cdf) < KS_CRITICAL


@pytest.mark.slow
def test_standard_gamma_odd_sizes_and_float64(getkey):
    # Sizes that are not a multiple of the block, and one smaller than a block.
    for n in (1, 5, 129, 1000):
        g = standard_gamma(getkey(), 0.3, n)
        assert g.shape == (n,) and bool(jnp.all(jnp.isfinite(g)))
    with jax.enable_x64(True):  # pyright: ignore[reportAttributeAccessIssue]
        g = standard_gamma(getkey(), 0.5, N, jnp.float64)
        assert g.dtype == jnp.float64
        assert ks(g, stats.gamma(0.5).cdf) < KS_CRITICAL


@pytest.mark.slow
def test_sum_of_gamma_moments_and_shapes(getkey):
    # Mean (τ/k)(Σ_{i≤s} 1/i − log s), variance (τ²/k) Σ_{i≤s} 1/i². N = 200,000:
    # s.e. of the mean √(var/N) ≈ 0.0025 (k = 3, τ = 2): tolerance 0.015 is 6 s.e.;
    # of the variance about 0.5%: tolerance 3%.
    for k, tau, s in [(3, 2.0, 10), (0.5, 1.0, 4)]:
        z = pl.SumOfGamma(k, tau=tau, s=s).sample(getkey(), (400, 500))
        harmonic = sum(1 / i for i in range(1, s + 1))
        mean = tau / k * (harmonic - math.log(s))
        var = tau**2 / k * sum(1 / i**2 for i in range(1, s + 1))
        assert abs(float(jnp.mean(z)) - mean) < 0.015 * max(1.0, math.sqrt(var))
        assert abs(float(jnp.var(z)) / var - 1) < 0.03
    noise = pl.SumOfGamma(2)
    key = getkey()
    assert noise.sample(key, ()).shape == ()
    assert noise.sample(key, (0, 3)).shape == (0, 3)
    assert noise.sample(key, (2, 3), jnp.bfloat16).dtype == jnp.bfloat16
    z = noise.sample(key, (4, 5))
    np.testing.assert_array_equal(z, noise.sample(key, (4, 5)))  # pinned key
    np.testing.assert_array_equal(z, jax.jit(lambda k: noise.sample(k, (4, 5)))(key))
    assert not np.array_equal(z, noise.sample(getkey(), (4, 5)))


def test_sum_of_gamma_single_term_is_a_shifted_gamma(getkey):
    # s = 1: ε = (τ/k)·k·G = τ·G with G ~ Gamma(1/k): KS against scipy's Gamma with
    # scale τ; the same draws rescaled as if τ were 1.1τ fail it.
    k, tau = 4.0, 0.7
    z = pl.SumOfGamma(k, tau=tau, s=1).sample(getkey(), (N,))
    assert ks(z, stats.gamma(1 / k, scale=tau).cdf) < KS_CRITICAL
    assert ks(z, stats.gamma(1 / k, scale=1.1 * tau).cdf) > KS_CRITICAL
