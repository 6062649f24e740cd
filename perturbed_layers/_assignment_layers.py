"""Perturbed linear assignment (matchings of rows to distinct columns)."""

from typing import Any, ClassVar

from jaxtyping import Array, Float

from ._layer_data import finite_or_zero
from ._perturbed import AbstractPerturbed, no_args
from .solvers import linear_assignment


class PerturbedAssignment(AbstractPerturbed):
    r"""Perturbed maximum-score assignment: y_ε(θ) = E[y*(θ + σZ)], with

    $$y^*(\theta) = \arg\max_{y} \langle y, \theta \rangle$$

    over the 0/1 matrices `y` of shape `(n, m)`, `n <= m`, with one 1 per row and at
    most one per column (the permutation matrices when `n == m`), solved exactly by
    `pl.solvers.linear_assignment` (Hungarian method, all M×B perturbed instances in
    one device loop). θ are **scores** (`objective="max"`; for costs pass `−costs`),
    shape `(*batch, n, m)`; every entry gets its own noise. y_ε(θ) is a point of the
    Birkhoff polytope (a doubly stochastic matrix when `n == m`): entry `(i, j)` is the
    probability that row `i` goes to column `j` under the noise. Every assignment
    has `n` ones, so y* is invariant to adding a constant to θ (`shift_invariant`).

    With `pl.FenchelYoungLoss` the gradient is y_ε(θ) − y_true (additive noise).
    Closed form, 2 × 2 with Normal noise: the identity wins with probability
    Φ((θ₀₀ + θ₁₁ − θ₀₁ − θ₁₀) / (2σ)).

    **Arguments:** those of `pl.Perturbed` (`num_samples`, `sigma`, `noise`,
    `perturbation`, `chunk_size`, `sample_axis`, `estimator`, `inference`). The
    layer takes no problem data (`args=None`).

    ```python
    import jax
    import jax.numpy as jnp
    import perturbed_layers as pl

    layer = pl.PerturbedAssignment(num_samples=200, sigma=0.5, noise=pl.Normal())
    theta = jnp.array([[2.0, 0.0, 0.0], [0.0, 2.0, 1.5], [0.0, 1.5, 2.0]])
    y = layer(theta, key=jax.random.key(0))  # rows and columns sum to 1
    loss = pl.FenchelYoungLoss(layer)
    value = loss(theta, jnp.eye(3), key=jax.random.key(1))
    ```

    **References:** Berthet et al., *Learning with Differentiable Perturbed
    Optimizers*, NeurIPS 2020; Mena, Belanger, Linderman, Snoek, *Learning Latent
    Permutations with Gumbel-Sinkhorn Networks*, ICLR 2018 (perturbed matchings);
    Kuhn 1955, Jonker & Volgenant 1987 (the solver).
    """

    event_ndim: ClassVar[int] = 2
    objective: ClassVar[str] = "max"
    shift_invariant: ClassVar[bool] = True
    allows_inf: ClassVar[bool] = False

    def solve(
        self, theta: Float[Array, "n m"], args: Any = None
    ) -> Float[Array, "n m"]:
        no_args(self, args)
        return linear_assignment(finite_or_zero(theta))
