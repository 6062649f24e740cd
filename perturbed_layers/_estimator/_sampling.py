"""Drawing, perturbing and solving the samples, and summing over them.

Sample m is drawn from its own key `split(key, M)[m]`, which covers the whole batch:
the samples do not depend on `chunk_size` nor on the blocks large draws go in, so
every path agrees to float summation order. Arrays are instance-major, (B, K, ...):
with the samples of an instance side by side, every per-instance contraction is a
batched matrix product over B, which XLA:CPU runs without materialising broadcasts.
"""

import functools as ft
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jax.sharding import PartitionSpec as P
from jaxtyping import Array

from .._custom_types import Key
from ._options import Plan


def compute_dtype(dtype: Any) -> Any:
    """Float dtype to accumulate in: float32 at least (bfloat16 and integer outputs)."""
    if not jnp.issubdtype(dtype, jnp.floating):
        return jnp.dtype(jnp.float32)
    return jnp.promote_types(dtype, jnp.float32)


def output_dtype(out: Any, theta_dtype: Any) -> Any:
    """An expectation is a float: floating outputs keep their dtype, integer and bool
    outputs are averaged in θ's floating dtype (float32 at least)."""
    if jnp.issubdtype(out, jnp.floating):
        return out
    return jnp.promote_types(theta_dtype, jnp.float32)


def draw(layer: Any, plan: Plan, keys: Key, theta: Array) -> tuple[Array, Array]:
    """Noise and its score, each (B, K, *event), sample k drawn from keys[k] alone.

    The score is ∇ν(Z), or with Rao–Blackwellisation its conditional expectation
    given the shift-free part of Z, along the whole event. Where the score is not
    used, jit removes it.
    """
    dtype = compute_dtype(theta.dtype)
    flat = (theta.shape[0], math.prod(theta.shape[1:]))

    def one(k: Key) -> tuple[Array, Array]:
        z, s = layer.noise.sample_and_score(k, flat, dtype, centred=plan.rao_blackwell)
        return z.reshape(theta.shape), s.reshape(theta.shape)

    z, s = jax.vmap(one)(keys)
    if layer.sample_axis is not None:
        # Split the samples over a mesh axis; the means over them then reduce with one
        # all-reduce, and the other axes keep whatever sharding θ has.
        free = P.UNCONSTRAINED
        z, s = (
            jax.lax.with_sharding_constraint(
                x, P(layer.sample_axis, *(free,) * (x.ndim - 1))
            )
            for x in (z, s)
        )
    return jnp.swapaxes(z, 0, 1), jnp.swapaxes(s, 0, 1)


def perturb(layer: Any, theta: Array, z: Array) -> Array:
    """θ_m = θ + σZ_m, or θ ⊙ exp(σZ_m − σ²/2) for the multiplicative form."""
    theta = theta.astype(z.dtype)[:, None]
    if layer.perturbation == "multiplicative":
        return theta * jnp.exp(layer.sigma * z - layer.sigma**2 / 2)
    return theta + layer.sigma * z


def solve_samples(layer: Any, theta: Array, args: Any, z: Array) -> tuple[Array, Any]:
    """Perturbed inputs (B, K, *event) and solver outputs (B, K, ...) in float.

    Instance b's samples all see instance b's slice of `args`."""
    theta_m = perturb(layer, theta, z)
    inputs = theta_m.astype(theta.dtype)

    def per_instance(th: Array, a: Any) -> Any:
        return jax.vmap(lambda t: layer.solve(t, a))(th)

    ys = jax.vmap(per_instance)(inputs, args)
    ys = jtu.tree_map(lambda y: y.astype(compute_dtype(y.dtype)), ys)
    return theta_m, ys


# ------------------------------------------------------------------ contractions
# Per-instance contractions over (B, K, *rest) arrays, written as batched matrix
# products: XLA:CPU runs a reduction over the sample axis of a large array up to ~20x
# slower than the same sum as a dot (jax 0.10). A dot accumulates sequentially,
# though: a sum of M same-sign terms would lose digits as M grows (a constant 15.7
# averaged over 8·10⁵ samples came back as 15.74), so the means (`sample_sum`) over
# many samples go `_SUM_BLOCK` samples per dot and add the block sums with `jnp.sum`
# (a tree reduction): 15.69999 there. Large draws, which go in blocks anyway, sum
# each block as it is solved (`solve_in_blocks`). Tiny arrays (`plan.small`) are
# contracted elementwise, where the fixed cost of a dot call dominates.
_SUM_BLOCK = 64


def _flat(x: Array) -> Array:
    return x.reshape(*x.shape[:2], -1)


def weighted_sum(plan: Plan, w: Array, x: Array) -> Array:
    """Σ_k w[b, k] x[b, k] for w (B, K) and x (B, K, *rest): (B, *rest).

    For sums of centred terms (the tangent's), whose rounding errors do not pile up."""
    w, xf = w.astype(x.dtype), _flat(x)
    if xf.size <= plan.small:
        out = jnp.sum(w[..., None] * xf, axis=1)
    else:
        out = jnp.einsum("bk,bkn->bn", w, xf)
    return out.reshape(x.shape[:1] + x.shape[2:])


def sample_sum(plan: Plan, x: Array) -> Array:
    """Σ over the sample axis (axis 1) of x (B, K, *rest): (B, *rest), accurate to a
    few roundings at any K (the means, where same-sign terms pile up errors)."""
    b, k = x.shape[:2]
    if k <= 2 * _SUM_BLOCK:
        return weighted_sum(plan, jnp.ones((b, k), x.dtype), x)
    xf = _flat(x)
    q, r = divmod(k, _SUM_BLOCK)
    head = q * _SUM_BLOCK
    blocks = jnp.einsum(
        "k,bqkn->bqn",
        jnp.ones(_SUM_BLOCK, x.dtype),
        xf[:, :head].reshape(b, q, _SUM_BLOCK, -1),
    )
    out = jnp.sum(blocks, axis=1)
    if r:
        out = out + jnp.sum(xf[:, head:], axis=1)
    return out.reshape(x.shape[:1] + x.shape[2:])


def instance_dot(plan: Plan, a: Any, g: Any) -> Array:
    """Σ over the event axes and leaves of a[b, k] ⊙ g[b], a (B, K, ...): (B, K)."""

    def dot(u: Array, v: Array) -> Array:
        uf, vf = _flat(u), v.reshape(v.shape[0], -1).astype(u.dtype)
        if uf.size <= plan.small:
            return jnp.sum(uf * vf[:, None], axis=2)
        return jnp.einsum("bkn,bn->bk", uf, vf)

    return ft.reduce(jnp.add, jtu.tree_leaves(jtu.tree_map(dot, a, g)))


def event_dot(a: Any, g: Any) -> Array:
    """Σ over the event axes and leaves of a[b] ⊙ g[b], both (B, ...): (B,)."""
    terms = jtu.tree_map(
        lambda u, v: jnp.sum(u * v.astype(u.dtype), axis=tuple(range(1, u.ndim))), a, g
    )
    return ft.reduce(jnp.add, jtu.tree_leaves(terms))


def pair_dot(a: Any, b: Array) -> Array:
    """Σ over the event of a[:, k] ⊙ b[:, k], single-leaf a and b (B, K, ...): (B, K)."""
    (a,) = jtu.tree_leaves(a)
    return jnp.sum(_flat(a) * _flat(b).astype(a.dtype), axis=2)


# ------------------------------------------------------------------ loops over samples


def kahan_add(carry: Any, x: Any) -> Any:
    """Compensated running sum: carry = (sum, compensation) trees, x a tree of terms.

    Chunk sums are added one chunk at a time; with compensation the total is as
    accurate as one pairwise sum, whatever the number of chunks."""
    total, comp = carry
    y = jtu.tree_map(jnp.subtract, x, comp)
    new = jtu.tree_map(jnp.add, total, y)
    comp = jtu.tree_map(lambda n, t, yy: (n - t) - yy, new, total, y)
    return new, comp


def fold_chunks(
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


def solve_in_blocks(
    layer: Any, plan: Plan, keys: Key, theta: Array, args: Any
) -> tuple[Any, Array, Any]:
    """Solutions (B, M, ...) and scores (B, M, *event) of all samples, and the sums of
    the solutions over the samples (B, ...).

    Large draws go `plan.block` samples at a time, each written in place into the
    (B, M, ...) buffers, so that no transpose of the whole result follows, and summed
    while it is fresh (compensated over the blocks)."""

    def block(k):
        z, s = draw(layer, plan, k, theta)
        return solve_samples(layer, theta, args, z)[1], s

    size = plan.block
    if size is None:
        ys, s = block(keys)
        return ys, s, jtu.tree_map(lambda y: sample_sum(plan, y), ys)
    m = keys.shape[0]
    shapes = jax.eval_shape(block, keys[:size])
    buffers = jtu.tree_map(
        lambda x: jnp.zeros((x.shape[0], m, *x.shape[2:]), x.dtype), shapes
    )
    zero = jtu.tree_map(
        lambda x: jnp.zeros((x.shape[0], *x.shape[2:]), x.dtype), shapes[0]
    )

    def body(j, carry):
        out, sums = carry
        ys, s = block(jax.lax.dynamic_slice_in_dim(keys, j * size, size))
        out = jtu.tree_map(
            lambda buf, x: jax.lax.dynamic_update_slice_in_dim(buf, x, j * size, 1),
            out,
            (ys, s),
        )
        sums = kahan_add(sums, jtu.tree_map(lambda y: sample_sum(plan, y), ys))
        return out, sums

    (ys, s), (sums, _) = jax.lax.fori_loop(0, m // size, body, (buffers, (zero, zero)))
    return ys, s, sums
