"""Ready-made host solvers on SciPy: assignment and grid shortest paths.

SciPy is imported when a solver is made or run, never when `perturbed_layers` is.
"""

import dataclasses
import functools

import numpy as np

from ._host import HostSolver, host_solver

_NEIGHBOURS = {
    8: ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)),
    4: ((-1, 0), (0, -1), (0, 1), (1, 0)),
}


def _scipy():
    try:
        import scipy.optimize
        import scipy.sparse
        import scipy.sparse.csgraph
    except ImportError as error:
        raise ImportError(
            "the scipy host solvers need SciPy: pip install perturbed_layers[host]"
        ) from error
    return scipy


@dataclasses.dataclass(frozen=True)
class _LinearSumAssignment:
    maximize: bool

    def __call__(self, matrices: np.ndarray) -> np.ndarray:
        linear_sum_assignment = _scipy().optimize.linear_sum_assignment
        if not np.all(np.isfinite(matrices)):
            raise ValueError("scipy_linear_sum_assignment needs finite entries")
        out = np.zeros(matrices.shape, matrices.dtype)
        for k, matrix in enumerate(matrices):
            rows, cols = linear_sum_assignment(matrix, maximize=self.maximize)
            out[k, rows, cols] = 1
        return out


def scipy_linear_sum_assignment(*, maximize: bool = True) -> HostSolver:
    """Assignment (permutation) matrix by `scipy.optimize.linear_sum_assignment`.

    With `maximize=True` (the default, scores `θ` as everywhere in this library) it
    returns the 0/1 matrix `P` with one 1 per row and per column maximising `⟨P, θ⟩`;
    with `maximize=False` (costs `c`) the one minimising `⟨P, c⟩`. A rectangular
    `n × m` input gets `min(n, m)` ones. Instances are solved one after the other in
    one host call.

    **Arguments:**

    - `maximize`: maximise scores (`True`) or minimise costs (`False`).

    **Returns:**

    A `HostSolver` mapping a finite `(n, m)` matrix (or a `(*batch, n, m)` batch) to
    the 0/1 matrix of its dtype.

    ```python
    import jax.numpy as jnp
    from perturbed_layers import scipy_linear_sum_assignment

    solver = scipy_linear_sum_assignment()
    solver(jnp.array([[1.0, 5.0], [4.0, 1.0]]))  # [[0., 1.], [1., 0.]]
    ```

    **References:** Crouse, *On implementing 2D rectangular assignment algorithms*,
    IEEE TAES 2016 (SciPy's algorithm).
    """
    _scipy()
    return host_solver(_LinearSumAssignment(bool(maximize)), event_ndim=2)


@functools.lru_cache(maxsize=32)
def _grid_csr(h: int, w: int, connectivity: int):
    """CSR structure (indptr, heads) of one grid; arcs sorted by tail."""
    tails, heads = [], []
    for i in range(h):
        for j in range(w):
            for di, dj in _NEIGHBOURS[connectivity]:
                if 0 <= i + di < h and 0 <= j + dj < w:
                    tails.append(i * w + j)
                    heads.append((i + di) * w + j + dj)
    indptr = np.searchsorted(np.array(tails), np.arange(h * w + 1))
    return indptr, np.array(heads, np.int64)


@dataclasses.dataclass(frozen=True)
class _GridDijkstra:
    connectivity: int

    def __call__(self, costs: np.ndarray) -> np.ndarray:
        scipy = _scipy()
        costs = np.asarray(costs)
        if not np.all(np.isfinite(costs) & (costs > 0)):
            raise ValueError(
                "scipy_grid_shortest_path needs strictly positive, finite costs"
            )
        num, h, w = costs.shape
        v = h * w
        indptr, heads = _grid_csr(h, w, self.connectivity)
        e = len(heads)
        flat = costs.reshape(num, v).astype(np.float64)
        # One graph: the instances side by side, plus a super-source (node num * v)
        # whose arc to each instance's top-left cell costs that cell.
        offsets = v * np.arange(num)
        graph = scipy.sparse.csr_matrix(
            (
                np.concatenate([flat[:, heads].ravel(), flat[:, 0]]),
                np.concatenate([(heads + offsets[:, None]).ravel(), offsets]),
                np.concatenate(
                    [
                        (indptr[:-1] + e * np.arange(num)[:, None]).ravel(),
                        [num * e, num * e + num],
                    ]
                ),
            ),
            shape=(num * v + 1, num * v + 1),
        )
        _, pred = scipy.sparse.csgraph.dijkstra(
            graph, indices=num * v, return_predecessors=True
        )
        on_path = np.zeros(num * v + 1, bool)
        node = offsets + v - 1
        walking = np.ones(num, bool)
        while walking.any():  # all instances walk back together, one cell a step
            on_path[node[walking]] = True
            node = np.where(walking, pred[node], node)
            walking &= node != num * v
        return on_path[:-1].reshape(num, h, w).astype(costs.dtype)


def scipy_grid_shortest_path(connectivity: int = 8) -> HostSolver:
    """Grid shortest path by SciPy's Dijkstra: the host twin of `grid_shortest_path`.

    Same contract as `perturbed_layers.solvers.grid_shortest_path`: strictly positive
    vertex costs `(H, W)`, a path from the top-left to the bottom-right cell whose cost
    is the sum of its cells' costs, minimised; the result is its 0/1 mask. The whole
    batch of a call is solved by one `scipy.sparse.csgraph.dijkstra` call on a graph
    holding every instance plus a super-source, in float64. Ties are broken by SciPy,
    not necessarily as `grid_shortest_path` does.

    **Arguments:**

    - `connectivity`: `8` (king moves, as in Warcraft) or `4`.

    **Returns:**

    A `HostSolver` mapping `(H, W)` costs (or a `(*batch, H, W)` batch) to the mask,
    of the costs' dtype. Non-positive or non-finite costs raise an error at run time.

    ```python
    import jax.numpy as jnp
    from perturbed_layers import scipy_grid_shortest_path

    solver = scipy_grid_shortest_path(8)
    solver(jnp.array([[1.0, 9.0], [9.0, 1.0]]))  # [[1., 0.], [0., 1.]]
    ```

    **References:** Dijkstra, *A note on two problems in connexion with graphs*,
    Numer. Math. 1959.
    """
    if (
        not isinstance(connectivity, int)
        or isinstance(connectivity, bool)
        or connectivity not in _NEIGHBOURS
    ):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    _scipy()
    return host_solver(_GridDijkstra(connectivity), event_ndim=2)
