"""Ready-made host solvers on SciPy: assignment, grid shortest paths, MILPs.

SciPy is imported when a solver is made or run, never when `perturbed_layers` is.
"""

import dataclasses
import functools
from typing import Any

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


@dataclasses.dataclass(frozen=True)
class _Frozen:
    """A NumPy array as a hashable value compared by content (a static field's part:
    equal data share compiled code)."""

    shape: tuple[int, ...]
    dtype: str
    data: bytes

    @classmethod
    def of(cls, value: Any) -> "_Frozen":
        a = np.ascontiguousarray(value)
        return cls(a.shape, a.dtype.str, a.tobytes())

    def array(self) -> np.ndarray:
        return np.frombuffer(self.data, np.dtype(self.dtype)).reshape(self.shape)


_MILP_DATA = ("A_ub", "b_ub", "A_eq", "b_eq", "lower", "upper")


def _milp_instance(k: int, costs: np.ndarray, data: dict) -> dict:
    """One instance's data, checked: pairs together, shapes that fit `costs`."""
    n = costs.shape[0]
    for mat, vec in (("A_ub", "b_ub"), ("A_eq", "b_eq")):
        if (data[mat] is None) != (data[vec] is None):
            raise ValueError(f"scipy_milp: {mat} and {vec} go together (instance {k})")
        if data[mat] is not None:
            a, b = np.asarray(data[mat], np.float64), np.asarray(data[vec], np.float64)
            if a.ndim != 2 or a.shape[1] != n or b.shape != (a.shape[0],):
                raise ValueError(
                    f"scipy_milp: {mat} must be (m, {n}) and {vec} (m,) for {n} "
                    f"variables, got {a.shape} and {b.shape} (instance {k})"
                )
    return data


@dataclasses.dataclass(frozen=True)
class _Milp:
    shared: tuple[tuple[str, _Frozen], ...]
    integrality: _Frozen | None
    mip_rel_gap: float
    time_limit: float | None

    def __call__(self, costs: np.ndarray, args: dict | None = None) -> np.ndarray:
        optimize = _scipy().optimize
        shared = {name: value.array() for name, value in self.shared}
        args = {} if args is None else dict(args)
        unknown = sorted(set(args) - set(_MILP_DATA))
        if unknown:
            raise ValueError(
                f"scipy_milp: unknown args {unknown}; the data are {_MILP_DATA}"
            )
        twice = sorted(set(args) & set(shared))
        if twice:
            raise ValueError(
                f"scipy_milp: {twice} given twice, to scipy_milp(...) (shared) and in "
                "args (per instance); pass each one way"
            )
        if not np.all(np.isfinite(costs)):
            raise ValueError("scipy_milp needs finite costs")
        num, n = costs.shape
        integrality = (
            np.ones(n, np.int64)
            if self.integrality is None
            else self.integrality.array()
        )
        integer = integrality.astype(bool)
        options = {"mip_rel_gap": self.mip_rel_gap}
        if self.time_limit is not None:
            options["time_limit"] = self.time_limit
        out = np.empty((num, n), costs.dtype)
        for k in range(num):
            data = {name: shared.get(name) for name in _MILP_DATA}
            data.update({name: value[k] for name, value in args.items()})
            data = _milp_instance(k, costs[k], data)
            constraints = []
            if data["A_ub"] is not None:
                constraints.append(
                    optimize.LinearConstraint(data["A_ub"], -np.inf, data["b_ub"])
                )
            if data["A_eq"] is not None:
                constraints.append(
                    optimize.LinearConstraint(data["A_eq"], data["b_eq"], data["b_eq"])
                )
            lower = 0.0 if data["lower"] is None else data["lower"]
            upper = np.inf if data["upper"] is None else data["upper"]
            res = optimize.milp(
                costs[k].astype(np.float64),
                constraints=constraints,
                integrality=integrality,
                bounds=optimize.Bounds(lower, upper),
                options=options,
            )
            if res.status != 0 or res.x is None:
                raise ValueError(
                    f"scipy_milp: instance {k} of {num} was not solved to optimality "
                    f"(HiGHS status {res.status}: {res.message})"
                )
            x = res.x
            x[integer] = np.round(x[integer])  # HiGHS's integers are within 1e-6
            out[k] = x
        return out


def scipy_milp(
    *,
    A_ub: Any = None,
    b_ub: Any = None,
    A_eq: Any = None,
    b_eq: Any = None,
    lower: Any = None,
    upper: Any = None,
    integrality: Any = None,
    mip_rel_gap: float = 0.0,
    time_limit: float | None = None,
) -> HostSolver:
    r"""Mixed-integer linear programs by HiGHS (`scipy.optimize.milp`), on the host.

    Solves, for costs `c` of shape `(n,)` (a batch: `(*batch, n)`),

    $$\min_x c^\top x \quad\text{s.t.}\quad A_{ub} x \le b_{ub},\; A_{eq} x = b_{eq},
    \; \ell \le x \le u,\; x_i \in \mathbb{Z} \text{ where integrality}_i = 1,$$

    to optimality (`mip_rel_gap=0`: HiGHS proves the optimum; integer variables are
    rounded from HiGHS's 1e-6 tolerance to exact integers). It minimises costs: the
    `objective="min"` of `pl.Perturbed`. Every instance of a call, all M × B perturbed
    ones inside a layer, goes to one host callback that solves them in a loop. This
    gives the problems that PyEPO models with Gurobi (knapsack with several
    resources, travelling salesman, vehicle routing) a path with no commercial
    licence (`examples/perturbed_tsp.py`: a travelling salesman).

    **Problem data, two ways.** Each of `A_ub (m, n)`, `b_ub (m,)`, `A_eq (p, n)`,
    `b_eq (p,)`, `lower (n,)`, `upper (n,)` is given here (shared by every instance,
    part of the compiled program: new values recompile; keep it to data that stay
    fixed) or per instance as `args` when calling the solver, `solver(c, args)` /
    `layer(c, args, key=key)`, with the batch axes in front, one way only (given
    both ways, or an unknown name, is an error at run time). `A_ub` without `b_ub`
    (or `A_eq` without `b_eq`) is an error. `integrality` is fixed here.

    **Arguments:**

    - `A_ub`, `b_ub`, `A_eq`, `b_eq`: the linear constraints, or `None` (absent, or
        per instance in `args`).
    - `lower`, `upper`: bounds on `x`, arrays `(n,)` or scalars; `None` for 0 and
        no upper bound.
    - `integrality`: `(n,)` of 0 (continuous) and 1 (integer); `None` for all
        integer.
    - `mip_rel_gap`: HiGHS's relative optimality gap; 0 (default) for exact optima.
    - `time_limit`: seconds per instance, or `None`; an instance not solved to
        optimality in time is an error, never a silently suboptimal answer.

    **Returns:**

    A `HostSolver` mapping `(n,)` costs (or `(*batch, n)`) to an optimal `x` of their
    shape and dtype. Infeasible or unbounded instances, and non-finite costs, raise
    an error at run time.

    ```python
    import jax
    import jax.numpy as jnp
    import perturbed_layers as pl

    # A knapsack with two resources, as a MILP: max v·x, W x <= C, x binary.
    weights = jnp.array([[3.0, 2.0, 2.0, 4.0], [1.0, 3.0, 1.0, 1.0]])
    solver = pl.scipy_milp(A_ub=weights, b_ub=jnp.array([5.0, 4.0]), upper=1.0)
    solver(-jnp.array([6.0, 5.0, 5.0, 3.0]))  # [1., 0., 1., 0.]: value 11

    layer = pl.Perturbed(
        solver, objective="min", num_samples=20, sigma=0.5, noise=pl.Normal()
    )
    y = layer(-jnp.array([6.0, 5.0, 5.0, 3.0]), key=jax.random.key(0))
    # Capacities per instance instead, in args (one host call for all 2 × 20):
    per_instance = pl.Perturbed(
        pl.scipy_milp(A_ub=weights, upper=1.0),
        objective="min", num_samples=20, sigma=0.5, noise=pl.Normal(),
    )
    costs = -jnp.array([[6.0, 5.0, 5.0, 3.0], [6.0, 5.0, 5.0, 3.0]])
    y = per_instance(costs, {"b_ub": jnp.array([[5.0, 4.0], [9.0, 9.0]])},
                     key=jax.random.key(0))
    ```

    **References:** Huangfu & Hall, *Parallelizing the dual revised simplex method*,
    Math. Prog. Comp. 2018 (HiGHS); Tang & Khalil, *PyEPO*, Math. Prog. Comp. 2023.
    """
    shared = {}
    given = dict(A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=b_eq, lower=lower, upper=upper)
    for name, value in given.items():
        if value is not None:
            a = np.asarray(value, np.float64)
            if np.isnan(a).any():
                raise ValueError(f"scipy_milp: {name} has NaN entries")
            shared[name] = _Frozen.of(a)
    for mat, vec in (("A_ub", "b_ub"), ("A_eq", "b_eq")):
        if mat in shared and vec in shared:
            a, b = shared[mat].shape, shared[vec].shape
            if len(a) != 2 or b != (a[0],):
                raise ValueError(
                    f"scipy_milp: {mat} must be (m, n) and {vec} (m,), got {a} and {b}"
                )
    frozen_integrality = None
    if integrality is not None:
        ints = np.asarray(integrality)
        if ints.ndim != 1 or not np.isin(ints, (0, 1)).all():
            raise ValueError(
                "scipy_milp: integrality must be a 1-D array of 0 (continuous) and 1 "
                f"(integer), got {integrality!r}"
            )
        frozen_integrality = _Frozen.of(ints.astype(np.int64))
    if not (isinstance(mip_rel_gap, int | float) and mip_rel_gap >= 0):
        raise ValueError(f"mip_rel_gap must be a number >= 0, got {mip_rel_gap!r}")
    if time_limit is not None and not (
        isinstance(time_limit, int | float) and time_limit > 0
    ):
        raise ValueError(f"time_limit must be a positive number, got {time_limit!r}")
    _scipy()
    solver = _Milp(
        tuple(sorted(shared.items())),
        frozen_integrality,
        float(mip_rel_gap),
        None if time_limit is None else float(time_limit),
    )
    return host_solver(solver, event_ndim=1)
