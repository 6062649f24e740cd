"""F_ε(θ) = E[⟨y*(θ_m), θ_m⟩], the perturbed optimal value, as a custom JVP.

Its derivative is E[y*(θ_m) ⊙ ∂θ_m/∂θ] (Danskin), from the same samples: no Jacobian
is estimated. The tangent ⟨slope, t⟩ is linear in t, so forward and reverse mode both
work and agree.
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array

from .._custom_types import Key
from ._mean import first_order_only, nan_mask
from ._sampling import (
    compute_dtype,
    draw,
    fold_chunks,
    kahan_add,
    sample_sum,
    solve_samples,
)


def _value_and_slope(layer: Any, theta: Array, args: Any, key: Key):
    plan = layer.estimator.resolve(layer, theta.shape)
    keys = jax.random.split(key, layer.num_samples)
    cdtype = compute_dtype(theta.dtype)

    def body(carry, k):
        z = draw(layer, plan, k, theta)[0]  # (its scores are dead code, removed by jit)
        theta_m, ys = solve_samples(layer, theta, args, z)
        (y,) = jtu.tree_leaves(ys)
        # Off the solution θ may be +inf (a graph's missing arcs): skip 0 * inf.
        theta_m = jnp.where(y != 0, theta_m, 0)
        flat = (*y.shape[:2], -1)
        value = jnp.einsum("bkn,bkn->bk", y.reshape(flat), theta_m.reshape(flat))
        # d<y, θ_m>/dθ at fixed y (Danskin): y for additive, y ⊙ θ_m/θ otherwise.
        if layer.perturbation == "multiplicative":
            y = y * jnp.exp(layer.sigma * z - layer.sigma**2 / 2)
        return kahan_add(carry, (jnp.sum(value, axis=1), sample_sum(plan, y)))

    zero = (jnp.zeros(theta.shape[:1], cdtype), jnp.zeros(theta.shape, cdtype))
    size = layer.chunk_size or plan.block
    (value, slope), _ = fold_chunks(keys, size, body, (zero, zero))
    mask = nan_mask(layer, theta)
    m = layer.num_samples
    value = value / m * mask
    slope = slope / m * mask.reshape((-1,) + (1,) * (theta.ndim - 1))
    return value.astype(theta.dtype), slope


@eqx.filter_custom_jvp
def perturbed_objective(theta: Array, layer: Any, args: Any, *, key: Key) -> Array:
    """F_ε(θ) = E[⟨solve(θ_m, args), θ_m⟩] per instance (B,), for a linear-objective
    solver. No derivative flows into `args`, the layer's arrays or the key."""
    return _value_and_slope(layer, theta, args, key)[0]


@perturbed_objective.def_jvp
def _perturbed_objective_jvp(primals, tangents, *, key):
    # No derivative flows into the layer's arrays nor into args: their tangents are
    # dropped.
    (theta, layer, args), (t, _, _) = primals, tangents
    value, slope = _value_and_slope(layer, theta, args, key)
    if t is None:
        return value, None
    slope = first_order_only(theta, slope)
    axes = tuple(range(1, theta.ndim))
    t_out = jnp.sum(slope * t.astype(slope.dtype), axis=axes)
    return value, t_out.astype(value.dtype)
