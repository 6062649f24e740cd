"""The structured SVM loss with the Hamming margin (InferOpt's StructuredSVMLoss)."""

from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._checks import error_if_any
from .._custom_types import Key
from .._perturbed import AbstractPerturbed
from ._common import (
    bad_instances,
    check_like,
    check_linear_layer,
    check_positive,
    inner,
    solve,
    times,
    unflatten,
)


class StructuredSVMLoss(eqx.Module):
    r"""The structured hinge loss with the Hamming margin, for 0/1 solutions.

    For a maximising layer (θ scores) and a target ȳ ∈ {0, 1}ⁿ, per instance

        L(θ; ȳ) = max_y [α·Δ(y, ȳ) + ⟨θ, y⟩] − ⟨θ, ȳ⟩,   Δ(y, ȳ) = Σᵢ |yᵢ − ȳᵢ|.

    For 0/1 vectors Δ(y, ȳ) = ⟨y, 1 − 2ȳ⟩ + Σᵢ ȳᵢ is linear in y, so the
    loss-augmented problem is the layer's own solver on the shifted scores
    θ + α(1 − 2ȳ): with ŷ its solution, L = ⟨θ, ŷ − ȳ⟩ + α·Δ(ŷ, ȳ) ≥ 0 and
    ∇_θ L = ŷ − ȳ. For a minimising layer (θ costs c), L = max_y [α·Δ(y, ȳ) −
    ⟨c, y⟩] + ⟨c, ȳ⟩, solved on c − α(1 − 2ȳ), and ∇_c L = ȳ − ŷ. L = 0 iff ȳ beats
    every other solution by a margin of α per differing entry.

    The shift may make costs non-positive: a grid shortest path with vertex costs
    then has a negative cycle and its solver stops with an error; keep α below the
    smallest cost there. A `y_true` with an entry other than 0 or 1 is an error
    (`eqx.error_if`): the Hamming margin is linear only on 0/1 vectors.

    **Arguments:**

    - `layer`: a perturbed layer whose solver maximises or minimises ⟨y, θ⟩ over 0/1
        vectors; only its exact `solve` is used.
    - `margin`: α > 0, the weight of the Hamming distance (default 1, as InferOpt).

    **Example:**

    ```python
    import jax
    import jax.numpy as jnp
    import perturbed_layers as pl

    loss = pl.StructuredSVMLoss(
        pl.PerturbedArgmax(num_samples=1, sigma=1.0, noise=pl.Gumbel())
    )
    theta = jnp.array([0.0, 1.5, 0.2])
    y_true = jnp.array([0.0, 1.0, 0.0])
    value = loss(theta, y_true)  # max(0, 0.2 + 2 − 1.5) = 0.7
    grad = jax.grad(loss)(theta, y_true)  # ŷ − ȳ = [0, −1, 1]
    ```

    **References:** Tsochantaridis, Joachims, Hofmann, Altun, *Large Margin Methods
    for Structured and Interdependent Output Variables*, JMLR 2005; Dalle et al.,
    2022 (InferOpt.jl's `StructuredSVMLoss`).
    """

    layer: AbstractPerturbed
    margin: float = eqx.field(default=1.0, static=True, kw_only=True)

    def __check_init__(self):
        check_linear_layer("StructuredSVMLoss", self.layer)
        check_positive("margin", self.margin)

    def __call__(
        self,
        theta: Float[Array, "..."],
        y_true: Float[Array, "..."],
        args: Any = None,
        *,
        key: Key | None = None,
    ) -> Float[Array, "*batch"]:
        """The loss per instance, an array of the batch shape.

        **Arguments:**

        - `theta`: scores (costs for a minimising layer), `(*batch, *event)`.
        - `y_true`: the target 0/1 solutions, of θ's shape.
        - `args`: per-instance problem data for the solver, never differentiated.
        - `key`: ignored (the loss is exact); accepted so that losses are called alike.
        """
        del key
        theta = jnp.asarray(theta)
        flat, flat_args, batch = self.layer.split_batch(theta, args)
        y_true = check_like("y_true", y_true, "theta", theta).reshape(flat.shape)
        y_true = error_if_any(
            y_true,
            (y_true != 0) & (y_true != 1),
            "StructuredSVMLoss: y_true must hold 0/1 solutions (the Hamming margin is "
            "linear in y only on 0/1 vectors)",
        )
        s = 1 if self.layer.objective == "max" else -1
        y_hat = solve(
            self.layer, flat + (s * self.margin) * (1 - 2 * y_true), flat_args
        )
        axes = tuple(range(1, flat.ndim))
        hamming = jnp.sum(jnp.abs(y_hat - y_true), axis=axes)
        value = s * inner(flat, y_hat - y_true) + self.margin * hamming
        return unflatten(times(bad_instances(self.layer, flat), value), batch)
