"""Implicit maximum-likelihood estimation, I-MLE (Niepert et al., 2021)."""

import numbers
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, Float

from .._custom_types import Key
from .._noise import AbstractNoise, as_noise
from .._perturbed import AbstractPerturbed, as_int
from ._common import (
    bad_instances,
    check_linear_layer,
    check_positive,
    solve,
    times,
    unflatten,
)


def solve_samples(layer: AbstractPerturbed, theta_m: Array, args: Any) -> Array:
    """Solve (M, B, *event) perturbed inputs, sample m of instance b with args[b]."""
    m, b = theta_m.shape[:2]
    tiled = jtu.tree_map(
        lambda a: jnp.broadcast_to(a[None], (m, *a.shape)).reshape(m * b, *a.shape[1:]),
        args,
    )
    ys = solve(layer, theta_m.reshape(m * b, *theta_m.shape[2:]), tiled)
    return ys.reshape(theta_m.shape)


def perturb(layer: AbstractPerturbed, theta: Array, eps: Array) -> Array:
    # Perturb-and-MAP of p(y) ∝ exp(⟨θ, y⟩): θ + ε for scores; for costs,
    # p(w) ∝ exp(−⟨c, w⟩), i.e. argmin ⟨c − ε, w⟩.
    s = 1 if layer.objective == "max" else -1
    return theta[None] + s * eps


def draw_noise(
    noise: AbstractNoise, key: Key, num_samples: int, theta: Array, sigma: float
) -> Array:
    """σ·ε, (M, B, *event): sample m for the whole flat batch θ (B, *event) from
    `jax.random.split(key, M)[m]`, so every instance has its own noise."""
    keys = jax.random.split(key, num_samples)
    eps = jax.vmap(lambda k: noise.sample(k, theta.shape, theta.dtype))(keys)
    return sigma * eps


# The backward re-solves at the perturbed θ shifted along the cotangent: not linear in
# it, so a custom VJP (JAX refuses forward mode through it).
@eqx.filter_custom_vjp
def _imle(theta: Array, layer: AbstractPerturbed, args: Any, eps: Array, lambd: float):
    ys = solve_samples(layer, perturb(layer, theta, eps), args)
    return times(bad_instances(layer, theta), jnp.mean(ys, axis=0))


@_imle.def_fwd
def _imle_fwd(perturbed, theta, layer, args, eps, lambd):
    del perturbed
    theta_m = perturb(layer, theta, eps)
    ys = solve_samples(layer, theta_m, args)
    return times(bad_instances(layer, theta), jnp.mean(ys, axis=0)), ys


@_imle.def_bwd
def _imle_bwd(ys, g, perturbed, theta, layer, args, eps, lambd):
    del perturbed
    # Per sample, the target distribution θ' = θ − λg with the same noise: for scores
    # (y*(θ + ε) − y*(θ − λg + ε))/λ; for costs (w*(ĉ − ε + λg) − w*(ĉ − ε))/λ.
    s = 1 if layer.objective == "min" else -1
    g = g.astype(ys.dtype)
    moved = solve_samples(layer, perturb(layer, theta, eps) + (s * lambd) * g, args)
    grad = (s / lambd) * jnp.mean(moved - ys, axis=0)
    return times(bad_instances(layer, theta), grad)


class IMLE(eqx.Module):
    r"""Implicit maximum-likelihood estimation (I-MLE): perturb-and-MAP forward,
    target-distribution backward.

    For a maximising layer (θ scores), forward: the mean of M perturb-and-MAP samples
    y*(θ + σε_m), ε_m drawn from `noise` (for M = 1, one sample of the discrete
    distribution p(y) ∝ exp(⟨θ, y⟩/τ) in I-MLE's sense). Backward, for the incoming
    gradient g, with the target distribution θ' = θ − λg and the same noise:

        ∇_θ ≈ (1/M) Σ_m (y*(θ + σε_m) − y*(θ − λg + σε_m)) / λ.

    For a minimising layer (θ costs c) the distribution is p(w) ∝ exp(−⟨c, w⟩/τ), so
    the perturbed costs are c − σε_m and ∇_c ≈ (1/M) Σ_m (w*(c − σε_m + λg) −
    w*(c − σε_m))/λ. Divided by λ, as PyEPO does (torch-imle's default,
    `do_gradient_scaling=False`, is λ times this); as λ → 0 it is the directional
    derivative of the perturbed objective, as blackbox differentiation at each
    perturbed θ.

    Reverse mode only (the backward is not linear in g: a custom VJP). One extra
    solve per sample in the backward pass. Sample m draws its noise for the whole
    batch from `jax.random.split(key, num_samples)[m]`, as
    `noise.sample(key_m, (B, *event))` with the batch axes flattened to B, so every
    instance has its own noise.

    **Arguments:**

    - `layer`: a perturbed layer whose solver maximises or minimises ⟨y, θ⟩; only its
        exact `solve` is used.
    - `lambd`: λ > 0, the step to the target distribution (static).
    - `noise`: the perturbation, usually `pl.SumOfGamma(k, tau, s)` with k the size
        of the selected subsets; any `pl.AbstractNoise` works (only samples are used).
    - `num_samples`: M, perturb-and-MAP samples per instance (default 1).
    - `sigma`: a scale applied to the noise (default 1; `SumOfGamma`'s τ scales too).

    **Example:**

    ```python
    import jax
    import jax.numpy as jnp
    import perturbed_layers as pl

    topk = pl.PerturbedTopK(2, num_samples=1, sigma=1.0, noise=pl.Gumbel())
    imle = pl.IMLE(topk, lambd=10.0, noise=pl.SumOfGamma(2, tau=1.0, s=10))
    theta = jnp.array([[0.5, 1.0, -0.3, 2.0]])
    target = jnp.array([[1.0, 0.0, 0.0, 1.0]])
    key = jax.random.key(0)
    y = imle(theta, key=key)  # a 2-hot sample
    grad = jax.grad(lambda t: jnp.sum((imle(t, key=key) - target) ** 2))(theta)
    ```

    **Reference:** Niepert, Minervini, Franceschi, *Implicit MLE: Backpropagating
    Through Discrete Exponential Family Distributions*, NeurIPS 2021.
    """

    layer: AbstractPerturbed
    lambd: float = eqx.field(static=True, kw_only=True)
    noise: AbstractNoise = eqx.field(static=True, kw_only=True, converter=as_noise)
    num_samples: int = eqx.field(default=1, static=True, kw_only=True, converter=as_int)
    sigma: float = eqx.field(default=1.0, static=True, kw_only=True)

    def __check_init__(self):
        check_linear_layer("IMLE", self.layer)
        check_positive("lambd", self.lambd)
        check_positive("sigma", self.sigma)
        m = self.num_samples
        if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1:
            raise ValueError(f"num_samples must be a positive int, got {m!r}")

    def __call__(
        self, theta: Float[Array, "..."], args: Any = None, *, key: Key | None = None
    ) -> Float[Array, "..."]:
        """The mean of the perturb-and-MAP samples per instance, of θ's shape.

        **Arguments:** `theta` `(*batch, *event)`; `args` per-instance problem data
        (leaves with the batch axes in front, never differentiated); `key` a
        `jax.random` key (required)."""
        if key is None:
            raise RuntimeError(
                "IMLE needs a PRNG key for its perturb-and-MAP samples: call it as "
                "imle(theta, key=key)"
            )
        flat, flat_args, batch = self.layer.split_batch(theta, args)
        eps = draw_noise(self.noise, key, self.num_samples, flat, self.sigma)
        return unflatten(_imle(flat, self.layer, flat_args, eps, self.lambd), batch)
