"""pl.PerturbedKnapsack: the one-item-fits closed form (softmax), data as fields and
as args (same noise, same rows), small-σ limit, Fenchel–Young gradient, errors."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import perturbed_layers as pl

KEY = jax.random.key(0)
# PyEPO-like: 2 resources, weights with two decimals in [3, 8), capacity 20 each.
WEIGHTS = jnp.round(
    jax.random.uniform(jax.random.key(1), (2, 12), minval=3, maxval=8), 2
)
VALUES = jnp.ceil(5 * jax.random.uniform(jax.random.key(2), (3, 12)))
CAPACITY = jnp.array([[20.0, 20.0], [12.0, 30.0], [14.0, 16.0]])


@eqx.filter_jit
def run(layer, theta, args, key):
    """One compilation per layer structure and shape: fields are traced."""
    return layer(theta, args, key=key)


def layer_of(**kwargs):
    kwargs.setdefault("num_samples", 32)
    return pl.PerturbedKnapsack(sigma=0.5, noise=pl.Normal(), **kwargs)


@pytest.mark.slow
def test_one_item_fits_is_a_perturbed_argmax_softmax():
    # Unit weights, capacity 1 (and a second resource that never binds): y* is the
    # one-hot argmax of the values while one is positive, so Gumbel noise gives
    # softmax(θ/σ) exactly; θ ≈ 10 ≫ σ makes "all ≤ 0" impossible in float32.
    # M = 20,000: standard errors ≤ 0.0035, tolerance 0.015.
    theta = 10 + jnp.array([0.3, -0.2, 0.5, 0.0])
    layer = pl.PerturbedKnapsack(
        weights=jnp.array([[1.0, 1.0, 1.0, 1.0], [0.1, 0.2, 0.3, 0.4]]),
        capacity=jnp.array([1.0, 5.0]),
        num_samples=20_000,
        sigma=0.5,
        noise=pl.Gumbel(),
    )
    y, vjp = jax.vjp(jax.jit(lambda t: layer(t, key=KEY)), theta)
    soft = jax.nn.softmax(theta / 0.5)
    np.testing.assert_allclose(y, soft, atol=0.015)
    # Its Jacobian is that of softmax(θ/σ): (diag s − s sᵀ)/σ; row 2 within 0.05.
    v = jnp.array([0.0, 0.0, 1.0, 0.0])
    exact = (soft[2] * v - soft[2] * soft) / 0.5
    np.testing.assert_allclose(vjp(v)[0], exact, atol=0.05)


@pytest.mark.slow
def test_fields_and_args_give_the_same_rows():
    key = jax.random.key(3)
    shared = layer_of(weights=WEIGHTS)
    args = {"capacity": CAPACITY}
    y_args = run(shared, VALUES, args, key)
    assert float(jnp.max(jnp.abs(y_args - jnp.round(y_args)))) > 0  # some noise
    for b in range(3):
        # Row b of a batch gets the same noise whatever the other rows' data.
        # Integer data as a field: cast to θ's dtype in solve.
        own = layer_of(weights=WEIGHTS, capacity=CAPACITY[b].astype(jnp.int32))
        np.testing.assert_allclose(y_args[b], run(own, VALUES, None, key)[b], atol=1e-6)
    # Both as args, weights repeated per instance.
    both = {"weights": jnp.broadcast_to(WEIGHTS, (3, 2, 12)), "capacity": CAPACITY}
    np.testing.assert_allclose(run(layer_of(), VALUES, both, key), y_args, atol=1e-6)


@pytest.mark.slow
def test_small_sigma_is_exact_and_fenchel_young_gradient_under_jit():
    exact = pl.solvers.knapsack(VALUES, WEIGHTS, CAPACITY)
    assert float(jnp.min(jnp.sum(exact, -1))) >= 2  # a real choice in every row
    tiny = pl.PerturbedKnapsack(
        weights=WEIGHTS, num_samples=3, sigma=1e-4, noise=pl.Normal()
    )
    y = jax.jit(lambda t, a: tiny(t, a, key=KEY))(VALUES, {"capacity": CAPACITY})
    # Integer values: tiny noise only breaks ties; the value is the optimum.
    np.testing.assert_allclose(
        jnp.sum(y * VALUES, -1), jnp.sum(exact * VALUES, -1), rtol=1e-5
    )
    layer = layer_of(weights=WEIGHTS)
    loss = pl.FenchelYoungLoss(layer)
    y_true = pl.solvers.knapsack(VALUES[::-1], WEIGHTS, CAPACITY)
    args = {"capacity": CAPACITY}

    @jax.jit
    def grad_and_y(t):
        g = jax.grad(lambda u: loss(u, y_true, args, key=KEY).sum())(t)
        return g, layer(t, args, key=KEY)

    grad, y = grad_and_y(VALUES)
    np.testing.assert_allclose(grad, y - y_true, atol=1e-5)
    assert float(jnp.max(jnp.abs(grad))) > 0.5


@pytest.mark.slow
def test_vmap_with_args_mapped():
    layer = layer_of(weights=WEIGHTS)
    keys = jax.random.split(KEY, 3)
    one = jax.jit(lambda t, c, k: layer(t, {"capacity": c}, key=k))
    mapped = jax.vmap(one)(VALUES, CAPACITY, keys)
    for b in range(3):
        np.testing.assert_allclose(mapped[b], one(VALUES[b], CAPACITY[b], keys[b]))


@pytest.mark.slow
def test_no_gradient_into_float_fields():
    layer = layer_of(weights=WEIGHTS, capacity=CAPACITY[0])
    grads = eqx.filter_grad(lambda m: jnp.sum(m(VALUES, key=KEY) * VALUES))(layer)
    assert grads.weights is not None  # a float field is an inexact array...
    assert float(jnp.max(jnp.abs(grads.weights))) == 0.0  # ...with no gradient


def test_missing_or_ambiguous_data_is_an_error_naming_it():
    with pytest.raises(ValueError, match="'capacity'"):
        layer_of(weights=WEIGHTS)(VALUES, key=KEY)
    with pytest.raises(ValueError, match="'weights' is given twice"):
        layer_of(weights=WEIGHTS)(
            VALUES, {"weights": jnp.broadcast_to(WEIGHTS, (3, 2, 12))}, key=KEY
        )
    with pytest.raises(TypeError, match="unknown args"):
        layer_of(weights=WEIGHTS)(VALUES, {"capacities": CAPACITY}, key=KEY)
    with pytest.raises(ValueError, match="max_nodes"):
        layer_of(max_nodes=0)
