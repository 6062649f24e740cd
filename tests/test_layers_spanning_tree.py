"""pl.PerturbedSpanningTree: the triangle closed form (1 − softmax with Gumbel noise:
each edge gets exactly σZ), missing edges (+inf, a mask as field or args), small-σ
limit against SciPy, Fenchel–Young gradient, jit/vmap/grad, errors."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.sparse.csgraph import minimum_spanning_tree

import perturbed_layers as pl

KEY = jax.random.key(0)


@eqx.filter_jit
def run(layer, theta, args, key):
    return layer(theta, args, key=key)


@pytest.mark.slow
def test_triangle_drops_its_perturbed_heaviest_edge_one_minus_softmax():
    # On a triangle the tree drops the heaviest edge: with Gumbel noise on each edge,
    # P(edge e dropped) = P(e = argmax(θ + σG)) = softmax(θ/σ)ₑ, so y_ε = 1 − softmax.
    # (Symmetrising a perturbed matrix would give each edge (G_ij + G_ji)/2 instead,
    # and this would fail.) M = 20,000: standard errors < 0.0035, tolerance 0.015.
    theta = jnp.array([0.2, -0.4, 0.5])  # edges 01, 02, 12
    layer = pl.PerturbedSpanningTree(num_samples=20_000, sigma=0.5, noise=pl.Gumbel())
    y, vjp = jax.vjp(lambda t: run(layer, t, None, KEY), theta)
    soft = jax.nn.softmax(theta / 0.5)
    np.testing.assert_allclose(y, 1 - soft, atol=0.015)
    # Jacobian of 1 − softmax(θ/σ): −(diag s − s sᵀ)/σ; row 2 within 0.05.
    v = jnp.array([0.0, 0.0, 1.0])
    np.testing.assert_allclose(
        vjp(v)[0], -(soft[2] * v - soft[2] * soft) / 0.5, atol=0.05
    )


def scipy_tree(edges_weights, n):
    rows, cols = np.triu_indices(n, 1)
    w = np.zeros((n, n))
    finite = np.isfinite(edges_weights)
    w[rows[finite], cols[finite]] = edges_weights[finite]
    tree = minimum_spanning_tree(w).toarray() != 0
    return (tree | tree.T)[rows, cols].astype(np.float32)


@pytest.mark.slow
def test_small_sigma_recovers_scipy_with_missing_edges_three_ways():
    n = 7
    e = n * (n - 1) // 2
    # Distinct positive weights (SciPy reads 0 as "no edge"), a few edges missing.
    theta = jax.random.uniform(jax.random.key(1), (4, e), minval=1, maxval=10)
    present = jax.random.bernoulli(jax.random.key(2), 0.7, (4, e))
    present = present.at[:, : n - 1].set(True)  # the star at node 0: connected
    with_inf = jnp.where(present, theta, jnp.inf)
    tiny = pl.PerturbedSpanningTree(num_samples=3, sigma=1e-5, noise=pl.Normal())
    y_inf = run(tiny, with_inf, None, KEY)
    y_args = run(tiny, theta, {"edges": present}, KEY)
    for b in range(4):
        want = scipy_tree(np.asarray(with_inf[b]), n)
        np.testing.assert_allclose(y_inf[b], want, atol=1e-6)
        np.testing.assert_allclose(y_args[b], want, atol=1e-6)
        # A mask shared by the batch, as a field: row b of a batch with mask b.
        shared = pl.PerturbedSpanningTree(
            edges=present[b], num_samples=3, sigma=1e-5, noise=pl.Normal()
        )
        np.testing.assert_allclose(run(shared, theta, None, KEY)[b], want, atol=1e-6)
    # With noise, missing edges stay missing and every sample is a tree.
    noisy = pl.PerturbedSpanningTree(num_samples=50, sigma=3.0, noise=pl.Normal())
    y = run(noisy, with_inf, None, KEY)
    np.testing.assert_allclose(jnp.where(present, 0.0, y), 0.0)
    np.testing.assert_allclose(jnp.sum(y, -1), n - 1, rtol=1e-5)
    assert float(jnp.min(jnp.max(jnp.where(y < 1, y, 0), -1))) > 0


@pytest.mark.slow
def test_fenchel_young_gradient_is_y_minus_y_eps_under_jit():
    n = 5
    theta = jax.random.normal(jax.random.key(3), (3, n * (n - 1) // 2))
    theta = theta.at[:, 4].set(jnp.inf)  # edge 12 missing: the loss stays finite
    layer = pl.PerturbedSpanningTree(num_samples=16, sigma=0.5, noise=pl.Normal())
    y_true = pl.PerturbedSpanningTree(
        num_samples=1, sigma=1.0, noise=pl.Normal(), inference=True
    )(jnp.where(jnp.isinf(theta), jnp.inf, -theta))
    loss = pl.FenchelYoungLoss(layer)

    @jax.jit
    def value_grad_and_y(t):
        value, grad = jax.value_and_grad(lambda u: loss(u, y_true, key=KEY).sum())(t)
        return value, grad, layer(t, key=KEY)

    value, grad, y = value_grad_and_y(theta)
    assert bool(jnp.isfinite(value))
    np.testing.assert_allclose(grad, y_true - y, atol=1e-5)
    assert float(jnp.max(jnp.abs(grad))) > 0.5


@pytest.mark.slow
def test_vmap_over_a_leading_axis():
    layer = pl.PerturbedSpanningTree(num_samples=16, sigma=0.5, noise=pl.Normal())
    theta = jax.random.normal(jax.random.key(3), (3, 10))
    keys = jax.random.split(KEY, 3)
    one = jax.jit(lambda t, k: layer(t, key=k))
    mapped = jax.vmap(one)(theta, keys)
    for b in range(3):
        np.testing.assert_allclose(mapped[b], one(theta[b], keys[b]), atol=1e-6)


@pytest.mark.slow
def test_bad_inputs():
    layer = pl.PerturbedSpanningTree(num_samples=4, sigma=0.5, noise=pl.Normal())
    with pytest.raises(ValueError, match=r"n\(n - 1\)/2"):
        layer(jnp.ones(4), key=KEY)
    with pytest.raises(TypeError, match="bool mask"):
        pl.PerturbedSpanningTree(
            edges=jnp.ones(3), num_samples=4, sigma=0.5, noise=pl.Normal()
        )
    with pytest.raises(ValueError, match="'edges' is given twice"):
        pl.PerturbedSpanningTree(
            edges=jnp.ones(3, bool), num_samples=4, sigma=0.5, noise=pl.Normal()
        )(jnp.ones(3), {"edges": jnp.ones(3, bool)}, key=KEY)
    # NaN makes its instance NaN; the others are unaffected.
    y = layer(jnp.array([[1.0, 2.0, jnp.nan], [1.0, 2.0, 3.0]]), key=KEY)
    assert bool(jnp.all(jnp.isnan(y[0]))) and bool(jnp.all(jnp.isfinite(y[1])))
    # A disconnected graph has no spanning tree: a run-time error.
    with pytest.raises(Exception, match="disconnected"):
        jax.block_until_ready(layer(jnp.array([1.0, jnp.inf, jnp.inf]), key=KEY))
