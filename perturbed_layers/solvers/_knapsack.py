r"""0/1 knapsack with one or several resources, by branch and bound.

Maximise $\langle v, x \rangle$ over $x \in \{0, 1\}^n$ subject to $W x \le C$, with
nonnegative weights `W` (`d × n`) and capacities `C` (`d`).

**Algorithm, chosen for exactness on real weights.** Depth-first branch and bound
(Horowitz–Sahni / Martello–Toth style) over the items sorted by decreasing
efficiency `v_i / Σ_k W_ki / C_k`: at each node the items before a depth `j` are
decided, and the node is cut if its value plus an upper bound on what the free items
can still add is no better than the best selection found so far. The bound is the
smallest of `d + 1` linear relaxations solved greedily (Dantzig's bound): each
resource alone, and their surrogate `Σ_k (W_k / C_k) x ≤ Σ_k res_k / C_k`; when every
value is an integer the bound is rounded down. The search is exact for any
real weights (no grid: items with value `≤ 0` are never taken, items that alone
exceed a capacity never fit), up to float rounding: weight sums are compared with
the capacities with a relative slack of `n` ulps, so that a selection filling a
capacity exactly (PyEPO's two-decimal weights in float32) is not lost to rounding.

One `lax.while_loop` step visits one node of every instance of the batch at once
(`O(n·(d + 1))` vector work per instance per step); the batch steps until its
slowest instance is done. The number of nodes is exponential in `n` in the worst
case (hard correlated instances); `max_nodes` bounds it and an error is raised
beyond, never a silently suboptimal answer. Measured on 320 PyEPO-like instances
(32 items, 2 resources, capacity 20, float32, 2 shared CPU cores): ≈ 0.1 s per call
against ≈ 4.6 s for SciPy's `milp` (HiGHS) called per instance, ≈ 45×.

A dynamic program over the capacities was the other candidate: `O(n·Π_k C_k)` per
instance, exact only for weights on a grid; PyEPO's weights have two decimals
(3.00–7.99) and capacities of about 20, so two resources make a `2001 × 2001` table
per instance, too large for a batch.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float

from .._checks import error_if_any

_BAD_VALUES = "knapsack: values must be finite (no NaN or inf)."
_BAD_WEIGHTS = "knapsack: weights must be finite and >= 0."
_BAD_CAPACITY = "knapsack: capacity must be finite and >= 0."
_TOO_MANY_NODES = (
    "knapsack: branch and bound visited max_nodes nodes without proving optimality "
    "(a hard instance, e.g. values proportional to weights). Raise max_nodes."
)


def _dantzig_bounds(v, w, res, free):
    """Greedy LP bounds, one per relaxation: `v`, `w`, `free` `(B, R, n)` sorted by
    decreasing `v / w` per relaxation, `res` `(B, R)`."""
    wf = jnp.where(free, w, 0)
    before = jnp.cumsum(wf, axis=-1) - wf
    room = res[..., None] - before
    safe_w = jnp.where(w > 0, w, 1)
    frac = jnp.where(w > 0, jnp.clip(room / safe_w, 0, 1), 1)
    return jnp.sum(jnp.where(free, v * frac, 0), axis=-1)


def _branch_and_bound(v, w, cap, max_nodes):
    """Best selection (DFS order), and whether the node budget ran out."""
    b, _, n = w.shape
    dtype = v.dtype
    pos = jnp.arange(n, dtype=jnp.int32)
    # Sums of weights are rounded: a selection that fills a capacity exactly in exact
    # arithmetic may exceed it by a few ulps (e.g. PyEPO's two-decimal weights in
    # float32), so capacities get a slack of n ulps of their size.
    cap = cap + n * jnp.finfo(dtype).eps * cap
    # Never taken: value <= 0 (nothing to gain) or too heavy on its own.
    usable = (v > 0) & jnp.all(w <= cap[..., None], axis=1)
    scale = 1 / jnp.maximum(cap, jnp.finfo(dtype).tiny)
    surrogate = jnp.sum(w * scale[..., None], axis=1)  # (B, n)
    efficiency = v / jnp.maximum(surrogate, jnp.finfo(dtype).tiny)
    order = jnp.argsort(jnp.where(usable, -efficiency, jnp.inf), axis=-1, stable=True)
    v = jnp.take_along_axis(v, order, axis=-1)
    w = jnp.take_along_axis(w, order[:, None], axis=-1)
    usable = jnp.take_along_axis(usable, order, axis=-1)
    # The d + 1 relaxations, each with its items in decreasing v / w order.
    rw = jnp.concatenate([w, jnp.sum(w * scale[..., None], axis=1)[:, None]], axis=1)
    rv = jnp.where(usable, v, 0)
    ratio = rv[:, None] / jnp.where(rw > 0, rw, jnp.finfo(dtype).tiny)
    rorder = jnp.argsort(-ratio, axis=-1, stable=True)  # (B, d + 1, n): DFS positions
    rv = jnp.take_along_axis(jnp.broadcast_to(rv[:, None], rw.shape), rorder, axis=-1)
    rw = jnp.take_along_axis(rw, rorder, axis=-1)
    integral = jnp.all(jnp.where(usable, v == jnp.round(v), True), axis=-1)

    def upper_bound(j, res, val):
        rres = jnp.concatenate([res, jnp.sum(res * scale, -1, keepdims=True)], -1)
        free = (rorder >= j[:, None, None]) & (rw >= 0)
        bound = val + jnp.min(_dantzig_bounds(rv, rw, rres, free), axis=-1)
        slack = jnp.minimum(0.5, 1e-3 + 1e-5 * jnp.abs(bound))
        return jnp.where(integral, jnp.floor(bound + slack), bound)

    def step(state):
        x, j, res, val, best_val, best_x, done, k = state
        leaf = j >= n
        better = leaf & (val > best_val) & ~done
        best_val = jnp.where(better, val, best_val)
        best_x = jnp.where(better[:, None], x & (pos < n), best_x)
        cut = leaf | (upper_bound(j, res, val) <= best_val)
        # Forward: take item j if it fits, else skip it.
        jj = jnp.minimum(j, n - 1)
        wj = jnp.take_along_axis(w, jj[:, None, None], axis=-1)[..., 0]
        vj = jnp.take_along_axis(v, jj[:, None], axis=-1)[:, 0]
        uj = jnp.take_along_axis(usable, jj[:, None], axis=-1)[:, 0]
        take = uj & jnp.all(wj <= res, axis=-1)
        fx = jnp.where(pos == jj[:, None], take[:, None], x)
        fres = jnp.where(take[:, None], res - wj, res)
        fval = jnp.where(take, val + vj, val)
        # Back: undo the last item taken (it is then skipped), or finish.
        last = jnp.max(jnp.where(x & (pos < j[:, None]), pos, -1), axis=-1)
        lw = jnp.take_along_axis(w, jnp.maximum(last, 0)[:, None, None], -1)[..., 0]
        lv = jnp.take_along_axis(v, jnp.maximum(last, 0)[:, None], -1)[:, 0]
        bx = x & (pos != last[:, None])
        bres, bval = res + lw, val - lv
        finished = cut & (last < 0)
        go_back = cut[:, None]
        x = jnp.where(done[:, None], x, jnp.where(go_back, bx, fx))
        res = jnp.where(done[:, None], res, jnp.where(go_back, bres, fres))
        val = jnp.where(done, val, jnp.where(cut, bval, fval))
        j = jnp.where(done, j, jnp.where(cut, last + 1, j + 1))
        return x, j, res, val, best_val, best_x, done | finished, k + 1

    state = (
        jnp.zeros((b, n), bool),
        jnp.zeros((b,), jnp.int32),
        cap,
        jnp.zeros((b,), dtype),
        jnp.zeros((b,), dtype),  # the empty selection
        jnp.zeros((b, n), bool),
        jnp.zeros((b,), bool),
        jnp.array(0),
    )
    state = lax.while_loop(lambda s: ~jnp.all(s[6]) & (s[7] < max_nodes), step, state)
    best_x, done = state[5], state[6]
    # Back to the input's item order.
    selection = jnp.zeros_like(best_x).at[jnp.arange(b)[:, None], order].set(best_x)
    return selection, ~jnp.all(done)


@functools.partial(jax.jit, static_argnums=3)
def _knapsack(values, weights, capacity, max_nodes):
    n = values.shape[-1]
    d = weights.shape[-2]
    batch = values.shape[:-1]
    v = lax.stop_gradient(values).reshape(-1, n)
    w = weights.reshape(-1, d, n).astype(values.dtype)
    c = capacity.reshape(-1, d).astype(values.dtype)
    bad_v = jnp.any(~jnp.isfinite(v))
    bad_w = jnp.any(~jnp.isfinite(w) | (w < 0))
    bad_c = jnp.any(~jnp.isfinite(c) | (c < 0))
    bad = bad_v | bad_w | bad_c
    # Trivial data when a check fails, so the search ends at once before raising.
    v, w, c = (jnp.where(bad, 0, a) for a in (v, w, c))
    x, out_of_nodes = _branch_and_bound(v, w, c, max_nodes)
    y = x.astype(values.dtype).reshape(*batch, n)
    y = error_if_any(y, bad_v, _BAD_VALUES)
    y = error_if_any(y, bad_w, _BAD_WEIGHTS)
    y = error_if_any(y, bad_c, _BAD_CAPACITY)
    return error_if_any(y, out_of_nodes & ~bad, _TOO_MANY_NODES)


def knapsack(
    values: Float[Array, "*batch n"],
    weights: Float[Array, "*batch d n"] | Float[Array, "*batch n"],
    capacity: Float[Array, "*batch d"] | Float[Array, "*batch"],
    *,
    max_nodes: int = 2**16,
) -> Float[Array, "*batch n"]:
    r"""0/1 indicator of a maximum-value selection of items within every capacity.

    Solves $\max_x \langle v, x \rangle$ over $x \in \{0, 1\}^n$ subject to
    $\sum_i W_{ki} x_i \le C_k$ for each resource `k` (a multidimensional knapsack):
    it maximises the values `v`, which may be negative (such items are never taken).

    Algorithm: depth-first branch and bound with Dantzig (greedy linear relaxation)
    bounds per resource and on their surrogate, every instance of the batch one node
    per loop step (see the module docstring). Exact for real weights and values: the
    selection's value is the optimum up to float rounding. The work is exponential in
    `n` in the worst case; `max_nodes` caps the nodes per instance, and reaching it
    is an error. Ties are broken deterministically (depth first, items in decreasing
    efficiency, taking an item before skipping it; the first best found is kept).

    The output is piecewise constant in `values`, so its gradient is zero (the values
    pass through `lax.stop_gradient`); wrap it in a perturbed layer to learn.

    **Arguments:**

    - `values`: item values, shape `(*batch, n)`, floating.
    - `weights`: nonnegative item weights, shape `(*batch, d, n)` for `d` resources
        (`d = 1` for one), or `(n,)` for a single instance with one resource.
    - `capacity`: nonnegative capacities, shape `(*batch, d)`, or `()` with weights of
        shape `(n,)`. The batch axes of the three arguments broadcast against each
        other (e.g. weights `(d, n)` and capacity `(d,)` shared by values
        `(B, M, n)`).
    - `max_nodes`: the most branch-and-bound nodes an instance may visit (static).

    **Returns:**

    A 0/1 array of shape `(*batch, n)` in `values`' dtype.

    **Raises:**

    `ValueError`/`TypeError` on bad shapes or dtypes; at run time (also under
    `jax.jit`), an error via `equinox.error_if` if a value is not finite, a weight or
    capacity is negative or not finite, or an instance needs more than `max_nodes`
    nodes.

    ```python
    import jax.numpy as jnp
    from perturbed_layers.solvers import knapsack

    values = jnp.array([6.0, 5.0, 5.0])
    weights = jnp.array([3.0, 2.0, 2.0])
    knapsack(values, weights, jnp.array(4.0))  # 5 + 5 beats 6
    # [0., 1., 1.]
    ```

    **References:** Horowitz & Sahni, *Computing partitions with applications to the
    knapsack problem*, J. ACM 1974; Martello & Toth, *Knapsack Problems*, Wiley 1990,
    §2.5 and §6 (the multidimensional case); Tang & Khalil, *PyEPO*, 2022 (the
    knapsack benchmark).
    """
    values = jnp.asarray(values)
    weights = jnp.asarray(weights)
    capacity = jnp.asarray(capacity)
    if values.ndim < 1 or values.shape[-1] < 1:
        raise ValueError(
            f"values must have shape (*batch, n), n >= 1, got {values.shape}"
        )
    if not jnp.issubdtype(values.dtype, jnp.floating):
        raise TypeError(f"values must have a floating dtype, got {values.dtype}")
    for name, a in (("weights", weights), ("capacity", capacity)):
        if not jnp.issubdtype(a.dtype, jnp.floating):
            raise TypeError(f"{name} must have a floating dtype, got {a.dtype}")
    n = values.shape[-1]
    if weights.ndim == 1 and capacity.ndim <= 1:
        # One instance, one resource: weights (n,), capacity () or (1,).
        weights, capacity = weights[None], capacity.reshape(1)
    if weights.ndim < 2 or weights.shape[-1] != n or weights.shape[-2] < 1:
        raise ValueError(
            f"weights must have shape (*batch, d, n) with d >= 1 and n = {n} "
            f"(values.shape[-1]), or (n,) for one resource; got {weights.shape}. "
            "For a batch of single-resource instances use d = 1."
        )
    d = weights.shape[-2]
    if capacity.ndim < 1 or capacity.shape[-1] != d:
        raise ValueError(
            f"capacity must have shape (*batch, d) with d = {d} (weights.shape[-2]), "
            f"or () with weights of shape (n,); got {capacity.shape}"
        )
    try:
        batch = jnp.broadcast_shapes(
            values.shape[:-1], weights.shape[:-2], capacity.shape[:-1]
        )
    except ValueError:
        raise ValueError(
            "the batch axes of values, weights and capacity do not broadcast: "
            f"{values.shape}, {weights.shape}, {capacity.shape}"
        ) from None
    if not isinstance(max_nodes, int) or isinstance(max_nodes, bool) or max_nodes < 1:
        raise ValueError(f"max_nodes must be an int >= 1, got {max_nodes!r}")
    values = jnp.broadcast_to(values, (*batch, n))
    weights = jnp.broadcast_to(weights, (*batch, d, n))
    capacity = jnp.broadcast_to(capacity, (*batch, d))
    return _knapsack(values, weights, capacity, max_nodes)
