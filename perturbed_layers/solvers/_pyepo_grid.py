"""Arc-cost vectors on PyEPO's grid DAG, and the dense weights `shortest_path` takes."""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._checks import error_if_any

Arcs = tuple[tuple[int, int], ...]


def pyepo_grid_arcs(m: int = 5) -> Arcs:
    """The arcs `(tail, head)` of PyEPO's shortest-path grid, in PyEPO's order.

    Node `v = i * m + j` is the cell in row `i`, column `j`. Row by row: first the
    horizontal arcs `v → v + 1` for `j = 0, …, m − 2`, then, unless `i` is the last row,
    the vertical arcs `v → v + m` for `j = 0, …, m − 1`; `2 m (m − 1)` arcs (40 for
    `m = 5`). Every path from node 0 to node `m² − 1` has `2 (m − 1)` arcs.

    **Arguments:**

    - `m`: the side of the grid, `m >= 2`.

    **Returns:**

    A tuple of `(tail, head)` pairs (hashable, so it can be a static argument).

    ```python
    from perturbed_layers.solvers import pyepo_grid_arcs

    pyepo_grid_arcs(5)[:5]  # ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5))
    ```

    **References:** Tang & Khalil, *PyEPO: A PyTorch-based End-to-End Predict-then-
    Optimize Library*, 2022 (`pyepo/model/grb/shortestpath.py`).
    """
    if not isinstance(m, int) or isinstance(m, bool) or m < 2:
        raise ValueError(f"m must be an int >= 2, got {m!r}")
    arcs = []
    for i in range(m):
        arcs += [(i * m + j, i * m + j + 1) for j in range(m - 1)]
        if i < m - 1:
            arcs += [(i * m + j, i * m + j + m) for j in range(m)]
    return tuple(arcs)


def _check_arcs(arcs: Arcs, num_nodes: int) -> tuple[list[int], list[int]]:
    pairs = [tuple(arc) for arc in arcs]
    if not pairs or any(len(arc) != 2 for arc in pairs):
        raise ValueError("arcs must be a non-empty sequence of (tail, head) pairs")
    if len(set(pairs)) != len(pairs):
        raise ValueError("arcs must not repeat an arc")
    tails, heads = [int(t) for t, _ in pairs], [int(h) for _, h in pairs]
    if not all(0 <= v < num_nodes for v in tails + heads):
        raise ValueError(f"arcs must join nodes in [0, {num_nodes}) (num_nodes)")
    return tails, heads


def arc_weights(
    arc_costs: Float[Array, "*batch num_arcs"], arcs: Arcs, num_nodes: int
) -> Float[Array, "*batch num_nodes num_nodes"]:
    """Dense weights for `shortest_path`: `W[tail, head] = cost`, `+inf` elsewhere.

    **Arguments:**

    - `arc_costs`: costs of the arcs, shape `(*batch, len(arcs))`.
    - `arcs`: `(tail, head)` pairs, e.g. `pyepo_grid_arcs(5)`; no arc twice.
    - `num_nodes`: the number of nodes `n`.

    **Returns:**

    The `(*batch, n, n)` weights, of `arc_costs`' dtype.
    """
    arc_costs = jnp.asarray(arc_costs)
    tails, heads = _check_arcs(arcs, num_nodes)
    if arc_costs.ndim < 1 or arc_costs.shape[-1] != len(tails):
        raise ValueError(
            f"arc_costs must have shape (*batch, {len(tails)}) (one cost per arc), "
            f"got {arc_costs.shape}"
        )
    batch = arc_costs.shape[:-1]
    weights = jnp.full((*batch, num_nodes, num_nodes), jnp.inf, arc_costs.dtype)
    return weights.at[..., jnp.array(tails), jnp.array(heads)].set(arc_costs)


def arc_indicator(
    y: Float[Array, "*batch num_nodes num_nodes"], arcs: Arcs
) -> Float[Array, "*batch num_arcs"]:
    """`y[..., tail, head]` for each arc: a dense arc indicator as an arc vector.

    **Arguments:**

    - `y`: shape `(*batch, n, n)`, e.g. the output of `shortest_path`.
    - `arcs`: `(tail, head)` pairs, in the order wanted.

    **Returns:**

    The `(*batch, len(arcs))` values, of `y`'s dtype.
    """
    y = jnp.asarray(y)
    if y.ndim < 2 or y.shape[-1] != y.shape[-2]:
        raise ValueError(f"y must have shape (*batch, n, n), got {y.shape}")
    tails, heads = _check_arcs(arcs, y.shape[-1])
    return y[..., jnp.array(tails), jnp.array(heads)]


def pyepo_shortest_path(
    arc_costs: Float[Array, "*batch num_arcs"], m: int = 5
) -> Float[Array, "*batch num_arcs"]:
    """Shortest path from the top-left to the bottom-right node of PyEPO's m × m grid.

    Minimises `⟨y, arc_costs⟩` over the arc indicators `y` of the paths from node 0 to
    node `m² − 1` of the DAG of `pyepo_grid_arcs(m)` (every arc goes right or down);
    arc costs may be negative, since the graph has no cycle.

    Algorithm: dynamic programming in topological (row-major) order,
    d(v) = min(d(left) + c(left → v), d(up) + c(up → v)), then a backtrack of the
    2(m − 1) arcs, vectorised over the batch: O(m²) per instance, about 10× faster
    than the general Bellman–Ford of `shortest_path` on 5 × 5 grids. On an exact tie
    the path comes from above (the smaller predecessor index, as in `shortest_path`).

    **Arguments:**

    - `arc_costs`: shape `(*batch, 2 m (m − 1))`, in the order of `pyepo_grid_arcs(m)`.
    - `m`: the side of the grid.

    **Returns:**

    The 0/1 arc indicator, shape `(*batch, 2 m (m − 1))`, of `arc_costs`' dtype.

    ```python
    import jax.numpy as jnp
    from perturbed_layers.solvers import pyepo_shortest_path

    y = pyepo_shortest_path(jnp.ones(40))
    y.sum()  # 8.0: every path has 8 arcs
    ```
    """
    arcs = pyepo_grid_arcs(m)
    arc_costs = jnp.asarray(arc_costs)
    if arc_costs.ndim < 1 or arc_costs.shape[-1] != len(arcs):
        raise ValueError(
            f"arc_costs must have shape (*batch, {len(arcs)}) for m={m}, "
            f"got {arc_costs.shape}"
        )
    index = {arc: k for k, arc in enumerate(arcs)}
    costs = jax.lax.stop_gradient(arc_costs)
    costs = error_if_any(
        costs,
        ~jnp.isfinite(costs),
        "pyepo_shortest_path needs finite arc costs (got NaN or inf): every arc of "
        "the grid exists, and a non-finite cost has no shortest path.",
    )
    batch = costs.shape[:-1]
    dist = [jnp.zeros(batch, costs.dtype)]
    from_left = [jnp.zeros(batch, bool)]
    for v in range(1, m * m):
        i, j = divmod(v, m)
        if i == 0:  # first row: only from the left
            dist.append(dist[v - 1] + costs[..., index[(v - 1, v)]])
            from_left.append(jnp.ones(batch, bool))
        elif j == 0:  # first column: only from above
            dist.append(dist[v - m] + costs[..., index[(v - m, v)]])
            from_left.append(jnp.zeros(batch, bool))
        else:
            left = dist[v - 1] + costs[..., index[(v - 1, v)]]
            up = dist[v - m] + costs[..., index[(v - m, v)]]
            dist.append(jnp.minimum(left, up))
            from_left.append(left < up)
    from_left_all = jnp.stack(from_left, axis=-1)
    arc_from_left = jnp.array([index.get((v - 1, v), 0) for v in range(m * m)])
    arc_from_up = jnp.array([index.get((v - m, v), 0) for v in range(m * m)])
    node = jnp.full(batch, m * m - 1)
    y = jnp.zeros(costs.shape, costs.dtype)
    for _ in range(2 * (m - 1)):
        left = jnp.take_along_axis(from_left_all, node[..., None], axis=-1)[..., 0]
        arc = jnp.where(left, arc_from_left[node], arc_from_up[node])
        y = y + jax.nn.one_hot(arc, len(arcs), dtype=costs.dtype)
        node = jnp.where(left, node - 1, node - m)
    return y
