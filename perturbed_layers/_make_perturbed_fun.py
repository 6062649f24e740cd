"""optax's `make_perturbed_fun`, as a drop-in, with an optional `chunk_size`."""

import math
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax.tree
from jaxtyping import PyTree

from ._custom_types import Key
from ._noise import Gumbel, as_noise

_DEFAULT_NOISE = Gumbel()  # optax's default, shared like theirs


def _magicbox(x):
    return jnp.exp(x - jax.lax.stop_gradient(x))


def make_perturbed_fun(
    fun: Callable[[PyTree], PyTree],
    num_samples: int = 1000,
    sigma: Any = 0.1,
    noise: Any = _DEFAULT_NOISE,
    use_baseline: bool = True,
    *,
    chunk_size: int | None = None,
) -> Callable[[Key, PyTree], PyTree]:
    r"""A stochastic smoothing f_σ(x) = E[f(x + σZ)] whose derivatives of any order are
    unbiased Monte-Carlo estimates: optax's `make_perturbed_fun`, plus `chunk_size`.

    The signature, the semantics and, for the same key, the samples are those of
    `optax.perturbations.make_perturbed_fun`: `fun` maps a pytree to a pytree, the
    whole input is one instance, and derivatives go through JAX's autodiff of the
    score-function ("magic box", Foerster et al. 2018) estimator, so `jax.hessian`
    works (the Hessian of the perturbed max is the softmax Jacobian). Changing
    `from optax.perturbations import make_perturbed_fun` to
    `from perturbed_layers import make_perturbed_fun` changes nothing else.

    For batches of independent instances with lower-variance first derivatives, use
    `pl.Perturbed` (per-instance estimator) instead.

    **Arguments:**

    - `fun`: pytree to pytree; need not be differentiable.
    - `num_samples`: M, a positive int.
    - `sigma`: the noise scale.
    - `noise`: an object with `sample(key, sample_shape, dtype)` and `log_prob(z)`
        (`pl.Gumbel()`, `pl.Normal()`, `optax.perturbations.Gumbel()`, ...).
    - `use_baseline`: subtract f(x) as a control variate.
    - `chunk_size`: evaluate the M samples K at a time (`lax.scan` with
        rematerialisation), so memory is bounded by K samples in the forward and in
        reverse-mode derivatives. Same samples, same result to float summation order.

    **Returns:** `f(key, x)`.

    ```python
    import jax
    import jax.numpy as jnp
    import perturbed_layers as pl

    f = pl.make_perturbed_fun(lambda x: jnp.sum(jnp.maximum(x, 0.0)), 1000, 0.1)
    g = jax.grad(f, argnums=1)(jax.random.key(0), jnp.zeros(3))  # ≈ 0.5 each (noisy)
    ```

    **References:** Berthet et al., NeurIPS 2020; Foerster et al., *DiCE*, ICML 2018;
    optax.perturbations.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Integral):
        raise TypeError(f"num_samples must be a positive int, got {num_samples!r}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    if isinstance(sigma, numbers.Real) and not (
        math.isfinite(sigma) and float(sigma) > 0
    ):
        raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")
    if chunk_size is not None and (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, numbers.Integral)
        or chunk_size < 1
    ):
        raise ValueError(
            f"chunk_size must be a positive int or None, got {chunk_size!r}"
        )
    noise_ = as_noise(noise)

    def one_sample(key: Key, x: PyTree, baseline: PyTree) -> PyTree:
        z = optax.tree.random_like(key, x, sampler=noise_.sample)
        shifted = jax.lax.stop_gradient(jax.tree.map(lambda a, b: a + sigma * b, x, z))
        z = jax.tree.map(lambda a, b: (b - a) / sigma, x, shifted)
        box = _magicbox(optax.tree.sum(jax.tree.map(noise_.log_prob, z)))
        out = optax.tree.scale(box, fun(shifted))
        if use_baseline:
            out = optax.tree.add_scale(out, 1 - box, baseline)
        return out

    def perturbed_fun(key: Key, x: PyTree) -> PyTree:
        baseline = fun(jax.lax.stop_gradient(x)) if use_baseline else None
        keys = jax.random.split(key, num_samples)
        if chunk_size is None or chunk_size >= num_samples:
            outs = jax.vmap(one_sample, in_axes=(0, None, None))(keys, x, baseline)
            return jax.tree.map(lambda o: jnp.mean(o, axis=0), outs)

        @jax.checkpoint
        def chunk_sum(k: Key) -> PyTree:
            outs = jax.vmap(one_sample, in_axes=(0, None, None))(k, x, baseline)
            return jax.tree.map(lambda o: jnp.sum(o, axis=0), outs)

        full, rest = divmod(num_samples, chunk_size)
        chunks = keys[: full * chunk_size].reshape(full, chunk_size, *keys.shape[1:])
        total = jax.lax.map(chunk_sum, chunks)
        total = jax.tree.map(lambda t: jnp.sum(t, axis=0), total)
        if rest:
            total = jax.tree.map(jnp.add, total, chunk_sum(keys[full * chunk_size :]))
        return jax.tree.map(lambda t: t / num_samples, total)

    return perturbed_fun
