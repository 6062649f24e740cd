"""The Monte-Carlo estimator behind every perturbed layer and loss, in one place.

Notation (Berthet et al., 2020): θ has shape (B, *event), a batch of B independent
instances; Z ~ μ ∝ exp(−ν) is drawn per instance; θ_m = θ + σZ_m (additive) or
θ ⊙ exp(σZ_m − σ²/2) (multiplicative, Z standard normal); y_m = solve(θ_m).

- `perturbed_mean`: y_ε(θ) = E[y*(θ_m)], whose custom VJP is the Jacobian estimator of
  Prop. 3.1, J = E[y*(θ + σZ) ∇ν(Z)ᵀ] / σ, with per-instance variance reduction.
- `perturbed_objective`: F_ε(θ) = E[⟨y*(θ_m), θ_m⟩], the perturbed optimal value, whose
  gradient is E[y*(θ_m) ⊙ ∂θ_m/∂θ] from the same samples (no Jacobian estimate).

Both draw sample m from its own key `split(key, M)[m]`, which covers the whole batch:
the samples do not depend on `chunk_size` (nor on the blocks large draws go in), so
chunked and unchunked runs agree to float summation order. Second derivatives are refused with a clear error (see
`_first_order_only`), never silently zero.
"""

import functools as ft
import math
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


def _draw(spec: Spec, keys: Key, theta: Array) -> tuple[Array, Array]:
    """Noise and its score, each (B, K, *event), sample k drawn from keys[k] alone.

    The score is ∇ν(Z), or for a shift-invariant solver (additive noise) its
    conditional expectation given the shift-free part of Z (Rao–Blackwellisation),
    along the whole event. Instance-major layout: with the samples of an instance side
    by side, every per-instance contraction of the estimator is a batched matrix
    product over B, which XLA:CPU runs without materialising broadcasts or transposes
    of (B, K, n) arrays. Where the score is not used, jit removes it.
    """
    dtype = _compute_dtype(theta.dtype)
    centred = spec.shift_invariant and not spec.multiplicative
    flat = (theta.shape[0], math.prod(theta.shape[1:]))

    def one(k: Key) -> tuple[Array, Array]:
        z, s = spec.noise.sample_and_score(k, flat, dtype, centred=centred)
        return z.reshape(theta.shape), s.reshape(theta.shape)

    z, s = jax.vmap(one)(keys)
    if spec.sample_axis is not None:
        # Split the samples over a mesh axis; the means over them then reduce with one
        # all-reduce, and the other axes keep whatever sharding θ has.
        free = P.UNCONSTRAINED
        z, s = (
            jax.lax.with_sharding_constraint(
                x, P(spec.sample_axis, *(free,) * (x.ndim - 1))
            )
            for x in (z, s)
        )
    return jnp.swapaxes(z, 0, 1), jnp.swapaxes(s, 0, 1)


def _perturb(spec: Spec, theta: Array, z: Array) -> Array:
    theta = theta.astype(z.dtype)[:, None]
    if spec.multiplicative:
        return theta * jnp.exp(spec.sigma * z - spec.sigma**2 / 2)
    return theta + spec.sigma * z


def _solve_samples(spec: Spec, theta: Array, z: Array) -> tuple[Array, Any]:
    """Perturbed inputs (B, K, *event) and solver outputs (B, K, ...) in float."""
    theta_m = _perturb(spec, theta, z)
    ys = jax.vmap(jax.vmap(spec.solve))(theta_m.astype(theta.dtype))
    ys = jtu.tree_map(lambda y: y.astype(_compute_dtype(y.dtype)), ys)
    return theta_m, ys


# Per-instance contractions over (B, K, *rest) arrays, written as batched matrix
# products: XLA:CPU runs a reduction over the sample axis of a large array up to ~20x
# slower than the same sum as a dot (measured on jax 0.10), and an elementwise product
# followed by a reduction materialises its broadcast operand. Below `_SMALL` values
# the fixed cost of a dot call dominates instead (2.5x the whole step at B=1, n=10,
# M=100), so tiny arrays are contracted elementwise.
_SMALL = 4096


def _flat(x: Array) -> Array:
    return x.reshape(*x.shape[:2], -1)


def _weighted_sum(w: Array, x: Array) -> Array:
    """Σ_k w[b, k] x[b, k] for w (B, K) and x (B, K, *rest): (B, *rest)."""
    w, xf = w.astype(x.dtype), _flat(x)
    if xf.size <= _SMALL:
        out = jnp.sum(w[..., None] * xf, axis=1)
    else:
        out = jnp.einsum("bk,bkn->bn", w, xf)
    return out.reshape(x.shape[:1] + x.shape[2:])


def _sample_sum(x: Array) -> Array:
    """Σ over the sample axis (axis 1) of x (B, K, *rest): (B, *rest)."""
    return _weighted_sum(jnp.ones(x.shape[:2], x.dtype), x)


def _instance_dot(a: Any, g: Any) -> Array:
    """Σ over the event axes and leaves of a[b, k] ⊙ g[b], a (B, K, ...): (B, K)."""

    def dot(u: Array, v: Array) -> Array:
        uf, vf = _flat(u), v.reshape(v.shape[0], -1)
        if uf.size <= _SMALL:
            return jnp.sum(uf * vf[:, None], axis=2)
        return jnp.einsum("bkn,bn->bk", uf, vf)

    return ft.reduce(jnp.add, jtu.tree_leaves(jtu.tree_map(dot, a, g)))


def _event_dot(a: Any, g: Any) -> Array:
    """Σ over the event axes and leaves of a[b] ⊙ g[b], both (B, ...): (B,)."""
    terms = jtu.tree_map(
        lambda u, v: jnp.sum(u * v, axis=tuple(range(1, u.ndim))), a, g
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


# Large draws go a block of samples at a time. XLA:CPU generates random bits
# (threefry) in a loop over the whole array it fills; once M·B·n values no longer fit
# in cache, blocks of ~2¹⁸ values come out faster: the whole forward and backward
# took 0.74-0.86x the time of one draw at 32x1000x1000, 256x100x1000 and
# 256x1000x100 (jax 0.10, 2-core CPU). Smaller draws gain nothing and go at once.
_BLOCK = 2**18
_BLOCKED_FROM = 2**22


def _block_size(spec: Spec, theta: Array) -> int | None:
    """Samples per block for the unchunked forward, or None for all at once."""
    per_sample = math.prod(theta.shape)
    if spec.sample_axis is not None or spec.num_samples * per_sample < _BLOCKED_FROM:
        return None  # (split samples are spread over devices instead)
    target = max(1, _BLOCK // per_sample)
    # The largest divisor of M up to the target, so that the blocks tile the samples.
    return max(d for d in range(1, target + 1) if spec.num_samples % d == 0)


def _solve_in_blocks(spec: Spec, keys: Key, theta: Array) -> tuple[Any, Array]:
    """Solutions (B, M, ...) and scores (B, M, *event) of all samples."""

    def block(k):
        z, s = _draw(spec, k, theta)
        return _solve_samples(spec, theta, z)[1], s

    size = _block_size(spec, theta)
    if size is None:
        return block(keys)

    # Each block is written in place into (B, M, ...) buffers, so that no transpose
    # of the whole result follows.
    shapes = jax.eval_shape(block, keys[:size])
    init = jtu.tree_map(
        lambda x: jnp.zeros((x.shape[0], spec.num_samples, *x.shape[2:]), x.dtype),
        shapes,
    )

    def body(j, carry):
        out = block(jax.lax.dynamic_slice_in_dim(keys, j * size, size))
        return jtu.tree_map(
            lambda buf, x: jax.lax.dynamic_update_slice_in_dim(buf, x, j * size, 1),
            carry,
            out,
        )

    return jax.lax.fori_loop(0, spec.num_samples // size, body, init)


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
    control = _score_moment(spec, theta) is not None
    if spec.chunk_size is None:
        # Keep the samples' solutions and scores for the backward pass: M solver calls
        # in all; the scores are drawn with the noise (see `AbstractNoise`).
        ys, s = _solve_in_blocks(spec, keys, theta)
        ybar = jtu.tree_map(lambda y: _sample_sum(y) / spec.num_samples, ys)
        saved = (ys, s)
        ys_total = None  # the backward sums ⟨y_k, s_k⟩ itself
    else:
        # Bounded memory: keep nothing per sample; the backward redraws and re-solves.
        # It needs Σ_k ⟨y_k, s_k⟩ over all samples for its control variate, so the
        # forward sums it as it goes.
        def body(carry, k):
            total, ys_total = carry
            z, s = _draw(spec, k, theta)
            _, ys = _solve_samples(spec, theta, z)
            if control:
                ys_total = ys_total + jnp.sum(_pair_dot(ys, s), axis=1)
            return _add_trees(total, jtu.tree_map(_sample_sum, ys)), ys_total

        shapes = jax.eval_shape(
            lambda k: _solve_samples(spec, theta, _draw(spec, k, theta)[0])[1],
            keys[:1],
        )
        init = jtu.tree_map(
            lambda s: jnp.zeros(s.shape[:1] + s.shape[2:], s.dtype), shapes
        )
        init = (init, jnp.zeros(theta.shape[:1], _compute_dtype(theta.dtype)))
        total, ys_total = _fold_chunks(keys, spec.chunk_size, body, init)
        ybar = jtu.tree_map(lambda t: t / spec.num_samples, total)
        saved = None
    out = jtu.tree_map(lambda y, d: y.astype(d), ybar, out_dtypes)
    residuals = _first_order_only(theta, (theta, ybar, saved, ys_total))
    return out, (residuals, keys)


def _score_moment(spec: Spec, theta: Array) -> float | None:
    """c with E[s sᵀ] = c·I (c·(I − 11ᵀ/n) centred) where the control variate of
    `_vjp_terms` applies, else None.

    It applies where the Jacobian estimate is symmetrised (J square), with at least
    three samples and a noise whose score moment is known in closed form, and not to
    tiny problems (at most `_SMALL` values in all): there its few extra operations
    cost more time than they save error (at B = 1, n = 10, M = 100 they doubled the
    call, ~60 to ~120 µs on XLA:CPU, for 12% less variance; twice the samples would
    halve it).
    """
    if spec.objective is None or spec.multiplicative or spec.num_samples < 3:
        return None
    if spec.num_samples * math.prod(theta.shape) <= _SMALL:
        return None
    n = math.prod(theta.shape[1:])
    return spec.noise.score_moment(n, centred=spec.shift_invariant)


def _pair_dot(a: Any, b: Array) -> Array:
    """Σ over the event of a[:, k] ⊙ b[:, k] for a single-leaf a and b, both (B, K, ...):
    (B, K)."""
    (a,) = jtu.tree_leaves(a)
    return jnp.sum(_flat(a) * _flat(b).astype(a.dtype), axis=2)


def _vjp_terms(
    spec: Spec, ybar: Any, ys: Any, s: Array, g: Any, ys_total: Array | None
) -> Array:
    """Σ_k over this chunk of the (unscaled) estimate of Jᵀg, shape (B, *event).

    `ys` (B, K, ...) are the samples' solutions, `s` (B, K, *event) their scores and
    `ys_total` (B,) is Σ_k ⟨y_k, s_k⟩ over all M samples (None: this chunk is all).
    """
    m = spec.num_samples
    # Leave-one-out baseline: Σ_k (y_k − mean_{j≠k} y_j) s_kᵀ equals
    # M/(M−1) Σ_k (y_k − ȳ) s_kᵀ, and ȳ is known from the forward pass. Applied to g
    # as ⟨y_k, g⟩ − ⟨ȳ, g⟩, so that no (B, K, n) difference is materialised.
    weights = _instance_dot(ys, g)  # (B, K)
    if m > 1:
        weights = weights - _event_dot(ybar, g)[:, None]
    if spec.objective is None or spec.multiplicative:
        return _weighted_sum(weights, s)
    # For the argmax/argmin of a linear objective under additive noise, J is the
    # Hessian of ±F_ε, hence symmetric: averaging the estimates of Jᵀg and Jg halves
    # part of the variance at no bias.
    (y,) = jtu.tree_leaves(ys)
    (yb,) = jtu.tree_leaves(ybar)
    (gv,) = jtu.tree_leaves(g)
    proj = _instance_dot(s, gv)  # (B, K): ⟨s_k, g⟩
    weights = weights / 2
    c = _score_moment(spec, gv)
    correction = 0
    if c is not None:
        # Control variate: E[(sᵀg) s] = E[s sᵀ] g = c·g (c·(g − mean g) centred)
        # exactly, so subtracting α_k ((s_kᵀg) s_k − c·g) leaves the estimate unbiased
        # for any α_k independent of sample k. With α_k = tr Ĵ_{−k} / tr E[s sᵀ], the
        # trace of a baseline-free estimate from the other samples, it removes the part
        # of the error that follows ‖s_k‖: 0.6–0.98× the variance on argmax, top-k
        # and grid shortest paths, 0.3–0.5× on ranking (M = 100–1000).
        n = gv[0].size
        if spec.shift_invariant:
            gv_c = gv - jnp.mean(gv, axis=tuple(range(1, gv.ndim)), keepdims=True)
            trace = c * (n - 1)
        else:
            gv_c, trace = gv, c * n
        own = _pair_dot(ys, s)  # (B, K): ⟨y_k, s_k⟩
        total = jnp.sum(own, axis=1) if ys_total is None else ys_total
        # (M−1)/M ⋅ α_k: this function's sums are (M−1) times the estimate.
        alpha = (total[:, None] - own) / (m * trace)
        weights = weights - alpha * proj
        shape = (-1,) + (1,) * (gv.ndim - 1)
        correction = c * jnp.sum(alpha, axis=1).reshape(shape) * gv_c
    jt_g = _weighted_sum(weights, s) + correction
    j_g = _weighted_sum(proj / 2, y)
    if m > 1:  # Σ_k proj_k (y_k − ȳ)
        proj_total = jnp.sum(proj, axis=1).reshape((-1,) + (1,) * (yb.ndim - 1))
        j_g = j_g - proj_total * yb / 2
    return jt_g + j_g


def _mean_bwd(spec: Spec, res, g):
    (theta, ybar, saved, ys_total), keys = res
    g = jtu.tree_map(lambda gi: gi.astype(_compute_dtype(gi.dtype)), g)
    if saved is not None:
        ys, s = saved
        total = _vjp_terms(spec, ybar, ys, s, g, None)
    else:

        def body(total, k):
            z, s = _draw(spec, k, theta)
            _, ys = _solve_samples(spec, theta, z)
            return total + _vjp_terms(spec, ybar, ys, s, g, ys_total)

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
        z = _draw(spec, k, theta)[0]  # (its scores are dead code, removed by jit)
        theta_m, ys = _solve_samples(spec, theta, z)
        (y,) = jtu.tree_leaves(ys)
        # Off the solution θ may be +inf (a graph's missing arcs): skip 0 * inf.
        theta_m = jnp.where(y != 0, theta_m, 0)
        value = value + jnp.einsum("bkn,bkn->b", _flat(y), _flat(theta_m))
        # d<y, θ_m>/dθ at fixed y (Danskin): y for additive, y ⊙ θ_m/θ otherwise.
        if spec.multiplicative:
            y = y * jnp.exp(spec.sigma * z - spec.sigma**2 / 2)
        return value, slope + _sample_sum(y)

    init = (jnp.zeros(theta.shape[:1], cdtype), jnp.zeros(theta.shape, cdtype))
    size = spec.chunk_size or _block_size(spec, theta)
    value, slope = _fold_chunks(keys, size, body, init)
    value = value / spec.num_samples
    slope = _first_order_only(theta, slope / spec.num_samples)
    return value.astype(theta.dtype), slope


def _objective_bwd(spec: Spec, slope, g):
    del spec
    g = g.reshape(g.shape + (1,) * (slope.ndim - 1))
    return (g * slope).astype(g.dtype), None


perturbed_objective.defvjp(_objective_fwd, _objective_bwd)
