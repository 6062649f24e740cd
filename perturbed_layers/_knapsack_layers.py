"""Perturbed 0/1 knapsack with one or several resources."""

from typing import Any, ClassVar

import equinox as eqx
from jaxtyping import Array, Float

from ._layer_data import as_optional_array, finite_or_zero, problem_data
from ._perturbed import AbstractPerturbed, as_int, check_int
from .solvers import knapsack


class PerturbedKnapsack(AbstractPerturbed):
    r"""Perturbed 0/1 knapsack: y_ε(θ) = E[y*(θ + σZ)], with

    $$y^*(\theta) = \arg\max_{x \in \{0,1\}^n} \langle x, \theta \rangle
    \quad\text{s.t.}\quad W x \le C,$$

    θ the item **values** (`objective="max"`), shape `(*batch, n)`, `W` nonnegative
    weights `(d, n)` (`d` resources; `(n,)` for one) and `C` capacities `(d,)` (or
    `()`), solved exactly by `pl.solvers.knapsack` (branch and bound, all M×B
    perturbed instances in one device loop). y_ε(θ)ᵢ is the probability that item
    `i` is packed under the noise; an item whose perturbed value is ≤ 0 is never
    packed. With `pl.FenchelYoungLoss` the gradient is y_ε(θ) − y_true (additive
    noise). If only one item fits at a time, y* is the argmax of the positive values
    and Gumbel noise gives softmax(θ/σ) (for values ≫ σ).

    **Problem data, two ways.** `weights` and `capacity` are either fields (arrays
    shared by every instance of the batch: traced, so new values do not recompile)
    or entries of `args` (`{"weights": (*batch, d, n), "capacity": (*batch, d)}`,
    one slice per instance), each one way only: given both ways, or neither, is a
    `ValueError` naming it. No derivative flows into them (`lax.stop_gradient`).
    Fields that are float arrays are inexact arrays of the module, so an optimiser
    that filters a model with `eqx.is_inexact_array` holds them (with zero
    gradients; a weight decay would still move them): keep them fixed by passing
    integer arrays (cast to θ's dtype in `solve`), by `args`, or by partitioning them
    out (`eqx.partition` with a filter that leaves the layer's data out).

    **Arguments:** those of `pl.Perturbed` (`num_samples`, `sigma`, `noise`,
    `perturbation`, `chunk_size`, `sample_axis`, `estimator`, `inference`), and

    - `weights`: `(d, n)` or `(n,)` nonnegative weights, or `None` to take them from
        `args`.
    - `capacity`: `(d,)` or `()` nonnegative capacities, or `None` (from `args`).
    - `max_nodes`: branch-and-bound nodes allowed per instance (static); beyond, an
        error, never a suboptimal selection.

    ```python
    import jax
    import jax.numpy as jnp
    import perturbed_layers as pl

    weights = jnp.array([[3.0, 2.0, 2.0, 4.0]])  # one resource, 4 items
    layer = pl.PerturbedKnapsack(
        weights=weights, capacity=jnp.array([4.0]),
        num_samples=200, sigma=0.5, noise=pl.Normal(),
    )
    values = jnp.array([[6.0, 5.0, 5.0, 1.0], [6.0, 2.0, 2.0, 1.0]])
    y = layer(values, key=jax.random.key(0))  # ≈ [[0, 1, 1, 0], [1, 0, 0, 0]]

    # The same with capacities per instance, in args:
    layer = pl.PerturbedKnapsack(
        weights=weights, num_samples=200, sigma=0.5, noise=pl.Normal()
    )
    y = layer(values, {"capacity": jnp.array([[4.0], [7.0]])}, key=jax.random.key(0))
    loss = pl.FenchelYoungLoss(layer)
    value = loss(values, y.round(), {"capacity": jnp.array([[4.0], [7.0]])},
                 key=jax.random.key(1))
    ```

    **References:** Berthet et al., NeurIPS 2020; Tang & Khalil, *PyEPO: a PyTorch-
    based end-to-end predict-then-optimize library*, Math. Prog. Comp. 2023 (the
    knapsack benchmark); Martello & Toth, *Knapsack Problems*, 1990 (the solver).
    """

    weights: Array | None = eqx.field(
        default=None, kw_only=True, converter=as_optional_array
    )
    capacity: Array | None = eqx.field(
        default=None, kw_only=True, converter=as_optional_array
    )
    max_nodes: int = eqx.field(
        default=2**16, static=True, kw_only=True, converter=as_int
    )

    event_ndim: ClassVar[int] = 1
    objective: ClassVar[str] = "max"
    shift_invariant: ClassVar[bool] = False
    allows_inf: ClassVar[bool] = False

    def __check_init__(self):
        check_int("max_nodes", self.max_nodes, minimum=1)

    def solve(self, theta: Float[Array, " n"], args: Any = None) -> Float[Array, " n"]:
        data = problem_data(
            self, args, ("weights", "capacity"), ("weights", "capacity")
        )
        weights = data["weights"].astype(theta.dtype)
        capacity = data["capacity"].astype(theta.dtype)
        return knapsack(
            finite_or_zero(theta), weights, capacity, max_nodes=self.max_nodes
        )
