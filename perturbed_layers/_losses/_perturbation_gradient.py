"""The perturbation-gradient losses PGB and PGC (Gupta & Huang, 2024)."""

from typing import Any, Literal

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

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

_VARIANTS = ("backward", "central")


class PerturbationGradientLoss(eqx.Module):
    r"""The perturbation-gradient loss (PGB, PGC) of predicted costs (or scores).

    For a minimising layer (θ costs), with ĉ the predicted and c the true costs, w*
    the exact solver and z(ĉ) = ⟨ĉ, w*(ĉ)⟩ = min_w ⟨ĉ, w⟩, per instance

        PGB (variant="backward"):  ℓ = (z(ĉ) − z(ĉ − h·c)) / h,
        PGC (variant="central"):   ℓ = (z(ĉ + h·c) − z(ĉ − h·c)) / (2h),

    finite differences of the concave z along the true costs c, which approximate
    its directional derivative ⟨c, w*(ĉ)⟩, the cost of the decision taken on ĉ
    (concavity makes PGB ≥ ⟨c, w*(ĉ)⟩). The (sub)gradients in ĉ are
    (w*(ĉ) − w*(ĉ − h·c))/h and (w*(ĉ + h·c) − w*(ĉ − h·c))/(2h): non-zero where the
    decision changes within h·c, unlike the plug-in ⟨c, w*(ĉ)⟩ whose gradient is zero
    almost everywhere. Only the true costs are needed, no optimal solution. For a
    maximising layer (θ scores, θ̂ predicted, θ true) the loss is that of the costs
    −θ̂, −θ: with z(θ̂) = max_y ⟨θ̂, y⟩, ℓ = −(z(θ̂) − z(θ̂ − h·θ))/h (backward), and
    the gradients mirror. This is PyEPO's `perturbationGradient` (`sigma` = h,
    `two_sides` = central) without its ε in the denominator.

    The solver is the layer's exact `solve`, vmapped over the batch: no noise, no
    key, two solves per instance. Derivatives (forward and reverse mode) are those of
    the formula with the solutions held fixed (Danskin); second derivatives are 0.

    **Arguments:**

    - `layer`: a perturbed layer whose solver maximises or minimises ⟨y, θ⟩ (its
        `objective` is `"max"` or `"min"`); only its exact `solve` is used.
    - `h`: h > 0, the finite-difference step along the true costs (static). Small h
        follows the decision cost closely but gives non-zero gradients only near a
        change of decision; the paper and PyEPO use 0.1 to 1 on normalised costs.
    - `variant`: `"backward"` (PGB, default) or `"central"` (PGC), static.

    **Example:**

    ```python
    import jax
    import jax.numpy as jnp
    import perturbed_layers as pl

    def cheapest(costs):  # a minimiser: one-hot of the cheapest item
        return jax.nn.one_hot(jnp.argmin(costs), costs.shape[-1])

    layer = pl.Perturbed(cheapest, num_samples=1, sigma=1.0, noise=pl.Normal(),
                         objective="min")
    loss = pl.PerturbationGradientLoss(layer, h=0.5)
    pred = jnp.array([[1.0, 1.2, 3.0]])
    costs = jnp.array([[1.0, 2.0, 1.0]])
    # w*(ĉ) = item 0; ĉ − h·c = [0.5, 0.2, 2.5], whose w* is item 1:
    value = loss(pred, costs)  # (1.0 − 0.2)/0.5 = [1.6]
    grad = jax.grad(lambda p: loss(p, costs).sum())(pred)  # [[2., −2., 0.]]
    ```

    **Reference:** Gupta, Huang, *Decision-focused learning with directional
    gradients*, NeurIPS 2024.
    """

    layer: AbstractPerturbed
    h: float = eqx.field(static=True, kw_only=True)
    variant: Literal["backward", "central"] = eqx.field(
        default="backward", static=True, kw_only=True
    )

    def __check_init__(self):
        check_linear_layer("PerturbationGradientLoss", self.layer)
        check_positive("h", self.h)
        if self.variant not in _VARIANTS:
            raise ValueError(
                f"variant must be one of {_VARIANTS}, got {self.variant!r}"
            )

    def __call__(
        self,
        pred: Float[Array, "..."],
        costs_true: Float[Array, "..."],
        args: Any = None,
        *,
        key: Key | None = None,
    ) -> Float[Array, "*batch"]:
        """The loss per instance, an array of the batch shape.

        **Arguments:**

        - `pred`: predicted costs (scores for a maximising layer), `(*batch, *event)`.
        - `costs_true`: the true costs (scores), of `pred`'s shape.
        - `args`: per-instance problem data for the solver, leaves with the batch axes
            in front; never differentiated.
        - `key`: ignored (the loss is exact); accepted so that every loss is called
            alike.
        """
        del key
        return self.value_and_solutions(pred, costs_true, args)[0]

    def value_and_solutions(
        self,
        pred: Float[Array, "..."],
        costs_true: Float[Array, "..."],
        args: Any = None,
    ) -> tuple[Float[Array, "*batch"], tuple[Array, Array]]:
        """The loss per instance and the two solutions it used, each of `pred`'s
        shape: `(w*(ĉ), w*(ĉ − h·c))` for PGB, `(w*(ĉ + h·c), w*(ĉ − h·c))` for PGC.
        Arguments as `__call__`.
        """
        flat_p, flat_args, batch = self.layer.split_batch(pred, args, name="pred")
        costs_true = check_like(
            "costs_true", costs_true, "pred", jnp.asarray(pred)
        ).reshape(flat_p.shape)
        # Which way is "down" for z: a maximiser's loss is the minimiser's on −θ̂, −θ,
        # i.e. the same shifts θ̂ ± h·θ with the sign of the value flipped.
        sign = 1.0 if self.layer.objective == "min" else -1.0
        lower = _shift(flat_p, costs_true, -self.h)
        if self.variant == "backward":
            upper, scale = flat_p, self.h
        else:
            upper, scale = _shift(flat_p, costs_true, self.h), 2 * self.h
        w_upper = solve(self.layer, upper, flat_args)
        w_lower = solve(self.layer, lower, flat_args)
        value = sign * (inner(upper, w_upper) - inner(lower, w_lower)) / scale
        value = times(bad_instances(self.layer, flat_p, costs_true), value)
        return unflatten(value, batch), (
            unflatten(w_upper, batch),
            unflatten(w_lower, batch),
        )


def _shift(pred: Array, costs: Array, step: float) -> Array:
    """ĉ + step·c, and ĉ itself where both are the same infinity (a missing arc stays
    missing instead of becoming inf − inf = NaN)."""
    same_inf = jnp.isinf(pred) & (pred == costs)
    return jnp.where(same_inf, pred, pred + step * costs)
