"""pl.make_perturbed_fun is optax's, sample for sample; chunking changes nothing."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import perturbed_layers as pl


def pytree_argmax(x):
    return {"a": jax.nn.one_hot(jnp.argmax(x["a"]), 3), "b": jnp.maximum(x["b"], 0.0)}


X = {"a": jnp.array([0.2, -0.1, 0.4]), "b": jnp.array([[-0.3, 0.5], [0.1, 0.0]])}


@pytest.mark.slow
@pytest.mark.parametrize("use_baseline", [True, False])
@pytest.mark.parametrize("noise", [pl.Gumbel(), optax.perturbations.Normal()])
def test_same_as_optax(noise, use_baseline):
    key = jax.random.key(0)
    ours = pl.make_perturbed_fun(pytree_argmax, 64, 0.3, noise, use_baseline)
    theirs = optax.perturbations.make_perturbed_fun(
        pytree_argmax, 64, 0.3, noise, use_baseline
    )

    def objective(f):
        return lambda x: (
            jnp.sum(f(key, x)["a"] * jnp.arange(3.0)) + jnp.sum(f(key, x)["b"])
        )

    for a, b in zip(
        jax.tree.leaves(ours(key, X)), jax.tree.leaves(theirs(key, X)), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    g_ours = jax.grad(objective(ours))(X)
    g_theirs = jax.grad(objective(theirs))(X)
    for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_theirs), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("chunk_size", [16, 25])
def test_chunked_equals_unchunked(chunk_size):
    key = jax.random.key(1)
    full = pl.make_perturbed_fun(pytree_argmax, 64, 0.3)
    chunked = pl.make_perturbed_fun(pytree_argmax, 64, 0.3, chunk_size=chunk_size)
    for a, b in zip(
        jax.tree.leaves(full(key, X)), jax.tree.leaves(chunked(key, X)), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    x = jnp.array([0.3, -0.2, 0.5])
    h_full = jax.hessian(pl.make_perturbed_fun(jnp.max, 64, 0.5), argnums=1)(key, x)
    h_chunk = jax.hessian(
        pl.make_perturbed_fun(jnp.max, 64, 0.5, chunk_size=chunk_size), argnums=1
    )(key, x)
    np.testing.assert_allclose(h_chunk, h_full, rtol=1e-4, atol=1e-4)
