"""The Monte-Carlo estimator behind every perturbed layer and loss, in one place.

Notation (Berthet et al., 2020): θ has shape (B, *event), a batch of B independent
instances; Z ~ μ ∝ exp(−ν) is drawn per instance; θ_m = θ + σZ_m (additive) or
θ ⊙ exp(σZ_m − σ²/2) (multiplicative, Z standard normal); y_m = solve(θ_m).

- `perturbed_mean`: y_ε(θ) = E[y*(θ_m)], whose custom VJP is the Jacobian estimator of
  Prop. 3.1, J = E[y*(θ + σZ) ∇ν(Z)ᵀ] / σ, with per-instance variance reduction.
- `perturbed_objective`: F_ε(θ) = E[⟨y*(θ_m), θ_m⟩], the perturbed optimal value, whose
  gradient is E[y*(θ_m) ⊙ ∂θ_m/∂θ] from the same samples (no Jacobian estimate).

Both draw sample m from its own key `split(key, M)[m]`, which covers the whole batch:
the samples do not depend on `chunk_size`, so chunked and unchunked runs agree to float
summation order. Second derivatives are refused with a clear error (see
`_first_order_only`), never silently zero.
"""

import functools as ft
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, Float

from ._checks import error_if_any
from ._custom_types import Key, Objective
from ._noise import AbstractNoise


class Spec(NamedTuple):
    """Static description of one estimator (everything but θ and the key)."""

    solve: Callable[[Array], Any]  # one instance (event shape) -> output pytree
    num_samples: int
    sigma: float
    noise: AbstractNoise
    multiplicative: bool
    chunk_size: int | None
    objective: Objective  # "max"/"min": solve maximises/minimises <y, theta>
    shift_invariant: bool  # solve(theta + c) == solve(theta) for a constant c
    sample_axis: str | None = None  # mesh axis the samples are split over


# ------------------------------------------------------------------ shared pieces


def _compute_dtype(dtype: Any) -> Any:
    # Accumulate low-precision inputs (bfloat16, float16) in float32.
    return jnp.promote_types(dtype, jnp.float32)


def _draw(spec: Spec, keys: Key, theta: Array) -> Array:
    """Noise of shape (K, B, *event), sample k drawn from keys[k] alone."""
    dtype = _compute_dtype(theta.dtype)
    z = jax.vmap(lambda k: spec.noise.sample(k, theta.shape, dtype))(keys)
    if spec.sample_axis is not None:
        # Split the samples over a mesh axis; the means over them then reduce with one
        # all-reduce, and the other axes keep whatever sharding θ has.
        free = P.UNCONSTRAINED
        z = jax.lax.with_sharding_constraint(
            z, P(spec.sample_axis, *(free,) * (z.ndim - 1))
        )
    return z


def _perturb(spec: Spec, theta: Array, z: Array) -> Array:
    theta = theta.astype(z.dtype)
    if spec.multiplicative:
        return theta * jnp.exp(spec.sigma * z - spec.sigma**2 / 2)
    return theta + spec.sigma * z


def _solve_samples(spec: Spec, theta: Array, z: Array) -> tuple[Array, Any]:
    """Perturbed inputs (K, B, *event) and solver outputs (K, B, ...) in float."""
    theta_m = _perturb(spec, theta, z)
    ys = jax.vmap(jax.vmap(spec.solve))(theta_m.astype(theta.dtype))
    ys = jtu.tree_map(lambda y: y.astype(_compute_dtype(y.dtype)), ys)
    return theta_m, ys


def _instance_dot(a: Any, b: Any) -> Array:
    """Σ over the event axes (from axis 2 on) and over leaves of a ⊙ b: (K, B)."""
    terms = jtu.tree_map(
        lambda u, v: jnp.sum(u * v, axis=tuple(range(2, u.ndim))), a, b
    )
    return ft.reduce(jnp.add, jtu.tree_leaves(terms))


def _fold_chunks(
    keys: Key, chunk_size: int | None, body: Callable[[Any, Key], Any], init: Any
) -> Any:
    """carry = body(carry, keys_chunk) over the keys, `chunk_size` at a time.

    Full chunks go through one `lax.scan` (one compiled body); a remainder, if any,
    is one more call of the same body on the last few keys.
    """
    num = keys.shape[0]
    size = num if chunk_size is None else min(chunk_size, num)
    full, rest = divmod(num, size)
    carry = init
    if full == 1:
        carry = body(carry, keys[:size])
    else:
        chunks = keys[: full * size].reshape(full, size, *keys.shape[1:])
        carry, _ = jax.lax.scan(lambda c, k: (body(c, k), None), carry, chunks)
    if rest:
        carry = body(carry, keys[full * size :])
    return carry


def _sample_sum(x: Array) -> Array:
    """Σ over the leading (sample) axis, as a contraction.

    XLA:CPU runs a reduction over the leading axis of a large (K, B, n) array up to
    ~20× slower than the same sum written as a dot with ones (measured on jax 0.10).
    """
    return jnp.tensordot(jnp.ones(x.shape[0], x.dtype), x, axes=1)


def _add_trees(a: Any, b: Any) -> Any:
    return jtu.tree_map(jnp.add, a, b)


@jax.custom_jvp
def _first_order_only(theta: Array, residuals: Any) -> Any:
    # The residuals of a custom VJP, tied to θ: differentiating them in θ (a second
    # derivative) calls the rule below. Through θ explicitly, because the solver's
    # outputs often carry a symbolic-zero tangent (argmax) that would skip the rule.
    del theta
    return residuals


@_first_order_only.defjvp
def _first_order_only_jvp(primals, tangents):
    del primals, tangents
    raise NotImplementedError(
        "perturbed_layers: a second derivative was taken through a perturbed layer "
        "or Fenchel-Young loss. Their gradients are Monte-Carlo estimates with a "
        "custom first derivative only; rather than return a silently wrong (zero) "
        "second derivative, this is refused. For estimates of derivatives of any "
        "order use pl.make_perturbed_fun."
    )


# ------------------------------------------------------------ y_eps and its VJP


@ft.partial(jax.custom_vjp, nondiff_argnums=(0,))
def perturbed_mean(spec: Spec, theta: Float[Array, "B ..."], key: Key) -> Any:
    """y_ε(θ) = E[solve(θ_m)] for a batch θ of shape (B, *event)."""
    return _mean_fwd(spec, theta, key)[0]


def _mean_fwd(spec: Spec, theta: Array, key: Key):
    keys = jax.random.split(key, spec.num_samples)
    out_dtypes = jtu.tree_map(lambda s: s.dtype, jax.eval_shape(spec.solve, theta[0]))
    if spec.chunk_size is None:
        # Keep the samples for the backward pass: M solver calls in all.
        z = _draw(spec, keys, theta)
        _, ys = _solve_samples(spec, theta, z)
        ybar = jtu.tree_map(lambda y: _sample_sum(y) / spec.num_samples, ys)
        saved = (ys, z)
    else:
        # Bounded memory: keep nothing per sample; the backward redraws and re-solves.
        def body(total, k):
            _, ys = _solve_samples(spec, theta, _draw(spec, k, theta))
            return _add_trees(total, jtu.tree_map(_sample_sum, ys))

        shapes = jax.eval_shape(
            lambda k: _solve_samples(spec, theta, _draw(spec, k, theta))[1], keys[:1]
        )
        init = jtu.tree_map(lambda s: jnp.zeros(s.shape[1:], s.dtype), shapes)
        total = _fold_chunks(keys, spec.chunk_size, body, init)
        ybar = jtu.tree_map(lambda t: t / spec.num_samples, total)
        saved = None
    out = jtu.tree_map(lambda y, d: y.astype(d), ybar, out_dtypes)
    residuals = _first_order_only(theta, (theta, ybar, saved))
    return out, (residuals, keys)


def _scores(spec: Spec, z: Array) -> Array:
    """∇ν(Z), or its conditional expectation given the shift-free part of Z."""
    if spec.shift_invariant and not spec.multiplicative:
        flat = z.reshape(*z.shape[:2], -1)
        return spec.noise.centred_score(flat).reshape(z.shape)
    return spec.noise.score(z)


def _vjp_terms(spec: Spec, ybar: Any, ys: Any, z: Array, g: Any) -> Array:
    """Σ_m over this chunk of the (unscaled) estimate of Jᵀg, shape (B, *event)."""
    s = _scores(spec, z)
    m = spec.num_samples
    if m > 1:
        # Leave-one-out baseline: Σ_m (y_m − mean_{j≠m} y_j) s_mᵀ equals
        # M/(M−1) Σ_m (y_m − ȳ) s_mᵀ, and ȳ is known from the forward pass.
        ys = jtu.tree_map(lambda y, yb: y - yb, ys, ybar)
    weights = _instance_dot(ys, jtu.tree_map(lambda gi: gi[None], g))  # (K, B)
    jt_g = jnp.einsum("kb,kb...->b...", weights, s)
    if spec.objective is not None and not spec.multiplicative:
        # For the argmax/argmin of a linear objective under additive noise, J is the
        # Hessian of ±F_ε, hence symmetric: averaging the estimates of Jᵀg and Jg
        # halves part of the variance at no bias.
        (y,) = jtu.tree_leaves(ys)
        (gv,) = jtu.tree_leaves(g)
        proj = jnp.sum(s * gv[None], axis=tuple(range(2, s.ndim)))  # (K, B)
        j_g = jnp.einsum("kb,kb...->b...", proj, y)
        jt_g = (jt_g + j_g) / 2
    return jt_g


def _mean_bwd(spec: Spec, res, g):
    (theta, ybar, saved), keys = res
    g = jtu.tree_map(lambda gi: gi.astype(_compute_dtype(gi.dtype)), g)
    if saved is not None:
        ys, z = saved
        total = _vjp_terms(spec, ybar, ys, z, g)
    else:

        def body(total, k):
            z = _draw(spec, k, theta)
            _, ys = _solve_samples(spec, theta, z)
            return total + _vjp_terms(spec, ybar, ys, z, g)

        init = jnp.zeros(theta.shape, _compute_dtype(theta.dtype))
        total = _fold_chunks(keys, spec.chunk_size, body, init)
    m = spec.num_samples
    denominator = spec.sigma * (m - 1 if m > 1 else 1)
    grad = total / denominator
    if spec.multiplicative:
        # θ_m = exp(log θ + σZ − σ²/2): the score lives in log-space, dlogθ/dθ = 1/θ.
        grad = grad / theta.astype(grad.dtype)
        grad = error_if_any(
            grad,
            theta == 0,
            "perturbation='multiplicative' has no gradient where theta == 0: its "
            "Jacobian J = E[y* Zᵀ]/(σθ) needs nonzero theta (costs).",
        )
    return grad.astype(theta.dtype), None


perturbed_mean.defvjp(_mean_fwd, _mean_bwd)


# -------------------------------------------------------- F_eps and its gradient


@ft.partial(jax.custom_vjp, nondiff_argnums=(0,))
def perturbed_objective(
    spec: Spec, theta: Float[Array, "B ..."], key: Key
) -> Float[Array, " B"]:
    """F_ε(θ) = E[⟨solve(θ_m), θ_m⟩] per instance, for a linear-objective solver."""
    return _objective_fwd(spec, theta, key)[0]


def _objective_fwd(spec: Spec, theta: Array, key: Key):
    keys = jax.random.split(key, spec.num_samples)
    cdtype = _compute_dtype(theta.dtype)

    def body(carry, k):
        value, slope = carry
        z = _draw(spec, k, theta)
        theta_m, ys = _solve_samples(spec, theta, z)
        (y,) = jtu.tree_leaves(ys)
        # Off the solution θ may be +inf (a graph's missing arcs): skip 0 * inf.
        theta_m = jnp.where(y != 0, theta_m, 0)
        value = value + _sample_sum(_instance_dot(y, theta_m))
        # d<y, θ_m>/dθ at fixed y (Danskin): y for additive, y ⊙ θ_m/θ otherwise.
        if spec.multiplicative:
            y = y * jnp.exp(spec.sigma * z - spec.sigma**2 / 2)
        return value, slope + _sample_sum(y)

    init = (jnp.zeros(theta.shape[:1], cdtype), jnp.zeros(theta.shape, cdtype))
    value, slope = _fold_chunks(keys, spec.chunk_size, body, init)
    value = value / spec.num_samples
    slope = _first_order_only(theta, slope / spec.num_samples)
    return value.astype(theta.dtype), slope


def _objective_bwd(spec: Spec, slope, g):
    del spec
    g = g.reshape(g.shape + (1,) * (slope.ndim - 1))
    return (g * slope).astype(g.dtype), None


perturbed_objective.defvjp(_objective_fwd, _objective_bwd)
