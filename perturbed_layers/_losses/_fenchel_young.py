"""Perturbed Fenchel–Young losses."""

from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Key
from .._estimator import perturbed_objective
from .._perturbed import AbstractPerturbed


class FenchelYoungLoss(eqx.Module):
    r"""The perturbed Fenchel–Young loss of a linear-objective perturbed layer.

    For a maximising layer (θ scores), per instance,

        L_ε(θ; y) = F_ε(θ) − ⟨θ, y⟩,   F_ε(θ) = E[max_{y'∈C} ⟨y', θ + σZ⟩],

    whose gradient is ∇_θ L = y_ε(θ) − y. The constant Ω_ε(y) of the full loss is
    omitted: it does not depend on θ, so L is off by a per-example constant. For a
    feasible y and zero-mean noise (Normal, or the multiplicative form) L ≥ 0; Gumbel
    noise has mean γ, which shifts the bound by ±σγ·Σy. For a minimising layer (θ costs c), L = ⟨c, y⟩ − E[min ⟨y', c + σZ⟩] and
    ∇_c L = y − y_ε(c). With multiplicative perturbation F_ε(θ) = E[max ⟨y', θ̃⟩],
    θ̃ = θ ⊙ exp(σZ − σ²/2), and the gradient is E[y*(θ̃) ⊙ exp(σZ − σ²/2)] − y.

    The value and the gradient come from the same M samples and M solver calls; no
    Jacobian is estimated. (The TensorFlow/PyTorch `FenchelYoungLoss` returns
    ‖y_ε − y‖² as its value; this one returns the loss itself.) The layer's
    `inference` flag is ignored: the loss is always the perturbed one.

    **Arguments:**

    - `layer`: a perturbed layer whose solver has a linear objective (its `objective`
        is `"max"` or `"min"`): `pl.PerturbedArgmax`, `pl.PerturbedRanking`,
        `pl.PerturbedTopK`, `pl.PerturbedShortestPath`, or `pl.Perturbed(...,
        objective="max")`.

    **Example:**

    ```python
    import jax
    import jax.numpy as jnp
    import perturbed_layers as pl

    loss = pl.FenchelYoungLoss(
        pl.PerturbedArgmax(num_samples=1000, sigma=0.5, noise=pl.Gumbel())
    )
    theta = jnp.array([[-0.6, 1.9, -0.2], [1.0, 0.0, 0.5]])
    y_true = jnp.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    value = loss(theta, y_true, key=jax.random.key(0))  # shape (2,)
    grad = jax.grad(lambda t: loss(t, y_true, key=jax.random.key(0)).sum())(theta)
    ```

    **References:** Blondel, Martins, Niculae, *Learning with Fenchel-Young Losses*,
    JMLR 2020; Berthet et al., NeurIPS 2020.
    """

    layer: AbstractPerturbed

    def __check_init__(self):
        if not isinstance(self.layer, AbstractPerturbed):
            raise TypeError(
                "layer must be a perturbed layer (pl.PerturbedArgmax, pl.Perturbed, "
                f"...), got {type(self.layer).__name__}"
            )
        if self.layer.objective not in ("max", "min"):
            raise ValueError(
                "FenchelYoungLoss needs a layer whose solver maximises or minimises "
                "⟨y, θ⟩: declare it with objective='max' or 'min' "
                f"(got objective={self.layer.objective!r})"
            )

    def __call__(
        self,
        theta: Float[Array, "..."],
        y_true: Float[Array, "..."],
        args: Any = None,
        *,
        key: Key | None = None,
    ) -> Float[Array, "*batch"]:
        """The loss per instance: an array of θ's batch shape (a scalar for one).

        **Arguments:**

        - `theta`: scores (costs for a minimising layer), `(*batch, *event)`.
        - `y_true`: the target solutions, of θ's shape.
        - `args`: per-instance problem data for the layer's solver, leaves with θ's
            batch axes in front (see the layer); never differentiated.
        - `key`: a `jax.random` key (required).

        Forward and reverse mode both work (`jax.jvp`, `jax.grad`); an instance with a
        NaN θ gets a NaN value and NaN derivatives.
        """
        theta = jnp.asarray(theta)
        y_true = jnp.asarray(y_true)
        if theta.shape != y_true.shape:
            raise ValueError(
                f"theta and y_true must have the same shape, got theta.shape="
                f"{theta.shape} and y_true.shape={y_true.shape}"
            )
        if key is None:
            raise RuntimeError(
                "FenchelYoungLoss needs a PRNG key: call it as loss(theta, y_true, key=key)"
            )
        flat, flat_args, batch = self.layer.split_batch(theta, args)
        if flat.shape[0] == 0:
            value = jnp.zeros(batch, theta.dtype)
        else:
            value = perturbed_objective(flat, self.layer, flat_args, key=key)
            value = jnp.reshape(value, batch)
        axes: Any = tuple(range(len(batch), theta.ndim))
        # θ may be +inf off the target (a graph's missing arcs): skip 0 * inf.
        on = y_true != 0
        linear = jnp.sum(
            jnp.where(on, theta, 0) * y_true.astype(theta.dtype), axis=axes
        )
        if self.layer.objective == "max":
            return value - linear
        return linear - value
