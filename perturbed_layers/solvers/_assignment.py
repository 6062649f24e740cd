r"""Linear assignment: a maximum-score matching of every row to a distinct column.

**Algorithm, chosen by measurement.** The shortest augmenting path form of the
Hungarian method (Jonker–Volgenant; the `O(n²m)` form of e-maxx and of SciPy's
`linear_sum_assignment`): rows are added one at a time; each grows a Dijkstra tree of
alternating paths on the reduced costs `c_ij − u_i − v_j ≥ 0` until it reaches a free
column, updates the dual potentials `u, v` by the tree's distances (which keeps every
reduced cost nonnegative and the matched ones zero), and flips the path. Exact for
real scores: at the end the duals certify optimality (complementary slackness), up
to float rounding.

Every instance of the batch runs the same steps at once on `(B, m)` arrays (one
Dijkstra step per `lax.while_loop` iteration, with no scatter: rows and columns are
marked by masks), so a step costs one `O(m)` vector update per instance. A row `r`
needs at most `r + 1` tree steps and as many path steps; the batch waits for its
slowest instance at each row.

Measured (2 shared CPU cores, 320 instances per call, float32, medians):
`optax.assignment.hungarian_algorithm` (the same algorithm for one instance, batched
by `jax.vmap`) is exact too but took 18 ms at 20 × 20 and 290 ms at 50 × 50; this
solver 12–15 ms and 55–85 ms; SciPy's C++ `linear_sum_assignment` called per
instance from Python 3.5–4.5 ms and 21–33 ms. So it is 0.25–0.4× SciPy: the
sequential tree steps (up to 1,200 loop iterations at 50 × 50, against a mean of
~340 per instance run alone) cost more than SciPy's loop. Two variants measured
slower: the batch axis last (gathers of a row per instance 4× slower), and one flat
loop in which each instance moves to its next row on its own (fewer iterations,
but every iteration selects over the whole state). An auction algorithm with
ε-scaling is exact only for integer scores (with ε < 1/n), so it does not fit real
perturbed scores. Numbers: `bench/solvers.py`.
"""

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, Int

from .._checks import error_if_any

_BAD_SCORES = "linear_assignment: scores must be finite (no NaN or inf)."


def _row_of(x: Array, row: Array) -> Array:
    """`x[b, row[b]]`: each instance's own row (or entry) of `x`."""
    index = row.reshape(row.shape + (1,) * (x.ndim - 1))
    return jnp.take_along_axis(x, index, axis=1)[:, 0]


def _hungarian(c: Float[Array, "B n m"]) -> Int[Array, "B m"]:
    """`row4col[b, j]`: the row matched to column `j` (`-1` if none), min-cost."""
    b, n, m = c.shape
    cols = jnp.arange(m)
    rows = jnp.arange(n)
    inf = jnp.array(jnp.inf, c.dtype)

    def add_row(r, carry):
        u, v, row4col = carry

        def grow(state):
            # One Dijkstra step of every unfinished instance: settle the column
            # nearest (in reduced cost) to the tree, and its matched row with it.
            u, v, minv, way, used, in_tree, i0, j0, done = state
            cur = _row_of(c, i0) - _row_of(u, i0)[:, None] - v
            closer = ~used & (cur < minv)
            reached = jnp.where(closer, cur, minv)
            free = jnp.where(used, inf, reached)
            delta = jnp.min(free, axis=1, keepdims=True)
            j1 = jnp.min(jnp.where(free == delta, cols, m), axis=1).astype(jnp.int32)
            next_row = _row_of(row4col, j1)
            found = next_row < 0  # j1 is free: an augmenting path ends there
            new = (
                jnp.where(in_tree, u + delta, u),
                jnp.where(used, v - delta, v),
                jnp.where(used, reached, reached - delta),
                jnp.where(closer, j0[:, None], way),
                used | (cols == j1[:, None]),
                in_tree | (~found[:, None] & (rows == next_row[:, None])),
                jnp.maximum(next_row, 0),
                j1,
            )
            # Instances already done keep their state.
            old = (u, v, minv, way, used, in_tree, i0, j0)
            kept = tuple(
                jnp.where(done.reshape(-1, *(1,) * (x.ndim - 1)), x_old, x)
                for x, x_old in zip(new, old, strict=True)
            )
            return (*kept, done | found)

        state = (
            u,
            v,
            jnp.full((b, m), inf),  # minv: reduced distance of each column
            jnp.full((b, m), -1, jnp.int32),  # way: the column before it (-1: root)
            jnp.zeros((b, m), bool),  # used: columns in the tree
            jnp.broadcast_to(rows == r, (b, n)),  # in_tree: rows in the tree
            jnp.full((b,), r, jnp.int32),  # i0: the row last added
            jnp.full((b,), -1, jnp.int32),  # j0: the column it was reached by
            jnp.zeros((b,), bool),
        )
        u, v, _, way, _, _, _, free, _ = lax.while_loop(
            lambda s: ~jnp.all(s[-1]), grow, state
        )

        def flip(state):
            # Walk the alternating path back from the free column: each column on
            # it takes the row of the column before it (the new row r at the root).
            row4col, j = state
            walking = j >= 0
            jj = jnp.maximum(j, 0)
            prev = _row_of(way, jj)
            row = jnp.where(prev < 0, r, _row_of(row4col, jnp.maximum(prev, 0)))
            hit = walking[:, None] & (cols == jj[:, None])
            return jnp.where(hit, row[:, None], row4col), jnp.where(walking, prev, j)

        row4col, _ = lax.while_loop(lambda s: jnp.any(s[1] >= 0), flip, (row4col, free))
        return u, v, row4col

    u = jnp.zeros((b, n), c.dtype)
    v = jnp.zeros((b, m), c.dtype)
    row4col = jnp.full((b, m), -1, jnp.int32)
    _, _, row4col = lax.fori_loop(0, n, add_row, (u, v, row4col))
    return row4col


@jax.jit
def _linear_assignment(scores: Array) -> Array:
    n, m = scores.shape[-2:]
    s = lax.stop_gradient(scores).reshape(-1, n, m)
    bad = jnp.any(~jnp.isfinite(s))
    # Harmless scores when the check fails: the loops stay short before raising.
    row4col = _hungarian(-jnp.where(bad, 0, s))
    y = (row4col[:, None, :] == jnp.arange(n)[None, :, None]).astype(scores.dtype)
    return error_if_any(y.reshape(scores.shape), bad, _BAD_SCORES)


def linear_assignment(scores: Float[Array, "*batch n m"]) -> Float[Array, "*batch n m"]:
    r"""0/1 matrix of a maximum-score assignment of the rows to distinct columns.

    Solves $\max_y \langle y, S \rangle$ over the 0/1 matrices `y` with exactly one 1
    per row and at most one per column (`n <= m`; with `n == m`, the permutation
    matrices): it maximises scores. For costs, pass `-costs`.

    Algorithm: the Hungarian method in its shortest augmenting path form
    (Jonker–Volgenant), `O(n²m)` per instance, every instance of the batch in the
    same loop steps (see the module docstring for the measurements behind it). Exact:
    the assignment's score is the optimum up to float rounding. Ties are broken
    deterministically: rows are inserted in order and each tree step settles the
    column of smallest index among the nearest.

    The output is piecewise constant in `scores`, so its gradient is zero (the scores
    pass through `lax.stop_gradient`); wrap it in a perturbed layer to learn.

    **Arguments:**

    - `scores`: finite scores, shape `(*batch, n, m)` with `1 <= n <= m`, floating.

    **Returns:**

    A 0/1 array of `scores`' shape and dtype with one 1 in each row and at most one in
    each column.

    **Raises:**

    `ValueError`/`TypeError` on a bad shape or dtype (`n > m`: pass the transpose);
    at run time (also under `jax.jit`), an error via `equinox.error_if` if a score is
    NaN or infinite.

    ```python
    import jax.numpy as jnp
    from perturbed_layers.solvers import linear_assignment

    scores = jnp.array([[1.0, 5.0, 0.0],
                        [4.0, 6.0, 0.0]])
    linear_assignment(scores)  # 5 + 4 beats 1 + 6
    # [[0., 1., 0.],
    #  [1., 0., 0.]]
    ```

    **References:** Kuhn, *The Hungarian method for the assignment problem*, Naval
    Res. Logist. Q. 1955; Jonker & Volgenant, *A shortest augmenting path algorithm
    for dense and sparse linear assignment problems*, Computing 1987; Crouse, *On
    implementing 2D rectangular assignment algorithms*, IEEE TAES 2016 (SciPy's).
    """
    scores = jnp.asarray(scores)
    if scores.ndim < 2 or not 1 <= scores.shape[-2] <= scores.shape[-1]:
        raise ValueError(
            "scores must have shape (*batch, n, m) with 1 <= n <= m (more columns than "
            f"rows; transpose it otherwise), got {scores.shape}"
        )
    if not jnp.issubdtype(scores.dtype, jnp.floating):
        raise TypeError(f"scores must have a floating dtype, got {scores.dtype}")
    return _linear_assignment(scores)
