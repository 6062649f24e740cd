"""y_ε(θ) = E[y*(θ_m)] and its Jacobian estimator, as one custom JVP.

The tangent is the estimate Ĵ·t of Berthet et al. (2020, Prop. 3.1),
J = E[y*(θ + σZ) ∇ν(Z)ᵀ] / σ, with the variance reduction of the layer's
`pl.Estimator`. It is linear in the input tangent t, with every sample-dependent
coefficient computed from the primal alone, so JAX transposes it for reverse mode:
`jax.jvp`, `jax.jacfwd`, `jax.linearize`, `jax.grad` and `jax.jacrev` all use the same
samples and the same estimate, and `jacfwd` equals `jacrev` to float rounding.
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array

from .._checks import error_if_any
from .._custom_types import Key
from ._options import Plan
from ._sampling import (
    compute_dtype,
    draw,
    event_dot,
    fold_chunks,
    instance_dot,
    kahan_add,
    output_dtype,
    pair_dot,
    sample_sum,
    solve_in_blocks,
    solve_samples,
    weighted_sum,
)


@jax.custom_jvp
def first_order_only(theta: Array, residuals: Any) -> Any:
    """`residuals`, tied to θ: differentiating them in θ (a second derivative) raises.

    Through θ explicitly, because the solver's outputs often carry a symbolic-zero
    tangent (argmax) that would otherwise skip the rule and give a silent zero."""
    del theta
    return residuals


@first_order_only.defjvp
def _first_order_only_jvp(primals, tangents):
    del primals, tangents
    raise NotImplementedError(
        "perturbed_layers: a second derivative was taken through a perturbed layer "
        "or Fenchel-Young loss. Their derivatives are Monte-Carlo estimates with a "
        "custom first derivative only; rather than return a silently wrong (zero) "
        "second derivative, this is refused. For estimates of derivatives of any "
        "order use pl.make_perturbed_fun."
    )


def nan_mask(layer: Any, theta: Array) -> Array:
    """(B,) factor: 1 for a usable instance, NaN where θ is NaN (or ±inf, unless the
    layer gives infinities a meaning, like a graph's missing arcs)."""
    axes = tuple(range(1, theta.ndim))
    bad = jnp.isnan(theta) if layer.allows_inf else ~jnp.isfinite(theta)
    return jnp.where(jnp.any(bad, axis=axes), jnp.nan, 1.0).astype(
        compute_dtype(theta.dtype)
    )


def _times(mask: Array, x: Array) -> Array:
    return x * mask.reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype)


def _forward(layer: Any, plan: Plan, theta: Array, args: Any, key: Key, keep: bool):
    """ȳ (B, ...), and what the tangent needs: the samples' solutions and scores
    (unchunked, if `keep`) or Σ_k ⟨y_k, s_k⟩ (chunked, control variate only)."""
    keys = jax.random.split(key, layer.num_samples)
    m = layer.num_samples
    if layer.chunk_size is None:
        ys, s, sums = solve_in_blocks(layer, plan, keys, theta, args)
        ybar = jtu.tree_map(lambda t: t / m, sums)
        return ybar, ((ys, s) if keep else None), None
    # Bounded memory: keep nothing per sample; the tangent redraws and re-solves. The
    # control variate needs Σ_k ⟨y_k, s_k⟩ over all samples, summed here as we go.
    control = keep and plan.score_moment is not None

    def body(carry, k):
        z, s = draw(layer, plan, k, theta)
        _, ys = solve_samples(layer, theta, args, z)
        terms = jtu.tree_map(lambda y: sample_sum(plan, y), ys)
        own = (
            jnp.sum(pair_dot(ys, s), axis=1) if control else jnp.zeros_like(carry[0][1])
        )
        return kahan_add(carry, (terms, own))

    shapes = jax.eval_shape(
        lambda k: solve_samples(layer, theta, args, draw(layer, plan, k, theta)[0])[1],
        keys[:1],
    )
    zero = (
        jtu.tree_map(lambda x: jnp.zeros(x.shape[:1] + x.shape[2:], x.dtype), shapes),
        jnp.zeros(theta.shape[:1], compute_dtype(theta.dtype)),
    )
    (total, ys_total), _ = fold_chunks(keys, layer.chunk_size, body, (zero, zero))
    ybar = jtu.tree_map(lambda t: t / m, total)
    return ybar, None, (ys_total if control else None)


def _jacobian_terms(
    plan: Plan, m: int, ybar: Any, ys: Any, s: Array, t: Array, ys_total: Any
) -> Any:
    """Σ_k over these samples of the (unscaled) estimate Ĵ·t, shaped like ȳ.

    `ys` (B, K, ...) are the samples' solutions, `s` (B, K, *event) their scores,
    `t` (B, *event) the tangent, `ys_total` (B,) Σ_k ⟨y_k, s_k⟩ over all M samples
    (None: these samples are all of them). Linear in t.
    """
    proj = instance_dot(plan, s, t)  # (B, K): ⟨s_k, t⟩
    # Ĵ t = Σ_k (y_k − ȳ) ⟨s_k, t⟩, with ȳ the leave-one-out baseline:
    # Σ_k (y_k − mean_{j≠k} y_j) s_kᵀ = M/(M−1) Σ_k (y_k − ȳ) s_kᵀ.
    proj_total = jnp.sum(proj, axis=1)

    def j_t(y: Array, yb: Array, weight: Array) -> Array:
        out = weighted_sum(plan, weight, y)
        if plan.baseline:
            scale = jnp.sum(weight, axis=1).reshape((-1,) + (1,) * (yb.ndim - 1))
            out = out - scale * yb
        return out

    if not plan.symmetrise:
        del proj_total
        return jtu.tree_map(lambda y, yb: j_t(y, yb, proj), ys, ybar)
    # For the argmax/argmin of a linear objective under additive noise, J is the
    # Hessian of ±F_ε, hence symmetric: averaging the estimates of J t and Jᵀt halves
    # part of the variance at no bias.
    (y,) = jtu.tree_leaves(ys)
    (yb,) = jtu.tree_leaves(ybar)
    weights = instance_dot(plan, y, t)  # (B, K): ⟨y_k, t⟩
    if plan.baseline:
        weights = weights - event_dot(yb, t)[:, None]
    weights = weights / 2
    correction = 0
    c = plan.score_moment
    if c is not None:
        # Control variate: E[(sᵀt) s] = E[s sᵀ] t = c·t (c·(t − mean t) centred)
        # exactly, so subtracting α_k ((s_kᵀt) s_k − c·t) leaves the estimate unbiased
        # for any α_k independent of sample k. With α_k = tr Ĵ_{−k} / tr E[s sᵀ], the
        # trace of a baseline-free estimate from the other samples, it removes the part
        # of the error that follows ‖s_k‖: 0.6–0.98× the variance on argmax, top-k and
        # grid shortest paths, 0.3–0.5× on ranking (M = 100–1000).
        n = t[0].size
        if plan.rao_blackwell:
            t_c = t - jnp.mean(t, axis=tuple(range(1, t.ndim)), keepdims=True)
            trace = c * (n - 1)
        else:
            t_c, trace = t, c * n
        own = pair_dot(ys, s)  # (B, K): ⟨y_k, s_k⟩
        total = jnp.sum(own, axis=1) if ys_total is None else ys_total
        # The sums here are D times the estimate (D = M−1 with the baseline, else M),
        # and α_k averages M−1 other samples: D/M · α_k per sample.
        d = m - 1 if plan.baseline else m
        alpha = (total[:, None] - own) * (d / ((m - 1) * m * trace))
        weights = weights - alpha * proj
        shape = (-1,) + (1,) * (t.ndim - 1)
        correction = c * jnp.sum(alpha, axis=1).reshape(shape) * t_c
    out = weighted_sum(plan, weights, s) + correction + j_t(y, yb, proj / 2)
    return jtu.tree_unflatten(jtu.tree_structure(ys), [out])


def perturbed_mean_impl(layer: Any, theta: Array, args: Any, key: Key) -> Any:
    plan = layer.estimator.resolve(layer, theta.shape)
    ybar, _, _ = _forward(layer, plan, theta, args, key, keep=False)
    return _finish(layer, theta, args, ybar)


def _finish(layer: Any, theta: Array, args: Any, ybar: Any) -> Any:
    """ȳ in the output dtypes (the solver's, or θ's float for integer outputs), NaN
    for the instances with a bad θ."""
    one = jtu.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), args)
    shapes = jax.eval_shape(
        layer.solve, jax.ShapeDtypeStruct(theta.shape[1:], theta.dtype), one
    )
    mask = nan_mask(layer, theta)
    return jtu.tree_map(
        lambda y, s: _times(mask, y).astype(output_dtype(s.dtype, theta.dtype)),
        ybar,
        shapes,
    )


@eqx.filter_custom_jvp
def perturbed_mean(theta: Array, layer: Any, args: Any, *, key: Key) -> Any:
    """y_ε(θ) = E[layer.solve(θ_m, args)] for a batch θ of shape (B, *event).

    No derivative flows into `args`, the layer's own arrays or the key."""
    return perturbed_mean_impl(layer, theta, args, key)


@perturbed_mean.def_jvp
def _perturbed_mean_jvp(primals, tangents, *, key):
    # No derivative flows into the layer's arrays nor into args: their tangents are
    # dropped.
    (theta, layer, args), (t, _, _) = primals, tangents
    plan = layer.estimator.resolve(layer, theta.shape)
    if t is None:
        return perturbed_mean_impl(layer, theta, args, key), None
    ybar, saved, ys_total = _forward(layer, plan, theta, args, key, keep=True)
    out = _finish(layer, theta, args, ybar)
    # Everything the tangent uses is tied to θ, so that a second derivative raises.
    theta_r, ybar, saved, ys_total = first_order_only(
        theta, (theta, ybar, saved, ys_total)
    )
    ct = compute_dtype(theta.dtype)
    t = t.astype(ct)
    if layer.perturbation == "multiplicative":
        # θ_m = exp(log θ + σZ − σ²/2): the score lives in log-space, dlogθ/dθ = 1/θ.
        theta_r = error_if_any(
            theta_r.astype(ct),
            theta_r == 0,
            "perturbation='multiplicative' has no derivative where theta == 0: its "
            "Jacobian J = E[y* Zᵀ]/(σθ) needs nonzero theta (costs).",
        )
        t = t / theta_r
    m = layer.num_samples
    if saved is not None:
        ys, s = saved
        total = _jacobian_terms(plan, m, ybar, ys, s, t, None)
    else:
        keys = jax.random.split(key, m)

        # Rematerialised: reverse mode (the transpose of this loop) redraws and
        # re-solves each chunk instead of storing every sample's solution.
        @jax.checkpoint
        def chunk(k, t):
            z, s = draw(layer, plan, k, theta)
            _, ys = solve_samples(layer, theta, args, z)
            return _jacobian_terms(plan, m, ybar, ys, s, t, ys_total)

        def body(carry, k):
            return jtu.tree_map(jnp.add, carry, chunk(k, t))

        init = jtu.tree_map(jnp.zeros_like, ybar)
        total = fold_chunks(keys, layer.chunk_size, body, init)
    denominator = layer.sigma * (m - 1 if plan.baseline else m)
    mask = nan_mask(layer, theta)
    t_out = jtu.tree_map(
        lambda x, o: _times(mask, x / denominator).astype(o.dtype), total, out
    )
    return out, t_out
