r"""Small dense linear programs, solved exactly by the simplex method.

$\min_x c^\top x$ subject to $A_{ub} x \le b_{ub}$, $A_{eq} x = b_{eq}$,
$\ell \le x \le u$.

**Algorithm, chosen by measurement.** A two-phase dense tableau simplex with Bland's
rule (smallest-index entering column, smallest-index leaving basic variable on ratio
ties), which cannot cycle. Standard form: `x = ℓ + x'`, `x' ≥ 0`; finite upper
bounds become rows `x'_i ≤ u_i − ℓ_i`; a slack per inequality; rows with a negative
right-hand side are negated; an artificial variable per row starts the first phase
(minimise their sum: infeasible if it stays positive), then the second phase
minimises `c` with the artificial columns barred from entering (any left basic at
zero are pivoted out as soon as the entering column touches their row). The result
is a vertex (a basic feasible solution), optimal up to float rounding. Every
instance of the batch pivots once per `lax.while_loop` step on its own
`(rows + 2) × (columns + 1)` tableau: `O((m + n)·(m + 2n))` per pivot, and the
number of pivots is small in practice (tens) though exponential in the worst case;
`max_iterations` caps it, with an error beyond.

Measured against `linrax` 0.3.0 (PyPI; a pure-JAX two-phase simplex, one instance,
batched by `jax.vmap`): both exact on 320 random LPs of 20 variables and 10
constraints, linrax ≈ 38 ms per batch, ≈ 10× SciPy's HiGHS called per instance.
Not adopted: its loop has no iteration cap (and its leaving rule breaks ratio ties
by row, not by Bland's index), it has no bounds on the variables, and it reports
infeasibility in a flag rather than raising. MPAX (PDHG) is first-order and returns
approximate, not vertex, solutions.
"""

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float

from .._checks import error_if_any

_BAD_DATA = (
    "linear_program: c, A_ub, b_ub, A_eq, b_eq must be finite, lower finite and upper "
    "not NaN or -inf."
)
_INFEASIBLE = "linear_program: the constraints are infeasible."
_UNBOUNDED = "linear_program: the objective is unbounded below on the feasible set."
_TOO_MANY_PIVOTS = (
    "linear_program: the simplex method did not finish within max_iterations pivots; "
    "raise max_iterations."
)


def _simplex(tableau, basis, num_cols, num_art, max_iterations, tol):
    """Two-phase simplex on batched tableaux `(B, R + 2, C + 1)`.

    Rows `:R` are constraints, row `R` the cost, row `R + 1` the phase-one objective;
    the last column is the right-hand side; the last `num_art` columns are artificial.
    """
    b, r2, _ = tableau.shape
    rows = r2 - 2
    cols = jnp.arange(num_cols, dtype=jnp.int32)
    artificial = cols >= num_cols - num_art
    row_ids = jnp.arange(rows, dtype=jnp.int32)
    big = jnp.iinfo(jnp.int32).max

    def step(state):
        t, basis, phase, done, unbounded, k = state
        obj = jnp.where(
            (phase == 1)[:, None], t[:, rows + 1, :num_cols], t[:, rows, :num_cols]
        )
        allowed = (phase == 1)[:, None] | ~artificial
        candidates = allowed & (obj < -tol)
        enter = jnp.min(jnp.where(candidates, cols, num_cols), axis=1)
        has_enter = enter < num_cols
        e = jnp.minimum(enter, num_cols - 1)
        column = jnp.take_along_axis(t[:, :rows, :num_cols], e[:, None, None], axis=2)[
            ..., 0
        ]
        rhs = t[:, :rows, -1]
        # Artificial variables left basic at zero leave first (ratio 0, either sign).
        stuck = (
            (phase == 2)[:, None]
            & (basis >= num_cols - num_art)
            & (jnp.abs(column) > tol)
        )
        positive = column > tol
        ratio = jnp.where(
            stuck, 0, jnp.where(positive, rhs / jnp.where(positive, column, 1), jnp.inf)
        )
        eligible = positive | stuck
        best = jnp.min(jnp.where(eligible, ratio, jnp.inf), axis=1, keepdims=True)
        ties = eligible & (ratio <= best)
        leave_var = jnp.min(jnp.where(ties, basis, big), axis=1)
        leave = jnp.min(
            jnp.where(ties & (basis == leave_var[:, None]), row_ids, rows), axis=1
        )
        has_leave = leave < rows
        pivot = has_enter & has_leave & ~done
        # Pivot on (leave, enter) where `pivot`.
        lr = jnp.minimum(leave, rows - 1)
        prow = jnp.take_along_axis(t, lr[:, None, None], axis=1)[:, 0]
        pval = jnp.take_along_axis(prow, e[:, None], axis=1)
        prow = prow / jnp.where(pivot[:, None], pval, 1)
        factor = jnp.take_along_axis(t, e[:, None, None], axis=2)  # (B, R + 2, 1)
        is_pivot_row = jnp.arange(r2)[None, :, None] == lr[:, None, None]
        new_t = jnp.where(is_pivot_row, prow[:, None], t - factor * prow[:, None])
        t = jnp.where(pivot[:, None, None], new_t, t)
        basis = jnp.where(pivot[:, None] & (row_ids == lr[:, None]), e[:, None], basis)
        # No entering column: phase one ends (phase two starts), phase two is done.
        optimal = ~has_enter & ~done
        unbounded = unbounded | (has_enter & ~has_leave & ~done)
        done = done | (has_enter & ~has_leave) | (optimal & (phase == 2))
        phase = jnp.where(optimal & (phase == 1), 2, phase)
        return t, basis, phase, done, unbounded, k + 1

    state = (
        tableau,
        basis,
        jnp.ones((b,), jnp.int32),
        jnp.zeros((b,), bool),
        jnp.zeros((b,), bool),
        jnp.array(0),
    )
    t, basis, _, done, unbounded, _ = lax.while_loop(
        lambda s: ~jnp.all(s[3]) & (s[5] < max_iterations), step, state
    )
    return t, basis, ~jnp.all(done), jnp.any(unbounded)


@functools.partial(jax.jit, static_argnums=(7, 8))
def _linear_program(c, a_ub, b_ub, a_eq, b_eq, lower, upper, has_upper, max_iterations):
    batch, n = c.shape[:-1], c.shape[-1]
    dtype = c.dtype
    bsz = math.prod(batch)
    c, a_ub, b_ub, a_eq, b_eq, lower, upper = (
        lax.stop_gradient(x).reshape(bsz, *x.shape[len(batch) :]).astype(dtype)
        for x in (c, a_ub, b_ub, a_eq, b_eq, lower, upper)
    )
    finite = [jnp.all(jnp.isfinite(x)) for x in (c, a_ub, b_ub, a_eq, b_eq, lower)]
    bad = ~functools.reduce(jnp.logical_and, finite)
    bad = bad | jnp.any(jnp.isnan(upper) | (upper == -jnp.inf))
    c, a_ub, b_ub, a_eq, b_eq, lower = (
        jnp.where(bad, 0, x) for x in (c, a_ub, b_ub, a_eq, b_eq, lower)
    )
    upper = jnp.where(bad, jnp.inf, upper)
    # x = lower + x', x' >= 0.
    b_ub = b_ub - jnp.einsum("bmn,bn->bm", a_ub, lower)
    b_eq = b_eq - jnp.einsum("bmn,bn->bm", a_eq, lower)
    if has_upper:
        bounded = jnp.isfinite(upper)
        eye = jnp.eye(n, dtype=dtype)
        a_ub = jnp.concatenate([a_ub, jnp.where(bounded[:, :, None], eye, 0)], axis=1)
        b_ub = jnp.concatenate([b_ub, jnp.where(bounded, upper - lower, 0)], axis=1)
    m1, m2 = a_ub.shape[1], a_eq.shape[1]
    rows = m1 + m2
    a = jnp.concatenate(
        [
            jnp.concatenate(
                [a_ub, jnp.broadcast_to(jnp.eye(m1, dtype=dtype), (bsz, m1, m1))], 2
            ),
            jnp.concatenate([a_eq, jnp.zeros((bsz, m2, m1), dtype)], 2),
        ],
        axis=1,
    )
    rhs = jnp.concatenate([b_ub, b_eq], axis=1)
    sign = jnp.where(rhs < 0, -1, 1).astype(dtype)
    a, rhs = a * sign[..., None], rhs * sign
    num_cols = n + m1 + rows
    art = jnp.broadcast_to(jnp.eye(rows, dtype=dtype), (bsz, rows, rows))
    body = jnp.concatenate([a, art, rhs[..., None]], axis=2)
    cost = jnp.concatenate([c, jnp.zeros((bsz, m1 + rows + 1), dtype)], axis=1)
    phase1 = -jnp.sum(body, axis=1).at[:, n + m1 : num_cols].set(0)
    tableau = jnp.concatenate([body, cost[:, None], phase1[:, None]], axis=1)
    basis = jnp.broadcast_to(jnp.arange(n + m1, num_cols, dtype=jnp.int32), (bsz, rows))
    scale = 1 + jnp.max(jnp.abs(tableau[:, :rows, :-1]))
    eps = jnp.finfo(dtype).eps
    t, basis, out_of_pivots, unbounded = _simplex(
        tableau, basis, num_cols, rows, max_iterations, 100 * eps * scale
    )
    infeasible = jnp.any(
        -t[:, rows + 1, -1] > jnp.sqrt(eps) * (1 + jnp.max(jnp.abs(rhs)))
    )
    values = jnp.where(basis < n, t[:, :rows, -1], 0)
    onehot = basis[:, :, None] == jnp.arange(n)[None, None]
    x = lower + jnp.sum(jnp.where(onehot, values[..., None], 0), axis=1)
    x = x.reshape(*batch, n)
    x = error_if_any(x, bad, _BAD_DATA)
    x = error_if_any(x, infeasible & ~bad, _INFEASIBLE)
    x = error_if_any(x, unbounded & ~infeasible & ~bad, _UNBOUNDED)
    return error_if_any(x, out_of_pivots & ~bad, _TOO_MANY_PIVOTS)


def linear_program(
    c: Float[Array, "*batch n"],
    A_ub: Float[Array, "*batch m n"],
    b_ub: Float[Array, "*batch m"],
    A_eq: Float[Array, "*batch p n"] | None = None,
    b_eq: Float[Array, "*batch p"] | None = None,
    lower: Float[Array, "*batch n"] | float = 0.0,
    upper: Float[Array, "*batch n"] | float | None = None,
    *,
    max_iterations: int | None = None,
) -> Float[Array, "*batch n"]:
    r"""A vertex minimising `c·x` under linear constraints, for small dense LPs.

    Solves $\min_x c^\top x$ subject to $A_{ub} x \le b_{ub}$, $A_{eq} x = b_{eq}$ and
    $\ell \le x \le u$: it minimises costs (for scores `θ`, pass `c = -θ`). Meant
    for tens of variables and constraints on the device, every instance of the batch
    in the same loop.

    Algorithm: the two-phase dense simplex method with Bland's rule (see the module
    docstring). Exact: the returned `x` is a vertex of the feasible set and its cost
    is the optimum up to float rounding; pivots use a tolerance of `100 ε` times the
    largest constraint coefficient. Deterministic: Bland's rule picks the pivots, so
    among optimal vertices the one it reaches first is returned.

    The output is piecewise constant in `c`, so its gradient is zero (the data pass
    through `lax.stop_gradient`); wrap it in a perturbed layer to learn.

    **Arguments:**

    - `c`: costs, shape `(*batch, n)`, floating (sets the output dtype).
    - `A_ub`, `b_ub`: inequality constraints, shapes `(*batch, m, n)` and
        `(*batch, m)`; `m` may be 0.
    - `A_eq`, `b_eq`: equality constraints, shapes `(*batch, p, n)`, `(*batch, p)`, or
        `None`.
    - `lower`: finite lower bounds, a float or shape `(*batch, n)`.
    - `upper`: upper bounds (`+inf` for none), a float, shape `(*batch, n)` or `None`.
    - `max_iterations`: the most pivots (static); `None` for `50·(rows + columns)`.

    The batch axes of all arrays broadcast against each other.

    **Returns:**

    `x` of shape `(*batch, n)` and `c`'s dtype.

    **Raises:**

    `ValueError`/`TypeError` on bad shapes or dtypes; at run time (also under
    `jax.jit`), an error via `equinox.error_if` if the data are not finite, the
    problem is infeasible or unbounded, or the pivots exceed `max_iterations`.

    ```python
    import jax.numpy as jnp
    from perturbed_layers.solvers import linear_program

    # max x + y  s.t.  x + 2y <= 4,  3x + y <= 6,  x, y >= 0
    c = jnp.array([-1.0, -1.0])
    A_ub = jnp.array([[1.0, 2.0], [3.0, 1.0]])
    b_ub = jnp.array([4.0, 6.0])
    linear_program(c, A_ub, b_ub)  # the vertex [1.6, 1.2]
    ```

    **References:** Dantzig, *Linear Programming and Extensions*, 1963; Bland, *New
    finite pivoting rules for the simplex method*, Math. Oper. Res. 1977;
    Bertsimas & Tsitsiklis, *Introduction to Linear Optimization*, §3.
    """
    c = jnp.asarray(c)
    if c.ndim < 1 or c.shape[-1] < 1:
        raise ValueError(f"c must have shape (*batch, n), n >= 1, got {c.shape}")
    if not jnp.issubdtype(c.dtype, jnp.floating):
        raise TypeError(f"c must have a floating dtype, got {c.dtype}")
    n = c.shape[-1]
    if (A_eq is None) != (b_eq is None):
        raise ValueError("A_eq and b_eq must be given together")
    if A_eq is None:
        A_eq, b_eq = jnp.zeros((0, n), c.dtype), jnp.zeros((0,), c.dtype)
    has_upper = upper is not None
    arrays = {
        "A_ub": jnp.asarray(A_ub),
        "b_ub": jnp.asarray(b_ub),
        "A_eq": jnp.asarray(A_eq),
        "b_eq": jnp.asarray(b_eq),
        "lower": jnp.asarray(lower, c.dtype),
        "upper": jnp.asarray(jnp.inf if upper is None else upper, c.dtype),
    }
    for name in ("lower", "upper"):
        if arrays[name].ndim == 0:
            arrays[name] = jnp.full((n,), arrays[name])
    for name, a in arrays.items():
        if not jnp.issubdtype(a.dtype, jnp.floating):
            raise TypeError(f"{name} must have a floating dtype, got {a.dtype}")
    for mat, vec in (("A_ub", "b_ub"), ("A_eq", "b_eq")):
        a, b = arrays[mat], arrays[vec]
        if a.ndim < 2 or a.shape[-1] != n:
            raise ValueError(f"{mat} must have shape (*batch, m, {n}), got {a.shape}")
        if b.ndim < 1 or b.shape[-1] != a.shape[-2]:
            raise ValueError(
                f"{vec} must have shape (*batch, {a.shape[-2]}) ({mat}.shape[-2]), "
                f"got {b.shape}"
            )
    for name in ("lower", "upper"):
        if arrays[name].shape[-1] != n:
            raise ValueError(f"{name} must be a float or have shape (*batch, {n})")
    event = {"A_ub": 2, "b_ub": 1, "A_eq": 2, "b_eq": 1, "lower": 1, "upper": 1}
    try:
        batch = jnp.broadcast_shapes(
            c.shape[:-1], *(a.shape[: a.ndim - event[k]] for k, a in arrays.items())
        )
    except ValueError:
        raise ValueError(
            "the batch axes of c, A_ub, b_ub, A_eq, b_eq, lower, upper do not broadcast"
        ) from None
    c = jnp.broadcast_to(c, (*batch, n))
    args = [
        jnp.broadcast_to(a, (*batch, *a.shape[a.ndim - event[k] :]))
        for k, a in arrays.items()
    ]
    if max_iterations is None:
        m = (
            arrays["A_ub"].shape[-2]
            + arrays["A_eq"].shape[-2]
            + (n if has_upper else 0)
        )
        max_iterations = 50 * (2 * m + n)
    if (
        not isinstance(max_iterations, int)
        or isinstance(max_iterations, bool)
        or max_iterations < 1
    ):
        raise ValueError(f"max_iterations must be an int >= 1, got {max_iterations!r}")
    return _linear_program(c, *args, has_upper, max_iterations)
