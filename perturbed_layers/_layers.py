"""Perturbed layers over the core solvers: argmax, ranking, top-k.

Each is the perturbed optimizer of a solver that maximises ⟨y, θ⟩ over a fixed set and
is invariant to shifting θ by a constant, along the last axis of θ (the leading axes
are a batch). Configuration (`num_samples`, `sigma`, `noise`, `perturbation`,
`chunk_size`, `inference`) is that of `pl.Perturbed`.
"""

from typing import Any, ClassVar

import equinox as eqx
from jaxtyping import Array, Float

from ._perturbed import AbstractPerturbed, as_int, check_int, no_args
from .solvers import argmax_one_hot, ranks, top_k_mask


class PerturbedArgmax(AbstractPerturbed):
    r"""Perturbed one-hot argmax of the last axis: y_ε(θ) = E[onehot(argmax(θ + σZ))].

    With Gumbel noise this is exactly softmax(θ/σ) (the Gumbel-max trick), and the
    perturbed maximum is F_ε(θ) = σ·logsumexp(θ/σ) + σγ.

    ```python
    import jax
    import jax.numpy as jnp
    import perturbed_layers as pl

    layer = pl.PerturbedArgmax(num_samples=1000, sigma=0.5, noise=pl.Gumbel())
    theta = jnp.array([-0.6, 1.9, -0.2, 1.1, -1.0])
    y = layer(theta, key=jax.random.key(0))  # ≈ [0.005, 0.815, 0.012, 0.165, 0.002]
    ```
    """

    event_ndim: ClassVar[int] = 1
    objective: ClassVar[str] = "max"
    shift_invariant: ClassVar[bool] = True
    allows_inf: ClassVar[bool] = False

    def solve(self, theta: Float[Array, " n"], args: Any = None) -> Float[Array, " n"]:
        no_args(self, args)
        return argmax_one_hot(theta)


class PerturbedRanking(AbstractPerturbed):
    r"""Perturbed ranks along the last axis (0 for the smallest), as
    argsort(argsort(θ + σZ)) averaged over the noise.

    With Normal noise, two items give E[rank₀] = Φ((θ₀ − θ₁)/(σ√2)).

    ```python
    import jax
    import jax.numpy as jnp
    import perturbed_layers as pl

    layer = pl.PerturbedRanking(num_samples=1000, sigma=0.1, noise=pl.Normal())
    r = layer(jnp.array([0.3, -1.0, 2.0]), key=jax.random.key(0))  # ≈ [1., 0., 2.]
    ```
    """

    event_ndim: ClassVar[int] = 1
    objective: ClassVar[str] = "max"
    shift_invariant: ClassVar[bool] = True
    allows_inf: ClassVar[bool] = False

    def solve(self, theta: Float[Array, " n"], args: Any = None) -> Float[Array, " n"]:
        no_args(self, args)
        return ranks(theta)


class PerturbedTopK(AbstractPerturbed):
    r"""Perturbed k-hot indicator of the k largest entries of the last axis.

    With Gumbel noise, the top-k set of θ + σZ is a Plackett–Luce sample without
    replacement with weights softmax(θ/σ); y_ε(θ) holds its inclusion probabilities.

    ```python
    import jax
    import jax.numpy as jnp
    import perturbed_layers as pl

    layer = pl.PerturbedTopK(2, num_samples=1000, sigma=0.5, noise=pl.Gumbel())
    y = layer(jnp.array([0.3, -1.0, 2.0, 0.1]), key=jax.random.key(0))  # sums to 2
    ```
    """

    k: int = eqx.field(static=True, converter=as_int)

    event_ndim: ClassVar[int] = 1
    objective: ClassVar[str] = "max"
    shift_invariant: ClassVar[bool] = True
    allows_inf: ClassVar[bool] = False

    def __check_init__(self):
        check_int("k", self.k, minimum=1)

    def solve(self, theta: Float[Array, " n"], args: Any = None) -> Float[Array, " n"]:
        no_args(self, args)
        return top_k_mask(theta, self.k)
