r"""Shortest paths on grids with vertex costs (the Warcraft maps problem).

The cost of a path is the sum of the costs of every cell on it, both ends included; the
path runs from the top-left cell to the bottom-right one, moving to one of the 8 (king
moves) or 4 neighbouring cells at each step. With `c > 0` the distances from the source,

$$d(s) = c(s), \qquad d(v) = c(v) + \min_{u \in N(v)} d(u),$$

are the unique fixed point of that min-plus equation, and following predecessors
`argmin_{u ∈ N(v)} d(u)` from the target walks down strictly decreasing distances to the
source. The minimised objective is `⟨y, c⟩` over the path masks `y`.

**Algorithm, chosen by measurement.** Jacobi (Bellman–Ford) relaxation
`d ← min(d, c + min_N d)` over every cell of every instance at once, from `d = +∞`
(except the source), in a `lax.while_loop` that stops when a check finds nothing
changed; then the predecessors of all cells at once, and one backtrack from the target,
one cell per loop step for the whole batch. The batch axes are laid out last,
`(H, W, batch)` (all batch axes merged), so each neighbour is a contiguous shifted
block, and the 8-neighbour minimum is a separable 3 × 3 window minimum (the centre
may be included since `c(v) + d(v) > d(v)`); two relaxations run per convergence
check.

Cost: a relaxation is O(H·W) per instance, and as many run as the hop depth of the
shortest-path tree: at most H·W, measured ≈ 2·max(H, W) on Warcraft-like terrain
(26, 40, 52, 58 for sides 12, 18, 24, 30). So a solve is O(H·W·max(H, W)), against
Dijkstra's O(H·W·log(H·W)), but with every cell of every instance in one vector
operation and no host round trip. On 320 grids of 12 × 12 (2 CPU cores) it took
≈ 2.5–4 ms against ≈ 230 ms for SciPy's Dijkstra called per instance (the
backtrack ≈ 0.1 ms of it). Alternatives measured on the same batches: the layout
`(batch, H, W)`, ≈ 2× slower; row-by-row Gauss–Seidel sweeps (5–9 rounds instead of
26–58 relaxations) 3–7× slower, each sweep being a chain of H small sequential steps;
diagonal wavefront passes over the four quadrants of moves (4–7 rounds) about as
fast at 12 × 12 and 2× slower at 30 × 30. Numbers: `bench/shortest_path.py`.

Under `jax.vmap` the solver moves the mapped axis into its own batch (a
`jax.custom_batching.custom_vmap` rule) rather than letting JAX batch the loops, so a
perturbed layer that vmaps it over samples and instances runs one loop for all of them.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Bool, Float, Int

from .._checks import error_if_any

# Neighbour offsets (di, dj) in the order that breaks ties: row-major over the 3 × 3
# window around the cell.
_NEIGHBOURS = {
    8: ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)),
    4: ((-1, 0), (0, -1), (0, 1), (1, 0)),
}

_BAD_COSTS = (
    "grid_shortest_path needs strictly positive, finite costs: with a cell of cost <= 0 "
    "on an undirected grid, going back and forth never stops lowering the path cost. "
    "If the costs are perturbed, use the multiplicative perturbation (it keeps costs "
    "positive), a smaller sigma, or clip the perturbed costs to a positive floor."
)
_NO_FIXED_POINT = (
    "grid_shortest_path: the relaxation or the backtrack did not finish within H*W "
    "steps. With positive costs this only happens when some costs are too small to "
    "change a path sum in this dtype: rescale the costs or use float64."
)


def _pad(x: Array, rows: int, cols: int, fill) -> Array:
    """Pad the two grid axes in front, the batch axes after them untouched."""
    widths = ((rows, rows), (cols, cols)) + ((0, 0),) * (x.ndim - 2)
    return jnp.pad(x, widths, constant_values=fill)


def _shift(x: Array, di: int, dj: int, fill) -> Array:
    """`y[i, j] = x[i + di, j + dj]` on `(H, W, *batch)`, `fill` outside the grid."""
    h, w = x.shape[:2]
    padded = _pad(x, 1, 1, fill)
    return padded[1 + di : 1 + di + h, 1 + dj : 1 + dj + w]


def _neighbour_min(
    d: Float[Array, "H W *batch"], connectivity: int
) -> Float[Array, "H W *batch"]:
    """Minimum of `d` over each cell's neighbours and the cell itself."""
    inf = jnp.array(jnp.inf, d.dtype)
    rows = _pad(d, 0, 1, inf)
    rows = jnp.minimum(jnp.minimum(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])
    if connectivity == 4:
        cols = _pad(d, 1, 0, inf)
        cols = jnp.minimum(cols[:-2], cols[2:])
        return jnp.minimum(rows, cols)
    cols = _pad(rows, 1, 0, inf)
    return jnp.minimum(jnp.minimum(cols[:-2], cols[1:-1]), cols[2:])


def _distances(
    c: Float[Array, "H W *batch"], connectivity: int
) -> tuple[Float[Array, "H W *batch"], Bool[Array, ""]]:
    """Distances from the top-left cell (its own cost included); flag if not converged."""
    h, w = c.shape[:2]
    d0 = jnp.full_like(c, jnp.inf).at[0, 0].set(c[0, 0])
    # H*W - 1 relaxations reach every simple path; one more shows nothing changes.
    max_checks = (h * w) // 2 + 1

    def body(carry):
        d, _, k = carry
        new = jnp.minimum(d, c + _neighbour_min(d, connectivity))
        new = jnp.minimum(new, c + _neighbour_min(new, connectivity))
        return new, jnp.any(new != d), k + 1

    d, changed, _ = lax.while_loop(
        lambda carry: carry[1] & (carry[2] < max_checks),
        body,
        (d0, jnp.array(True), jnp.array(0)),
    )
    return d, changed


def _predecessors(
    d: Float[Array, "H W *batch"], connectivity: int
) -> Int[Array, "H W *batch"]:
    """Index into `_NEIGHBOURS` of each cell's neighbour nearest to the source."""
    best = jnp.full_like(d, jnp.inf)
    arg = jnp.zeros(d.shape, jnp.int32)
    for k, (di, dj) in enumerate(_NEIGHBOURS[connectivity]):
        dk = _shift(d, di, dj, jnp.inf)
        closer = dk < best  # strict: the first neighbour in the order wins ties
        best = jnp.where(closer, dk, best)
        arg = jnp.where(closer, k, arg)
    return arg


def _backtrack(
    pred: Int[Array, "H W *batch"], connectivity: int
) -> tuple[Bool[Array, "H W *batch"], Bool[Array, ""]]:
    """Cells met walking the predecessors from the bottom-right cell to the top-left."""
    h, w, *batch = pred.shape
    pred = pred.reshape(h * w, *batch)
    step = jnp.array([di * w + dj for di, dj in _NEIGHBOURS[connectivity]], jnp.int32)
    cells = jnp.arange(h * w, dtype=jnp.int32).reshape(-1, *(1,) * len(batch))
    target = jnp.full(batch, h * w - 1, jnp.int32)
    on_path = jnp.zeros((h * w, *batch), bool).at[h * w - 1].set(True)

    def body(carry):
        cell, on_path, k = carry
        # Each column reads (take_along_axis: a gather batched over the columns)
        # and marks (a one-hot mask) its own cell; indexing by (cell, column) pairs
        # would hide that from XLA's partitioner, which then all-reduces the batch
        # across devices when it is sharded.
        move = jnp.take_along_axis(pred, cell[None], axis=0)[0]
        cell = jnp.where(cell == 0, cell, cell + step[move])
        return cell, on_path | (cells == cell[None]), k + 1

    cell, on_path, _ = lax.while_loop(
        lambda carry: jnp.any(carry[0] != 0) & (carry[2] < h * w),
        body,
        (target, on_path, jnp.array(0)),
    )
    return on_path.reshape(h, w, *batch), jnp.any(cell != 0)


def _solve(costs: Float[Array, "*batch H W"], connectivity: int) -> Array:
    # The batch axes merged into one, last: the loops then vectorise over all the
    # instances at once (kept apart, the minor axis would be the M samples only,
    # measured 2.5x slower at M = 10). A batch sharded over devices stays sharded
    # through the merge when its sharded axis is the major one, as the estimator's
    # (instances, samples) layout has it; samples split over devices
    # (`sample_axis`) are gathered here.
    h, w = costs.shape[-2:]
    c = jnp.moveaxis(costs.reshape(-1, h, w), 0, -1)
    d, relax_failed = _distances(c, connectivity)
    on_path, walk_failed = _backtrack(_predecessors(d, connectivity), connectivity)
    path = jnp.moveaxis(on_path, -1, 0).reshape(costs.shape).astype(costs.dtype)
    return error_if_any(path, relax_failed | walk_failed, _NO_FIXED_POINT)


def _batched_solver(connectivity: int):
    @jax.custom_batching.custom_vmap
    def solve(costs):
        return _solve(costs, connectivity)

    @solve.def_vmap
    def _(axis_size, in_batched, costs):
        del axis_size
        # The mapped axis is in front: solve it as one more leading batch axis.
        return solve(costs), in_batched[0]

    return solve


_SOLVERS = {connectivity: _batched_solver(connectivity) for connectivity in _NEIGHBOURS}


@functools.partial(jax.jit, static_argnums=1)
def _grid_shortest_path(costs: Array, connectivity: int) -> Array:
    costs = lax.stop_gradient(costs)
    valid = jnp.all(jnp.isfinite(costs) & (costs > 0))
    # Solve harmless costs when the check fails, so the loops stay short before raising.
    safe = jnp.where(valid, costs, jnp.ones_like(costs))
    return error_if_any(_SOLVERS[connectivity](safe), ~valid, _BAD_COSTS)


def grid_shortest_path(
    costs: Float[Array, "*batch H W"], connectivity: int = 8
) -> Float[Array, "*batch H W"]:
    r"""Mask of the cells of a minimum-cost path from the top-left to the bottom-right.

    Solves $\min_y \langle y, c \rangle$ over the 0/1 masks `y` of the paths from cell
    `(0, 0)` to cell `(H - 1, W - 1)` that move to one of the `connectivity` neighbouring
    cells at each step; the cost of a path is the sum of the costs of all its cells, both
    ends included (the Warcraft shortest-path benchmark with `connectivity=8`).

    Exact: the mask's cost is the optimum up to float rounding. Ties are broken
    deterministically: walking back from the target, each cell's predecessor is its
    neighbour with the smallest distance from the source (computed in `costs.dtype`),
    the first in row-major order over the 3 × 3 window (up-left, up, up-right, left,
    right, down-left, down, down-right) on exact equality.

    The output is piecewise constant in `costs`, so its gradient is zero (the costs
    pass through `lax.stop_gradient`); wrap it in a perturbed layer to learn.

    **Arguments:**

    - `costs`: strictly positive, finite vertex costs, shape `(*batch, H, W)` with
        `H, W >= 1`, any number of leading batch axes.
    - `connectivity`: `8` (king moves, as in Warcraft) or `4` (rook moves).

    **Returns:**

    A 0/1 array of `costs`' shape and dtype; the start and end cells are always on it.

    **Raises:**

    `ValueError`/`TypeError` on a bad `connectivity` or `costs` shape/dtype; at run time
    (also under `jax.jit`), an error via `equinox.error_if` if some cost is `<= 0`,
    infinite or NaN (perturbed costs: use the multiplicative perturbation or a smaller
    `sigma`).

    ```python
    import jax.numpy as jnp
    from perturbed_layers.solvers import grid_shortest_path

    costs = jnp.array([[1.0, 9.0, 9.0],
                       [1.0, 9.0, 9.0],
                       [9.0, 1.0, 1.0]])
    grid_shortest_path(costs)
    # [[1., 0., 0.],
    #  [1., 0., 0.],
    #  [0., 1., 1.]]
    ```

    **References:** Vlastelica et al., *Differentiation of Blackbox Combinatorial
    Solvers*, ICLR 2020 (the Warcraft maps); Berthet et al., *Learning with
    Differentiable Perturbed Optimizers*, NeurIPS 2020, §5.
    """
    if (
        not isinstance(connectivity, int)
        or isinstance(connectivity, bool)
        or connectivity not in _NEIGHBOURS
    ):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    costs = jnp.asarray(costs)
    if costs.ndim < 2 or costs.shape[-1] < 1 or costs.shape[-2] < 1:
        raise ValueError(
            f"costs must have shape (*batch, H, W) with H, W >= 1, got {costs.shape}"
        )
    if not jnp.issubdtype(costs.dtype, jnp.floating):
        raise TypeError(f"costs must have a floating dtype, got {costs.dtype}")
    return _grid_shortest_path(costs, connectivity)
