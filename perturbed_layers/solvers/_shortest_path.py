r"""Shortest paths on dense directed graphs with arc costs (negative costs allowed)."""

import functools
import operator

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Bool, Float, Int

from .._checks import error_if_any

_BAD_WEIGHTS = "shortest_path: weights contain NaN or -inf; use +inf for a missing arc."
_NEGATIVE_CYCLE = (
    "shortest_path: a cycle of negative total cost is reachable from the source, so "
    "no shortest path exists. If the costs are perturbed, use a graph without cycles "
    "(a DAG such as the PyEPO grid) or keep the costs positive (multiplicative "
    "perturbation, smaller sigma)."
)
_UNREACHABLE = "shortest_path: the target cannot be reached from the source."
_PREDECESSOR_CYCLE = (
    "shortest_path: the predecessors did not lead back to the source within n steps "
    "(a floating-point tie between cycles of total cost 0); perturb or rescale the "
    "costs, or use float64."
)


def _index(value, name: str, n: int) -> int:
    try:
        index = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {value!r}") from None
    if isinstance(value, bool) or not 0 <= index < n:
        raise ValueError(f"{name} must be an int with 0 <= {name} < {n}, got {value!r}")
    return index


def _bellman_ford(
    w: Float[Array, "B n n"], source: int
) -> tuple[Float[Array, "B n"], Int[Array, "B n"], Bool[Array, ""]]:
    """Distances from `source`, predecessors, and whether round n still improved."""
    b, n, _ = w.shape
    d0 = jnp.full((b, n), jnp.inf, w.dtype).at[:, source].set(0)
    pred0 = jnp.full((b, n), -1, jnp.int32)

    def body(carry):
        d, pred, _, k = carry
        through = d[:, :, None] + w  # through[b, i, j]: reach j by the arc i -> j
        best = jnp.min(through, axis=1)
        improved = best < d
        pred = jnp.where(improved, jnp.argmin(through, axis=1).astype(jnp.int32), pred)
        return jnp.where(improved, best, d), pred, jnp.any(improved), k + 1

    # Round k finds the shortest paths of at most k arcs; a simple path has at most
    # n - 1, so an improvement at round n means a negative cycle.
    d, pred, improving, _ = lax.while_loop(
        lambda carry: carry[2] & (carry[3] < n),
        body,
        (d0, pred0, jnp.array(True), jnp.array(0)),
    )
    return d, pred, improving


def _path_nodes(
    pred: Int[Array, "B n"], source: int, target: int
) -> tuple[Bool[Array, "B n"], Bool[Array, ""]]:
    """Nodes met walking the predecessors from `target` back to `source`, excluded."""
    b, n = pred.shape
    rows = jnp.arange(b)

    def body(carry):
        node, on_path, k = carry
        walking = node != source
        on_path = on_path.at[rows, node].max(walking)
        node = jnp.where(walking, pred[rows, jnp.maximum(node, 0)], node)
        return node, on_path, k + 1

    node, on_path, _ = lax.while_loop(
        lambda carry: jnp.any(carry[0] != source) & (carry[2] < n),
        body,
        (jnp.full((b,), target, jnp.int32), jnp.zeros((b, n), bool), jnp.array(0)),
    )
    return on_path, jnp.any(node != source)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _shortest_path(weights: Array, source: int, target: int) -> Array:
    n = weights.shape[-1]
    w = lax.stop_gradient(weights).reshape(-1, n, n)
    bad = jnp.any(jnp.isnan(w) | (w == -jnp.inf))
    w = jnp.where(bad, jnp.inf, w)  # an empty graph: the loops end at once
    d, pred, negative_cycle = _bellman_ford(w, source)
    unreachable = jnp.any(jnp.isinf(d[:, target]))
    on_path, stuck = _path_nodes(pred, source, target)
    # Arc i -> j is on the path iff j is (source excluded) and i is its predecessor.
    y = on_path[:, None, :] & (pred[:, None, :] == jnp.arange(n)[None, :, None])
    y = y.astype(weights.dtype).reshape(weights.shape)
    y = error_if_any(y, bad, _BAD_WEIGHTS)
    y = error_if_any(y, negative_cycle, _NEGATIVE_CYCLE)
    y = error_if_any(y, unreachable, _UNREACHABLE)
    return error_if_any(y, stuck & ~negative_cycle & ~unreachable, _PREDECESSOR_CYCLE)


def shortest_path(
    weights: Float[Array, "*batch n n"], source: int, target: int
) -> Float[Array, "*batch n n"]:
    r"""Indicator of the arcs of a shortest path from `source` to `target`.

    Solves $\min_y \langle y, W \rangle$ over the 0/1 arc indicators `y` of the paths
    from `source` to `target` in the directed graph whose arc `i → j` costs
    `weights[i, j]` (`+inf` where there is no arc). Arc costs may be negative as long as
    no cycle of negative total cost is reachable from `source`.

    Algorithm: Bellman–Ford rounds `d_j ← min(d_j, min_i d_i + W_ij)` over all nodes of
    all instances at once, stopping when a round improves nothing (at most n rounds, of
    O(n²) each), then a backtrack along the predecessors. Each node's predecessor is
    the argmin `i` of the round in which its distance last improved, so ties are broken
    deterministically: among shortest paths, one with the fewest arcs, and among equal
    candidates the predecessor with the smallest index. If `source == target` the path
    is empty (all zeros).

    The output is piecewise constant in `weights`, so its gradient is zero (the weights
    pass through `lax.stop_gradient`); wrap it in a perturbed layer to learn.

    **Arguments:**

    - `weights`: arc costs, shape `(*batch, n, n)`, floating; `+inf` for no arc.
    - `source`, `target`: Python ints in `[0, n)`.

    **Returns:**

    A 0/1 array of `weights`' shape and dtype with `y[i, j] = 1` for the arcs `i → j` on
    the path.

    **Raises:**

    `ValueError`/`TypeError` on bad shapes, dtypes or indices; at run time (also under
    `jax.jit`), an error via `equinox.error_if` if a weight is NaN or `-inf`, if the
    target is unreachable, or if a negative cycle is reachable from the source.

    ```python
    import jax.numpy as jnp
    from perturbed_layers.solvers import shortest_path

    inf = jnp.inf
    weights = jnp.array([[inf, 4.0, 1.0],
                         [inf, inf, inf],
                         [inf, -2.0, inf]])
    shortest_path(weights, source=0, target=1)  # arcs 0 -> 2 and 2 -> 1
    # [[0., 0., 1.],
    #  [0., 0., 0.],
    #  [0., 1., 0.]]
    ```

    **References:** Bellman, *On a routing problem*, Q. Appl. Math. 1958; Ford,
    *Network flow theory*, RAND P-923, 1956; Tang & Khalil, *PyEPO*, 2022 (the
    shortest-path benchmark).
    """
    weights = jnp.asarray(weights)
    if weights.ndim < 2 or weights.shape[-1] != weights.shape[-2]:
        raise ValueError(f"weights must have shape (*batch, n, n), got {weights.shape}")
    if not jnp.issubdtype(weights.dtype, jnp.floating):
        raise TypeError(f"weights must have a floating dtype, got {weights.dtype}")
    n = weights.shape[-1]
    source = _index(source, "source", n)
    target = _index(target, "target", n)
    return _shortest_path(weights, source, target)
