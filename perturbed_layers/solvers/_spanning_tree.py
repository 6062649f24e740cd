r"""Minimum spanning trees of dense undirected graphs (Prim's algorithm)."""

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Bool, Float, Int

from .._checks import error_if_any

_BAD_WEIGHTS = (
    "spanning_tree: weights contain NaN or -inf; use +inf where there is no edge."
)
_ASYMMETRIC = (
    "spanning_tree: weights must be symmetric (weights[i, j] == weights[j, i]) for "
    "an undirected graph. If the weights are perturbed, perturb each edge once and "
    "mirror it (e.g. build the matrix from its upper triangle)."
)
_DISCONNECTED = (
    "spanning_tree: the graph is disconnected (+inf weights leave some node "
    "unreachable), so it has no spanning tree."
)


def _prim(
    w: Float[Array, "B n n"],
) -> tuple[Int[Array, "B n"], Bool[Array, ""]]:
    """Each node's parent in a minimum spanning tree rooted at node 0 (root: 0)."""
    b, n, _ = w.shape
    nodes = jnp.arange(n)
    in_tree = jnp.zeros((b, n), bool).at[:, 0].set(True)
    key = w[:, 0, :]  # cheapest edge from the tree to each node
    parent = jnp.zeros((b, n), jnp.int32)

    def body(_, carry):
        in_tree, key, parent, disconnected = carry
        outside = jnp.where(in_tree, jnp.inf, key)
        best = jnp.min(outside, axis=1, keepdims=True)
        # The node outside the tree with the cheapest edge, lowest index on ties.
        v = jnp.min(jnp.where(~in_tree & (outside == best), nodes, n), axis=1)
        disconnected = disconnected | jnp.any(jnp.isinf(best))
        in_tree = in_tree | (nodes == v[:, None])
        row = jnp.take_along_axis(w, v[:, None, None], axis=1)[:, 0]
        # Strict: on equal weights the edge found first stays.
        closer = ~in_tree & (row < key)
        key = jnp.where(closer, row, key)
        parent = jnp.where(closer, v[:, None].astype(jnp.int32), parent)
        return in_tree, key, parent, disconnected

    _, _, parent, disconnected = lax.fori_loop(
        0, n - 1, body, (in_tree, key, parent, jnp.array(False))
    )
    return parent, disconnected


@jax.jit
def _spanning_tree(weights: Array) -> Array:
    n = weights.shape[-1]
    w = lax.stop_gradient(weights).reshape(-1, n, n)
    off_diagonal = ~jnp.eye(n, dtype=bool)
    w = jnp.where(off_diagonal, w, jnp.inf)  # self-loops are never in a tree
    bad = jnp.any(jnp.isnan(w) | (w == -jnp.inf))
    asymmetric = jnp.any(w != jnp.swapaxes(w, -1, -2)) & ~bad
    parent, disconnected = _prim(jnp.where(bad | asymmetric, jnp.inf, w))
    # Node v > 0 hangs from parent[v]: the edge {v, parent[v]}, both ways.
    child = (
        jax.nn.one_hot(parent, n, dtype=weights.dtype) * (jnp.arange(n) > 0)[:, None]
    )
    y = (child + jnp.swapaxes(child, -1, -2)).reshape(weights.shape)
    y = error_if_any(y, bad, _BAD_WEIGHTS)
    y = error_if_any(y, asymmetric, _ASYMMETRIC)
    return error_if_any(y, disconnected & ~bad & ~asymmetric, _DISCONNECTED)


def spanning_tree(weights: Float[Array, "*batch n n"]) -> Float[Array, "*batch n n"]:
    r"""Symmetric 0/1 adjacency matrix of a minimum spanning tree.

    Solves $\min_y \frac12 \langle y, W \rangle$ over the symmetric adjacency matrices
    `y` of the spanning trees of the undirected graph whose edge `{i, j}` weighs
    `weights[i, j] = weights[j, i]` (`+inf` where there is no edge; the diagonal is
    ignored). It minimises costs; weights may be negative or zero. The half counts
    each edge once: `y` holds both `y[i, j]` and `y[j, i]`.

    Algorithm: Prim's, from node 0: `n - 1` steps, each adding to the tree the
    outside node with the cheapest edge to it and lowering the other outside nodes'
    keys through that node's edges, so O(n²) per instance, all the instances of the
    batch in each step at once (a `lax.fori_loop` of `n - 1` steps over `(B, n)`
    arrays). Exact: the tree's weight is the optimum up to float rounding of the sum.
    Ties are broken deterministically: the outside node of smallest index among the
    cheapest, and each node keeps the first tree node that reached it at its lowest
    weight.

    The output is piecewise constant in `weights`, so its gradient is zero (the
    weights pass through `lax.stop_gradient`); wrap it in a perturbed layer to learn.
    A perturbation must keep the weights symmetric (perturb each edge once).

    **Arguments:**

    - `weights`: symmetric edge weights, shape `(*batch, n, n)`, `n >= 1`, floating;
        `+inf` for no edge.

    **Returns:**

    A symmetric 0/1 array of `weights`' shape and dtype with `n - 1` edges (each
    stored twice) forming a spanning tree.

    **Raises:**

    `ValueError`/`TypeError` on a bad shape or dtype; at run time (also under
    `jax.jit`), an error via `equinox.error_if` if a weight is NaN or `-inf`, if the
    weights are not symmetric, or if the graph is disconnected.

    ```python
    import jax.numpy as jnp
    from perturbed_layers.solvers import spanning_tree

    inf = jnp.inf
    weights = jnp.array([[inf, 1.0, 3.0],
                         [1.0, inf, 2.0],
                         [3.0, 2.0, inf]])
    spanning_tree(weights)  # edges {0, 1} and {1, 2}
    # [[0., 1., 0.],
    #  [1., 0., 1.],
    #  [0., 1., 0.]]
    ```

    **References:** Prim, *Shortest connection networks and some generalizations*,
    Bell System Tech. J. 1957; Cormen et al., *Introduction to Algorithms*, §23.2.
    """
    weights = jnp.asarray(weights)
    if weights.ndim < 2 or weights.shape[-1] != weights.shape[-2]:
        raise ValueError(f"weights must have shape (*batch, n, n), got {weights.shape}")
    if weights.shape[-1] < 1:
        raise ValueError(f"weights must have n >= 1 nodes, got shape {weights.shape}")
    if not jnp.issubdtype(weights.dtype, jnp.floating):
        raise TypeError(f"weights must have a floating dtype, got {weights.dtype}")
    return _spanning_tree(weights)
