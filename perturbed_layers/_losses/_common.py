"""What the decision-focused losses share: checking the layer and the inputs, solving a
batch exactly, inner products that skip infinite costs off the solution, the call of
the losses against true costs."""

import abc
import math
import numbers
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Key
from .._estimator._mean import nan_mask
from .._perturbed import AbstractPerturbed


def check_linear_layer(owner: str, layer: Any) -> None:
    """`layer` must be a perturbed layer whose solver maximises or minimises ⟨y, θ⟩."""
    if not isinstance(layer, AbstractPerturbed):
        raise TypeError(
            f"{owner}: layer must be a perturbed layer (pl.PerturbedArgmax, "
            f"pl.PerturbedShortestPath, pl.Perturbed(..., objective='min'), ...), "
            f"got {type(layer).__name__}"
        )
    if layer.objective not in ("max", "min"):
        raise ValueError(
            f"{owner} needs a layer whose solver maximises or minimises ⟨y, θ⟩: "
            f"declare it with objective='max' or 'min' (got objective="
            f"{layer.objective!r})"
        )


def check_positive(name: str, value: object) -> None:
    """A ValueError naming `name` unless `value` is a positive finite real number."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not (math.isfinite(value) and float(value) > 0)
    ):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def check_like(name: str, value: Any, ref_name: str, ref: Array) -> Array:
    """`value` as a floating array of `ref`'s shape and dtype, or a clear error."""
    value = jnp.asarray(value)
    if value.shape != ref.shape:
        raise ValueError(
            f"{name} must have the shape of {ref_name}, got {name}.shape={value.shape} "
            f"and {ref_name}.shape={ref.shape}"
        )
    return value.astype(ref.dtype)


def solve(layer: AbstractPerturbed, theta: Array, args: Any) -> Array:
    """The exact solver on a flat batch (B, *event), in θ's dtype, with no derivative
    traced through it (its derivative is zero almost everywhere, or undefined)."""
    theta = jax.lax.stop_gradient(theta)
    y = jax.vmap(layer.solve)(theta, args)
    return jax.lax.stop_gradient(y.astype(theta.dtype))


def inner(theta: Array, y: Array) -> Array:
    """⟨θ, y⟩ per instance of a flat batch (B, *event). θ may be ±inf where y is 0 (a
    graph's missing arcs): those entries are skipped rather than give 0·inf = NaN. The
    derivative in θ is y everywhere (where y is 0 the skipped entry's is 0 too)."""
    axes = tuple(range(1, theta.ndim))
    return jnp.sum(jnp.where(y != 0, theta, 0) * y, axis=axes)


def bad_instances(layer: AbstractPerturbed, *thetas: Array) -> Array:
    """(B,) factor: 1 where every θ of the instance is usable, NaN where one is NaN (or
    ±inf, unless the layer gives infinities a meaning)."""
    mask = nan_mask(layer, thetas[0])
    for theta in thetas[1:]:
        mask = mask * nan_mask(layer, theta)
    return mask


def times(mask: Array, x: Array) -> Array:
    """`x` (B, ...) times the per-instance factor `mask` (B,), in `x`'s dtype."""
    return x * mask.reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype)


def unflatten(x: Array, batch: tuple[int, ...]) -> Array:
    return x.reshape(*batch, *x.shape[1:])


def true_solutions(
    layer: AbstractPerturbed,
    y_true: Any,
    pred: Array,
    flat_costs: Array,
    flat_args: Any,
) -> Array:
    """w*(c) on the flat batch of true costs `flat_costs`: `y_true` (checked against
    `pred`'s shape) when given, else solved."""
    if y_true is None:
        return solve(layer, flat_costs, flat_args)
    return check_like("y_true", y_true, "pred", pred).reshape(flat_costs.shape)


class AbstractTrueCostsLoss(eqx.Module):
    """A loss of predicted costs (or scores) against the true ones, whose optimal
    solutions may be given: SPO+ and the regret."""

    @abc.abstractmethod
    def _values(
        self, pred: Array, costs_true: Any, args: Any, y_true: Any, key: Key | None
    ) -> Array:
        """The loss per instance, an array of the batch shape (`pred` as an array)."""

    def __call__(
        self,
        pred: Float[Array, "..."],
        costs_true: Float[Array, "..."],
        args: Any = None,
        *,
        y_true: Float[Array, "..."] | None = None,
        key: Key | None = None,
    ) -> Float[Array, "*batch"]:
        """The loss per instance, an array of the batch shape.

        **Arguments:**

        - `pred`: predicted costs (scores for a maximising layer), `(*batch, *event)`.
        - `costs_true`: the true (observed) costs (scores), of `pred`'s shape; no
            derivative is meant to flow into them.
        - `args`: per-instance problem data for the solver, leaves with the batch axes
            in front; never differentiated.
        - `y_true`: an optimal solution for `costs_true`, of `pred`'s shape, if known
            (saves one solve); otherwise it is computed.
        - `key`: a `jax.random` key, required where the loss draws noise (a
            perturbed layer or `pl.IMLE` inside `pl.RegretLoss`); ignored by the exact
            ones (SPO+), accepted so that every loss is called alike.
        """
        return self._values(jnp.asarray(pred), costs_true, args, y_true, key)
