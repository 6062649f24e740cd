"""What the decision-focused losses share: checking the layer and the inputs, solving a
batch exactly, inner products that skip infinite costs off the solution."""

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array

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
